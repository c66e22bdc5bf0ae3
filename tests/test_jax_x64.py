"""Issue 16, point 4: a ``JaxBackend`` changes nothing process-wide.

A float32 backend leaves JAX's ``jax_enable_x64`` as the user set it (JAX's own defaults stay
float32 after the backend has run a model, trained it and applied an optimizer); a float64
backend computes in float64 inside its own calls only (compared with NumPy float64 at 1e-12),
and the user's own ``jax.jit`` of a float64 model asks for x64 explicitly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mithril as ml
from mithril.framework.physical.fused import train_step
from tests.guide_models import create_conv_net

SHAPES = {"input": [4, 3, 32, 32]}


@pytest.fixture(autouse=True)
def _user_default():
    """The user's process: JAX's default (x64 off), whatever other test modules did."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", previous)


def _assert_user_defaults() -> None:
    assert not jax.config.read("jax_enable_x64")
    assert jax.random.normal(jax.random.key(0), (2,)).dtype == jnp.float32
    assert jnp.zeros(2).dtype == jnp.float32
    assert jnp.arange(3).dtype == jnp.int32


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(SHAPES["input"]), rng.integers(0, 10, SHAPES["input"][0])


def _train_a_step(backend, jit: bool) -> dict:
    """Everything the guide does with a backend: creators, evaluate (both calls), a loss
    helper, an optimizer and the fused step; returns the arrays it made."""
    pm = ml.compile(create_conv_net(), backend, shapes=SHAPES, jit=jit)
    params = pm.randomize_params(seed=0)
    x, y = _data()
    inputs, targets = {"input": backend.array(x)}, backend.array(y)
    logits = pm.evaluate(params, inputs)["output"]
    loss = backend.cross_entropy(logits, targets)
    _, grads = pm.evaluate(params, inputs, {"output": backend.cross_entropy_grad(logits, targets)})
    optimizer = ml.Adam(learning_rate=0.01)
    opt_state = optimizer.init(params)
    new_params, opt_state = optimizer.update(params, grads, opt_state)
    step = train_step(pm, optimizer)
    fused = step(params, optimizer.init(params), pm.initial_state_dict, inputs, targets)
    inference = ml.compile(create_conv_net(), backend, shapes=SHAPES, jit=jit, inference=True)
    out = inference.evaluate(params, inputs, state=pm.state)[0]["output"]
    return {"logits": logits, "loss": loss, "grad": grads["linear.weight"],
            "param": new_params["linear.weight"], "exp_avg": opt_state["exp_avg"]["conv2d.weight"],
            "fused_param": fused[0]["linear.weight"], "fused_loss": fused[3],
            "state": pm.state["batchnorm2d.running_mean"], "inference": out}


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_backend_below_float64_leaves_the_users_jax_defaults(dtype, jit):
    backend = ml.JaxBackend(dtype=getattr(ml, dtype))
    _assert_user_defaults()
    made = _train_a_step(backend, jit)
    want = backend.array_dtype(backend.dtype)
    for name, value in made.items():
        if name not in ("loss", "fused_loss"):  # losses are float32 at least (mean of a float16)
            assert value.dtype == want, name
    assert backend.array(np.arange(3)).dtype == jnp.int32  # JAX's default int without x64
    _assert_user_defaults()


@pytest.mark.parametrize("jit", [True, False])
def test_a_float64_backend_computes_in_float64_and_leaves_the_defaults(jit):
    backend = ml.JaxBackend(dtype=ml.float64)
    made = _train_a_step(backend, jit)
    for name, value in made.items():
        assert value.dtype == jnp.float64, name
    assert backend.array(np.arange(3)).dtype == jnp.int64
    _assert_user_defaults()
    # the same numbers as NumPy float64 (forward, gradients, one Adam step)
    reference = _train_a_step(ml.NumpyBackend(dtype=ml.float64), jit=False)
    for name, value in made.items():
        np.testing.assert_allclose(backend.to_numpy(value), np.asarray(reference[name]),
                                   rtol=1e-12, atol=1e-12, err_msg=name)
    _assert_user_defaults()


def test_float64_in_the_users_own_jax_jit_needs_their_x64_switch():
    backend = ml.JaxBackend(dtype=ml.float64)
    pm = ml.compile(create_conv_net(), backend, shapes=SHAPES)
    params = pm.randomize_params(seed=0)
    x = backend.array(_data()[0])
    want = pm.evaluate(params, {"input": x}, state=pm.initial_state_dict)[0]["output"]

    def forward(p, inputs, state):
        return pm.evaluate(p, {"input": inputs}, state=state)[0]["output"]

    def loss(p):
        logits = forward(p, x, pm.initial_state_dict)
        return backend.cross_entropy(logits, backend.array(_data()[1]))

    # without x64 JAX would compute the transposed (gradient) pass in float32: refused with a
    # clear message, never computed in float32 silently
    for transform in (lambda: jax.jit(forward)(params, x, pm.initial_state_dict),
                      lambda: jax.grad(loss)(params)):
        with pytest.raises(ml.TypeMismatchError, match="enable_x64"):
            transform()
    with jax.enable_x64(True):
        got = jax.jit(forward)(params, x, pm.initial_state_dict)
        grads = jax.grad(loss)(params)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    logits = pm.evaluate(params, {"input": x})["output"]
    seed = backend.cross_entropy_grad(logits, backend.array(_data()[1]))
    _, want_grads, _ = pm.evaluate(params, {"input": x}, {"output": seed},
                                   state=pm.initial_state_dict)
    for key, value in want_grads.items():
        assert grads[key].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(grads[key]), np.asarray(value), rtol=1e-10,
                                   atol=1e-12, err_msg=key)
    _assert_user_defaults()
