"""A fused training step: model, loss and optimizer in one function.

Two spellings of the same step:

- the compile option: ``ml.compile(model, backend, train=ml.TrainStep(optimizer, loss=...))``
  returns the compiled model with ``compiled.train_step``, a function
  ``step(params, optimizer_state, state, inputs) -> (params, optimizer_state, state, loss)``
  whose ``inputs`` hold the targets too (under ``TrainStep.target``, ``"target"`` by default;
  a ``TrainModel`` has its own target inputs);
- ``train_step(compiled, optimizer, loss="cross_entropy")`` for a model compiled already:
  ``step(params, optimizer_state, state, inputs, targets)``.

How it runs:

- JAX (``jit`` on): one ``jax.jit`` of the forward pass, the loss, the pullback (``jax.vjp``,
  seeded with the loss helper's gradient) and the optimizer's whole-tree update.
- MLX (``jit`` on): one ``mx.compile`` of ``mx.value_and_grad`` of the loss and the update.
- PyTorch: one forward pass under autograd, ``torch.autograd.grad`` of the loss and the
  ``torch._foreach_*`` update, in one Python function; ``TrainStep(torch_compile=True)`` (or a
  dict of ``torch.compile`` arguments) hands it to ``torch.compile``, off by default (it
  compiles for a while at the first call).
- NumPy, random layers (``Dropout``), and ``jit=False``: the guide's loop with explicit state
  (the gradient call reuses the forward pass, see ``pullback.py``) and the compiled update.

The step is pure: it returns new parameters, optimizer state and model state and changes
neither its arguments nor ``compiled.state``.

>>> import numpy as np
>>> import mithril as ml
>>> from mithril.models import Linear
>>> backend = ml.NumpyBackend(dtype=ml.float64)
>>> optimizer = ml.SGD(learning_rate=0.1)
>>> pm = ml.compile(Linear(3)(input_size=2), backend, train=ml.TrainStep(optimizer))
>>> params = pm.randomize_params(seed=0)
>>> params, opt_state, state, loss = pm.train_step(
...     params, optimizer.init(params), pm.state,
...     {"input": np.ones((4, 2)), "target": np.array([0, 1, 2, 0])})
>>> loss.shape
()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ArgumentError, InputError

__all__ = ["TrainStep", "attach_train_step", "train_step"]

Step = Callable[..., tuple[Any, Any, Any, Any]]


@dataclass(frozen=True)
class TrainStep:
    """The fused training step as a compile option: ``ml.compile(..., train=TrainStep(...))``.

    - ``optimizer``: an ``ml`` optimizer (``ml.Adam(learning_rate=1e-3)``);
    - ``loss``: a loss helper of the backend applied to the output ``output``
      (``"cross_entropy"``, ``"mse"``, ``"binary_cross_entropy"``,
      ``"binary_cross_entropy_with_logits"``), or ``None`` for a ``TrainModel`` (its
      ``final_cost`` is minimised);
    - ``target``: the key of the targets in the step's ``inputs`` (with a loss helper);
    - ``torch_compile``: PyTorch only, ``True`` or a dict of ``torch.compile`` arguments
      (``{"backend": "aot_eager"}``) to compile the step; off by default.

    >>> import mithril as ml
    >>> TrainStep(ml.Adam(), loss="mse").target
    'target'
    """

    optimizer: Any
    loss: str | None = "cross_entropy"
    output: str = "output"
    target: str = "target"
    torch_compile: bool | Mapping[str, Any] = False


def attach_train_step(compiled: Any, train: TrainStep) -> Any:
    """``compiled`` with ``compiled.train_step``: the fused step ``(params, optimizer_state,
    state, inputs) -> (params, optimizer_state, state, loss)`` (what ``ml.compile(...,
    train=...)`` returns; the targets are ``inputs[train.target]`` with a loss helper).

    >>> import mithril as ml
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(2)(input_size=3), ml.NumpyBackend())
    >>> callable(attach_train_step(pm, TrainStep(ml.SGD())).train_step)
    True
    """
    if not isinstance(train, TrainStep):
        raise ArgumentError(f"train= takes ml.TrainStep(optimizer, loss=...), got "
                            f"{type(train).__name__}")
    if train.loss is not None and train.target in compiled.data_keys:
        raise ArgumentError(f"TrainStep(target={train.target!r}) names an input of the model; "
                            "give the targets another key (target=...)")
    inner = train_step(compiled, train.optimizer, train.loss, train.output,
                       torch_compile=train.torch_compile)
    if train.loss is None:
        def step(params: Any, opt_state: Any, state: Any, inputs: Mapping[str, Any]
                 ) -> tuple[Any, Any, Any, Any]:
            return inner(params, opt_state, state, inputs)
    else:
        target = train.target

        def step(params: Any, opt_state: Any, state: Any, inputs: Mapping[str, Any]
                 ) -> tuple[Any, Any, Any, Any]:
            if target not in inputs:
                raise InputError(f"the training step's inputs need the targets under "
                                 f"{target!r} (TrainStep(target=...)); got {sorted(inputs)}")
            data = {k: v for k, v in inputs.items() if k != target}
            return inner(params, opt_state, state, data, inputs[target])

    step.__doc__ = ("The fused training step: (params, optimizer_state, state, inputs) -> "
                    "(params, optimizer_state, state, loss).")
    compiled.train_step = step
    compiled.train_options = train
    return compiled


def train_step(compiled: Any, optimizer: Any, loss: str | None = "cross_entropy",
               output: str = "output", *,
               torch_compile: bool | Mapping[str, Any] = False) -> Step:
    """One training step of ``compiled`` with ``optimizer`` and a backend loss helper.

    ``loss`` names a helper of the backend (``"cross_entropy"``, ``"mse"``,
    ``"binary_cross_entropy"``, ``"binary_cross_entropy_with_logits"``) applied to the output
    ``output``; ``None`` for a ``TrainModel``, whose ``final_cost`` is differentiated.
    ``torch_compile`` (PyTorch): ``True`` or ``torch.compile``'s arguments.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(3)(input_size=2), ml.NumpyBackend(dtype=ml.float64))
    >>> step = train_step(pm, ml.SGD(learning_rate=0.1))
    >>> params = pm.randomize_params(seed=0)
    >>> out = step(params, ml.SGD().init(params), pm.state, {"input": np.ones((4, 2))},
    ...            np.array([0, 1, 2, 0]))
    >>> float(out[3]) > 0
    True
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
    plain = compiled._uses_rng or getattr(compiled, "parallel", None) is not None
    if backend.name == "jax" and compiled.jit and not plain:
        return _jax_step(compiled, optimizer, loss, output)
    if backend.name == "mlx" and compiled.jit and not plain:
        return _mlx_step(compiled, optimizer, loss, output)
    if backend.name == "torch" and not plain:
        return _torch_step(compiled, optimizer, loss, output, torch_compile)
    return _plain_step(compiled, optimizer, loss, output)


def _loss_fn(backend: Any, loss: str) -> Callable[[Any, Any], Any]:
    """The loss helper's formula itself (traceable, differentiable), not its compiled call."""
    from ...backends.losses import LossMixin

    formula = getattr(LossMixin, "_" + loss)
    return lambda logits, targets: formula(backend, logits, targets)


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


def _mlx_step(compiled: Any, optimizer: Any, loss: str | None, output: str) -> Step:
    import mlx.core as mx

    backend = compiled.backend
    raw = compiled._raw_forward
    key = "final_cost" if loss is None else output
    loss_of = None if loss is None else _loss_fn(backend, loss)
    seed_of = None if loss is None else _loss_fn(backend, loss + "_grad")

    def body(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any
             ) -> tuple[Any, Any, Any, Any]:
        diff = {k: v for k, v in params.items() if mx.issubdtype(v.dtype, mx.floating)}

        def objective(p: Any) -> tuple[Any, Any, Any]:
            outs, new_state = raw({**params, **p}, inputs, state, None)
            if loss_of is None:
                return outs[key], outs[key], new_state
            # pulled back with the loss helper's gradient as seed, exactly as the guide's
            # loop does (d/dlogits of sum(logits * seed) is the seed)
            logits = outs[key]
            seed = mx.stop_gradient(seed_of(logits, targets))
            return (mx.sum(logits * seed), mx.stop_gradient(loss_of(logits, targets)),
                    new_state)

        (_, value, new_state), grads = mx.value_and_grad(objective)(diff)
        grads = {k: grads[k] if k in grads else mx.zeros_like(v) for k, v in params.items()}
        params, opt_state = optimizer._update_tree(params, grads, opt_state)
        return params, opt_state, new_state, value

    compiled_body = mx.compile(body)
    device = backend.mx_device

    def step(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any = None
             ) -> tuple[Any, Any, Any, Any]:
        compiled._check(params, inputs)
        compiled._check_state(state)
        with mx.stream(device):
            return compiled_body(params, opt_state, state, inputs, targets)

    return step


def _torch_step(compiled: Any, optimizer: Any, loss: str | None, output: str,
                torch_compile: bool | Mapping[str, Any]) -> Step:
    import torch

    backend = compiled.backend
    raw = compiled._raw_forward
    key = "final_cost" if loss is None else output
    loss_of = None if loss is None else _loss_fn(backend, loss)
    seed_of = None if loss is None else _loss_fn(backend, loss + "_grad")

    def body(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any
             ) -> tuple[Any, Any, Any, Any]:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()
                  if v.is_floating_point()}
        with torch.enable_grad():
            outs, new_state = raw({**params, **leaves}, inputs, state, None)
        pulled = outs[key]
        if loss_of is None:
            value, seed = pulled, torch.ones_like(pulled)
        else:  # the guide's loop: the loss helper's gradient pulled back through the model
            logits = pulled.detach()
            value, seed = loss_of(logits, targets), seed_of(logits, targets)
        found = torch.autograd.grad(pulled, list(leaves.values()), seed, allow_unused=True)
        grads = dict(zip(leaves, found, strict=True))
        grads = {k: torch.zeros_like(v) if grads.get(k) is None else grads[k]
                 for k, v in params.items()}
        params, opt_state = optimizer._update_tree(params, grads, opt_state)
        new_state = {k: v.detach() for k, v in new_state.items()}
        return params, opt_state, new_state, value.detach()

    run = body
    if torch_compile:
        options = {} if torch_compile is True else dict(torch_compile)  # type: ignore[arg-type]
        run = torch.compile(body, **options)

    def step(params: Any, opt_state: Any, state: Any, inputs: Any, targets: Any = None
             ) -> tuple[Any, Any, Any, Any]:
        compiled._check(params, inputs)
        compiled._check_state(state)
        return run(params, opt_state, state, inputs, targets)

    return step
