"""Which input columns each output of ``polynomial_features`` multiplies (framework-neutral)."""

from __future__ import annotations

import itertools

import numpy as np


def monomial_indices(n_features: int, degree: int) -> np.ndarray:
    """``(n_out, degree)`` int64 column indices per monomial of total degree 1..``degree``.

    Index ``n_features`` stands for a column of ones that pads lower degrees. Rows are ordered
    by degree, then lexicographically, as scikit-learn's ``PolynomialFeatures`` orders them.

    >>> monomial_indices(2, 2).tolist()
    [[0, 2], [1, 2], [0, 0], [0, 1], [1, 1]]
    """
    rows = [combo + (n_features,) * (degree - k)
            for k in range(1, degree + 1)
            for combo in itertools.combinations_with_replacement(range(n_features), k)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, degree)
