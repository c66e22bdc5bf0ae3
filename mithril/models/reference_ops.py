"""Primitives under the reference Mithril's names, terminals and defaults.

``mithril.models`` exports these in place of the catalogue's spellings (which stay in
``mithril.models.primitives``): ``Divide(numerator, denominator)``, ``FloorDivide`` likewise,
``Power(base, exponent)``, ``ShiftLeft``/``ShiftRight(input, shift)``,
``PermuteTensor(input, indices)``, ``Split(split_size, axis)`` with ``split_size`` the *number*
of equal sections, and ``ScaledDotProduct`` causal by default and without a mask unless
``use_attn_mask=True``. ``Sqrt``, ``Log`` and ``Power`` take ``robust=True`` (and ``threshold``),
``StableReciprocal`` is the reference's (linear below a cut-off; ``reference_numerics`` has the
formulas), and ``Concat`` takes one list-valued ``input``. ``docs/reference-api.md`` lists them
beside the guide's spellings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError
from ..framework.logical.meta import TBD
from ..framework.logical.model import Connection, IOKey, Model
from ..types import Constant, Tensor
from . import layers as _layers
from . import pooling as _pool
from . import primitives as _p
from . import reference_numerics as _rn
from .reference import add_op

__all__ = ["Divide", "FloorDivide", "Power", "ShiftLeft", "ShiftRight", "PermuteTensor",
           "Split", "ScaledDotProduct", "Embedding", "Sqrt", "Log", "StableReciprocal",
           "Concat", "Convolution1D", "Convolution2D", "Where", "MaxPool1D", "MaxPool2D",
           "AvgPool2D"]


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
        add_op(self, self.op, out=IOKey("output"), **wires)
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
    """``base ** exponent`` (broadcasting). ``Power(robust=True)`` is the reference's robust
    power: ``|base| ** exponent``, linear ``|base| / threshold`` where ``|base| < threshold``
    and ``exponent < 1 - log(threshold) / log|base|`` (``reference_numerics.robust_power``);
    ``threshold`` defaults to the smallest normal float of the backend's dtype.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Power
    >>> pm = ml.compile(Power(robust=True), ml.NumpyBackend(dtype=ml.float64), shapes={"base": [2]},
    ...                 constant_keys={"exponent": 0.5})
    >>> pm.evaluate({}, {"base": np.array([-4.0, 9.0])})["output"].tolist()
    [2.0, 3.0]
    """

    op, names = "power", {"base": "left", "exponent": "right"}

    def __new__(cls, robust: bool = False, *, threshold: Any = None,
                name: str | None = None, **values: Any) -> Any:
        if robust:
            return _RobustPower(threshold, name=name, **values)
        return super().__new__(cls)

    def __init__(self, robust: bool = False, *, threshold: Any = None,
                 name: str | None = None, **values: Any) -> None:
        _no_threshold("Power", threshold)
        super().__init__(name=name, **values)


def _no_threshold(cls: str, threshold: Any) -> None:
    if threshold is not None:
        raise ArgumentError(f"{cls}(threshold={threshold!r}) needs robust=True (the cut-off "
                            "only exists in the robust form)")


class _Robust(Model):
    """A robust function of ``input`` (``reference_numerics``) with a cut-off."""

    fn: Callable[[Model, Connection, Connection], Connection]
    default = Constant.MIN_POSITIVE_NORMAL

    def __init__(self, threshold: Any = None, *, name: str | None = None,
                 input: Any = TBD) -> None:
        super().__init__(name)
        self.threshold = threshold
        x = add_op(self, "buffer", input=IOKey("input", value=input))
        value = type(self).fn(self, x, _rn.threshold(self, threshold, self.default))
        add_op(self, "buffer", input=value, out=IOKey("output"))
        self.set_cin("input")
        self.set_cout("output")


class RobustSqrt(_Robust):
    """``Sqrt(robust=True)``: ``sqrt(|input|)``, ``|input| / sqrt(threshold)`` below the
    cut-off (gradient ``sign(x) / sqrt(threshold)`` there, 0 at 0)."""

    fn = staticmethod(_rn.robust_sqrt)


class RobustLog(_Robust):
    """``Log(robust=True)``: ``log|input|``, ``log(threshold) + |input| / threshold - 1``
    below the cut-off (gradient ``+1 / threshold`` at 0)."""

    fn = staticmethod(_rn.robust_log)


class StableReciprocal(_Robust):
    """The reference's ``StableReciprocal``: ``1 / input``, and below the cut-off
    (``|input| < threshold``, default ``Constant.STABLE_RECIPROCAL_THRESHOLD`` of the backend's
    precision) the line ``2 s / threshold - input / threshold**2`` (``s = -1`` for negative
    input, else 1) with gradient ``-1 / threshold**2``: finite at 0.
    (``mithril.models.primitives.StableReciprocal`` is the plain reciprocal.)

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import StableReciprocal
    >>> pm = ml.compile(StableReciprocal(threshold=0.5), ml.NumpyBackend(dtype=ml.float64),
    ...                 shapes={"input": [3]})
    >>> pm.evaluate({}, {"input": np.array([0.0, 0.25, 4.0])})["output"].tolist()
    [4.0, 3.0, 0.25]
    """

    fn = staticmethod(_rn.stable_reciprocal)
    default = Constant.STABLE_RECIPROCAL_THRESHOLD


class _RobustPower(Model):
    """``Power(robust=True)`` (see ``Power``)."""

    def __init__(self, threshold: Any = None, *, name: str | None = None,
                 base: Any = TBD, exponent: Any = TBD) -> None:
        super().__init__(name)
        self.threshold = threshold
        b = add_op(self, "buffer", input=IOKey("base", value=base))
        e = add_op(self, "buffer", input=IOKey("exponent", value=exponent))
        value = _rn.robust_power(self, b, e, _rn.threshold(self, threshold,
                                                           Constant.MIN_POSITIVE_NORMAL))
        add_op(self, "buffer", input=value, out=IOKey("output"))
        self.set_cin("base")
        self.set_cout("output")


class Sqrt(_p.Sqrt):  # type: ignore[name-defined,misc]
    """``sqrt(input)``; ``Sqrt(robust=True)`` is the reference's robust square root
    (``RobustSqrt``: ``sqrt(|x|)``, linear below ``threshold``, finite gradient at 0).

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Sqrt
    >>> pm = ml.compile(Sqrt(robust=True), ml.NumpyBackend(dtype=ml.float64), shapes={"input": [2]})
    >>> pm.evaluate({}, {"input": np.array([-4.0, 0.0])})["output"].tolist()
    [2.0, 0.0]
    """

    def __new__(cls, robust: bool = False, *args: Any, threshold: Any = None,
                name: str | None = None, **values: Any) -> Any:
        if robust:
            return RobustSqrt(threshold, name=name, **values)
        return super().__new__(cls)

    def __init__(self, robust: bool = False, *args: Any, threshold: Any = None,
                 name: str | None = None, **values: Any) -> None:
        _no_threshold("Sqrt", threshold)
        super().__init__(*args, name=name, **values)


class Log(_p.Log):  # type: ignore[name-defined,misc]
    """``log(input)``; ``Log(robust=True)`` is the reference's robust logarithm
    (``RobustLog``: ``log|x|``, linear below ``threshold``, finite at 0).

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Log
    >>> pm = ml.compile(Log(robust=True, threshold=0.5), ml.NumpyBackend(dtype=ml.float64),
    ...                 shapes={"input": [2]})
    >>> [round(float(v), 4) for v in pm.evaluate({}, {"input": np.array([0.0, -1.0])})["output"]]
    [-1.6931, 0.0]
    """

    def __new__(cls, robust: bool = False, *args: Any, threshold: Any = None,
                name: str | None = None, **values: Any) -> Any:
        if robust:
            return RobustLog(threshold, name=name, **values)
        return super().__new__(cls)

    def __init__(self, robust: bool = False, *args: Any, threshold: Any = None,
                 name: str | None = None, **values: Any) -> None:
        _no_threshold("Log", threshold)
        super().__init__(*args, name=name, **values)


class ShiftLeft(_Renamed):
    """``input << shift``."""

    op, names = "shift_left", {"input": "left", "shift": "right"}


class ShiftRight(_Renamed):
    """``input >> shift``."""

    op, names = "shift_right", {"input": "left", "shift": "right"}


class PermuteTensor(Model):
    """The reference's ``PermuteTensor``: the rows (first axis) of ``input`` in the order of
    ``indices``, ``output[i] = input[indices[i]]`` (NumPy's ``input[indices]``), with
    ``indices`` an integer tensor holding a permutation of ``range(len(input))``. The gradient
    goes back to the rows it came from. To reorder *axes* use ``Transpose(axes=...)``.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import PermuteTensor
    >>> b = ml.NumpyBackend(dtype=ml.float64)
    >>> pm = ml.compile(PermuteTensor(indices=[2, 0, 1]), b, shapes={"input": [3, 2]})
    >>> pm.evaluate({}, {"input": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])})[
    ...     "output"].tolist()
    [[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]
    """

    def __init__(self, indices: Any = TBD, *, name: str | None = None,
                 input: Any = TBD) -> None:
        super().__init__(name)
        if isinstance(indices, list | tuple):
            indices = Tensor(list(indices))
        x = add_op(self, "buffer", input=IOKey("input", value=input))
        idx = IOKey("indices", value=indices)
        # rows of x as a matrix (a trailing unit axis keeps a 1-d input two-dimensional), the
        # rows picked by an embedding lookup (a gather with a scatter-add gradient), and the
        # result in x's shape (a permutation keeps it)
        rows = add_op(self, "flatten", input=add_op(self, "unsqueeze", input=x, axis=-1),
                      start_dim=1, end_dim=-1)
        picked = add_op(self, "embedding", input=idx, weight=rows)
        add_op(self, "reshape", input=picked, shape=x.shape, out=IOKey("output"))
        self.set_cin("input")
        self.set_cout("output")


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
        x = add_op(self, "buffer", input=IOKey("input", value=input))
        chunk = x.shape[axis] // split_size
        add_op(self, "split", out=IOKey("output"), input=x, split_size=chunk, axis=axis)
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


_UNSET: Any = object()


class Concat(Model):
    """``Concat`` for both APIs. The reference's: one list-valued ``input`` joined along
    ``axis`` (default 0; ``None`` flattens and joins): ``Concat()(input=[a, b, c], output="y")``,
    ``Concat(input=["a", "b"])`` (names or constant values), or positionally
    ``Concat().connect([a, b], 1, "y")`` (terminal order ``input``, ``axis``, ``output``); the
    list's items are the inputs ``input1`` ... ``inputN``. The guide's ``torch.cat`` form,
    ``Concat(n=3, dim=1)(input1=..., input2=..., input3=...)`` (or ``Concat(3, ...)``), is
    ``mithril.models.layers.Concat``, which ``Concat(n=..)`` / ``Concat(dim=..)`` return; a
    bare ``Concat()`` joins two inputs (``input1``, ``input2``) until a list says otherwise.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Concat, Model
    >>> m = Model()
    >>> m |= Concat(axis=1)(input=["a", "b"], output="y")
    >>> pm = ml.compile(m, ml.NumpyBackend(), shapes={"a": [2, 1], "b": [2, 3]})
    >>> pm.shapes["y"]
    [2, 4]
    """

    def __new__(cls, input: Any = TBD, axis: Any = _UNSET, *, n: int | None = None,
                dim: Any = None, name: str | None = None) -> Any:
        if isinstance(input, int) and not isinstance(input, bool):  # Concat(3, ...): n
            n, input = input, TBD
        if n is not None or dim is not None:
            if input is not TBD:
                raise ArgumentError("Concat takes either input=[...] (the reference's) or "
                                    "n/dim (the guide's)")
            return _layers.Concat(2 if n is None else n, None if axis is _UNSET else axis,
                                  dim=dim, name=name)
        return super().__new__(cls)

    def __init__(self, input: Any = TBD, axis: Any = _UNSET, *, n: int | None = None,
                 dim: Any = None, name: str | None = None) -> None:
        super().__init__(name)
        self.axis = 0 if axis is _UNSET else axis
        self._terms: list[str] = []
        self._fixed = input is not TBD  # the inputs were given to the constructor
        if self._fixed:
            self._build(self._items(input), given=True)
        else:
            self._build([TBD, TBD])

    @staticmethod
    def _items(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple) or not value:
            raise ArgumentError(f"Concat's input must be a non-empty list (or tuple) of "
                                f"tensors or connections, got {value!r}")
        return list(value)

    def _build(self, items: list[Any], given: bool = False) -> None:
        """Make the concat of ``len(items)`` inputs. Items given to the constructor are the
        terminals' names (strings) or constant values; connections of a parent are given
        to ``connect``."""
        wires: dict[str, IOKey] = {}
        for i, item in enumerate(items):
            term = f"input{i + 1}"
            if given and isinstance(item, Connection | IOKey):
                raise ArgumentError("Concat(input=[...]) takes names or values; give "
                                    "connections when connecting: Concat()(input=[a, b])")
            if given and isinstance(item, str):
                term = item
            value = item if given and not isinstance(item, str) else TBD
            wires[f"input{i + 1}"] = IOKey(term, value=value)
            self._terms.append(term)
        add_op(self, "concat", n=len(items), out=IOKey("output"), axis=self.axis, **wires)
        self.set_cin(self._terms[0])
        self.set_cout("output")

    def _resize(self, k: int) -> None:
        """Rebuild a bare ``Concat()`` (not yet added anywhere) for ``k`` inputs."""
        if k == len(self._terms):
            return
        if self._fixed or self.parent is not None:
            raise ArgumentError(f"Concat {self.path} joins {len(self._terms)} inputs; got "
                                f"{k}")
        axis, name = self.axis, self.name
        Model.__init__(self, name)
        self.axis, self._terms, self._fixed = axis, [], False
        self._build([TBD] * k)
        # to_dict rebuilds it as the guide's Concat of k inputs (same terminals)
        self.__dict__["_init_args"] = ((), {"n": k, "axis": axis, "name": name})

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Connect ``input`` (a list), ``axis`` and ``output`` (also positionally in that
        order); the list's items go to ``input1`` ... ``inputN``. The guide's
        ``input1=..., input2=...`` work as well."""
        names = ("input", "axis", "output")
        if len(args) > len(names):
            raise ArgumentError(f"Concat.connect takes at most {len(names)} positional "
                                f"terminals ({', '.join(names)})")
        for key, value in zip(names, args, strict=False):
            if key in kwargs:
                raise ArgumentError(f"Concat.connect got {key!r} twice")
            kwargs[key] = value
        if "axis" in kwargs:
            axis = kwargs.pop("axis")
            if axis != self.axis:
                raise ArgumentError(f"Concat {self.path} joins along axis={self.axis!r}; "
                                    f"give axis={axis!r} to its constructor instead")
        if "input" in kwargs:
            items = self._items(kwargs.pop("input"))
            self._resize(len(items))
            kwargs.update(dict(zip(self._terms, items, strict=True)))
        else:
            numbered = [int(k[5:]) for k in kwargs
                        if k.startswith("input") and k[5:].isdigit()]
            if numbered and not self._fixed:
                self._resize(max(max(numbered), len(self._terms)))
        return super().connect(**kwargs)

    __call__ = connect


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def reference_padding(layer: str, padding: Any, kernel_size: tuple[int, ...]
                      ) -> tuple[tuple[int, int], ...]:
    """The reference's padding forms as ``(before, after)`` per spatial dim.

    One dim (``Convolution1D``, ``MaxPool1D``): an int, ``(left, right)`` or ``(p,)``. Two dims:
    an int, or two items (rows, then columns), each an int (both sides) or a
    ``(before, after)`` pair: ``(1, 2)``, ``((top, bottom), (left, right))``, ``((0, 1), 2)``.
    ``"same"`` / ``"valid"`` in any case: ``kernel_size // 2`` on each side (odd kernels only,
    as in the reference) / none. A malformed value raises ``ArgumentError`` naming the layer.

    >>> reference_padding("Convolution2D", ((0, 1), 2), (3, 3))
    ((0, 1), (2, 2))
    >>> reference_padding("Convolution1D", "SAME", (3,))
    ((1, 1),)
    """
    nd = len(kernel_size)
    forms = ("an int, (left, right), 'same' or 'valid'" if nd == 1 else
             "an int, a pair of ints, ((top, bottom), (left, right)), 'same' or 'valid'")
    bad = ArgumentError(f"{layer}: padding must be {forms} (non-negative ints), got "
                        f"{padding!r}")
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * nd
        if mode != "same":
            raise bad
        if any(k % 2 == 0 for k in kernel_size):
            raise ArgumentError(f"{layer}: padding={padding!r} needs an odd kernel_size (the "
                                f"reference pads kernel_size // 2 on each side), got "
                                f"kernel_size={kernel_size if nd > 1 else kernel_size[0]!r}")
        return tuple((k // 2, k // 2) for k in kernel_size)
    if _is_int(padding):
        return ((padding, padding),) * nd
    if not isinstance(padding, tuple | list):
        raise bad
    items = tuple(padding)
    if nd == 1:
        if len(items) == 1 and _is_int(items[0]):
            return ((items[0], items[0]),)
        if len(items) == 2 and all(_is_int(x) for x in items):
            return ((items[0], items[1]),)
        raise bad
    if len(items) != nd:
        raise bad
    pairs: list[tuple[int, int]] = []
    for item in items:
        if _is_int(item):
            pairs.append((item, item))
        elif isinstance(item, tuple | list) and len(item) == 2 and all(_is_int(x) for x in item):
            pairs.append((item[0], item[1]))
        else:
            raise bad
    return tuple(pairs)


class _RefConv:
    """The reference's padding forms for ``Convolution1D`` / ``Convolution2D`` (the
    convolution kernels take ``(before, after)`` pairs, so every form goes to them as is)."""

    def _padding_pairs(self, padding: Any, k: tuple[int, ...], s: tuple[int, ...],
                       d: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return reference_padding(type(self).__name__, padding, k)


def _conv_init(self: Any, kernel_size: Any, out_channels: Any, stride: Any, padding: Any,
               dilation: Any, groups: int, use_bias: bool, name: str | None,
               in_channels: int | None, bias: bool | None, padding_mode: str) -> None:
    _layers._ConvNd.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                             dilation, groups, use_bias if bias is None else bias, padding_mode,
                             name=name)


class Convolution2D(_RefConv, _layers.Conv2d):
    """The reference's ``Convolution2D(kernel_size, out_channels, stride, padding, dilation,
    groups, use_bias)``: its positional order (``Convolution2D(7, 64, 4, 3)`` is a 7x7 kernel,
    64 channels, stride 4, padding 3), the input channels taken from the input. The guide's
    ``Conv2d(in_channels, out_channels, kernel_size, ...)`` is the same layer with PyTorch's
    order; ``in_channels=`` may be given here by keyword. ``padding`` takes the reference's
    forms (:func:`reference_padding`): an int, ``(rows, columns)``,
    ``((top, bottom), (left, right))``, ``"same"`` / ``"valid"`` in any case.

    >>> import mithril as ml
    >>> from mithril.models import Convolution2D
    >>> pm = ml.compile(Convolution2D(3, 8, 2, 1), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 4, 9, 9]})
    >>> pm.shapes["output"], pm.shapes["weight"]
    ([1, 8, 5, 5], [8, 4, 3, 3])
    """

    def __init__(self, kernel_size: int | tuple[int, int] | None = None,
                 out_channels: int | None = None, stride: Any = (1, 1), padding: Any = (0, 0),
                 dilation: Any = (1, 1), groups: int = 1, use_bias: bool = True, *,
                 name: str | None = None, in_channels: int | None = None,
                 bias: bool | None = None, padding_mode: str = "zeros") -> None:
        _conv_init(self, kernel_size, out_channels, stride, padding, dilation, groups, use_bias,
                   name, in_channels, bias, padding_mode)


class Convolution1D(_RefConv, _layers.Conv1d):
    """The reference's ``Convolution1D(kernel_size, out_channels, stride, padding, dilation,
    groups, use_bias)`` in its positional order (the guide's ``Conv1d`` has PyTorch's);
    ``padding`` is an int, ``(left, right)`` or ``"same"`` / ``"valid"`` in any case.

    >>> import mithril as ml
    >>> from mithril.models import Convolution1D
    >>> pm = ml.compile(Convolution1D(3, 6, 2), ml.NumpyBackend(), shapes={"input": [2, 4, 11]})
    >>> pm.shapes["output"]
    [2, 6, 5]
    """

    def __init__(self, kernel_size: int | None = None, out_channels: int | None = None,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                 use_bias: bool = True, *, name: str | None = None,
                 in_channels: int | None = None, bias: bool | None = None,
                 padding_mode: str = "zeros") -> None:
        _conv_init(self, kernel_size, out_channels, stride, padding, dilation, groups, use_bias,
                   name, in_channels, bias, padding_mode)


class Where(_Renamed):
    """``where(cond, input1, input2)``: ``input1`` where ``cond`` is true, else ``input2``
    (broadcasting), with the reference's terminals ``cond``, ``input1``, ``input2`` (canonical
    input ``input1``; positional connect order ``(cond, input1, input2, output)``). The guide's
    spelling ``Where()(condition=...)`` connects ``cond`` too.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Model, Where
    >>> m = Model()
    >>> m |= Where()(cond="c", input1="a", input2=ml.Tensor(0.0), output="out")
    >>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"a": [3], "c": [3]})
    >>> pm.evaluate({}, {"a": np.array([1.0, 2.0, 3.0]),
    ...                  "c": np.array([True, False, True])})["out"].tolist()
    [1.0, 0.0, 3.0]
    """

    op, names = "where", {"input1": "input1", "cond": "condition", "input2": "input2"}

    def __init__(self, cond: Any = TBD, input1: Any = TBD, input2: Any = TBD, *,
                 name: str | None = None, condition: Any = TBD) -> None:
        super().__init__(name=name, cond=cond if condition is TBD else condition,
                         input1=input1, input2=input2)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Terminals by keyword (``condition=`` is ``cond=``) or in the reference's order
        ``(cond, input1, input2, output)``."""
        if "condition" in kwargs:
            kwargs["cond"] = kwargs.pop("condition")
        if len(args) > 4:
            raise ArgumentError(f"Where takes at most 4 positional terminals, got {len(args)}")
        kwargs.update(zip(("cond", "input1", "input2", "output"), args, strict=False))
        return super().connect(**kwargs)

    __call__ = connect


class _PaddedPool(Model):
    """The reference's pooling with explicit zero padding: the input (batched or not) is viewed
    as ``(M, *spatial)``, zero-padded by ``(before, after)`` per spatial dim, pooled by the
    unpadded primitive and viewed back. Built by :class:`MaxPool1D`, :class:`MaxPool2D`
    (any padding) and :class:`AvgPool2D` (padding that the primitive cannot take)."""

    def __init__(self, op: str, nd: int, pads: tuple[tuple[int, int], ...], kernel_size: Any,
                 stride: Any, dilation: Any, *, name: str | None = None) -> None:
        super().__init__(name)
        self._op = op
        x = add_op(self, "buffer", input=IOKey("input", type=float))
        flat = add_op(self, "flatten", input=x, start_dim=0, end_dim=-nd - 1)
        padded = add_op(self, "pad", input=flat, pad_width=((0, 0), *pads))
        window: dict[str, Any] = {"kernel_size": kernel_size, "stride": stride,
                                  "padding": (0,) * nd}
        if op.startswith("max"):
            window["dilation"] = dilation
        pooled = add_op(self, op, input=padded, **window)
        add_op(self, "reshape", out=IOKey("output"), input=pooled,
               shape=x.shape[:-nd] + pooled.shape[-nd:])
        self.set_cin("input")
        self.set_cout("output")

    @property
    def class_name(self) -> str:
        return self._op.replace("_", "")


def _pool_args(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], nd: int
               ) -> tuple[dict[str, Any], tuple[tuple[int, int], ...]]:
    """The constructor's arguments by name and the padding as ``(before, after)`` pairs."""
    a = _pool._bound(cls, args, kwargs)
    label = cls.__name__
    if a["kernel_size"] is TBD:
        raise ArgumentError(f"{label} needs kernel_size")
    k = _pool._ints(a["kernel_size"], nd, f"{label}: kernel_size")
    return a, reference_padding(label, a["padding"], k)


class MaxPool2D(_pool.MaxPool2d):
    """The reference's ``MaxPool2D(kernel_size, stride=None, padding=(0, 0), dilation=1)``.

    ``padding`` is an int, ``(rows, columns)`` or ``((top, bottom), (left, right))``, and
    pads with **zeros**, as the reference does (the guide's ``MaxPool2d`` pads with ``-inf``,
    as PyTorch does). Without padding this is the catalogue's primitive; with padding, a small
    composite (zero pad, then the unpadded primitive) for batched or unbatched inputs.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import MaxPool2D
    >>> pm = ml.compile(MaxPool2D(2, padding=((1, 0), (0, 1))), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 1, 3, 3]})
    >>> pm.evaluate({}, {"input": -np.ones((1, 1, 3, 3), np.float32)})["output"].tolist()
    [[[[0.0, 0.0], [-1.0, 0.0]]]]
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a, pads = _pool_args(cls, args, kwargs, 2) if args or kwargs else ({}, ((0, 0),) * 2)
        if any(p for pair in pads for p in pair):
            return _PaddedPool("max_pool2d", 2, pads, _pool._norm2(a["kernel_size"]),
                               _pool._norm2(a["stride"]), _pool._norm2(a["dilation"]),
                               name=a["name"])
        return _p.Primitive.__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = (0, 0),
                 dilation: Any = 1, *, name: str | None = None) -> None:
        _p.Primitive.__init__(self, kernel_size=_pool._norm2(kernel_size),
                           stride=_pool._norm2(stride), padding=(0, 0),
                           dilation=_pool._norm2(dilation), name=name)


class MaxPool1D(_pool.MaxPool1d):
    """The reference's ``MaxPool1D(kernel_size, stride=None, padding=(0, 0), dilation=1)``:
    ``padding`` is an int or ``(left, right)`` and pads with zeros (see :class:`MaxPool2D`).

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import MaxPool1D
    >>> pm = ml.compile(MaxPool1D(2, padding=(0, 1)), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 1, 5]})
    >>> x = np.array([[[10.0, 11.0, 10.0, 16.0, 14.0]]], np.float32)
    >>> pm.evaluate({}, {"input": x})["output"].tolist()
    [[[11.0, 16.0, 14.0]]]
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a, pads = _pool_args(cls, args, kwargs, 1) if args or kwargs else ({}, ((0, 0),))
        if any(p for pair in pads for p in pair):
            return _PaddedPool("max_pool1d", 1, pads, _pool._norm(a["kernel_size"], 1),
                               _pool._norm(a["stride"], 1), _pool._norm(a["dilation"], 1),
                               name=a["name"])
        return _p.Primitive.__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = (0, 0),
                 dilation: Any = 1, *, name: str | None = None) -> None:
        _p.Primitive.__init__(self, kernel_size=_pool._norm(kernel_size, 1),
                           stride=_pool._norm(stride, 1), padding=(0,),
                           dilation=_pool._norm(dilation, 1), name=name)


class AvgPool2D(_pool.AvgPool2d):
    """The reference's ``AvgPool2D(kernel_size, stride=None, padding=(0, 0), dilation=1)``
    (``dilation`` 1 only): ``padding`` in the forms of :class:`MaxPool2D`; the zero padding
    counts in the average. Symmetric padding up to half the kernel goes to the catalogue's
    primitive; other padding builds the zero-pad composite.

    >>> import mithril as ml
    >>> from mithril.models import AvgPool2D
    >>> pm = ml.compile(AvgPool2D(2, padding=((0, 1), (1, 0))), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 2, 4, 4]})
    >>> pm.shapes["output"]
    [1, 2, 2, 2]
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a, pads = _pool_args(cls, args, kwargs, 2) if args or kwargs else ({}, ((0, 0),) * 2)
        if a and a["dilation"] not in (1, (1, 1), [1, 1]):
            raise ArgumentError(f"AvgPool2D: only dilation=1 is supported, got "
                                f"{a['dilation']!r}")
        k = _pool._ints(a["kernel_size"], 2, "AvgPool2D: kernel_size") if a else (1, 1)
        if any(lo != hi or 2 * lo > ki for (lo, hi), ki in zip(pads, k, strict=True)):
            return _PaddedPool("avg_pool2d", 2, pads, _pool._norm2(a["kernel_size"]),
                               _pool._norm2(a["stride"]), 1, name=a["name"])
        return _p.Primitive.__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = (0, 0),
                 dilation: Any = 1, *, name: str | None = None) -> None:
        k = (1, 1) if kernel_size is TBD else _pool._ints(kernel_size, 2,
                                                             "AvgPool2D: kernel_size")
        pads = reference_padding("AvgPool2D", padding, k)
        _p.Primitive.__init__(self, kernel_size=_pool._norm2(kernel_size),
                           stride=_pool._norm2(stride), padding=tuple(lo for lo, _ in pads),
                           name=name)
