"""ONNX export of the reference catalogue's models (``mithril.models.reference``): each is
exported with a symbolic batch where it has one and run in onnxruntime at two batch sizes;
outputs equal the NumPy backend's (float32, inference) within a relative 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mithril.models import LSTMCell, Model, Tanh
from mithril.models import reference as R
from tests.onnx_harness import roundtrip


def _floats(shapes: dict[str, list[Any]], ints: dict[str, int] | None = None
            ) -> Callable[[int], dict[str, np.ndarray]]:
    def draw(n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(n)
        out = {}
        for k, s in shapes.items():
            if k in PARAMETERS:
                continue
            shape = [n if d == "N" else d for d in s]
            if ints and k in ints:
                out[k] = rng.integers(0, ints[k], shape)
            else:
                out[k] = rng.uniform(0.2, 1.5, shape).astype(np.float32)
        return out
    return draw


#: shapes given for these keys are parameters' (not drawn as data)
PARAMETERS = {"weight", "bias"}

#: name -> (model factory, input shapes ("N": the batch), integer inputs and their range)
CASES: dict[str, tuple[Callable[[], Any], dict[str, list[Any]], dict[str, int]]] = {
    "logistic_regression": (R.LogisticRegression, {"input": ["N", 3]}, {}),
    "polynomial_regression": (lambda: R.PolynomialRegression(3, 2), {"input": ["N", 3]}, {}),
    "layer": (lambda: R.Layer(Tanh(), 4), {"input": ["N", 3]}, {}),
    "element_wise_affine": (R.ElementWiseAffine, {"input": ["N", 3], "weight": [3],
                                                  "bias": [3]}, {}),
    "rbf_kernel": (lambda: R.RBFKernel(1.0, 2.0), {"input1": ["N", 3], "input2": [4, 3]}, {}),
    "polynomial_kernel": (lambda: R.PolynomialKernel(3, 0.5),
                          {"input1": ["N", 3], "input2": [4, 3]}, {}),
    "distance_matrix": (lambda: R.DistanceMatrix(2), {"left": ["N", 3], "right": [4, 3]}, {}),
    "cartesian_difference": (R.CartesianDifference, {"left": ["N", 3], "right": [4, 3]}, {}),
    "transposed_diagonal": (R.TransposedDiagonal, {"input": [4, 4]}, {}),
    "positional_encoding": (lambda: R.PositionalEncoding(4), {"input": ["N", 5, 4]}, {}),
    "eye": (lambda: R.Eye(2, 4), {}, {}),
    "eye_complement": (lambda: R.EyeComplement(3), {}, {}),
    "zeros_like": (R.ZerosLike, {"input": ["N", 3]}, {}),
    "ones": (lambda: R.Ones((2, 3)), {}, {}),
    "length": (R.Length, {"input": ["N", 3]}, {}),
    "trapezoid": (R.Trapezoid, {"y": ["N", 5], "x": [5]}, {}),
    "linear_svm": (R.LinearSVM, {"input": ["N", 3]}, {}),
    "kernelized_svm": (lambda: R.KernelizedSVM(R.RBFKernel()),
                       {"input1": ["N", 3], "input2": [4, 3]}, {}),
    "quadratic_form_regularizer": (R.QuadraticFormRegularizer,
                                   {"input": [4], "kernel": [4, 4]}, {}),
    "many_to_one": (lambda: R.ManyToOne(LSTMCell(2, 3), 3),
                    {"input0": ["N", 2], "input1": ["N", 2], "input2": ["N", 2],
                     "initial_hidden": ["N", 3], "initial_cell": ["N", 3]}, {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_reference_model_roundtrip(name: str, tmp_path: Path) -> None:
    factory, shapes, ints = CASES[name]

    def make() -> Model:
        return factory()  # its own terminals, as the reference project compiles it

    batches = [3, 5] if any("N" in s for s in shapes.values()) else [1]
    roundtrip(make, shapes, _floats(shapes, ints), batches, str(tmp_path))
