"""The reference Mithril's robust numerics, composed from catalogue primitives.

Each helper takes connections of ``model`` and returns the result's connection. The values and
gradients follow the reference's definitions (its NumPy backend), on every backend:

- ``robust_sqrt(x, c)``: ``sqrt(|x|)``, and ``|x| / sqrt(c)`` where ``|x| < c``; gradient
  ``sign(x) / (2 sqrt|x|)``, and ``sign(x) / sqrt(c)`` below the cut-off (0 at ``x = 0``).
- ``robust_log(x, c)``: ``log|x|``, and ``log(c) + |x| / c - 1`` where ``|x| < c``; gradient
  ``1 / x``, and ``s / c`` below the cut-off with ``s = -1`` for ``x < 0``, else 1 (``+1 / c``
  at ``x = 0``).
- ``stable_reciprocal(x, c)``: ``1 / x``, and ``2 s / c - x / c**2`` where ``|x| < c`` (``s``
  as above: ``2 / c`` at 0); gradient ``-1 / x**2``, and ``-1 / c**2`` below the cut-off.
- ``robust_power(b, e, c)``: ``|b| ** e``, and ``|b| / c`` where ``|b| < c`` and
  ``e < 1 - log(c) / log|b|``; gradients ``e |b|**(e - 1) sign(b)`` and ``|b|**e log|b|``
  (0 at ``b = 0``), and ``sign(b) / c`` and 0 in the linear part.

The cut-off ``c`` defaults to a precision-dependent ``mithril.types.Constant``
(``MIN_POSITIVE_NORMAL``: the smallest normal float of the backend's dtype;
``STABLE_RECIPROCAL_THRESHOLD`` for ``stable_reciprocal``). A model does not know its backend,
so :func:`precision_constant` picks the value when the code runs: each candidate (float64,
float32, float16 value) is made in the backend's float dtype, where the smaller ones round to 0.

>>> import numpy as np
>>> import mithril as ml
>>> from mithril.models import Log, Model
>>> m = Model()
>>> m |= Log(robust=True)(input="x", output="y")
>>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [3]})
>>> [round(float(v), 3) for v in pm.evaluate({}, {"x": np.array([0.0, -2.0, 1.0])})["y"]]
[-709.396, 0.693, 0.0]
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.meta import TBD
from ..framework.logical.model import Connection, IOKey, Model
from ..types import Constant, epsilon_table
from .reference import add_op

__all__ = ["precision_constant", "threshold", "robust_sqrt", "robust_log", "robust_power",
           "stable_reciprocal", "REFERENCE_EPSILONS"]

#: the reference's per-precision values where they differ from ``numpy.finfo``'s
#: (its float64 ``STABLE_RECIPROCAL_THRESHOLD`` is 10 * sqrt(tiny))
REFERENCE_EPSILONS: dict[int, dict[Constant, float]] = {
    bits: {**table, Constant.STABLE_RECIPROCAL_THRESHOLD: stable}
    for (bits, table), stable in zip(
        epsilon_table.items(), (0.007812809993849843, 1.0842021951e-19,
                                1.4916681462400413e-153), strict=True)}


def precision_constant(model: Model, const: Constant) -> Connection:
    """A scalar connection holding ``const``'s value for the backend's float dtype at run time
    (``REFERENCE_EPSILONS[64 | 32 | 16][const]``)."""
    cache = model.__dict__.setdefault("_precision_constants", {})
    if const in cache:
        return cache[const]
    values = [REFERENCE_EPSILONS[bits][const] for bits in (64, 32, 16)]
    # the float64 value must round to 0 in float32 (below 1.4e-45), the float32 one in float16
    if not (values[0] < 1e-45 and values[1] < 5e-8):
        raise ArgumentError(f"{const} cannot be picked by precision at run time (values "
                            f"{values}); give threshold as a number")
    t64, t32, t16 = (add_op(model, "to_tensor", input=v) for v in values)
    # a candidate too small for the dtype rounds to 0 there
    narrow = add_op(model, "where", condition=t32 > 0.0, input1=t32, input2=t16)
    picked = add_op(model, "where", condition=t64 > 0.0, input1=t64, input2=narrow)
    cache[const] = add_op(model, "stop_gradient", input=picked)
    return cache[const]


def threshold(model: Model, value: Any, default: Constant) -> Connection:
    """The cut-off connection for a ``threshold=`` argument: a ``Constant`` (or None: the
    ``default``) picks the backend precision's value; a number is a constant; ``ml.TBD``, a
    name or an ``IOKey`` makes a ``threshold`` input terminal."""
    if value is None:
        value = default
    if isinstance(value, Constant):
        return precision_constant(model, value)
    if isinstance(value, bool):
        raise ArgumentError(f"threshold must be a number, a Constant or a terminal, got "
                            f"{value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise ArgumentError(f"threshold must be positive, got {value!r}")
        return add_op(model, "stop_gradient",
                    input=add_op(model, "to_tensor", input=float(value)))
    if value is TBD:
        value = IOKey("threshold", differentiable=False)
    return add_op(model, "stop_gradient", input=value)


def _sign_or_one(model: Model, x: Connection) -> Connection:
    """-1 where ``x < 0``, else 1 (no gradient), in the backend's float dtype (PyTorch's
    ``where`` of two Python numbers would be float32)."""
    one = add_op(model, "to_tensor", input=1.0)
    return add_op(model, "where", condition=x < 0.0, input1=-one, input2=one)


def _below(model: Model, small: Connection, x: Connection) -> Connection:
    """``x`` where ``small``, else 0 (the linear branch never overflows where it is unused)."""
    return add_op(model, "where", condition=small, input1=x, input2=0.0)


def _inv(model: Model, c: Connection) -> Connection:
    """``1 / c`` as a constant (products with it have no overflowing gradient of ``c``)."""
    return add_op(model, "stop_gradient", input=1.0 / c)


def robust_sqrt(model: Model, x: Connection, c: Connection) -> Connection:
    """``sqrt(|x|)``, linear ``|x| / sqrt(c)`` below the cut-off ``c`` (gradient 0 at 0)."""
    a = x * add_op(model, "sign", input=x)  # |x| with the gradient sign(x)
    small = a < c
    root = add_op(model, "where", condition=small, input1=c, input2=a).sqrt()
    linear = _below(model, small, a) * _inv(model, c.sqrt())
    return add_op(model, "where", condition=small, input1=linear, input2=root)


def robust_log(model: Model, x: Connection, c: Connection) -> Connection:
    """``log|x|``, ``log(c) + |x| / c - 1`` below the cut-off (gradient ``+1/c`` at 0)."""
    a = x * _sign_or_one(model, x)
    small = a < c
    logged = add_op(model, "where", condition=small, input1=c, input2=a).log()
    return add_op(model, "where", condition=small,
                input1=c.log() + _below(model, small, a) * _inv(model, c) - 1.0,
                input2=logged)


def stable_reciprocal(model: Model, x: Connection, c: Connection) -> Connection:
    """``1 / x``, ``2 s / c - x / c**2`` below the cut-off (``2 / c`` at 0)."""
    s = _sign_or_one(model, x)
    small = abs(x) < c
    safe = add_op(model, "where", condition=small, input1=c, input2=x)
    inv = _inv(model, c)
    return add_op(model, "where", condition=small,
                input1=s * 2.0 * inv - _below(model, small, x) * inv * inv,
                input2=1.0 / safe)


def robust_power(model: Model, base: Connection, exponent: Connection,
                 c: Connection) -> Connection:
    """``|base| ** exponent``; ``|base| / c`` where ``|base| < c`` and
    ``exponent < 1 - log(c) / log|base|`` (the power would be steeper than linear there)."""
    a = base * add_op(model, "sign", input=base)
    a_value = add_op(model, "stop_gradient", input=a)
    e_value = add_op(model, "stop_gradient", input=exponent)
    zero = a_value == 0.0
    below = a_value < c
    # the limit where 0 < |base| < c (elsewhere log 0.5, never 0, stands in); 1 at |base| = 0
    safe_log = add_op(model, "where", condition=below & ~zero, input1=a_value,
                    input2=0.5).log()
    limit = add_op(model, "where", condition=zero, input1=1.0, input2=1.0 - c.log() / safe_log)
    cond = below & (e_value < limit)
    # the power where it is taken and |base| > 0 (else 1: no 0 * log 0 in its gradient)
    safe = add_op(model, "where", condition=cond | zero, input1=1.0, input2=a)
    powered = safe ** exponent
    at_zero = add_op(model, "stop_gradient", input=a_value ** e_value)
    outside = add_op(model, "where", condition=zero, input1=at_zero, input2=powered)
    return add_op(model, "where", condition=cond, input1=_below(model, cond, a) * _inv(model, c),
                input2=outside)
