"""A fused training step: model, loss and optimizer in one function.

``train_step(compiled, optimizer, loss="cross_entropy")`` returns
``step(params, optimizer_state, state, inputs, targets) -> (params, optimizer_state, state,
loss)``, one step of the guide's loop as a pure function. On JAX (``jit`` on) it is one
``jax.jit`` of the forward pass, the loss, the pullback and the optimizer's whole-tree
update. On the other backends it is the guide's loop with explicit state (the gradient call
reuses the forward pass, see ``pullback.py``) and the optimizer's compiled update.

With ``loss=None`` the model is a ``TrainModel`` (a ``final_cost`` output) and ``targets`` is
unused: the targets are among ``inputs``.

>>> import numpy as np
>>> import mithril as ml
>>> from mithril.framework.physical.fused import train_step
>>> from mithril.models import Linear
>>> backend = ml.NumpyBackend(dtype=ml.float64)
>>> pm = ml.compile(Linear(3)(input_size=2), backend)
>>> step = train_step(pm, ml.SGD(learning_rate=0.1))
>>> params = pm.randomize_params(seed=0)
>>> params, opt_state, state, loss = step(params, ml.SGD().init(params), pm.state,
...                                       {"input": np.ones((4, 2))}, np.array([0, 1, 2, 0]))
>>> loss.shape
()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...errors import ArgumentError

__all__ = ["train_step"]

Step = Callable[..., tuple[Any, Any, Any, Any]]


def train_step(compiled: Any, optimizer: Any, loss: str | None = "cross_entropy",
               output: str = "output") -> Step:
    """One training step of ``compiled`` with ``optimizer`` and a backend loss helper.

    ``loss`` names a helper of the backend (``"cross_entropy"``, ``"mse"``,
    ``"binary_cross_entropy"``, ``"binary_cross_entropy_with_logits"``) applied to the output
    ``output``; ``None`` for a ``TrainModel``, whose ``final_cost`` is differentiated.
    """
    backend = compiled.backend
    if compiled.inference:
        raise ArgumentError("train_step needs a model compiled for training (without "
                            "inference=True)")
    if loss is not None and (not hasattr(backend, loss) or not hasattr(backend, loss + "_grad")):
        raise ArgumentError(f"unknown loss {loss!r}: use 'cross_entropy', 'mse', "
                            "'binary_cross_entropy' or 'binary_cross_entropy_with_logits'")
    if loss is None and "final_cost" not in compiled.output_keys:
        raise ArgumentError("loss=None needs a TrainModel (a 'final_cost' output)")
    if backend.name == "jax" and compiled.jit and not compiled._uses_rng:
        return _jax_step(compiled, optimizer, loss, output)
    return _plain_step(compiled, optimizer, loss, output)


def _optimizer_tree(optimizer: Any, params: Mapping[str, Any], grads: Mapping[str, Any],
                    opt_state: Mapping[str, Any]) -> tuple[Any, Any]:
    return optimizer._update_tree(params, grads, opt_state)


def _plain_step(compiled: Any, optimizer: Any, loss: str | None, output: str) -> Step:
    backend = compiled.backend

    def step(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any = None
             ) -> tuple[Any, Any, Any, Any]:
        if loss is None:
            outs, grads, new_state = compiled.evaluate(params, inputs, True, state=state)
            value = outs["final_cost"]
        else:
            outs, new_state = compiled.evaluate(params, inputs, state=state)
            logits = outs[output]
            value = getattr(backend, loss)(logits, targets)
            seed = getattr(backend, loss + "_grad")(logits, targets)
            _, grads, new_state = compiled.evaluate(params, inputs, {output: seed},
                                                    state=state)
        params, opt_state = optimizer.update(params, grads, opt_state)
        return params, opt_state, new_state, value

    return step


def _jax_step(compiled: Any, optimizer: Any, loss: str | None, output: str) -> Step:
    import jax
    import jax.numpy as jnp

    backend = compiled.backend
    raw = compiled._raw_forward
    key = "final_cost" if loss is None else output

    def body(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any
             ) -> tuple[Any, Any, Any, Any]:
        def f(p: Any) -> tuple[Any, Any]:
            outs, new_state = raw(p, inputs, state, None)
            return outs[key], new_state

        value, pullback, new_state = jax.vjp(f, dict(params), has_aux=True)
        if loss is None:
            seed = jnp.ones_like(value)
        else:
            seed = getattr(backend, loss + "_grad")(value, targets)
            value = getattr(backend, loss)(value, targets)
        (grads,) = pullback(seed)
        params, opt_state = _optimizer_tree(optimizer, params, grads, opt_state)
        return params, opt_state, new_state, value

    jitted = backend.scoped(jax.jit(body))  # float64: traced and run in x64 scope

    def step(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any = None
             ) -> tuple[Any, Any, Any, Any]:
        compiled._check(params, inputs)
        compiled._check_state(state)
        return jitted(params, opt_state, state, inputs, targets)

    return step
