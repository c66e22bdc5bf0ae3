"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_`` (but pure).

>>> import numpy as np
>>> from mithril.optim import clip_by_global_norm
>>> clipped = clip_by_global_norm({"w": np.array([3.0, 4.0])}, max_norm=1.0)
>>> clipped["w"].round(4).tolist()
[0.6, 0.8]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ArgumentError
from . import array_ops as ops

__all__ = ["clip_by_global_norm", "global_norm"]

_EPS = 1e-6  # added to the norm in the divisor, as PyTorch does


def global_norm(gradients: Mapping[str, Any]) -> Any:
    """The 2-norm of all gradients together (as if flattened into one vector), a 0-d array.

    >>> import numpy as np
    >>> float(global_norm({"a": np.array([3.0]), "b": np.array([[4.0]])}))
    5.0
    """
    values = list(gradients.values())
    if not values:
        raise ArgumentError("global_norm needs at least one gradient")
    total = ops.sum(values[0] * values[0])
    for g in values[1:]:
        total = total + ops.sum(g * g)
    return ops.sqrt(total)


def clip_by_global_norm(gradients: Mapping[str, Any], max_norm: float) -> dict[str, Any]:
    """Scale all gradients by ``min(1, max_norm / (global_norm + 1e-6))``; returns a new dict.

    The same scaling as ``torch.nn.utils.clip_grad_norm_(..., max_norm)`` (2-norm): under the
    limit the factor is exactly 1, so the gradients come back unchanged in value; a NaN or
    infinite norm propagates into the gradients as in PyTorch. Works for NumPy, PyTorch, JAX
    and MLX arrays and inside ``jax.jit`` (no data-dependent Python branching). The inputs are
    not modified.

    >>> import numpy as np
    >>> grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    >>> {k: v.round(3).tolist() for k, v in clip_by_global_norm(grads, 2.5).items()}
    {'a': [1.5], 'b': [2.0]}
    >>> clip_by_global_norm(grads, 10.0)["a"].tolist()
    [3.0]
    """
    if not gradients:
        return {}
    first = next(iter(gradients.values()))
    with ops.no_grad(first):
        factor = max_norm / (global_norm(gradients) + _EPS)
        factor = ops.where(factor > 1.0, 1.0, factor)
        return {key: ops.as_array(g * ops.cast(factor, g), g) for key, g in gradients.items()}
