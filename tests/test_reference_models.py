"""The reference catalogue's models and primitives (``reference-api.md``) on every backend.

Each model is compiled on NumPy (float64 and float32), PyTorch, JAX and MLX and compared with
an independent reference: a NumPy float64 formula written out here, PyTorch (``torch.split``,
``torch.trapezoid``, ``torch.nn`` cells) or finite differences. Gradients are compared with
PyTorch's autograd on the same formula, or with central differences.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.errors import ShapeMismatchError
from mithril.framework.types import Dtype
from mithril.models import IOKey, Model
from mithril.models import reference as R
from mithril.models.primitives import (
    AtLeast1D,
    Buffer,
    Cast,
    Cholesky,
    Eigvalsh,
    Indexer,
    PolynomialFeatures,
    RandInt,
    Relu,
    Slice,
    Split,
    Tanh,
    TensorToList,
    ToList,
    Unique,
)
from mithril.models.primitives import Dtype as DtypeModel
from mithril.models.recurrent import GRUCell, LSTMCell, RNNCell

SPEC = Path(__file__).parent / "data" / "reference-api.md"

#: (backend, dtype) pairs every model runs on
BACKENDS = [("numpy", "float64"), ("numpy", "float32"), ("torch", "float64"),
            ("torch", "float32"), ("jax", "float32"), ("mlx", "float32")]
IDS = [f"{b}-{d}" for b, d in BACKENDS]
TOL = {"float64": (1e-9, 1e-11), "float32": (2e-4, 2e-5)}


def make_backend(name: str, dtype: str = "float64") -> Any:
    cls = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
           "mlx": ml.MlxBackend}[name]
    return cls(dtype=getattr(ml, dtype))


def run(model: Any, backend: Any, data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None, out_grads: dict[str, np.ndarray] | None = None,
        **compile_kw: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compile ``model``, evaluate it on NumPy values; outputs and gradients as NumPy."""
    data, params = data or {}, params or {}
    shapes = {k: list(np.shape(v)) for k, v in {**data, **params}.items()
              if isinstance(v, np.ndarray)}
    compile_kw.setdefault("trainable_keys", set(params))
    compile_kw.setdefault("data_keys", set(data))
    pm = ml.compile(model, backend, shapes=shapes, **compile_kw)
    conv = {k: backend.array(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}
    p = {k: backend.array(v) for k, v in params.items()}
    grads: dict[str, Any] = {}
    if out_grads:
        outs, grads = pm.evaluate(p, conv,
                                  output_gradients={k: backend.array(v)
                                                    for k, v in out_grads.items()})
    else:
        outs = pm.evaluate(p, conv)
    to_np = backend.to_numpy
    return ({k: _np(to_np, v) for k, v in outs.items()},
            {k: np.asarray(to_np(v), dtype=np.float64) for k, v in grads.items()})


def _np(to_np: Callable[[Any], Any], v: Any) -> Any:
    if isinstance(v, Dtype | slice | list | int | float) or v is None:
        return v
    return np.asarray(to_np(v))


def close(actual: Any, desired: Any, dtype: str, what: str = "", scale: float = 1.0) -> None:
    rtol, atol = TOL[dtype]
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    assert actual.shape == desired.shape, (what, actual.shape, desired.shape)
    np.testing.assert_allclose(actual.astype(np.float64), desired, rtol=rtol * scale,
                               atol=atol * scale, err_msg=what)


def float_dtype(backend: Any) -> Any:
    """The NumPy dtype of the backend's floats (as ``to_numpy`` returns them)."""
    return np.dtype(backend.dtype.name)


def wide(backend: Any, dtype: Any = np.int64) -> Any:
    """What a 64-bit request (``dtype``) gives on ``backend``: itself, except on a JAX backend
    that is not float64, which never turns x64 on (docs/backends/jax.md), so JAX gives its
    32-bit type (with JAX's own warning), as for any JAX code without x64."""
    import jax

    if (type(backend).__name__ == "JaxBackend" and backend.dtype.name != "float64"
            and not jax.config.jax_enable_x64):
        return np.dtype(np.int32 if np.dtype(dtype).kind == "i" else np.float32)
    return np.dtype(dtype)


def int_dtype(backend: Any) -> Any:
    """The NumPy dtype of the backend's default ints (int64, or JAX's int32: see ``wide``)."""
    return wide(backend, np.int64)


def torch_grads(fn: Callable[..., torch.Tensor], inputs: dict[str, np.ndarray],
                out_grad: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of ``sum(fn(**inputs) * out_grad)`` by PyTorch autograd in float64."""
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in inputs.items()}
    out = fn(**tensors)
    (out * torch.tensor(out_grad)).sum().backward()
    return {k: t.grad.numpy() for k, t in tensors.items()}  # type: ignore[union-attr]


RNG = np.random.default_rng(2024)


def rn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


# ----------------------------------------------------------------------------------------------
# The catalogue of names
# ----------------------------------------------------------------------------------------------
def catalogue_names() -> dict[str, list[str]]:
    """The two name lists of the spec's "Catalogue" section."""
    text = SPEC.read_text()
    section = text.split("## Catalogue", 1)[1]
    lists = {}
    for label in ("Primitives", "Models"):
        match = re.search(rf"^{label}:(.*?)(?=^\w+:|^The migration|\Z)", section, re.S | re.M)
        assert match, label
        names = [n.strip().rstrip(".") for n in match.group(1).replace("\n", " ").split(",")]
        lists[label] = [n for n in names if n]
    return lists


def test_spec_lists_parse() -> None:
    lists = catalogue_names()
    assert {"Buffer", "AtLeast1D", "KLDivergence"} <= set(lists["Primitives"])
    assert {"Linear", "AUC", "EncoderDecoder"} <= set(lists["Models"])
    assert len(lists["Primitives"]) > 80 and len(lists["Models"]) > 30


@pytest.mark.parametrize("name", sorted({n for names in catalogue_names().values()
                                         for n in names}))
def test_every_reference_name_is_importable_from_mithril_models(name: str) -> None:
    import mithril.models

    assert hasattr(mithril.models, name), f"mithril.models has no {name}"
    obj = getattr(mithril.models, name)
    assert isinstance(obj, type) and obj.__doc__, name
    assert name in mithril.models.__all__


def test_reference_module_is_exported() -> None:
    """(Its docstring examples run in tests/test_docstrings.py.)"""
    import mithril.models

    missing = [n for n in R.__all__ if getattr(mithril.models, n, None) is not getattr(R, n)]
    assert not missing, f"not exported from mithril.models: {missing}"


# ----------------------------------------------------------------------------------------------
# Scalar helpers and creation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_length(backend_name: str, dtype: str) -> None:
    outs, _ = run(R.Length(), make_backend(backend_name, dtype), {"input": rn(5, 2)})
    assert int(outs["output"]) == 5


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_arange(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    outs, _ = run(R.Arange(stop=5), backend)
    np.testing.assert_array_equal(outs["output"], np.arange(5))
    assert outs["output"].dtype == int_dtype(backend)
    outs, _ = run(R.Arange(0.5, 2.0, 0.25), backend)
    close(outs["output"], np.arange(0.5, 2.0, 0.25), dtype)
    assert outs["output"].dtype == float_dtype(backend)
    outs, _ = run(R.Arange(3, -4, -2, dtype=ml.float64), backend)
    np.testing.assert_array_equal(outs["output"], np.arange(3.0, -4.0, -2.0))
    assert outs["output"].dtype == wide(backend, np.float64)
    # a symbolic stop: arange(len(x)) for an input of unknown length
    m = Model()
    m |= R.Length()(input="x", output="n")
    m |= R.Arange()(stop="n", output=IOKey("output"))
    pm = ml.compile(m, backend, data_keys={"x"})
    out = pm.evaluate({}, {"x": backend.ones(4, 2)})["output"]
    np.testing.assert_array_equal(backend.to_numpy(out), np.arange(4))


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_eye_and_complement(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    for model, ref in [(R.Eye(3), np.eye(3)), (R.Eye(2, 4), np.eye(2, 4)),
                       (R.EyeComplement(3), 1 - np.eye(3)),
                       (R.EyeComplement(4, 2), 1 - np.eye(4, 2))]:
        outs, _ = run(model, backend)
        np.testing.assert_array_equal(outs["output"], ref)
        assert outs["output"].dtype == float_dtype(backend)
    outs, _ = run(R.Eye(2, dtype=ml.int64), backend)
    assert outs["output"].dtype == int_dtype(backend)
    np.testing.assert_array_equal(outs["output"], np.eye(2, dtype=np.int64))
    outs, _ = run(R.Eye(), backend, {"N": 3}, jit=False)
    np.testing.assert_array_equal(outs["output"], np.eye(3))


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_zeros_like_and_ones(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    x = rn(2, 3) + np.nan * (rn(2, 3) > 1)  # NaNs do not leak into zeros_like
    outs, _ = run(R.ZerosLike(), backend, {"input": x})
    np.testing.assert_array_equal(outs["output"], np.zeros((2, 3)))
    assert outs["output"].dtype == float_dtype(backend)
    outs, _ = run(R.ZerosLike(), backend, {"input": np.arange(4).reshape(2, 2)})
    assert outs["output"].dtype == int_dtype(backend) and not outs["output"].any()
    outs, _ = run(R.Ones((2, 3)), backend)
    np.testing.assert_array_equal(outs["output"], np.ones((2, 3)))
    assert outs["output"].dtype == float_dtype(backend)
    outs, _ = run(R.Ones([4], dtype=ml.int64), backend)
    assert outs["output"].dtype == int_dtype(backend)
    assert outs["output"].tolist() == [1, 1, 1, 1]
    # ones shaped like another tensor
    m = Model()
    m |= Buffer()(input="x", output="y")
    m |= R.Ones()(shape=m.y.shape, output=IOKey("output"))
    pm = ml.compile(m, backend, shapes={"x": [3, 1]})
    out = pm.evaluate({}, {"x": backend.zeros(3, 1)})["output"]
    np.testing.assert_array_equal(backend.to_numpy(out), np.ones((3, 1)))


def test_zeros_like_passes_no_gradient() -> None:
    backend = make_backend("numpy")
    m = Model()
    m |= R.ZerosLike()(input="w", output="z")
    m |= Buffer()(input=m.z + m.w, output=IOKey("output"))
    w = rn(3)
    _, grads = run(m, backend, params={"w": w}, out_grads={"output": np.ones(3)})
    np.testing.assert_array_equal(grads["w"], np.ones(3))


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_randn(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    pm = ml.compile(R.Randn((200, 100)), backend)
    backend.set_seed(7)
    a = backend.to_numpy(pm.evaluate()["output"])
    b = backend.to_numpy(pm.evaluate()["output"])
    backend.set_seed(7)
    again = backend.to_numpy(pm.evaluate()["output"])
    assert a.shape == (200, 100) and a.dtype == float_dtype(backend)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1) < 0.03
    assert not np.allclose(a, b)  # a new draw on every call
    np.testing.assert_array_equal(a, again)  # reproducible from the seed
    out = ml.compile(R.Randn((2,), dtype=ml.float64), backend).evaluate()["output"]
    assert backend.to_numpy(out).dtype == wide(backend, np.float64)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_randint(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    pm = ml.compile(RandInt((4000,), -2, 3), backend)
    out = backend.to_numpy(pm.evaluate()["output"])
    assert out.dtype == int_dtype(backend) and out.shape == (4000,)
    assert set(np.unique(out).tolist()) == {-2, -1, 0, 1, 2}
    counts = np.bincount(out + 2) / out.size
    assert np.all(np.abs(counts - 0.2) < 0.03)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_positional_encoding(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    for hidden in (6, 5):
        x = rn(2, 7, hidden)
        g = rn(2, 7, hidden)
        pos = np.arange(7)[:, None]
        div = np.exp(np.arange(0, hidden, 2) * (-math.log(10000.0) / hidden))
        pe = np.zeros((7, hidden))
        pe[:, 0::2] = np.sin(pos * div)
        pe[:, 1::2] = np.cos(pos * div)[:, : hidden // 2]
        outs, grads = run(R.PositionalEncoding(hidden), backend, params={"input": x},
                          out_grads={"output": g})
        close(outs["output"], x + pe, dtype, "output", scale=10)
        close(grads["input"], g, dtype, "gradient")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_cartesian_difference(backend_name: str, dtype: str) -> None:
    left, right, g = rn(3, 2), rn(4, 2), rn(3, 4, 2)
    outs, grads = run(R.CartesianDifference(), make_backend(backend_name, dtype),
                      params={"left": left, "right": right}, out_grads={"output": g})
    close(outs["output"], left[:, None, :] - right[None, :, :], dtype)
    close(grads["left"], g.sum(axis=1), dtype)
    close(grads["right"], -g.sum(axis=0), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
@pytest.mark.parametrize("norm", [2, 1.0, 3])
def test_distance_matrix(backend_name: str, dtype: str, norm: Any) -> None:
    left, right, g = rn(3, 4), rn(5, 4), rn(3, 5)
    outs, grads = run(R.DistanceMatrix(norm), make_backend(backend_name, dtype),
                      params={"left": left, "right": right}, out_grads={"output": g})
    ref = (np.abs(left[:, None, :] - right[None, :, :]) ** norm).sum(-1)
    close(outs["output"], ref, dtype, scale=10)

    def fn(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return (torch.abs(left[:, None, :] - right[None, :, :]) ** norm).sum(-1)

    for k, v in torch_grads(fn, {"left": left, "right": right}, g).items():
        close(grads[k], v, dtype, k, scale=10)


def test_distance_matrix_with_norm_input() -> None:
    left, right = rn(2, 3), rn(4, 3)
    outs, _ = run(R.DistanceMatrix(ml.TBD), make_backend("numpy"),
                  {"left": left, "right": right, "norm": np.array(1.5)})
    close(outs["output"], (np.abs(left[:, None] - right[None]) ** 1.5).sum(-1), "float64")


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_transposed_diagonal(backend_name: str, dtype: str) -> None:
    x, g = rn(4, 4), rn(4, 1)
    outs, grads = run(R.TransposedDiagonal(), make_backend(backend_name, dtype),
                      params={"input": x}, out_grads={"output": g})
    close(outs["output"], np.diag(x)[:, None], dtype)
    close(grads["input"], np.diag(g[:, 0]), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_trapezoid(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    for shape in [(6,), (3, 5)]:
        y, x = rn(*shape), np.sort(rn(*shape), axis=-1)
        g = rn(*shape[:-1])
        outs, grads = run(R.Trapezoid(), backend, params={"y": y, "x": x},
                          out_grads={"output": g})
        close(outs["output"], np.trapezoid(y, x, axis=-1), dtype)
        ref = torch_grads(lambda y, x: torch.trapezoid(y, x, dim=-1), {"y": y, "x": x}, g)
        for k, v in ref.items():
            close(grads[k], v, dtype, k)


# ----------------------------------------------------------------------------------------------
# Layers, regularisers, kernels and estimators
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_element_wise_affine(backend_name: str, dtype: str) -> None:
    x, w, b, g = rn(4, 3), rn(3), rn(3), rn(4, 3)
    outs, grads = run(R.ElementWiseAffine(), make_backend(backend_name, dtype), {"input": x},
                      {"weight": w, "bias": b}, {"output": g})
    close(outs["output"], x * w + b, dtype)
    close(grads["weight"], (g * x).sum(0), dtype)
    close(grads["bias"], g.sum(0), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_layer(backend_name: str, dtype: str) -> None:
    x, w, b = rn(5, 3), rn(4, 3), rn(4)
    backend = make_backend(backend_name, dtype)
    outs, _ = run(R.Layer(Relu(), 4), backend, {"input": x}, {"weight": w, "bias": b})
    close(outs["output"], np.maximum(x @ w.T + b, 0), dtype)
    outs, _ = run(R.Layer(Tanh, 4), backend, {"input": x}, {"weight": w, "bias": b})
    close(outs["output"], np.tanh(x @ w.T + b), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_quadratic_form_regularizer(backend_name: str, dtype: str) -> None:
    x, k = rn(1, 4), rn(4, 4)
    outs, grads = run(R.QuadraticFormRegularizer(), make_backend(backend_name, dtype),
                      {"kernel": k}, {"input": x}, {"output": np.array(1.0)})
    close(outs["output"], 0.5 * (x @ k @ x.T)[0, 0], dtype)
    close(grads["input"], 0.5 * x @ (k + k.T), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_rbf_kernel(backend_name: str, dtype: str) -> None:
    x1, x2, g = rn(3, 2), rn(4, 2), rn(3, 4)
    params = {"l_scale": np.array([1.3]), "sigma": np.array([0.8])}
    outs, grads = run(R.RBFKernel(), make_backend(backend_name, dtype),
                      {"input1": x1, "input2": x2}, params, {"output": g})
    sq = ((x1[:, None] - x2[None]) ** 2).sum(-1)
    close(outs["output"], 1.3 ** 2 * np.exp(-0.5 * sq / 0.8 ** 2), dtype)

    def fn(l_scale: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return l_scale ** 2 * torch.exp(-0.5 * torch.tensor(sq) / sigma ** 2)

    for k, v in torch_grads(fn, params, g).items():
        close(grads[k], v, dtype, k, scale=10)
    # given constants, the hyperparameters are not inputs
    pm = ml.compile(R.RBFKernel(2.0, 0.5), make_backend(backend_name, dtype),
                    shapes={"input1": [3, 2], "input2": [4, 2]})
    assert pm.input_keys == {"input1", "input2"}
    assert set(ml.compile(R.RBFKernel(), make_backend("numpy"),
                          shapes={"input1": [3, 2], "input2": [4, 2]}).randomize_params()) == \
        {"l_scale", "sigma"}


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_polynomial_kernel_and_kernelized_svm(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    x1, x2 = rn(3, 2), rn(4, 2)
    outs, _ = run(R.PolynomialKernel(3, 0.5), backend, {"input1": x1, "input2": x2})
    close(outs["output"], (x1 @ x2.T + 0.5) ** 3, dtype, scale=10)
    outs, _ = run(R.PolynomialKernel(), backend, {"input1": x1, "input2": x2,
                                                  "degree": np.array(2.0),
                                                  "poly_coef": np.array(1.0)})
    close(outs["output"], (x1 @ x2.T + 1.0) ** 2, dtype, scale=10)
    w, b = rn(1, 4), rn(1)
    outs, grads = run(R.KernelizedSVM(R.RBFKernel(1.0, 2.0)), backend,
                      {"input1": x1, "input2": x2}, {"weight": w, "bias": b},
                      {"output": np.ones((3, 1))})
    k = np.exp(-((x1[:, None] - x2[None]) ** 2).sum(-1) / 8.0)
    close(outs["kernel"], k, dtype)
    close(outs["output"], k @ w.T + b, dtype)
    close(grads["weight"], k.sum(0, keepdims=True), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_linear_svm_and_logistic_regression(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    x, w, b = rn(6, 3), rn(1, 3), rn(1)
    logits = x @ w.T + b
    outs, _ = run(R.LinearSVM(), backend, {"input": x}, {"weight": w, "bias": b})
    close(outs["output"], logits, dtype)
    np.testing.assert_array_equal(outs["decision_output"], np.sign(logits))
    outs, _ = run(R.LogisticRegression(), backend, {"input": x}, {"weight": w, "bias": b})
    close(outs["output"], logits, dtype)
    close(outs["probs_output"], 1 / (1 + np.exp(-logits)), dtype)


def _poly_features_closed_form(x: np.ndarray) -> np.ndarray:
    """Degree-3 monomials of two features, written out (scikit-learn's column order)."""
    a, b = x[..., 0], x[..., 1]
    cols = [a, b, a * a, a * b, b * b, a ** 3, a * a * b, a * b * b, b ** 3]
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_polynomial_features_and_regression(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    x = rn(5, 2)
    outs, _ = run(PolynomialFeatures(3), backend, {"input": x})
    close(outs["output"], _poly_features_closed_form(x), dtype, scale=10)
    w, b = rn(2, 9), rn(2)
    outs, _ = run(R.PolynomialRegression(3, 2), backend, {"input": x}, {"weight": w, "bias": b})
    close(outs["output"], _poly_features_closed_form(x) @ w.T + b, dtype, scale=10)


def test_polynomial_features_gradient_matches_finite_differences() -> None:
    backend = make_backend("numpy")
    x = rn(2, 3)
    g = rn(2, 19)
    _, grads = run(PolynomialFeatures(3), backend, params={"input": x}, out_grads={"output": g})
    pm = ml.compile(PolynomialFeatures(3), backend, shapes={"input": [2, 3]},
                    data_keys={"input"})
    eps = 1e-6
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        hi = pm.evaluate({}, {"input": x + d})["output"]
        lo = pm.evaluate({}, {"input": x - d})["output"]
        fd[i] = ((hi - lo) * g).sum() / (2 * eps)
    np.testing.assert_allclose(grads["input"], fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def _counts(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    return float(np.sum(pred & true)), float(np.sum(pred)), float(np.sum(true))


def _score(kind: str, tp: float, n_pred: float, n_true: float) -> float:
    den = {"precision": n_pred, "recall": n_true, "f1": n_pred + n_true}[kind]
    num = 2 * tp if kind == "f1" else tp
    return num / den if den else 0.0


def metric_reference(kind: str, average: str, scores: np.ndarray, target: np.ndarray,
                     threshold: float = 0.5) -> float:
    """Precision / recall / F1 with explicit per-class loops (zero_division=0)."""
    if average == "binary":
        return _score(kind, *_counts(scores > threshold, target > 0.5))
    classes = scores.shape[-1]
    pred = scores.reshape(-1, classes).argmax(-1)
    true = target.reshape(-1)
    if average == "micro":
        return _score(kind, float(np.sum(pred == true)), float(pred.size), float(true.size))
    return float(np.mean([_score(kind, *_counts(pred == c, true == c))
                          for c in range(classes)]))


METRICS = {"precision": R.Precision, "recall": R.Recall, "f1": R.F1}


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
@pytest.mark.parametrize("kind", list(METRICS))
def test_classification_metrics(backend_name: str, dtype: str, kind: str) -> None:
    backend = make_backend(backend_name, dtype)
    rng = np.random.default_rng(5)
    probs = rng.random(40)
    labels = (rng.random(40) < 0.4).astype(np.int64)
    for threshold in (0.5, 0.8):
        outs, _ = run(METRICS[kind](average="binary", threshold=threshold), backend,
                      {"input": probs, "target": labels})
        close(outs["output"], metric_reference(kind, "binary", probs, labels, threshold), dtype)
        assert outs["output"].dtype == float_dtype(backend)
    # no predicted positives: 0 by convention
    outs, _ = run(METRICS[kind](average="binary", threshold=2.0), backend,
                  {"input": probs, "target": labels.astype(np.float64)})
    assert float(outs["output"]) == 0.0
    scores = rng.standard_normal((30, 4))
    scores[:, 3] -= 10  # class 3 is never predicted
    target = rng.integers(0, 4, 30)
    for average in ("macro", "micro"):
        outs, _ = run(METRICS[kind](average=average), backend,
                      {"input": scores, "target": target})
        close(outs["output"], metric_reference(kind, average, scores, target), dtype,
              f"{average}")


def test_metric_rejects_unknown_average() -> None:
    with pytest.raises(ValueError, match="average"):
        R.Precision(average="weighted")


def auc_reference(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_auc(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    rng = np.random.default_rng(11)
    labels = (rng.random(50) < 0.5).astype(np.int64)
    scores = np.round(rng.random(50) + 0.3 * labels, 1)  # rounded: many ties
    outs, _ = run(R.AUC(), backend, {"input": scores, "target": labels})
    close(outs["output"], auc_reference(scores, labels), dtype)
    outs, _ = run(R.AUC(), backend, {"input": scores[:, None], "target": labels[:, None] > 0})
    close(outs["output"], auc_reference(scores, labels), dtype)
    perfect = np.arange(10.0)
    outs, _ = run(R.AUC(), backend, {"input": perfect, "target": (perfect > 4).astype(float)})
    assert float(outs["output"]) == 1.0


# ----------------------------------------------------------------------------------------------
# Primitives with special outputs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_split_chunks_are_indexed(backend_name: str, dtype: str) -> None:
    x = rn(3, 6)
    g = rn(3, 2)
    m = Model()
    m |= Split(2, axis=1)(input="input", output=IOKey("chunks", expose=True))
    m |= Buffer()(input=m.chunks[1], output=IOKey("second"))
    outs, grads = run(m, make_backend(backend_name, dtype), params={"input": x},
                      out_grads={"second": g})
    ref = torch.split(torch.tensor(x), 2, dim=1)
    close(outs["chunks"], torch.stack(ref).numpy(), dtype)
    close(outs["second"], ref[1].numpy(), dtype)
    expected = np.zeros_like(x)
    expected[:, 2:4] = g
    close(grads["input"], expected, dtype)


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "jax", "mlx"])
def test_split_needs_equal_chunks(backend_name: str) -> None:
    m = Model()
    with pytest.raises(ShapeMismatchError, match="does not divide"):
        m |= Split(4, axis=1)(input=IOKey("input", shape=[2, 6]), output=IOKey("output"))
    backend = make_backend(backend_name)
    pm = ml.compile(Split(4, axis=1), backend, jit=False)  # the length is known only at run time
    with pytest.raises(ValueError, match="does not divide"):
        pm.evaluate({}, {"input": backend.ones(2, 6)})


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_slice_as_index(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    x = rn(6, 2)
    m = Model()
    m |= Slice(1, None, 2)(output="s")
    m |= Indexer()(input="input", index="s", output=IOKey("output"))
    outs, _ = run(m, backend, {"input": x})
    close(outs["output"], x[1::2], dtype)
    # a slice whose stop is computed from a shape at run time
    m = Model()
    m |= R.Length()(input="input", output="n")
    m |= Slice(None, ml.TBD, None)(stop=m.n // 2, output="s")
    m |= Indexer()(input="input", index="s", output=IOKey("output"))
    pm = ml.compile(m, backend, data_keys={"input"})
    out = pm.evaluate({}, {"input": backend.array(x)})["output"]
    close(backend.to_numpy(out), x[:3], dtype)
    outs, _ = run(Slice(1, 5, None), backend, jit=False)
    assert outs["output"] == slice(1, 5, None)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_unique(backend_name: str, dtype: str) -> None:
    x = np.array([[3.0, 1.0, 3.0], [-2.0, 1.0, 0.5]])
    backend = make_backend(backend_name, dtype)
    outs, _ = run(Unique(), backend, {"input": x}, jit=False)
    close(outs["output"], np.unique(x), dtype)
    outs, _ = run(Unique(), backend, {"input": np.array([4, 4, 1, 7, 1])}, jit=False)
    np.testing.assert_array_equal(outs["output"], [1, 4, 7])


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_dtype_to_list_and_tensor_to_list(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    outs, _ = run(DtypeModel(), backend, {"input": rn(2)}, jit=False)
    assert outs["output"] == getattr(ml, dtype)
    outs, _ = run(DtypeModel(), backend, {"input": np.arange(3)}, jit=False)
    assert outs["output"] == getattr(ml, int_dtype(backend).name)
    # Dtype feeding Cast: y converted to x's dtype (under the backend's default JIT too)
    m = Model()
    m |= DtypeModel()(input="x", output="dt")
    m |= Cast()(input="y", dtype="dt", output=IOKey("output"))
    outs, _ = run(m, backend, {"x": rn(2), "y": np.arange(3)})
    assert outs["output"].dtype == float_dtype(backend)
    np.testing.assert_array_equal(outs["output"], [0.0, 1.0, 2.0])
    m = Model()
    m |= ToList(n=3)(input1="a", input2="b", input3=2.5, output=IOKey("output"))
    outs, _ = run(m, backend, {"a": 1, "b": (2, 3)}, jit=False)
    assert outs["output"] == [1, (2, 3), 2.5]
    outs, _ = run(ToList(n=2, input1=1, input2=2), backend, jit=False)
    assert outs["output"] == [1, 2]
    x = np.array([[1.5, -2.0], [0.25, 4.0]])
    outs, _ = run(TensorToList(), backend, {"input": x}, jit=False)
    assert outs["output"] == x.tolist()


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_atleast_1d(backend_name: str, dtype: str) -> None:
    backend = make_backend(backend_name, dtype)
    outs, grads = run(AtLeast1D(), backend, params={"input": np.array(1.5)},
                      out_grads={"output": np.array([2.0])})
    close(outs["output"], np.array([1.5]), dtype)
    close(grads["input"], np.array(2.0), dtype)
    x = rn(2, 3)
    outs, _ = run(AtLeast1D(), backend, {"input": x})
    close(outs["output"], x, dtype)


def _spd(n: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    b = RNG.standard_normal((*batch, n, n))
    return b @ np.swapaxes(b, -1, -2) + n * np.eye(n)


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
@pytest.mark.parametrize("op", ["cholesky", "eigvalsh"])
def test_cholesky_and_eigvalsh_match_torch(backend_name: str, dtype: str, op: str) -> None:
    a = _spd(4, (2,))
    model = Cholesky() if op == "cholesky" else Eigvalsh()
    fn = torch.linalg.cholesky if op == "cholesky" else torch.linalg.eigvalsh
    g = rn(2, 4, 4) if op == "cholesky" else rn(2, 4)
    outs, grads = run(model, make_backend(backend_name, dtype), params={"input": a},
                      out_grads={"output": g})
    close(outs["output"], fn(torch.tensor(a)).numpy(), dtype, "output", scale=10)
    ref = torch_grads(lambda input: fn(input), {"input": a}, g)["input"]
    close(grads["input"], ref, dtype, "gradient", scale=10)


@pytest.mark.parametrize("op", ["cholesky", "eigvalsh"])
def test_linear_algebra_gradients_match_finite_differences(op: str) -> None:
    """Directional derivatives along symmetric perturbations (the inputs are symmetric)."""
    backend = make_backend("numpy")
    a = _spd(5)
    model = Cholesky() if op == "cholesky" else Eigvalsh()
    g = rn(5, 5) if op == "cholesky" else rn(5)
    _, grads = run(model, backend, params={"input": a}, out_grads={"output": g})
    pm = ml.compile(Cholesky() if op == "cholesky" else Eigvalsh(), backend,
                    shapes={"input": [5, 5]}, data_keys={"input"})
    for _ in range(3):
        d = rn(5, 5)
        d = d + d.T
        eps = 1e-6
        hi = pm.evaluate({}, {"input": a + eps * d})["output"]
        lo = pm.evaluate({}, {"input": a - eps * d})["output"]
        fd = ((hi - lo) * g).sum() / (2 * eps)
        np.testing.assert_allclose((grads["input"] * d).sum(), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["input"], grads["input"].T, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Recurrent wrappers
# ----------------------------------------------------------------------------------------------
def _torch_cell(cell: Any, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    cls = {RNNCell: torch.nn.RNNCell, LSTMCell: torch.nn.LSTMCell, GRUCell: torch.nn.GRUCell}
    ref = cls[type(cell)](cell.input_size, cell.hidden_size).double()
    with torch.no_grad():
        for k, p in ref.named_parameters():
            p.copy_(torch.tensor(weights[k]))
    return ref


def _weights(cell: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    gates = {RNNCell: 1, LSTMCell: 4, GRUCell: 3}[type(cell)] * cell.hidden_size
    return {"weight_ih": rng.standard_normal((gates, cell.input_size)) * 0.5,
            "weight_hh": rng.standard_normal((gates, cell.hidden_size)) * 0.5,
            "bias_ih": rng.standard_normal(gates) * 0.5,
            "bias_hh": rng.standard_normal(gates) * 0.5}


CELLS = [lambda: RNNCell(3, 4), lambda: LSTMCell(3, 4), lambda: GRUCell(3, 4)]


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
@pytest.mark.parametrize("make_cell", CELLS, ids=["rnn", "lstm", "gru"])
def test_many_to_one(backend_name: str, dtype: str, make_cell: Callable[[], Any]) -> None:
    cell = make_cell()
    lstm = isinstance(cell, LSTMCell)
    rng = np.random.default_rng(3)
    weights = _weights(cell, rng)
    steps = 4
    data = {f"input{t}": rng.standard_normal((2, 3)) for t in range(steps)}
    data["initial_hidden"] = rng.standard_normal((2, 4))
    if lstm:
        data["initial_cell"] = rng.standard_normal((2, 4))
    out_grads = {"output": rng.standard_normal((2, 4))}
    outs, grads = run(R.ManyToOne(cell, steps), make_backend(backend_name, dtype), data,
                      weights, out_grads)
    ref = _torch_cell(cell, weights)
    h = torch.tensor(data["initial_hidden"])
    c = torch.tensor(data["initial_cell"]) if lstm else None
    for t in range(steps):
        x = torch.tensor(data[f"input{t}"])
        if lstm:
            h, c = ref(x, (h, c))
        else:
            h = ref(x, h)
    (h * torch.tensor(out_grads["output"])).sum().backward()
    close(outs["output"], h.detach().numpy(), dtype, "output")
    if lstm:
        close(outs["cell"], c.detach().numpy(), dtype, "cell")  # type: ignore[union-attr]
    for k, p in ref.named_parameters():
        close(grads[k], p.grad.numpy(), dtype, k, scale=10)  # type: ignore[union-attr]


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
@pytest.mark.parametrize("teacher_forcing", [False, True])
def test_one_to_many(backend_name: str, dtype: str, teacher_forcing: bool) -> None:
    cell = LSTMCell(4, 4)
    rng = np.random.default_rng(4)
    weights = _weights(cell, rng)
    steps = 3
    data = {"input": rng.standard_normal((2, 4)), "initial_hidden": rng.standard_normal((2, 4)),
            "initial_cell": rng.standard_normal((2, 4))}
    if teacher_forcing:
        data.update({f"target{t}": rng.standard_normal((2, 4)) for t in range(steps - 1)})
    outs, _ = run(R.OneToMany(cell, steps, teacher_forcing), make_backend(backend_name, dtype),
                  data, weights)
    ref = _torch_cell(cell, weights)
    h, c = torch.tensor(data["initial_hidden"]), torch.tensor(data["initial_cell"])
    x = torch.tensor(data["input"])
    for t in range(steps):
        h, c = ref(x, (h, c))
        close(outs[f"output{t}"], h.detach().numpy(), dtype, f"output{t}")
        x = torch.tensor(data[f"target{t}"]) if teacher_forcing and t < steps - 1 else h


@pytest.mark.parametrize("backend_name,dtype", BACKENDS, ids=IDS)
def test_encoder_decoder(backend_name: str, dtype: str) -> None:
    cell = GRUCell(3, 3)
    rng = np.random.default_rng(6)
    enc_w, dec_w = _weights(cell, rng), _weights(cell, rng)
    data = {f"input{t}": rng.standard_normal((2, 3)) for t in range(3)}
    data.update({"initial_hidden": rng.standard_normal((2, 3)),
                 "decoder_input": rng.standard_normal((2, 3))})
    params = {**enc_w, **{f"decoder_{k}": v for k, v in dec_w.items()}}
    model = R.EncoderDecoder(cell, 3, 2)
    outs, _ = run(model, make_backend(backend_name, dtype), data, params)
    enc, dec = _torch_cell(cell, enc_w), _torch_cell(cell, dec_w)
    h = torch.tensor(data["initial_hidden"])
    for t in range(3):
        h = enc(torch.tensor(data[f"input{t}"]), h)
    x = torch.tensor(data["decoder_input"])
    for t in range(2):
        h = dec(x, h)
        close(outs[f"output{t}"], h.detach().numpy(), dtype, f"output{t}")
        x = h


def test_recurrent_wrappers_start_from_zeros_without_initial_state() -> None:
    cell = RNNCell(2, 3)
    model = R.ManyToOne(cell, 2, initial_state=False)
    assert "initial_hidden" not in model.input_terminals()
    rng = np.random.default_rng(0)
    weights = _weights(cell, rng)
    data = {"input0": rng.standard_normal((1, 2)), "input1": rng.standard_normal((1, 2))}
    outs, _ = run(model, make_backend("numpy"), data, weights)
    ref = _torch_cell(cell, weights)
    h = ref(torch.tensor(data["input1"]), ref(torch.tensor(data["input0"])))
    close(outs["output"], h.detach().numpy(), "float64")


def test_recurrent_wrappers_need_a_cell_instance() -> None:
    with pytest.raises(TypeError, match="cell instance"):
        R.ManyToOne(RNNCell, 3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,shapes", [
    (lambda: R.KernelizedSVM(R.RBFKernel(1.0, 2.0)), {"input1": [3, 2], "input2": [4, 2]}),
    (lambda: R.Layer(Relu(), 3), {"input": [2, 4]}),
    (lambda: R.ManyToOne(LSTMCell(2, 3), 2), {"input0": [1, 2], "input1": [1, 2]}),
    (lambda: R.PositionalEncoding(4), {"input": [2, 3, 4]}),
    (lambda: R.F1(average="macro"), {"input": [5, 3]}),
], ids=["svm", "layer", "many_to_one", "positional", "f1"])
def test_round_trip_through_to_dict(make: Callable[[], Any], shapes: dict[str, Any]) -> None:
    import json

    inner = make()
    model = Model()
    model |= inner(**{k: k for k in (*inner.input_terminals(), *inner.output_terminals())})
    again = Model.from_dict(json.loads(json.dumps(model.to_dict())))
    backend = make_backend("numpy")
    p1 = ml.compile(model, backend, shapes=shapes)
    p2 = ml.compile(again, backend, shapes=shapes)
    assert p1.code == p2.code
    params = p1.randomize_params()
    rng = np.random.default_rng(0)
    data = {k: backend.array(rng.standard_normal(shapes[k])) for k in shapes}
    if "target" in p1.input_keys:
        data["target"] = backend.array(rng.integers(0, 3, shapes["input"][0]))
    for k in p1.input_keys - set(params) - set(data):  # e.g. initial states
        data[k] = backend.array(rng.standard_normal(p1.shapes[k]))
    o1, o2 = p1.evaluate(params, data), p2.evaluate(params, data)
    assert o1.keys() == o2.keys()
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])


def test_model_helpers_are_listed() -> None:
    documented = [c for c in R.__all__ if isinstance(getattr(R, c), type)]
    assert documented == R.__all__
    assert all(getattr(R, c).__doc__ and ">>>" in getattr(R, c).__doc__ for c in R.__all__)
    assert not [c for c in itertools.chain(R.__all__) if c.startswith("_")]
