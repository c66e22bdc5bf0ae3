"""The guide's models on all four backends: same parameters, same numbers; snippets run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from tests.guide_models import create_conv_net, create_residual_block
from tests.guide_snippets import GUIDE, SPEC, blocks, for_backend

BACKENDS = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
            "mlx": "MlxBackend"}


def make(name: str, dtype: Any = ml.float32) -> Any:
    return getattr(ml, BACKENDS[name])(dtype=dtype)


def assert_close(actual: np.ndarray, desired: np.ndarray, tol: float = 1e-5, what: str = "",
                 scale: float | None = None):
    """Within ``tol`` relative to ``scale`` (default: the tensor's own magnitude, at least 1).

    float32 sums round at ~1e-7 of the magnitude of their terms, so a gradient whose exact
    value is 0 (a conv bias before BatchNorm) carries noise of the size of the other
    gradients: those are compared relative to the model's overall gradient scale.
    """
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(desired))))
    err = float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - desired)))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x scale {scale:.3g}"


def _run(name: str, model_fn, shapes, jit: bool, seed: int = 0):
    backend = make(name)
    pm = ml.compile(model_fn(), backend, shapes=shapes, jit=jit)
    ref = ml.compile(model_fn(), make("numpy"), shapes=shapes)
    params = {k: backend.array(np.asarray(v)) for k, v in ref.randomize_params(seed=seed).items()}
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shapes["input"]).astype(np.float32)
    out_shape = ref.shapes["output"]
    g = rng.standard_normal(out_shape).astype(np.float32)
    outs, grads = pm.evaluate(params, {"input": backend.array(x)},
                              output_gradients={"output": backend.array(g)})
    to_np = backend.to_numpy
    return to_np(outs["output"]), {k: to_np(v) for k, v in grads.items()}, \
        {k: to_np(v) for k, v in pm.state.items()}


MODELS = {
    "convnet": (create_conv_net, {"input": [8, 3, 32, 32]}),
    "resnet_same": (lambda: create_residual_block(8, 8), {"input": [4, 8, 10, 10]}),
    "resnet_down": (lambda: create_residual_block(8, 16), {"input": [4, 8, 10, 10]}),
}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("backend_name", ["torch", "jax", "mlx"])
def test_same_outputs_gradients_and_state_as_numpy(model_name, backend_name):
    model_fn, shapes = MODELS[model_name]
    ref_out, ref_grads, ref_state = _run("numpy", model_fn, shapes, jit=False)
    out, grads, state = _run(backend_name, model_fn, shapes, jit=False)
    assert_close(out, ref_out, what="output")
    assert set(grads) == set(ref_grads)
    overall = max(float(np.max(np.abs(g))) for g in ref_grads.values())
    for k in ref_grads:
        assert_close(grads[k], ref_grads[k], what=k, scale=max(1.0, overall))
    for k in ref_state:
        assert_close(state[k], ref_state[k], what=k)


@pytest.mark.parametrize("backend_name", ["jax", "mlx"])
def test_jit_and_eager_agree(backend_name):
    model_fn, shapes = MODELS["convnet"]
    out_j, grads_j, _ = _run(backend_name, model_fn, shapes, jit=True)
    out_e, grads_e, _ = _run(backend_name, model_fn, shapes, jit=False)
    assert_close(out_j, out_e, what="output")
    for k in grads_e:
        assert_close(grads_j[k], grads_e[k], what=k)


@pytest.mark.parametrize("backend_name", ["jax", "mlx"])
def test_jit_recompiles_for_new_shapes(backend_name):
    backend = make(backend_name)
    pm = ml.compile(create_conv_net(), backend, jit=True)
    params = pm.randomize_params()
    for n in (2, 5, 2):
        x = backend.randn(n, 3, 32, 32)
        assert tuple(pm.evaluate(params, {"input": x})["output"].shape) == (n, 10)


def test_guide_copy_matches_spec():
    # the spec lives beside the repository (../shared/spec) in development and in CI: without
    # it this check would pass having compared nothing
    assert SPEC.exists(), f"the user spec {SPEC} is missing: it is at ../shared/spec in CI"
    assert GUIDE.read_text() == SPEC.read_text()


MITHRIL_SECTIONS = ["Mithril Style", "Mithril Composition", "Mithril ResNet Block",
                    "Mithril Custom Model", "Mithril Device Placement"]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_guide_snippets_run_on_every_backend(backend_name):
    """The guide's Mithril snippets that need no training or saving, run as written."""
    code = {heading: c for heading, c in blocks()}
    assert set(MITHRIL_SECTIONS) <= set(code)
    ns: dict[str, Any] = {}
    for section in MITHRIL_SECTIONS:
        exec(for_backend(code[section], BACKENDS[backend_name]), ns)  # the guide's own code
        if section == "Mithril Style":
            assert tuple(ns["output"].shape) == (32, 10)
        if section == "Mithril ResNet Block":
            for cin, cout in ((16, 16), (16, 32)):
                block = ns["create_residual_block"](cin, cout)
                pm = ml.compile(block, ns["backend"], shapes={"input": [2, cin, 8, 8]})
                out = pm.evaluate(pm.randomize_params(), {"input": ns["backend"].randn(
                    2, cin, 8, 8)})["output"]
                assert tuple(out.shape) == (2, cout, 8, 8)
        if section == "Mithril Custom Model":
            unet = ns["create_unet"]()
            pm = ml.compile(unet, ns["backend"], shapes={"input": [1, 3, 8, 8]})
            out = pm.evaluate(pm.randomize_params(), {"input": ns["backend"].randn(1, 3, 8, 8)})
            assert tuple(out["down2"].shape) == (1, 128, 8, 8)
    # Device Placement: compiled without shapes; the guide's inputs then run
    out = ns["compiled_model"].evaluate(ns["compiled_model"].randomize_params(), ns["inputs"])
    assert tuple(out["output"].shape) == (32, 10)


def test_torch_compile_jit_agrees_with_eager():
    """jit=True on PyTorch really runs torch.compile (or falls back with a warning)."""
    import warnings

    from tests.guide_models import create_sequential

    shapes = {"input": [4, 3, 32, 32]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fallback is allowed, not an error
        out_j, grads_j, _ = _run("torch", create_sequential, shapes, jit=True)
    out_e, grads_e, _ = _run("torch", create_sequential, shapes, jit=False)
    assert_close(out_j, out_e, what="output")
    for k in grads_e:
        assert_close(grads_j[k], grads_e[k], what=k)
