"""Many calls, and the same seed twice: memory stays flat, results stay exact and reproducible.

- Stress: 10,000 ``evaluate`` calls of a small compiled model with varying batch sizes on each
  backend (every fourth call with gradients, JAX and MLX jitted as by default). Results equal
  the first result for that batch size bit for bit, which itself equals a NumPy float64
  reference; the resident set size after a warm-up grows by less than a few MB.
- Determinism: ``backend.set_seed`` fixes ``randomize_params`` and the dropout masks on every
  backend, run after run, and in fresh Python processes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.models import Dropout, Linear, Model, Softmax, Tanh
from tests.backend_names import BACKENDS, backend_of

CALLS = 10_000
WARM_UP = 1_000
BATCHES = (1, 2, 3, 5, 8)
MAX_GROWTH_MB = 4.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def rss_mb() -> float:
    """Resident set size of this process in MB (``/proc/self/statm``; ``resource`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux: the peak, which cannot shrink
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def small_model() -> Model:
    m = Model()
    m |= Linear(8)(input_size=6)
    m += Tanh()
    m += Linear(4)
    m += Softmax(dim=-1)
    return m


def numpy_reference(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.tanh(x @ params["linear.weight"].T + params["linear.bias"])
    z = h @ params["linear_1.weight"].T + params["linear_1.bias"]
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def first_weight_gradient(params: dict[str, np.ndarray], x: np.ndarray, g: np.ndarray
                          ) -> np.ndarray:
    """d<g, model(x)>/d linear.weight in float64, by hand (softmax, tanh and linear VJPs)."""
    h = np.tanh(x @ params["linear.weight"].T + params["linear.bias"])
    y = numpy_reference(params, x)
    dz = y * (g - (g * y).sum(-1, keepdims=True))
    dh = dz @ params["linear_1.weight"]
    return (dh * (1 - h * h)).T @ x


@pytest.fixture
def one_torch_thread() -> Any:
    """PyTorch's intra-op threads spin on a busy 2-core machine (pytest-xdist, another job):
    a tiny model then takes 10-20 ms per call instead of 0.1 ms. One thread for the loop."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", BACKENDS)
def test_ten_thousand_calls_keep_memory_flat_and_results_exact(name: str,
                                                               one_torch_thread: Any) -> None:
    b = backend_of(name, ml.float32)
    pm = ml.compile(small_model(), b)  # any batch size; JAX / MLX jit by default
    params = pm.randomize_params(seed=0)
    params64 = {k: b.to_numpy(v).astype(np.float64) for k, v in params.items()}
    rng = np.random.default_rng(0)
    inputs = {n: b.array(rng.standard_normal((n, 6)).astype(np.float32)) for n in BATCHES}
    # random output gradients: all-ones ones would give zero gradients (softmax rows sum to 1)
    grads_np = {n: rng.standard_normal((n, 4)).astype(np.float32) for n in BATCHES}
    grads_in = {n: b.array(grads_np[n]) for n in BATCHES}
    first: dict[tuple[int, bool], list[np.ndarray]] = {}
    start_rss = 0.0
    t0 = time.perf_counter()
    for i in range(CALLS):
        n = BATCHES[i % len(BATCHES)]
        with_grads = i % 4 == 3
        if with_grads:
            out, grads = pm.evaluate(params, {"input": inputs[n]},
                                     output_gradients={"output": grads_in[n]})
            got = [b.to_numpy(out["output"]), b.to_numpy(grads["linear.weight"])]
        else:
            got = [b.to_numpy(pm.evaluate(params, {"input": inputs[n]})["output"])]
        key = (n, with_grads)
        if key not in first:
            ref = numpy_reference(params64, b.to_numpy(inputs[n]).astype(np.float64))
            np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-6)
            if with_grads:
                want = first_weight_gradient(params64, b.to_numpy(inputs[n]).astype(np.float64),
                                             grads_np[n].astype(np.float64))
                assert np.max(np.abs(want)) > 1e-2  # a gradient that can be wrong
                np.testing.assert_allclose(got[1], want, rtol=1e-4, atol=1e-5)
            first[key] = got
        else:
            for a, e in zip(got, first[key], strict=True):
                assert np.array_equal(a, e), f"call {i}: result changed for batch {n}"
        if i == WARM_UP:
            start_rss = rss_mb()
    elapsed = time.perf_counter() - t0
    growth = rss_mb() - start_rss
    print(f"{name}: {CALLS} calls in {elapsed:.1f} s, RSS growth after warm-up {growth:.2f} MB")
    assert growth < MAX_GROWTH_MB, f"RSS grew by {growth:.1f} MB over {CALLS - WARM_UP} calls"


# ==============================================================================================
# Determinism
# ==============================================================================================
def dropout_model() -> Model:
    m = Model()
    m |= Linear(5)(input_size=3)
    m += Dropout(0.5)
    return m


def draw(name: str, seed: int, jit: bool | None = None) -> dict[str, list[Any]]:
    """Parameters and two dropout masks after ``backend.set_seed(seed)``, as plain lists."""
    b = backend_of(name, ml.float64)
    pm = ml.compile(dropout_model(), b, shapes={"input": [4, 3]}, jit=jit)
    b.set_seed(seed)
    params = pm.randomize_params()
    x = b.ones(4, 3)
    masks = [b.to_numpy(pm.evaluate(params, {"input": x})["output"]) for _ in range(2)]
    return {"params": [b.to_numpy(params[k]).tolist() for k in sorted(params)],
            "masks": [(m != 0).tolist() for m in masks]}


@pytest.mark.parametrize("name", BACKENDS)
def test_same_seed_same_parameters_and_masks(name: str) -> None:
    a, again = draw(name, 123), draw(name, 123)
    assert a == again
    assert a["masks"][0] != a["masks"][1], "two calls drew the same mask"
    other = draw(name, 124)
    assert other["params"] != a["params"] and other["masks"] != a["masks"]
    assert draw(name, 123, jit=False) == a, "jit changes the random numbers"


def test_parameters_are_the_same_on_every_backend() -> None:
    """randomize_params draws in float64 NumPy: identical values on every backend."""
    ref = draw("numpy", 7)["params"]
    for name in BACKENDS[1:]:
        np.testing.assert_array_equal(np.concatenate([np.ravel(p) for p in
                                                      draw(name, 7)["params"]]),
                                      np.concatenate([np.ravel(p) for p in ref]), err_msg=name)


def test_randomize_params_with_a_seed_ignores_the_backend_state() -> None:
    b = backend_of("torch", ml.float64)
    pm = ml.compile(dropout_model(), b, shapes={"input": [4, 3]})
    b.set_seed(1)
    first = pm.randomize_params(seed=5)
    b.set_seed(2)
    b.randn(3)
    second = pm.randomize_params(seed=5)
    for k in first:
        np.testing.assert_array_equal(b.to_numpy(first[k]), b.to_numpy(second[k]))


_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests.test_stress import draw
print(json.dumps({{name: draw(name, 123) for name in {names!r}}}))
"""


def test_same_seed_in_fresh_processes() -> None:
    """Two fresh interpreters (different hash seeds) draw what this process draws."""
    here = {name: draw(name, 123) for name in BACKENDS}
    script = _SCRIPT.format(root=ROOT, names=BACKENDS)
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == json.loads(json.dumps(here))
