"""Primitives under the reference Mithril's names, terminals and defaults.

``mithril.models`` exports these in place of the catalogue's spellings (which stay in
``mithril.models.primitives``): ``Divide(numerator, denominator)``, ``FloorDivide`` likewise,
``Power(base, exponent)``, ``ShiftLeft``/``ShiftRight(input, shift)``,
``PermuteTensor(input, indices)``, ``Split(split_size, axis)`` with ``split_size`` the *number*
of equal sections, and ``ScaledDotProduct`` causal by default and without a mask unless
``use_attn_mask=True``. ``docs/reference-api.md`` lists them beside the guide's spellings.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.meta import TBD
from ..framework.logical.model import IOKey, Model
from . import layers as _layers
from . import primitives as _p
from .reference import _add

__all__ = ["Divide", "FloorDivide", "Power", "ShiftLeft", "ShiftRight", "PermuteTensor",
           "Split", "ScaledDotProduct", "Embedding"]


class _Renamed(Model):
    """One catalogue primitive whose terminals carry the reference's names."""

    op = ""
    #: reference terminal name -> catalogue terminal name, canonical input first
    names: dict[str, str] = {}

    def __init__(self, *, name: str | None = None, **values: Any) -> None:
        super().__init__(name)
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ArgumentError(f"{type(self).__name__} has no terminal(s) {unknown}; its "
                                f"terminals are {list(self.names)}")
        wires = {op_name: IOKey(ref, value=values.get(ref, TBD))
                 for ref, op_name in self.names.items()}
        _add(self, self.op, out=IOKey("output"), **wires)
        self.set_cin(next(iter(self.names)))
        self.set_cout("output")


class Divide(_Renamed):
    """``numerator / denominator`` (true division, broadcasting).

    >>> import mithril as ml
    >>> from mithril.models import Divide
    >>> pm = ml.compile(Divide(denominator=4.0), ml.NumpyBackend(), shapes={"numerator": [2]})
    >>> pm.evaluate({}, {"numerator": ml.NumpyBackend().array([1.0, 2.0])})["output"].tolist()
    [0.25, 0.5]
    """

    op, names = "divide", {"numerator": "left", "denominator": "right"}


class FloorDivide(_Renamed):
    """``numerator // denominator`` (broadcasting)."""

    op, names = "floor_divide", {"numerator": "left", "denominator": "right"}


class Power(_Renamed):
    """``base ** exponent`` (broadcasting); ``robust=True`` is not supported."""

    op, names = "power", {"base": "left", "exponent": "right"}

    def __init__(self, robust: bool = False, *, name: str | None = None, **values: Any) -> None:
        if robust:
            raise ArgumentError("Power(robust=True) is not supported; use Power() (plain "
                                "base ** exponent)")
        super().__init__(name=name, **values)


class ShiftLeft(_Renamed):
    """``input << shift``."""

    op, names = "shift_left", {"input": "left", "shift": "right"}


class ShiftRight(_Renamed):
    """``input >> shift``."""

    op, names = "shift_right", {"input": "left", "shift": "right"}


class PermuteTensor(_Renamed):
    """The axes of ``input`` in the order ``indices`` (``PermuteTensor(indices=(1, 0))``)."""

    op, names = "transpose", {"input": "input", "indices": "axes"}


class Split(Model):
    """``input`` cut into ``split_size`` equal sections along ``axis`` (the reference's
    ``Split``; ``torch.tensor_split`` with an int). Section ``i`` is ``output[i]``: the
    sections are stacked on a new first axis. The axis' length must be a multiple of
    ``split_size``. (``mithril.models.primitives.Split`` is ``torch.split``: chunk length.)

    >>> import mithril as ml
    >>> from mithril.models import Split
    >>> pm = ml.compile(Split(3, axis=1), ml.NumpyBackend(), shapes={"input": [2, 6]})
    >>> pm.shapes["output"]
    [3, 2, 2]
    """

    def __init__(self, split_size: int = 2, axis: int = 0, *, name: str | None = None,
                 input: Any = TBD) -> None:
        if not isinstance(split_size, int) or isinstance(split_size, bool) or split_size < 1:
            raise ArgumentError(f"Split(split_size={split_size!r}): the number of sections "
                                "must be a positive int")
        super().__init__(name)
        self.split_size, self.axis = split_size, axis
        x = _add(self, "buffer", input=IOKey("input", value=input))
        chunk = x.shape[axis] // split_size
        _add(self, "split", out=IOKey("output"), input=x, split_size=chunk, axis=axis)
        self.set_cin("input")
        self.set_cout("output")


class ScaledDotProduct(_p.ScaledDotProduct):  # type: ignore[name-defined,misc]
    """Attention ``softmax(q k^T * scale + mask) v`` with the reference's defaults: causal
    (``is_causal=True``) and no ``attn_mask`` terminal value to give unless
    ``use_attn_mask=True``; ``dropout_p`` must be 0 (no dropout inside)."""

    def __init__(self, is_causal: Any = True, scale: Any = None, dropout_p: float = 0.0,
                 use_attn_mask: bool = False, *, name: str | None = None,
                 **values: Any) -> None:
        if dropout_p:
            raise ArgumentError(f"ScaledDotProduct(dropout_p={dropout_p!r}): dropout inside "
                                "attention is not supported; add a Dropout model after it")
        if not use_attn_mask:
            values.setdefault("attn_mask", None)
        super().__init__(is_causal=is_causal, scale=scale, name=name, **values)


class Embedding(_layers.Embedding):
    """``nn.Embedding`` that also takes the reference's ``dim=`` for ``embedding_dim``
    (``Embedding(num_embeddings=50, dim=8)``); otherwise the guide's ``Embedding``."""

    def __init__(self, num_embeddings: int | None = None, embedding_dim: int | None = None,
                 padding_idx: int | None = None, max_norm: float | None = None,
                 *args: Any, dim: int | None = None, name: str | None = None,
                 **kw: Any) -> None:
        if dim is not None and embedding_dim is not None and dim != embedding_dim:
            raise ArgumentError(f"Embedding got dim={dim} and embedding_dim={embedding_dim}; "
                                "give one")
        super().__init__(num_embeddings, embedding_dim if dim is None else dim, padding_idx,
                         max_norm, *args, name=name, **kw)
