"""Learning-rate schedules: callables ``schedule(step) -> learning rate``.

``step`` is the number of optimizer updates done so far: 0 for the first update, 1 for the
second, ... It may be a Python number or a 0-d array of any supported framework (also a
traced JAX value inside ``jax.jit``); the result is then an array of the same framework
(of the step's dtype for a floating-point step). Optimizers call their schedule with the step
as an array of each parameter's dtype.

Relation to ``torch.optim.lr_scheduler``: PyTorch schedulers keep a counter
(``last_epoch``) that ``scheduler.step()`` advances; in the usual loop
``optimizer.step(); scheduler.step()`` the ``k``-th update (counting from 0) runs with the
learning rate of ``last_epoch == k``. So ``schedule(k)`` here equals the learning rate
PyTorch uses at ``last_epoch == k`` (when the scheduler is stepped once per update).

>>> from mithril.optim import CosineAnnealing, LinearWarmup
>>> schedule = LinearWarmup(CosineAnnealing(0.1, total_steps=100), warmup_steps=10)
>>> round(schedule(0), 6), round(schedule(9), 6)
(0.01, 0.098015)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ArgumentError
from . import array_ops as ops

__all__ = ["CosineAnnealing", "LinearWarmup", "Schedule", "StepLR"]

Schedule = Callable[[Any], Any]
"""Anything called as ``schedule(step)`` that returns a learning rate."""


def _clip_above(x: Any, limit: float) -> Any:
    """``min(x, limit)`` for a Python number or an array (traceable: no Python branching)."""
    if isinstance(x, int | float):
        return min(x, limit)
    return ops.where(x > limit, limit, x)


def _check_positive_int(name: str, value: int, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class StepLR:
    """``base * gamma ** (step // step_size)``: decay by ``gamma`` every ``step_size`` updates.

    Same values as ``torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)`` (initial
    learning rate ``base``) at ``last_epoch == step``.

    >>> schedule = StepLR(0.1, step_size=2, gamma=0.5)
    >>> [schedule(k) for k in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    base: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_positive_int("step_size", self.step_size, 1)

    def __call__(self, step: Any) -> Any:
        """The learning rate for update number ``step`` (0 for the first update)."""
        return self.base * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class CosineAnnealing:
    """Half a cosine from ``base`` (step 0) down to ``min_lr`` (step ``total_steps``).

    ``min_lr + (base - min_lr) * (1 + cos(pi * step / total_steps)) / 2`` for
    ``step <= total_steps``, and ``min_lr`` after that. Up to ``total_steps`` this is
    ``torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
    eta_min=min_lr)``; past it PyTorch's schedule rises again (a periodic cosine), whereas
    this one stays at ``min_lr``.

    >>> schedule = CosineAnnealing(1.0, total_steps=4)
    >>> [round(schedule(k), 4) for k in (0, 2, 4, 6)]
    [1.0, 0.5, 0.0, 0.0]
    """

    base: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_positive_int("total_steps", self.total_steps, 1)

    def __call__(self, step: Any) -> Any:
        """The learning rate for update number ``step`` (0 for the first update)."""
        progress = _clip_above(step, self.total_steps) / self.total_steps
        cosine = (1 + ops.cos(math.pi * progress)) / 2
        return self.min_lr + (self.base - self.min_lr) * cosine


@dataclass(frozen=True)
class LinearWarmup:
    """Linear warm-up over ``warmup_steps`` updates, then a constant or another schedule.

    ``lr(step) = factor(step) * inner(step)`` with ``factor(step) = min(1, (step + 1) /
    warmup_steps)``, where ``inner`` is ``base_or_schedule`` (a number or a schedule,
    evaluated at the same ``step``, not shifted by the warm-up). The first update thus uses
    ``1 / warmup_steps`` of the rate and update ``warmup_steps - 1`` the full rate;
    ``warmup_steps=0`` means no warm-up. The factor is PyTorch's
    ``LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0,
    total_iters=warmup_steps - 1)``; wrapping a schedule multiplies as PyTorch's
    ``ChainedScheduler`` does.

    >>> schedule = LinearWarmup(0.1, warmup_steps=4)
    >>> [round(schedule(k), 3) for k in range(6)]
    [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    """

    base_or_schedule: float | Schedule
    warmup_steps: int

    def __post_init__(self) -> None:
        _check_positive_int("warmup_steps", self.warmup_steps, 0)

    def __call__(self, step: Any) -> Any:
        """The learning rate for update number ``step`` (0 for the first update)."""
        inner = self.base_or_schedule
        value = inner(step) if callable(inner) else inner
        if self.warmup_steps == 0:
            return value
        return value * _clip_above((step + 1) / self.warmup_steps, 1.0)
