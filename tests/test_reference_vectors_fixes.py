"""Fixes found by measuring the reference Mithril's primitive test vectors
(``tools/reference_vectors.py``), each checked with our own cases against NumPy float64:

- ``PermuteTensor(input, indices)`` is the reference's ``input[indices]`` (rows reordered), not
  an axis transpose; its gradient goes back to the rows the values came from.
- ``HingeLoss`` has the reference's gradient at the kink (``target * input == 1``): half a step,
  ``-0.5 * target``, on every backend.
- ``ShiftLeft``/``ShiftRight`` by a negative count give what NumPy's, PyTorch's and XLA's shift
  operators give (0, or -1 for a right shift of a negative number) on every backend; the
  catalogue's decomposition ``left * 2 ** right`` raised on NumPy.
- ``LeakyRelu`` in each of the reference's spellings (slope 0.01 by default, positional, a
  terminal between input and output, data) and the guide's ``negative_slope``; the vectors'
  ``LeakyRelu()`` cases expect a slope of 0.2 and stay failing (the reference's own default
  is 0.01).
- The measuring tool itself: how it reads a vector, compares numbers and names failures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril import TBD
from mithril.errors import MithrilError
from mithril.models import (
    HingeLoss,
    IOKey,
    LeakyRelu,
    Model,
    PermuteTensor,
    QuadHingeLoss,
    ShiftLeft,
    ShiftRight,
    Transpose,
)
from tests.backend_names import WIDEST, ids_of, tolerances
from tests.backend_names import backend_of as make
from tools import reference_vectors as rv

BACKENDS = WIDEST
IDS = ids_of(BACKENDS)
RNG = np.random.default_rng(14)

tol = tolerances((1e-13, 1e-13), (1e-5, 1e-6))


def value_and_grad(model: Any, b: Any, params: dict[str, np.ndarray],
                   constants: dict[str, np.ndarray], out_grad: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pm = ml.compile(model, b, shapes={k: list(v.shape) for k, v in params.items()},
                    constant_keys={k: b.array(v) for k, v in constants.items()},
                    trainable_keys=set(params), jit=False)
    outs, grads = pm.evaluate({k: b.array(v) for k, v in params.items()},
                              output_gradients={"output": b.array(out_grad)})
    return b.to_numpy(outs["output"]), {k: b.to_numpy(v) for k, v in grads.items()}


# ---- PermuteTensor: input[indices] ----
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("shape", [(5,), (4, 3), (3, 2, 4)])
def test_permute_tensor_reorders_rows_and_sends_gradients_back(backend: tuple[str, str],
                                                               shape: tuple[int, ...]) -> None:
    b, dtype = make(*backend), backend[1]
    x = RNG.standard_normal(shape)
    perm = RNG.permutation(shape[0])
    g = RNG.standard_normal(shape)
    out, grads = value_and_grad(PermuteTensor(), b, {"input": x}, {"indices": perm}, g)
    np.testing.assert_allclose(out, x[perm], **tol(dtype))
    want = np.zeros(shape)
    np.add.at(want, perm, g)  # row perm[i] of the input became row i of the output
    np.testing.assert_allclose(grads["input"], want, **tol(dtype))


def test_permute_tensor_takes_indices_as_a_list_and_as_data() -> None:
    b = ml.NumpyBackend(dtype=ml.float64)
    x = np.arange(12.0).reshape(3, 4)
    pm = ml.compile(PermuteTensor(indices=[1, 2, 0]), b, shapes={"input": [3, 4]})
    np.testing.assert_array_equal(pm.evaluate({}, {"input": x})["output"], x[[1, 2, 0]])
    m = Model()
    m |= PermuteTensor()(input="x", indices="order", output=IOKey("y"))
    pm = ml.compile(m, b, shapes={"x": [3, 4], "order": [3]})
    out = pm.evaluate({}, {"x": x, "order": np.array([2, 1, 0])})["y"]
    np.testing.assert_array_equal(out, x[::-1])
    # reordering axes stays Transpose's job
    pm = ml.compile(Transpose(axes=(1, 0)), b, shapes={"input": [3, 4]})
    np.testing.assert_array_equal(pm.evaluate({}, {"input": x})["output"], x.T)


# ---- HingeLoss at the kink ----
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_hinge_loss_values_and_half_step_gradient_at_the_kink(backend: tuple[str, str]
                                                              ) -> None:
    b, dtype = make(*backend), backend[1]
    t = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    x = np.array([1.0, -1.0, 0.25, 0.5, 3.0, -2.0, -0.75, 2.5])  # the first two at the kink
    g = RNG.uniform(0.5, 2.0, x.shape)
    out, grads = value_and_grad(HingeLoss(), b, {"input": x}, {"target": t}, g)
    z = 1.0 - t * x
    np.testing.assert_allclose(out, np.maximum(z, 0.0), **tol(dtype))
    slope = np.where(z > 0, -t, np.where(z == 0, -0.5 * t, 0.0))
    np.testing.assert_allclose(grads["input"], g * slope, **tol(dtype))
    # away from the kink it is the derivative: central differences in float64
    if dtype == "float64":
        h = 1e-6
        for i in range(2, len(x)):
            e = np.zeros_like(x)
            e[i] = h
            fd = (np.maximum(1 - t * (x + e), 0) - np.maximum(1 - t * (x - e), 0)) / (2 * h)
            assert abs(grads["input"][i] - g[i] * fd[i]) < 1e-8


@pytest.mark.parametrize("backend", BACKENDS[:3], ids=IDS[:3])
def test_quad_hinge_loss_gradient_is_zero_at_the_kink(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    t = np.array([1.0, -1.0, 1.0])
    x = np.array([1.0, -1.0, 0.5])
    out, grads = value_and_grad(QuadHingeLoss(), b, {"input": x}, {"target": t}, np.ones(3))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25], **tol(dtype))
    np.testing.assert_allclose(grads["input"], [0.0, 0.0, -1.0], **tol(dtype))


# ---- LeakyRelu: the reference's row ----
def _leaky(build: Any, b: Any, x: np.ndarray, data: dict[str, Any], g: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    m = Model()
    m |= build()
    pm = ml.compile(m, b, shapes={"x": list(x.shape)}, trainable_keys={"x"}, jit=False)
    out, grads = pm.evaluate({"x": b.array(x)}, data, output_gradients={"y": b.array(g)})
    return b.to_numpy(out["y"]), b.to_numpy(grads["x"])


LEAKY_SPELLINGS = {
    # the reference's: slope=0.01 by default, first in the constructor, then a terminal
    # between input and output once the constructor leaves it TBD
    "default": (lambda: LeakyRelu()(input="x", output=IOKey("y")), 0.01),
    "positional": (lambda: LeakyRelu(0.2)(input="x", output=IOKey("y")), 0.2),
    "slope=": (lambda: LeakyRelu(slope=0.2)(input="x", output=IOKey("y")), 0.2),
    "connect order": (lambda: LeakyRelu(TBD)("x", 0.2, IOKey("y")), 0.2),
    "slope as data": (lambda: LeakyRelu(slope=TBD)(input="x", slope="s", output=IOKey("y")),
                      0.3),
    # the guide's nn.LeakyReLU spelling
    "negative_slope=": (lambda: LeakyRelu(negative_slope=0.2)(input="x", output=IOKey("y")),
                        0.2),
}


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("spelling", list(LEAKY_SPELLINGS))
def test_leaky_relu_slope_in_every_reference_spelling(backend: tuple[str, str],
                                                      spelling: str) -> None:
    """Values ``x`` / ``slope * x`` and the gradient ``1`` / ``slope``, the slope also at
    exactly 0 (the reference's NumPy convention, on every backend), against NumPy."""
    build, slope = LEAKY_SPELLINGS[spelling]
    b, dtype = make(*backend), backend[1]
    x = np.array([[-2.0, -0.5, 0.0], [0.25, 3.0, -1e3]])
    g = RNG.uniform(0.5, 2.0, x.shape)
    data = {"s": slope} if spelling == "slope as data" else {}
    out, grad = _leaky(build, b, x, data, g)
    np.testing.assert_allclose(out, np.where(x > 0, x, slope * x), **tol(dtype))
    np.testing.assert_allclose(grad, g * np.where(x > 0, 1.0, slope), **tol(dtype))


def test_leaky_relu_slope_fixed_by_the_constructor_is_not_reset() -> None:
    """As in the reference, a slope the constructor set (0.01 by default) is a constant: a
    different value given when connecting is an error naming the terminal, not ignored."""
    m = Model()
    with pytest.raises(MithrilError, match="slope") as err:
        m |= LeakyRelu()(input="x", slope=0.2, output=IOKey("y"))
    assert "0.01" in str(err.value) and "0.2" in str(err.value)
    m |= LeakyRelu()(input="x", slope=0.01, output=IOKey("y"))  # the same value is fine
    assert m.input_terminals() == ["x"]


# ---- shifts by negative counts ----
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_shifts_by_negative_counts_match_numpy_shift_operators(backend: tuple[str, str]
                                                               ) -> None:
    b = make(*backend)
    x = np.array([[2, -32, 32, 5, -7, 1, 0, -1]], dtype=np.int32)
    s = np.array([[-1, -1, 3, 0, 2, -4, -2, 5]], dtype=np.int32)
    for cls, want in [(ShiftLeft, np.left_shift(x, s)), (ShiftRight, np.right_shift(x, s))]:
        pm = ml.compile(cls(), b, shapes={"input": [1, 8], "shift": [1, 8]}, jit=False,
                        data_keys={"input", "shift"})
        out = pm.evaluate({}, {"input": b.array(x), "shift": b.array(s)})["output"]
        np.testing.assert_array_equal(b.to_numpy(out), want, err_msg=cls.__name__)
    # a scalar shifted by a tensor of counts, as the reference writes it
    pm = ml.compile(ShiftRight(input=32), b, shapes={"shift": [4]}, jit=False)
    out = pm.evaluate({}, {"shift": b.array(np.array([1, -1, 3, 4], dtype=np.int32))})
    np.testing.assert_array_equal(b.to_numpy(out["output"]), [16, 0, 4, 2])


# ---- the measuring tool ----
def test_model_spec_and_expected_value_per_backend() -> None:
    assert rv.model_spec({"model": "Relu"}) == ("Relu", {})
    spec = {"model": {"name": "Mean", "args": {"axis": [1, 2], "keepdim": True},
                      "tuples": ["axis"]}}
    assert rv.model_spec(spec) == ("Mean", {"axis": (1, 2), "keepdim": True})
    assert rv.for_backend({"numpy": 1.0, "torch": 2.0, "jax": 3.0}, "jax") == 3.0
    assert rv.to_numpy([[1, 2]]).dtype == np.int64
    assert rv.to_numpy([[1, 2.0]]).dtype == np.float64


def test_mismatch_uses_the_reference_criterion() -> None:
    # all within 1e-14 absolutely, or all within 1e-14 relatively, and the same shape
    assert rv.mismatch([1.0, 1e20], np.array([1.0 + 5e-15, 1e20])) is None
    assert rv.mismatch([1e20, 2e20], np.array([1e20 * (1 + 5e-15), 2e20])) is None
    assert rv.mismatch([0.0, 1e20], np.array([1e-13, 1e20])) is not None
    assert rv.mismatch(2.0, np.array(2.0)) is None
    assert "shape" in str(rv.mismatch(2.0, np.array([2.0])))
    assert rv.mismatch([np.inf], np.array([np.inf])) is None
    assert rv.mismatch([1.0], np.array([np.nan])) is not None


CASES: dict[str, Any] = {
    "add_ok": {"model": "Add", "inputs": {"left": [[1.0, 2.0]], "right": [3.0, -1.0]},
               "output_grad": [[1.0, 2.0]],
               "results": {"eval": [[4.0, 1.0]],
                           "grad": {"left": [[1.0, 2.0]], "right": [1.0, 2.0]}}},
    "wrong_number": {"model": "Multiply", "inputs": {"left": [2.0], "right": [3.0]},
                     "output_grad": [1.0],
                     "results": {"eval": [6.0], "grad": {"left": [3.0], "right": [2.5]}}},
    "no_class": {"model": "NoSuchModel", "inputs": {"input": [1.0]},
                 "results": {"eval": [1.0]}},
    "bad_terminal": {"model": "Relu", "inputs": {"x": [1.0]}, "output_grad": [1.0],
                     "results": {"eval": [1.0], "grad": {"x": [1.0]}}},
    "permute": {"model": {"name": "PermuteTensor"}, "inputs": {"input": [[1.0], [2.0]]},
                "static_inputs": {"indices": [1, 0]}, "output_grad": [[3.0], [4.0]],
                "results": {"eval": [[2.0], [1.0]], "grad": {"input": [[4.0], [3.0]]}}},
    "per_backend": {"model": "Absolute", "inputs": {"input": [0.0, -2.0]},
                    "output_grad": [1.0, 1.0],
                    "results": {"eval": [0.0, 2.0],
                                "grad": {"input": {"numpy": [0.0, -1.0], "torch": [0.0, -1.0],
                                                   "jax": [1.0, -1.0]}}}},
}


def test_runner_reports_each_case_with_its_reason(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(CASES))
    outcomes = {(o.case, o.backend): o for o in rv.run(rv.load_cases(str(path)),
                                                       ["numpy", "jax"])}
    assert outcomes["add_ok", "numpy"].passed and outcomes["permute", "jax"].passed
    wrong = outcomes["wrong_number", "numpy"]
    assert wrong.category == "gradient value" and wrong.detail.startswith("right: off by 0.5")
    assert outcomes["no_class", "numpy"].category == "missing class"
    assert outcomes["bad_terminal", "numpy"].category == "terminal name"
    assert "'x'" in outcomes["bad_terminal", "numpy"].detail
    assert outcomes["per_backend", "numpy"].passed
    assert outcomes["per_backend", "jax"].category == (
        "gradient: backend-specific expectation (we give NumPy convention)")
    assert rv.main([str(path), "--backends", "numpy", "-k", "add"]) == 0
    assert rv.main([str(path), "--backends", "numpy"]) == 1
    printed = capsys.readouterr().out
    assert "1 of 1 pass" in printed and "3 of 6 pass (6 cases x 1 backends)" in printed
