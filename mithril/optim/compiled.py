"""The optimizers' whole-tree update, compiled once per optimizer and framework.

``Optimizer.update`` checks its arguments in Python, then runs the update of *every* parameter
as one function: ``jax.jit`` on JAX and ``mx.compile`` on MLX (one compiled call per step,
instead of a dozen small array operations per parameter), and on PyTorch the ``torch._foreach_*``
operations over the whole list of tensors (see :mod:`mithril.optim.foreach`). NumPy runs the
plain per-array update.

The compiled function is made at the first ``update`` and kept on the optimizer, keyed by the
optimizer's settings (``learning_rate``, betas, ...): assigning a new value to one of them
compiles again. A schedule object is part of the key by identity; changing the fields of a
schedule after the first update is not seen (create a new schedule instead). JAX and MLX
compile again for new parameter shapes or dtypes, as ``jax.jit`` / ``mx.compile`` do. On MLX,
Adam's step-dependent scalars are computed in Python for trees of small parameters
(``_compile_mlx``).

>>> import numpy as np
>>> from mithril.optim import Adam
>>> from mithril.optim.compiled import compiled_update
>>> compiled_update(Adam(), np.ones(2)) is None  # NumPy: the plain update
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import array_ops as ops

__all__ = ["MLX_HOST_SCALARS_MAX", "compiled_update", "settings_key"]

_PLAIN = (int, float, bool, str, type(None))


def settings_key(optimizer: Any) -> tuple[Any, ...]:
    """The optimizer's public settings as a hashable key (objects by identity).

    >>> from mithril.optim import SGD
    >>> settings_key(SGD(learning_rate=0.5))[:2]
    (('learning_rate', 0.5), ('max_grad_norm', None))
    """
    return tuple((k, v if isinstance(v, _PLAIN) else ("id", id(v)))
                 for k, v in vars(optimizer).items() if not k.startswith("_"))


def compiled_update(optimizer: Any, first: Any) -> Callable[..., Any] | None:
    """``fn(params, grads, state) -> (new_params, new_state)`` compiled for ``first``'s
    framework (JAX, MLX), or None where the plain update runs (NumPy, PyTorch).

    The function of the last call is kept on the optimizer with the array type and dtype it
    is for (``_fast``; assigning a setting drops it, see ``Optimizer.__setattr__``), so a
    training loop pays one type and one dtype comparison per update. Float64 JAX arrays
    update inside ``jax.enable_x64(True)``.
    """
    fast = optimizer.__dict__.get("_fast")
    cls = type(first)
    if fast is not None and fast[0] is cls:
        dtype = getattr(first, "dtype", None)
        if fast[1] == dtype:
            return fast[2]
    if first is None:
        return None
    try:
        framework = ops.framework_of(first)
    except TypeError:
        return None
    if framework not in ("jax", "mlx"):
        optimizer.__dict__["_fast"] = (cls, getattr(first, "dtype", None), None)
        return None
    x64 = framework == "jax" and ops.is_x64(first)
    cache: dict[Any, Callable[..., Any]] = optimizer.__dict__.setdefault("_compiled", {})
    key = (framework, x64, settings_key(optimizer))
    fn = cache.get(key)
    if fn is None:
        if len(cache) > 8:  # settings changed many times: keep the newest few
            cache.clear()
        fn = cache[key] = (_compile_mlx(optimizer) if framework == "mlx" else
                           _compile_jax(optimizer._update_tree, x64))
    optimizer.__dict__["_fast"] = (cls, first.dtype, fn)
    return fn


def _compile_jax(update: Callable[..., Any], x64: bool) -> Callable[..., Any]:
    """``jax.jit`` of the update (float64 arrays: traced and run inside ``jax.enable_x64``)."""
    import jax

    jitted = jax.jit(update)
    if not x64:
        return jitted

    def run_x64(params: Any, grads: Any, state: Any) -> Any:
        with jax.enable_x64(True):  # traced and run in float64, whatever the user's setting
            return jitted(params, grads, state)

    return run_x64


#: MLX: the largest parameter (elements) for which the step-dependent scalars are computed in
#: Python (``_compile_mlx``); larger trees compute them inside the compiled update
MLX_HOST_SCALARS_MAX = 1 << 15


def _compile_mlx(optimizer: Any) -> Callable[..., Any]:
    """``mx.compile`` of the update; for trees of small parameters the step-dependent scalars
    (Adam's bias corrections, ``Optimizer._host_coefficients``) are computed in Python and
    passed in as 0-d arrays.

    MLX runs those few scalar operations (powers, square roots of the step counter) as
    separate CPU kernels, which costs about as much as the whole fused update of a small tree
    (measured on MLX 0.32, CPU: 20-30% of a 2-parameter Adam update). With parameters above
    ``MLX_HOST_SCALARS_MAX`` elements the scalar kernels do not matter, and MLX's fused CPU
    loop reading 0-d array inputs runs slower than the one computing them (a batch of lazy
    updates evaluated together: up to 1.35x), so those trees keep the plain compiled update.
    The step number is read without waiting for the device when the state is the one the
    last update returned (its value is kept with it); any other state is read once with
    ``.item()`` (inside the caller's own ``mx.compile``, where it cannot be read, the plain
    compiled update runs).
    """
    import mlx.core as mx

    plain = mx.compile(optimizer._update_tree)
    if optimizer._host_coefficients(0) is None:
        return plain

    def update(params: Any, grads: Any, state: Any, coefficients: Any) -> Any:
        new_params, new_state = optimizer._update_tree(params, grads, state, coefficients)
        del new_state["step"]  # made in Python below: no integer kernel for it
        return new_params, new_state

    compiled = mx.compile(update)

    def run(params: Any, grads: Any, state: Any) -> Any:
        for p in params.values():
            if p.size > MLX_HOST_SCALARS_MAX:
                return plain(params, grads, state)
        counter = state["step"]
        known = optimizer.__dict__.get("_mlx_step")
        if known is not None and known[0] is counter:
            step = known[1]
        else:
            try:
                step = int(counter.item())
            except ValueError:  # traced by the caller's own mx.compile: no value to read
                return plain(params, grads, state)
        like = next(iter(params.values()))
        coefficients = {name: mx.array(value, dtype=like.dtype)
                        for name, value in optimizer._host_coefficients(step).items()}
        new_params, slots = compiled(params, grads, state, coefficients)
        new_counter = mx.array(step + 1, dtype=counter.dtype)
        optimizer.__dict__["_mlx_step"] = (new_counter, step + 1)
        return new_params, {"step": new_counter, **slots}

    return run
