"""``Dropout`` on every backend: statistics, seeding, fresh masks, inference, gradients.

Training behaviour is ``ml.compile(model, backend)`` (a fresh mask from the backend's random
state on each ``evaluate``); ``ml.compile(..., inference=True)`` is the identity. Models are
compiled with each backend's default JIT setting (on for JAX and MLX).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.models import Dropout, Model

BACKENDS = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}
N = 200_000  # elements per mask: the zeroed fraction is within ~0.0011 (1 sigma) of p


def dropout_model(p: float) -> Model:
    model = Model()
    model |= Dropout(p)
    return model


def compile_for(name: str, p: float, shape: tuple[int, ...] = (N,), seed: int = 0,
                **kw: Any) -> tuple[Any, Any]:
    backend = BACKENDS[name](dtype=kw.pop("dtype", ml.float32))
    backend.set_seed(seed)
    return backend, ml.compile(dropout_model(p), backend, shapes={"input": list(shape)}, **kw)


def mask_of(backend: Any, pm: Any, n: int = N) -> np.ndarray:
    """The scaled keep mask of one call: dropout of ones."""
    return backend.to_numpy(pm.evaluate({}, {"input": backend.ones(n)})["output"])


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_statistics(backend_name: str, p: float) -> None:
    backend, pm = compile_for(backend_name, p)
    out = mask_of(backend, pm).astype(np.float64)
    zeroed = out == 0
    assert abs(zeroed.mean() - p) < 0.006, f"zeroed fraction {zeroed.mean():.4f} vs p={p}"
    np.testing.assert_allclose(out[~zeroed], 1 / (1 - p), rtol=1e-6)  # kept: scaled by 1/(1-p)
    # the mean is preserved: E[out] = 1 (std of one element is sqrt(p / (1 - p)))
    assert abs(out.mean() - 1) < 5 * np.sqrt(p / (1 - p) / N)
    # on data: kept values are the input scaled, and the mean is preserved
    x = np.random.default_rng(0).uniform(1, 3, N).astype(np.float32)
    y = backend.to_numpy(pm.evaluate({}, {"input": backend.array(x)})["output"])
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert abs(y.mean() - x.mean()) < 5 * np.sqrt(p / (1 - p) * np.mean(x * x) / N)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_seed_makes_masks_reproducible_and_calls_draw_fresh_masks(backend_name: str) -> None:
    backend, pm = compile_for(backend_name, 0.5, (1000,), seed=7)
    first, second = mask_of(backend, pm, 1000), mask_of(backend, pm, 1000)
    assert not np.array_equal(first, second), "two calls drew the same mask"
    backend.set_seed(7)
    np.testing.assert_array_equal(mask_of(backend, pm, 1000), first)
    np.testing.assert_array_equal(mask_of(backend, pm, 1000), second)
    other, pm_other = compile_for(backend_name, 0.5, (1000,), seed=8)
    assert not np.array_equal(mask_of(other, pm_other, 1000), first), "seed ignored"


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_two_dropouts_in_one_model_draw_different_masks(backend_name: str) -> None:
    model = Model()
    model |= Dropout(0.5)(input="input", output="a")
    model |= Dropout(0.5)(input="input", output="b")
    backend = BACKENDS[backend_name]()
    backend.set_seed(0)
    pm = ml.compile(model, backend, shapes={"input": [1000]})
    out = pm.evaluate({}, {"input": backend.ones(1000)})
    assert not np.array_equal(backend.to_numpy(out["a"]), backend.to_numpy(out["b"]))


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_inference_is_the_identity(backend_name: str, p: float) -> None:
    backend, pm = compile_for(backend_name, p, (3, 50), inference=True)
    x = np.random.default_rng(1).standard_normal((3, 50)).astype(np.float32)
    for _ in range(2):
        out = backend.to_numpy(pm.evaluate({}, {"input": backend.array(x)})["output"])
        np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_p_zero_trains_as_the_identity(backend_name: str) -> None:
    backend, pm = compile_for(backend_name, 0.0, (4, 25))
    x = np.random.default_rng(2).standard_normal((4, 25)).astype(np.float32)
    np.testing.assert_array_equal(
        backend.to_numpy(pm.evaluate({}, {"input": backend.array(x)})["output"]), x)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("p", [0.25, 0.6])
def test_gradient_is_the_same_mask_times_the_output_gradient(backend_name: str,
                                                             p: float) -> None:
    shape = (8, 500)
    backend, pm = compile_for(backend_name, p, shape, dtype=ml.float64,
                              trainable_keys={"input"})
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, shape)  # never zero: the mask is output / input
    g = rng.standard_normal(shape)
    masks = []
    for _ in range(2):  # each call: a new mask, and the gradient uses that call's mask
        out, grads = pm.evaluate({"input": backend.array(x)}, {},
                                 output_gradients={"output": backend.array(g)})
        mask = backend.to_numpy(out["output"]) / x
        assert set(np.round(np.unique(mask), 9)) <= {0.0, round(1 / (1 - p), 9)}
        np.testing.assert_allclose(backend.to_numpy(grads["input"]), mask * g, rtol=1e-12,
                                   atol=1e-12)
        masks.append(mask)
    assert not np.array_equal(masks[0], masks[1])


def test_rejects_probabilities_outside_zero_one() -> None:
    for p in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="probability"):
            Dropout(p)
