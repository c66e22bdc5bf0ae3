"""Backend edge cases: arrays moved between frameworks in every precision, JAX's eager fallback
for untraceable models, explicit random keys (``evaluate(..., rng=)``), and what
``compiled.jit`` reports.

Every expectation is computed from real behaviour: a framework's own conversion of its array,
the same model compiled with ``jit=False``, or the same call repeated.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import mlx.core as mx
import numpy as np
import pytest
import torch

import mithril as ml
from mithril import IOKey
from mithril.models import Dropout, Item, Linear, Model, Relu, Unique
from tests.backend_names import BACKENDS, backend_of


@pytest.fixture(autouse=True)
def _jax_x64():
    """64-bit JAX source arrays (int64) and the user's own jax.jit of float64 models need x64,
    which a user turns on (a JaxBackend changes nothing process-wide)."""
    with jax.enable_x64(True):
        yield


def _unscoped(fn: Any) -> Any:
    """What a float64 JAX backend runs inside its ``jax.enable_x64`` wrapper."""
    return getattr(fn, "x64_scoped", fn)


# ==============================================================================================
# backend.array of every framework's arrays, in every precision
# ==============================================================================================
SOURCE_DTYPES = {"numpy": ["float16", "float32", "int64"],
                 "torch": ["float16", "bfloat16", "float32", "int64"],
                 "jax": ["float16", "bfloat16", "float32", "int64"],
                 "mlx": ["float16", "bfloat16", "float32", "int64"]}
CASES = [(src, dt, tgt) for src, dts in SOURCE_DTYPES.items() for dt in dts for tgt in BACKENDS]


def _float_values(dtype: str) -> np.ndarray:
    """float64 values spanning the dtype: normals of many magnitudes, the extremes (largest
    finite, smallest normal and subnormal), signed zeros, infinities and NaN."""
    info = torch.finfo(getattr(torch, dtype))
    rng = np.random.default_rng(0)
    normal = rng.standard_normal(24) * np.exp2(rng.integers(-20, 20, 24))
    special = [0.0, -0.0, 1.0, -1.0, info.max, -info.max, info.tiny, -info.tiny,
               info.tiny * info.eps, -info.tiny * info.eps, np.inf, -np.inf, np.nan]
    return np.concatenate([normal, special])


def _int_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.integers(-(2**62), 2**62, 16),
                           [0, 1, -1, 2**62 + 1, -(2**62) - 1, 2**53 + 1]]).astype(np.int64)


def _source(framework: str, dtype: str) -> Any:
    """An array of ``framework`` in ``dtype`` (values rounded by that framework itself)."""
    values = _int_values() if dtype == "int64" else _float_values(dtype)
    if framework == "numpy":
        return values.astype(dtype)
    if framework == "torch":
        return torch.tensor(values).to(getattr(torch, dtype))
    if framework == "jax":
        return jnp.asarray(values).astype(getattr(jnp, dtype))
    return mx.array(values).astype(getattr(mx, dtype))  # float64 -> mlx float32 -> dtype


def _reference(framework: str, x: Any) -> np.ndarray:
    """``x``'s values as the source framework itself converts them (float64 or int64)."""
    if framework == "numpy":
        return x.astype(np.float64) if x.dtype.kind == "f" else x
    if framework == "torch":
        return x.to(torch.float64 if x.is_floating_point() else torch.int64).numpy()
    if framework == "jax":
        return np.asarray(x.astype(jnp.float64 if jnp.issubdtype(x.dtype, jnp.floating)
                                   else jnp.int64))
    if mx.issubdtype(x.dtype, mx.floating):
        return np.array(x.astype(mx.float32)).astype(np.float64)  # float32 holds them all
    return np.array(x)


def _assert_same_values(got: np.ndarray, want: np.ndarray) -> None:
    got64 = got.astype(want.dtype)
    nan = np.isnan(want) if want.dtype.kind == "f" else np.zeros(want.shape, bool)
    assert np.array_equal(np.isnan(got64) if want.dtype.kind == "f" else nan, nan)
    np.testing.assert_array_equal(got64[~nan], want[~nan])
    if want.dtype.kind == "f":  # -0.0 stays -0.0
        np.testing.assert_array_equal(np.signbit(got64[~nan]), np.signbit(want[~nan]))


def _supports(target: str, dtype: str) -> bool:
    return not (target == "numpy" and dtype == "bfloat16")


@pytest.mark.parametrize(("source", "dtype", "target"), CASES,
                         ids=[f"{s}-{d}-to-{t}" for s, d, t in CASES])
def test_array_of_any_framework_keeps_values_exactly(source: str, dtype: str,
                                                     target: str) -> None:
    """``backend.array(x)`` of a ``source`` array: floats take the backend's dtype (float64,
    float32) or the requested one, ints stay int64; no value, infinity, NaN or -0.0 changes."""
    x = _source(source, dtype)
    want = _reference(source, x)
    is_float = dtype != "int64"
    for backend_dtype in ("float64", "float32"):
        b = backend_of(target, backend_dtype)
        y = b.array(x)
        expected = getattr(ml, backend_dtype) if is_float else ml.int64
        assert y.dtype == b.array_dtype(expected), (y.dtype, expected)
        _assert_same_values(b.to_numpy(y), want)
    if is_float and _supports(target, dtype):
        # the source's own precision, requested or as the backend's dtype: bit for bit
        for y, b in ((backend_of(target).array(x, dtype=getattr(ml, dtype)), backend_of(target)),
                     (backend_of(target, dtype).array(x), backend_of(target, dtype))):
            assert y.dtype == b.array_dtype(getattr(ml, dtype))
            _assert_same_values(b.to_numpy(y), want)


@pytest.mark.parametrize("target", BACKENDS)
def test_array_of_bfloat16_to_a_backend_without_it(target: str) -> None:
    """bfloat16 is requested where the backend has none (NumPy): the backend's own error."""
    x = torch.ones(2, dtype=torch.bfloat16)
    b = backend_of(target)
    if _supports(target, "bfloat16"):
        assert b.array(x, dtype=ml.bfloat16).dtype == b.array_dtype(ml.bfloat16)
    else:
        with pytest.raises(ml.ArgumentTypeError, match="NumPy has no bfloat16"):
            b.array(x, dtype=ml.bfloat16)


# ==============================================================================================
# JAX: models jax.jit cannot trace run eagerly, with one warning
# ==============================================================================================
def _item_model() -> tuple[Model, dict[str, list[int]], str]:
    m = Model()
    m |= Linear(1)(input="input", output=IOKey("hidden", expose=True))
    m |= Item()(input="hidden", output=IOKey("output", expose=True))
    return m, {"input": [1, 3]}, "ConcretizationTypeError"


def _unique_model() -> tuple[Model, dict[str, list[int]], str]:
    m = Model()
    m |= Linear(2)(input="input", output=IOKey("hidden", expose=True))
    m |= Unique()(input="hidden", output=IOKey("output", expose=True))
    return m, {"input": [3, 3]}, "ConcretizationTypeError"


def _to_numpy_tree(b: Any, tree: dict[str, Any]) -> dict[str, Any]:
    return {k: b.to_numpy(v) if hasattr(v, "shape") else v for k, v in tree.items()}


@pytest.mark.parametrize("make", [_item_model, _unique_model], ids=["item", "unique"])
def test_jax_untraceable_model_runs_eagerly_with_one_warning(make: Any) -> None:
    model, shapes, reason = make()
    b = ml.JaxBackend(dtype=ml.float64)
    jitted = ml.compile(model, b, shapes=shapes)
    eager = ml.compile(model, b, shapes=shapes, jit=False)
    params = jitted.randomize_params(seed=0)
    x = b.randn(*shapes["input"])
    seed = b.ones(*jitted.shapes["hidden"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [jitted.evaluate(params, {"input": x}) for _ in range(3)]
        grads = [jitted.evaluate(params, {"input": x}, {"hidden": seed}) for _ in range(2)]
    fallback = [w for w in caught if w.category is RuntimeWarning]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    message = str(fallback[0].message)
    assert reason in message and "jit=False" in message and "jax.jit" in message
    assert fallback[0].filename == __file__  # points at the evaluate call
    want = eager.evaluate(params, {"input": x})
    want_out, want_grads = eager.evaluate(params, {"input": x}, {"hidden": seed})
    for out in runs:
        got = _to_numpy_tree(b, out)
        np.testing.assert_array_equal(np.asarray(got["output"]),
                                      np.asarray(_to_numpy_tree(b, want)["output"]))
    for out, g in grads:
        assert np.array_equal(np.asarray(_to_numpy_tree(b, out)["output"]),
                              np.asarray(_to_numpy_tree(b, want_out)["output"]))
        for k, v in _to_numpy_tree(b, want_grads).items():
            np.testing.assert_array_equal(b.to_numpy(g[k]), v)
    # settled on the plain functions: no wrapper left in the way
    assert _unscoped(jitted._forward) is jitted._raw_forward
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager.evaluate(params, {"input": x})  # jit=False: no warning


def test_jax_traceable_model_calls_jax_jit_directly() -> None:
    """The fast path is jax.jit's own function after the first call (no Python wrapper), and
    a first call inside the caller's jax.jit settles it too."""
    m = Model()
    m |= Linear(4)(input_size=3)
    m += Relu()
    b = ml.JaxBackend(dtype=ml.float64)
    reference = ml.compile(m, b, jit=False)
    params = reference.randomize_params(seed=0)
    x = b.randn(5, 3)
    plain_jit_type = type(jax.jit(lambda v: v))
    for first_inside_user_jit in (False, True):
        pm = ml.compile(m, b)
        assert not isinstance(_unscoped(pm._forward), plain_jit_type)  # decides at first call
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            if first_inside_user_jit:
                out = jax.jit(lambda p: pm.evaluate(p, {"input": x}))(params)
            else:
                out = pm.evaluate(params, {"input": x})
            _, grads = pm.evaluate(params, {"input": x}, {"output": b.ones(5, 4)})
        assert isinstance(_unscoped(pm._forward), plain_jit_type)
        assert isinstance(_unscoped(pm._grad_fn), plain_jit_type)
        np.testing.assert_allclose(b.to_numpy(out["output"]),
                                   b.to_numpy(reference.evaluate(params, {"input": x})["output"]),
                                   rtol=1e-12)
        _, want = reference.evaluate(params, {"input": x}, {"output": b.ones(5, 4)})
        for k in want:
            np.testing.assert_allclose(b.to_numpy(grads[k]), b.to_numpy(want[k]), rtol=1e-12)


def test_jax_untraceable_model_first_called_inside_user_jit() -> None:
    """Inside the caller's jax.jit the model cannot run at all (JAX's own error); the next
    call outside still falls back to eager execution."""
    model, shapes, _ = _item_model()
    b = ml.JaxBackend(dtype=ml.float64)
    pm = ml.compile(model, b, shapes=shapes)
    params, x = pm.randomize_params(seed=0), b.randn(1, 3)
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.jit(lambda p: pm.evaluate(p, {"input": x})["hidden"])(params)
    with pytest.warns(RuntimeWarning, match="jax.jit cannot trace"):
        out = pm.evaluate(params, {"input": x})
    want = ml.compile(model, b, shapes=shapes, jit=False).evaluate(params, {"input": x})
    assert out["output"] == want["output"]


# ==============================================================================================
# Explicit random state: evaluate(..., rng=)
# ==============================================================================================
def _rng(name: str, seed: int) -> Any:
    if name == "numpy":
        return np.random.default_rng(seed)
    if name == "torch":
        return torch.Generator().manual_seed(seed)
    if name == "jax":
        return jax.random.key(seed)
    return mx.random.key(seed)


@pytest.mark.parametrize("name", BACKENDS)
def test_evaluate_with_an_explicit_rng(name: str) -> None:
    """The same rng gives the same mask; the backend's own random state is not used."""
    b = backend_of(name)
    m = Model()
    m |= Dropout(0.5)
    pm = ml.compile(m, b, shapes={"input": [64]})
    ones = b.ones(64)

    def mask(**kw: Any) -> np.ndarray:
        return b.to_numpy(pm.evaluate({}, {"input": ones}, **kw)["output"])

    b.set_seed(3)
    backend_draws = [mask(), mask()]
    b.set_seed(3)
    first = mask(rng=_rng(name, 11))
    np.testing.assert_array_equal(first, mask(rng=_rng(name, 11)))
    assert not np.array_equal(first, mask(rng=_rng(name, 12)))
    assert set(np.unique(first)) <= {0.0, 2.0}
    # the explicit calls left the backend's sequence where set_seed put it
    np.testing.assert_array_equal(mask(), backend_draws[0])
    np.testing.assert_array_equal(mask(), backend_draws[1])


def test_jax_rng_inside_user_jit_gives_a_mask_per_key() -> None:
    b = ml.JaxBackend()
    m = Model()
    m |= Dropout(0.5)
    pm = ml.compile(m, b, shapes={"input": [64]})
    ones = b.ones(64)
    step = jax.jit(lambda x, key: pm.evaluate({}, {"input": x}, rng=key)["output"])
    a, b2, a2 = (step(ones, jax.random.key(k)) for k in (1, 2, 1))
    assert not bool((a == b2).all()) and bool((a == a2).all())
    # the same masks as outside jax.jit with the same keys
    assert bool((a == pm.evaluate({}, {"input": ones}, rng=jax.random.key(1))["output"]).all())
    # without rng=, the key taken while tracing is a constant of the jitted function
    implicit = jax.jit(lambda x: pm.evaluate({}, {"input": x})["output"])
    assert bool((implicit(ones) == implicit(ones)).all())


# ==============================================================================================
# compiled.jit reports the JIT that runs
# ==============================================================================================
@pytest.mark.parametrize("name", BACKENDS)
def test_compiled_jit_reports_whether_a_jit_runs(name: str) -> None:
    m = Model()
    m |= Linear(2)(input_size=3)
    b = backend_of(name)
    for jit in (None, True, False):
        pm = ml.compile(m, b, jit=jit)
        wrapped = _unscoped(pm._forward) is not pm._raw_forward
        assert pm.jit is wrapped
        if name == "numpy":
            assert pm.jit is False  # NumPy has no JIT, whatever jit= says
        else:
            assert pm.jit is (b.default_jit if jit is None else jit)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "mlx"])
def test_to_numpy_returns_a_writable_copy(name: str) -> None:
    """``to_numpy`` gives a NumPy array the caller owns: writable, and writing to it leaves the
    backend's array unchanged."""
    b = backend_of(name, ml.float32)
    x = b.array(np.arange(6, dtype=np.float32).reshape(2, 3))
    out = b.to_numpy(x)
    assert isinstance(out, np.ndarray) and out.flags.writeable
    out[0, 0] = 100.0
    np.testing.assert_array_equal(b.to_numpy(x), np.arange(6, dtype=np.float32).reshape(2, 3))
