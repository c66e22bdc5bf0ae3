"""PyTorch optimizers over whole lists of tensors with ``torch._foreach_*`` operations.

An optimizer's per-array rule (``_update_leaf``) is written with plain operators (``a * b``,
``a - b``, ``ops.sqrt(a)``). Given :class:`TensorList` arguments instead of tensors, the same
rule runs once per step for all parameters of one device and dtype, each operator a single
``torch._foreach_*`` call over the list (as ``torch.optim``'s ``foreach=True`` implementations
do). The operations and their order are the per-tensor ones, so results are identical.

Importing this module does not import PyTorch.

>>> import torch
>>> xs = TensorList([torch.ones(2), torch.full((3,), 4.0)])
>>> [t.tolist() for t in (1 - 0.5 * xs).items]
[[0.5, 0.5], [-1.0, -1.0, -1.0]]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["TensorList", "foreach_update", "usable"]


def _torch() -> Any:
    return sys.modules["torch"]


class TensorList:
    """A list of tensors whose operators are ``torch._foreach_*`` calls over the whole list.

    The other operand may be a ``TensorList`` of the same length, a Python number or a
    tensor (a 0-d tensor such as a step-dependent coefficient).

    >>> import torch
    >>> a = TensorList([torch.tensor([1.0, 4.0])])
    >>> (a * a + 1).items[0].tolist()
    [2.0, 17.0]
    """

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def _other(self, other: Any) -> Any:
        if isinstance(other, TensorList):
            return other.items
        if type(other) is _torch().Tensor and other.device.type == "cpu" and not other.ndim:
            # a CPU 0-d coefficient as a number: with a tensor operand ``_foreach_*`` on CPU
            # falls back to one cast and one kernel per tensor (the same value either way)
            return other.item()
        return other

    def __add__(self, other: Any) -> TensorList:
        return TensorList(_torch()._foreach_add(self.items, self._other(other)))

    __radd__ = __add__

    def __sub__(self, other: Any) -> TensorList:
        return TensorList(_torch()._foreach_sub(self.items, self._other(other)))

    def __rsub__(self, other: Any) -> TensorList:
        # other - x == (-x) + other exactly (negation is exact)
        return TensorList(_torch()._foreach_add(_torch()._foreach_neg(self.items), other))

    def __mul__(self, other: Any) -> TensorList:
        return TensorList(_torch()._foreach_mul(self.items, self._other(other)))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> TensorList:
        return TensorList(_torch()._foreach_div(self.items, self._other(other)))

    def __rtruediv__(self, other: Any) -> TensorList:
        return TensorList([other / x for x in self.items])

    def __neg__(self) -> TensorList:
        return TensorList(_torch()._foreach_neg(self.items))

    def sqrt(self) -> TensorList:
        """Element-wise square root of every tensor."""
        return TensorList(_torch()._foreach_sqrt(self.items))

    def maximum(self, other: Any) -> TensorList:
        """Element-wise maximum with ``other``."""
        return TensorList(_torch()._foreach_maximum(self.items, self._other(other)))

    def where(self, condition: Any, other: Any) -> TensorList:
        """``self`` where ``condition`` (a tensor) holds, else ``other``."""
        torch = _torch()
        others = other.items if isinstance(other, TensorList) else [other] * len(self.items)
        return TensorList([torch.where(condition, a, b)
                           for a, b in zip(self.items, others, strict=True)])


def usable(params: Mapping[str, Any]) -> bool:
    """Do ``params`` hold only floating-point PyTorch tensors (no NumPy, no DTensors)?

    >>> import numpy as np
    >>> usable({"w": np.ones(2)})
    False
    """
    torch = sys.modules.get("torch")
    if torch is None or not params:
        return False
    for p in params.values():
        if type(p) is not torch.Tensor and type(p) is not torch.nn.Parameter:
            return False
        if not p.is_floating_point():
            return False
    return True


def foreach_update(optimizer: Any, params: Mapping[str, Any], grads: Mapping[str, Any],
                   state: Mapping[str, Any], slots: tuple[str, ...]
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``optimizer``'s rule run once per (device, dtype) group of ``params``.

    >>> import torch
    >>> from mithril.optim import SGD
    >>> opt = SGD(learning_rate=0.5)
    >>> new, _ = foreach_update(opt, {"w": torch.ones(2)}, {"w": torch.ones(2)},
    ...                         opt.init({"w": torch.ones(2)}), ())
    >>> new["w"].tolist()
    [0.5, 0.5]
    """
    from . import array_ops as ops

    groups: dict[tuple[Any, Any], list[str]] = {}
    for key, p in params.items():
        groups.setdefault((p.device, p.dtype), []).append(key)
    new_params: dict[str, Any] = {}
    new_slots: dict[str, dict[str, Any]] = {slot: {} for slot in slots}
    for keys in groups.values():
        like = params[keys[0]]
        step = ops.cast(state["step"], like)
        lr = optimizer._learning_rate_at(step, like)
        p = TensorList([params[k] for k in keys])
        g = TensorList([grads[k] for k in keys])
        leaf_slots = {slot: TensorList([state[slot][k] for k in keys]) for slot in slots}
        new_p, leaf_new = optimizer._update_leaf(p, g, leaf_slots, step, lr)
        for i, k in enumerate(keys):
            new_params[k] = ops.keep_requires_grad(new_p.items[i], params[k])
            for slot in slots:
                new_slots[slot][k] = leaf_new[slot].items[i]
    # keep the caller's key order
    return ({k: new_params[k] for k in params},
            {slot: {k: new_slots[slot][k] for k in params} for slot in slots})
