"""Framework-neutral helpers of every backend's kernels: ``polynomial_features``' monomials,
random kernels' shapes, window arguments (strides, dilations, kernel sizes, padding)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

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


def polynomial(xa: Any, degree: int, take: Callable[[Any, np.ndarray], Any]) -> Any:
    """``polynomial_features`` in any framework, columns in scikit-learn's
    ``PolynomialFeatures(include_bias=False)`` order: ``xa`` is the input with a column of ones
    appended, ``take(xa, columns)`` gathers columns of its last axis.

    >>> polynomial(np.array([[2.0, 3.0, 1.0]]), 2, lambda a, i: a[..., i]).tolist()
    [[2.0, 3.0, 4.0, 6.0, 9.0]]
    """
    idx = monomial_indices(xa.shape[-1] - 1, degree)
    out = take(xa, idx[:, 0])
    for k in range(1, degree):
        out = out * take(xa, idx[:, k])
    return out


def size_tuple(shape: Any) -> tuple[int, ...]:
    """A random kernel's ``shape``, an int or a sequence of ints, as a tuple.

    >>> size_tuple(3), size_tuple([2, 4])
    ((3,), (2, 4))
    """
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)


def int_tuple(value: Any, nd: int, what: str = "window argument") -> tuple[int, ...]:
    """A window argument (stride, dilation, kernel size), an int or ``nd`` ints, as ``nd`` ints.

    >>> int_tuple(2, 2), int_tuple([1, 3], 2)
    ((2, 2), (1, 3))
    """
    if isinstance(value, int | np.integer):
        return (int(value),) * nd
    items = tuple(int(v) for v in value)
    if len(items) != nd:
        raise ValueError(f"{what} needs {nd} values, got {value!r}")
    return items


def pad_pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    """Padding given as an int, ``nd`` ints or ``nd`` ``(lo, hi)`` pairs, as ``nd`` pairs.

    >>> pad_pairs(1, 2), pad_pairs([0, (1, 2)], 2)
    (((1, 1), (1, 1)), ((0, 0), (1, 2)))
    """
    if isinstance(value, int | np.integer):
        return ((int(value), int(value)),) * nd
    items = tuple(value)
    if len(items) != nd:
        raise ValueError(f"padding needs {nd} entries, got {value!r}")
    return tuple((int(p), int(p)) if isinstance(p, int | np.integer) else
                 (int(p[0]), int(p[1])) for p in items)
