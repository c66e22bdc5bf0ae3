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
compile again for new parameter shapes or dtypes, as ``jax.jit`` / ``mx.compile`` do.

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

__all__ = ["compiled_update", "settings_key"]

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
        fn = cache[key] = _compile(framework, optimizer._update_tree, x64)
    optimizer.__dict__["_fast"] = (cls, first.dtype, fn)
    return fn


def _compile(framework: str, update: Callable[..., Any], x64: bool) -> Callable[..., Any]:
    if framework == "jax":
        import jax

        jitted = jax.jit(update)
        if not x64:
            return jitted

        def run_x64(params: Any, grads: Any, state: Any) -> Any:
            with jax.enable_x64(True):  # traced and run in float64, whatever the user's setting
                return jitted(params, grads, state)

        return run_x64
    import mlx.core as mx

    return mx.compile(update)
