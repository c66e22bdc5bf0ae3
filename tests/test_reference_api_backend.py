"""The reference Mithril's backend helpers, ``mithril.types`` and top-level names
(``reference-api-table.md``, sections "Backend" and "Top-level names") on every backend.

Each helper's result is compared with NumPy float64 on the same values (or, for the
transformations, with the analytic derivative); random creators with ``key=`` with
``np.random.default_rng(key)``'s draws.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.errors import BackendUnavailableError
from mithril.models import Add, Model
from tests.backend_names import backend_of as make

BACKENDS = [("numpy", "float64"), ("torch", "float64"), ("jax", "float64"),
            ("mlx", "float32")]
IDS = [f"{b}-{d}" for b, d in BACKENDS]
AUTODIFF = [p for p in BACKENDS if p[0] != "numpy"]


def tol(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-5,
                                                                      "atol": 1e-6}


@pytest.fixture(params=BACKENDS, ids=IDS)
def bk(request: pytest.FixtureRequest) -> tuple[Any, str]:
    return make(*request.param), request.param[1]


X = np.array([[-1.5, 0.0, 0.25], [2.0, -0.5, 3.0]])


def test_names_and_attributes(bk: tuple[Any, str]) -> None:
    b, dtype = bk
    assert isinstance(b, ml.Backend) and ml.Backend[ml.DataType] is ml.Backend
    assert isinstance(b.ones(2), b.DataType) and b.get_backend_array_type() is b.DataType
    assert b.backend_type == b.name and b.default_dtype == getattr(ml, dtype)
    assert b.precision == (64 if dtype == "float64" else 32)
    assert (b.pi, b.e, b.inf) == (math.pi, math.e, math.inf) and math.isnan(b.nan)
    assert (b.float32, b.float64, b.int64, b.bool) == (ml.float32, ml.float64, ml.int64,
                                                       ml.bool)
    assert b.is_manualgrad == (b.name == "numpy") and b.is_installed
    b.set_seed(7)
    assert b.seed == 7
    assert b.to_numpy(b.block_until_ready(b.ones(2))).tolist() == [1.0, 1.0]


def test_creation_helpers(bk: tuple[Any, str]) -> None:
    b, dtype = bk
    x = b.array(X)
    np.testing.assert_array_equal(b.to_numpy(b.zeros_like(x)), np.zeros_like(X))
    ones = b.ones_like(x, dtype=ml.int32)
    assert b.to_numpy(ones).dtype == np.int32 and b.to_numpy(ones).sum() == 6
    np.testing.assert_allclose(b.to_numpy(b.linspace(-1, 2, 7)), np.linspace(-1, 2, 7),
                               **tol(dtype))
    # 0-d array ends, as the reference's sine example uses
    got = b.to_numpy(b.linspace(b.array(0.5), b.array(0.5 + 2 * b.pi), 11))
    np.testing.assert_allclose(got, np.linspace(0.5, 0.5 + 2 * np.pi, 11), **tol(dtype))
    assert got[-1] == pytest.approx(0.5 + 2 * np.pi, rel=1e-7)
    assert b.to_numpy(b.linspace(3, 4, 1)).tolist() == [3.0]
    assert b.to_numpy(b.cast(b.array([1, 2]))).dtype == np.dtype(dtype)


def test_elementwise_helpers_equal_numpy(bk: tuple[Any, str]) -> None:
    b, dtype = bk
    x = b.array(X)
    sig = 1 / (1 + np.exp(-X))
    expected = {
        "abs": np.abs(X), "sign": np.sign(X), "sin": np.sin(X), "cos": np.cos(X),
        "tanh": np.tanh(X), "relu": np.maximum(X, 0), "sigmoid": sig,
        "softplus": np.log1p(np.exp(X)), "stop_gradient": X,
    }
    for name, want in expected.items():
        np.testing.assert_allclose(b.to_numpy(getattr(b, name)(x)), want, err_msg=name,
                                   **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(b.log(b.array(np.abs(X) + 1))), np.log(np.abs(X) + 1),
                               **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(b.leaky_relu(x, 0.1)), np.where(X > 0, X, 0.1 * X),
                               **tol(dtype))
    e = np.exp(X - X.max(axis=0))
    np.testing.assert_allclose(b.to_numpy(b.softmax(x, dim=0)), e / e.sum(axis=0), **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(b.clip(x, -1.0, 1.0)), np.clip(X, -1, 1),
                               **tol(dtype))
    np.testing.assert_array_equal(b.to_numpy(b.where(x > 0, x, b.zeros_like(x))),
                                  np.where(X > 0, X, 0))
    nan = b.array([1.0, float("nan")])
    assert b.to_numpy(b.isnan(nan)).tolist() == [False, True]
    assert bool(b.to_numpy(b.all(x > -2))) and not bool(b.to_numpy(b.any(x > 5)))


def test_shape_and_sorting_helpers_equal_numpy(bk: tuple[Any, str]) -> None:
    b, _ = bk
    x = b.array(X)
    t = b.array(np.arange(24.0).reshape(2, 1, 3, 4))
    n = np.arange(24.0).reshape(2, 1, 3, 4)
    cases = {
        "reshape": (b.reshape(x, (3, 2)), X.reshape(3, 2)),
        "flatten": (b.flatten(t), n.reshape(-1)),  # the reference's default start_dim is 0
        "flatten(1, 2)": (b.flatten(t, 1, 2), n.reshape(2, 3, 4)),
        "squeeze": (b.squeeze(t), n.squeeze()),
        "transpose": (b.transpose(x), X.T),
        "transpose(axes)": (b.transpose(t, [3, 0, 2, 1]), n.transpose(3, 0, 2, 1)),
        "expand_dims": (b.expand_dims(x, 1), X[:, None]),
        "argmax": (b.argmax(x, 1), X.argmax(1)),
        "argmax(keepdim)": (b.argmax(x, 0, True), X.argmax(0)[None]),
        "unique": (b.unique(b.array([3, 1, 3, 2])), np.array([1, 2, 3])),
        "pad(int)": (b.pad(x, 1), np.pad(X, 1)),
        "pad(pair)": (b.pad(x, (0, 2)), np.pad(X, (0, 2))),
        "pad(per dim)": (b.pad(x, [(1, 0), (0, 2)]), np.pad(X, [(1, 0), (0, 2)])),
        "stack": (b.stack([x, 2 * x], axis=1), np.stack([X, 2 * X], axis=1)),
        "cat": (b.cat([x, x], axis=1), np.concatenate([X, X], axis=1)),
        "concat": (b.concat((x, x)), np.concatenate([X, X])),
        "atleast_1d": (b.atleast_1d(b.array(2.0)), np.atleast_1d(2.0)),
        "atleast_2d": (b.atleast_2d(b.array([1.0, 2.0])), np.atleast_2d([1.0, 2.0])),
        "sort": (b.sort(x), np.sort(X)),
        "sort(desc, axis 0)": (b.sort(x, 0, descending=True), -np.sort(-X, axis=0)),
        "topk": (b.topk(x, 2), -np.sort(-X)[:, :2]),
    }
    for name, (got, want) in cases.items():
        got = b.to_numpy(got)
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    pair = b.atleast_2d((b.array(1.0), b.array([1.0, 2.0])))
    assert [tuple(a.shape) for a in pair] == [(1, 1), (1, 2)]


def test_random_creators_with_key(bk: tuple[Any, str]) -> None:
    b, dtype = bk
    ref = np.random.default_rng(5)
    normal, uniform = ref.standard_normal((2, 3)), None
    np.testing.assert_allclose(b.to_numpy(b.randn(2, 3, key=5)), normal, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(b.randn((2, 3), key=5)), normal, **tol(dtype))
    uniform = np.random.default_rng(9).random(4)
    np.testing.assert_allclose(b.to_numpy(b.rand(4, key=9)), uniform, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(b.rand_uniform(-2, 3, 4, key=9)), -2 + 5 * uniform,
                               **tol(dtype))
    ints = b.to_numpy(b.randint(0, 10, 2, 3, key=1))
    np.testing.assert_array_equal(ints, np.random.default_rng(1).integers(0, 10, (2, 3)))
    assert ints.dtype == np.int64
    assert b.to_numpy(b.randint(0, 10, (2, 3), key=1)).tolist() == ints.tolist()
    assert b.to_numpy(b.randint(0, 10, shape=(2, 3), key=1)).tolist() == ints.tolist()
    # a keyed draw leaves the backend's own stream where it was
    b.set_seed(3)
    first = b.to_numpy(b.randn(3))
    b.set_seed(3)
    b.randn(3, key=11)
    np.testing.assert_array_equal(b.to_numpy(b.randn(3)), first)
    # without a key: the backend's stream, in range and advancing
    u = b.to_numpy(b.rand_uniform(1.0, 2.0, 1000))
    assert u.min() >= 1.0 and u.max() < 2.0 and abs(u.mean() - 1.5) < 0.05
    scalar = b.rand_uniform(0, 2 * b.pi)
    assert b.to_numpy(scalar).shape == ()


def test_multinomial(bk: tuple[Any, str]) -> None:
    b, _ = bk
    probs = b.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    draws = b.to_numpy(b.multinomial(probs, 200, replacement=True, key=2))
    assert draws.shape == (2, 200) and draws.dtype == np.int64
    assert set(draws[0]) == {1} and set(draws[1]) <= {0, 2}
    assert abs((draws[1] == 0).mean() - 0.5) < 0.1
    again = b.to_numpy(b.multinomial(probs, 200, replacement=True, key=2))
    np.testing.assert_array_equal(draws, again)
    perm = b.to_numpy(b.multinomial(b.array([1.0, 1.0, 1.0]), 3, key=0))
    assert sorted(perm.tolist()) == [0, 1, 2]  # without replacement: each index once


@pytest.mark.parametrize("name,dtype", AUTODIFF, ids=[f"{b}-{d}" for b, d in AUTODIFF])
def test_transformations_equal_analytic_derivatives(name: str, dtype: str) -> None:
    b = make(name, dtype)
    w0, x0 = np.array([0.5, -1.0, 2.0]), np.array([1.5, 2.0, -0.5])
    params = {"w": b.array(w0), "x": b.array(x0)}

    def loss(p: dict[str, Any]) -> Any:
        return (p["w"] * p["w"] * p["x"]).sum()

    grads = b.grad(loss)(params)
    np.testing.assert_allclose(b.to_numpy(grads["w"]), 2 * w0 * x0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(grads["x"]), w0 ** 2, **tol(dtype))
    value, grads = b.value_and_grad(loss)(params)
    assert float(b.to_numpy(value)) == pytest.approx(float((w0 ** 2 * x0).sum()), rel=1e-6)
    np.testing.assert_allclose(b.to_numpy(grads["w"]), 2 * w0 * x0, **tol(dtype))

    # vjp with dict primals: fn(primals) -> dict; the cotangent pulled back
    cot = np.array([1.0, 2.0, 3.0])
    out, vjp, aux = b.vjp(lambda p: {"y": b.sin(p["w"]) * p["x"]}, {"w": params["w"],
                                                                     "x": params["x"]},
                          cotangents={"y": b.array(cot)})
    np.testing.assert_allclose(b.to_numpy(out["y"]), np.sin(w0) * x0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(vjp["w"]), cot * np.cos(w0) * x0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(vjp["x"]), cot * np.sin(w0), **tol(dtype))
    assert aux == {}
    # list primals, no cotangents: the pullback; has_aux: (output, aux) from fn
    out, pull, aux = b.vjp(lambda w, x: (w * x, {"s": w * 3}), [params["w"], params["x"]],
                           has_aux=True)
    gw, gx = pull(b.array(cot))
    np.testing.assert_allclose(b.to_numpy(gw), cot * x0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(gx), cot * w0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(aux["s"]), 3 * w0, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(out), w0 * x0, **tol(dtype))

    jitted = b.jit(lambda a: b.sin(a) * 2)
    np.testing.assert_allclose(b.to_numpy(jitted(params["w"])), 2 * np.sin(w0), **tol(dtype))
    batched = b.vmap(lambda row: (row * row).sum())(b.array(X))
    np.testing.assert_allclose(b.to_numpy(batched), (X * X).sum(1), **tol(dtype))
    if name != "mlx":
        jac = b.to_numpy(b.jacrev(lambda a: a * a)(params["w"]))
        np.testing.assert_allclose(jac, np.diag(2 * w0), **tol(dtype))
        np.testing.assert_allclose(b.to_numpy(b.jacfwd(lambda a: a * a)(params["w"])), jac,
                                   **tol(dtype))
        np.testing.assert_allclose(b.to_numpy(b.jacobian(lambda a: a * a)(params["w"])), jac,
                                   **tol(dtype))


def test_numpy_has_no_autodiff_transformations() -> None:
    b = ml.NumpyBackend()
    for name in ("grad", "value_and_grad", "vmap", "jacrev"):
        with pytest.raises(BackendUnavailableError, match=f"NumpyBackend.{name}"):
            getattr(b, name)(lambda x: x)
    with pytest.raises(BackendUnavailableError, match="output_gradients"):
        b.vjp(lambda x: x, [b.ones(2)])
    f = lambda x: x + 1  # noqa: E731
    assert b.jit(f) is f  # NumPy has no JIT


def test_top_level_and_types_names() -> None:
    import mithril.types as mt
    from mithril import models

    assert (ml.int, ml.float, ml.bool, ml.double, ml.short, ml.long, ml.half) == (
        ml.int32, ml.float32, ml.bool_, ml.float64, ml.int16, ml.int64, ml.float16)
    assert (mt.int, mt.float, mt.bool, mt.double) == (ml.int32, ml.float32, ml.bool_,
                                                      ml.float64)
    assert ml.PhysicalModel is ml.CompiledModel and ml.Model is models.Model
    assert ml.TrainModel is models.TrainModel and ml.Tensor is models.Tensor is mt.Tensor
    for bits, np_type in ((16, np.float16), (32, np.float32), (64, np.float64)):
        table = ml.epsilon_table[bits]
        assert table[ml.Constant.EPSILON] == float(np.finfo(np_type).eps)
        assert table[ml.Constant.MIN_POSITIVE_NORMAL] == float(np.finfo(np_type).tiny)
    assert ml.epsilon_table[64][ml.Constant.LEFT_EPSILON] == 2.0 ** -53
    with pytest.raises(AttributeError):
        _ = mt.nothing


def test_tensor_constant_and_type() -> None:
    b = ml.NumpyBackend(dtype=ml.float64)
    m = Model()
    m |= Add()(left="x", right=ml.Tensor([[1.0, 2.0]]), output=ml.IOKey("y"))
    m.set_types(x=ml.Tensor[float])
    pm = ml.compile(m, b, shapes={"x": [3, 2]})
    assert pm.input_keys == {"x"}
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(pm.evaluate({}, {"x": x})["y"], x + np.array([[1.0, 2.0]]))
    assert ml.Tensor([1, 2], dtype=ml.int32).dtype == np.int32
    assert ml.Tensor[int | float].__args__ == (int | float,)
    # without a value: the reference's tensor slot, an element of a tuple value (issue 14)
    assert repr(ml.Tensor()) == "Tensor()" and not isinstance(ml.Tensor(), np.ndarray)
    with pytest.raises(ml.ArgumentError, match="does not match"):
        ml.Tensor([1.0, 2.0], shape=[3])
