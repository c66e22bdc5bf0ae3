"""Pooling layers with PyTorch's arguments: ``MaxPool1d``, ``MaxPool2d``, ``AvgPool2d``,
``AdaptiveAvgPool2d``.

With PyTorch's defaults each is the catalogue's pooling primitive. ``ceil_mode=True`` (and, for
``AvgPool2d``, ``count_include_pad=False`` with padding, or ``divisor_override``) builds a small
composite instead: the input is zero-padded explicitly (the padding plus the extra rows and
columns ``ceil_mode`` adds at the end, computed from the input's size), masked to ``-inf`` for
the maximum, or divided by the pooled count of the positions that count for the average; then
the unpadded primitive runs. Gradients come from the same primitives on every backend.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ArgumentError
from ..framework.logical.meta import TBD
from ..framework.logical.model import Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE
from ._build import add_op as _add
from .primitives import Primitive


class MaxPool2d(Primitive):
    """``nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)`` (padding is ``-inf``, at most half the kernel, as
    in PyTorch). ``return_indices`` is not supported.

    ``ceil_mode=True`` rounds the output size up, as PyTorch does (a last window may hang over
    the end, but never starts in the right padding); the layer is then a small composite (see
    the module's docstring) for inputs ``(N, C, H, W)``, and is not an instance of this class.

    >>> import mithril as ml
    >>> from mithril.models import MaxPool2d
    >>> pm = ml.compile(MaxPool2d(2), ml.NumpyBackend(), shapes={"input": [1, 3, 8, 8]})
    >>> pm.shapes["output"]
    [1, 3, 4, 4]
    >>> pm = ml.compile(MaxPool2d(2, ceil_mode=True), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 3, 7, 7]})
    >>> pm.shapes["output"]
    [1, 3, 4, 4]
    """

    op_name = "max_pool2d"
    positional = ("kernel_size", "stride", "padding", "dilation")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a = _bound(cls, args, kwargs)
        if a["ceil_mode"] and not a["return_indices"]:
            return _WindowPool("max", 2, a["kernel_size"], a["stride"], a["padding"],
                               a["dilation"], True, name=a["name"])
        return super().__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, return_indices: bool = False, ceil_mode: bool = False, *,
                 name: str | None = None) -> None:
        _unsupported("MaxPool2d", return_indices=return_indices)
        super().__init__(kernel_size=_norm2(kernel_size), stride=_norm2(stride),
                         padding=_norm2(padding), dilation=_norm2(dilation), name=name)


class MaxPool1d(Primitive):
    """``nn.MaxPool1d(kernel_size, stride=kernel_size, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``; ``ceil_mode=True`` as in :class:`MaxPool2d`
    (inputs ``(N, C, L)``).

    >>> import mithril as ml
    >>> from mithril.models import MaxPool1d
    >>> ml.compile(MaxPool1d(3), ml.NumpyBackend(), shapes={"input": [2, 4, 9]}).shapes["output"]
    [2, 4, 3]
    """

    op_name = "max_pool1d"
    positional = ("kernel_size", "stride", "padding", "dilation")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a = _bound(cls, args, kwargs)
        if a["ceil_mode"] and not a["return_indices"]:
            return _WindowPool("max", 1, a["kernel_size"], a["stride"], a["padding"],
                               a["dilation"], True, name=a["name"])
        return super().__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, return_indices: bool = False, ceil_mode: bool = False, *,
                 name: str | None = None) -> None:
        _unsupported("MaxPool1d", return_indices=return_indices)
        super().__init__(kernel_size=_norm(kernel_size, 1), stride=_norm(stride, 1),
                         padding=_norm(padding, 1), dilation=_norm(dilation, 1), name=name)


class AvgPool2d(Primitive):
    """``nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``, all as in PyTorch.

    With the defaults the zero padding counts in the average and the layer is the catalogue's
    primitive. ``ceil_mode=True`` rounds the output size up (a window hanging over the end
    averages only what it covers of the input and padding), ``count_include_pad=False``
    divides by the number of input positions in the window, ``divisor_override`` divides by
    that number instead; these build a small composite (see the module's docstring) for
    inputs ``(N, C, H, W)``, which is not an instance of this class.

    >>> import mithril as ml
    >>> from mithril.models import AvgPool2d
    >>> pm = ml.compile(AvgPool2d(3, stride=2, padding=1), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 2, 7, 7]})
    >>> pm.shapes["output"]
    [1, 2, 4, 4]
    >>> pm = ml.compile(AvgPool2d(2, ceil_mode=True, count_include_pad=False),
    ...                 ml.NumpyBackend(), shapes={"input": [1, 2, 5, 5]})
    >>> pm.shapes["output"]
    [1, 2, 3, 3]
    """

    op_name = "avg_pool2d"
    positional = ("kernel_size", "stride", "padding")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        a = _bound(cls, args, kwargs)
        padded = a["padding"] not in (0, (0, 0), [0, 0])
        if a["ceil_mode"] or (padded and not a["count_include_pad"]) \
                or a["divisor_override"] is not None:
            return _WindowPool("avg", 2, a["kernel_size"], a["stride"], a["padding"], 1,
                               a["ceil_mode"], count_include_pad=a["count_include_pad"],
                               divisor_override=a["divisor_override"], name=a["name"])
        return super().__new__(cls)

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, *, name: str | None = None) -> None:
        super().__init__(kernel_size=_norm2(kernel_size), stride=_norm2(stride),
                         padding=_norm2(padding), name=name)


def _bound(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor's arguments by name, defaults filled in."""
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _ints(v: Any, n: int, what: str) -> tuple[int, ...]:
    items = tuple(v) if isinstance(v, tuple | list) else (v,) * n
    if len(items) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise ArgumentError(f"{what} must be an int or a tuple of {n} ints, got {v!r}")
    return items


class _WindowPool(Model):
    """Max / average pooling with ``ceil_mode``, ``count_include_pad=False`` or
    ``divisor_override``: explicit padding (and a mask of what counts), then the unpadded
    pooling primitive. Built by ``MaxPool1d`` / ``MaxPool2d`` / ``AvgPool2d``."""

    def __init__(self, kind: str, nd: int, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, ceil_mode: bool, *, count_include_pad: bool = True,
                 divisor_override: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self._kind_nd = (kind, nd)
        label = f"{kind.capitalize()}Pool{nd}d"
        k = _ints(kernel_size, nd, f"{label}: kernel_size")
        s = k if stride is None else _ints(stride, nd, f"{label}: stride")
        p = _ints(padding, nd, f"{label}: padding")
        d = _ints(dilation, nd, f"{label}: dilation")
        for ki, pi in zip(k, p, strict=True):
            if 2 * pi > ki or pi < 0:
                raise ArgumentError(f"{label}: padding {padding!r} should be at most half of "
                                    f"kernel size {kernel_size!r} (as in PyTorch)")
        if divisor_override is not None and (not isinstance(divisor_override, int)
                                             or divisor_override < 1):
            raise ArgumentError(f"{label}: divisor_override must be a positive int, got "
                                f"{divisor_override!r}")
        x = _add(self, "buffer", input=IOKey("input", type=float,
                                               shape=[None, None, *([None] * nd)]))
        dtype = _add(self, "dtype_of", input=x)
        zero = (0, 0)
        pads: list[Any] = [zero, zero]      # the input's padding, (p, p + extra) per axis
        tails: list[Any] = [zero, zero]     # (0, extra): after the padded region
        sizes: list[Connection] = []
        counts: list[Any] = []
        for i in range(nd):
            n = x.shape[i - nd]
            sizes.append(n)
            span = n + (2 * p[i] - d[i] * (k[i] - 1) - 1)
            if ceil_mode:
                # PyTorch: round up, but the last window starts inside the input or the left
                # padding
                last = _add(self, "minimum", left=(span + (s[i] - 1)) // s[i],
                            right=(n + (p[i] - 1)) // s[i])
                # extra: how far the last window reaches past the right padding (negative:
                # it stops short of its end)
                extra = last * s[i] - span
                hi: Any = _add(self, "maximum", left=extra + p[i], right=0)
                tail: Any = _add(self, "maximum", left=extra, right=0)
            else:
                hi, tail = p[i], 0
            pads.append(_add(self, "to_tuple", n=2, input1=p[i], input2=hi))
            tails.append(_add(self, "to_tuple", n=2, input1=0, input2=tail))
            # the padded length the average counts: input and padding, up to the last window
            counts.append(n + p[i] + hi - tail)
        pad_all = _add(self, "to_tuple", n=2 + nd, **{f"input{j + 1}": v
                                                      for j, v in enumerate(pads)})
        padded = _add(self, "pad", input=x, pad_width=pad_all)
        # ones over the input's spatial dims (and, counting the padding, over the padded ones)
        counted = (kind == "avg" and count_include_pad)
        grid: Any = None
        for i in range(nd):
            size = counts[i] if counted else sizes[i]
            r = _add(self, "arange", stop=size)
            r = r[(None,) * i + (slice(None),) + (None,) * (nd - 1 - i)]
            grid = r if grid is None else grid + r
        ones = _add(self, "cast", input=(grid >= 0)[(None, None)], dtype=dtype)
        if counted:
            mask = _add(self, "pad", input=ones, pad_width=_add(
                self, "to_tuple", n=2 + nd, **{f"input{j + 1}": v for j, v in enumerate(tails)}))
        else:
            mask = _add(self, "pad", input=ones, pad_width=pad_all)
        window = {"kernel_size": k, "stride": s, "padding": (0,) * nd}
        if kind == "max":
            masked = _add(self, "where", condition=mask > 0.5, input1=padded,
                          input2=float("-inf"))
            _add(self, f"max_pool{nd}d", out=IOKey("output"), input=masked, dilation=d,
                 **window)
        else:
            total = _add(self, "avg_pool2d", input=padded, **window)
            if divisor_override is not None:
                scale = float(k[0] * k[1]) / float(divisor_override)
                _add(self, "multiply", out=IOKey("output"), left=total, right=scale)
            else:
                share = _add(self, "avg_pool2d", input=mask, **window)
                _add(self, "divide", out=IOKey("output"), left=total, right=share)
        self.set_cin("input")
        self.set_cout("output")

    @property
    def class_name(self) -> str:
        kind, nd = self._kind_nd
        return f"{kind}pool{nd}d"


def _unsupported(cls: str, **flags: Any) -> None:
    for k, v in flags.items():
        if v:
            raise ArgumentError(f"{cls}: {k} is not supported (only PyTorch's default)")


def _norm(v: Any, n: int) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    if isinstance(v, list):
        return tuple(v)
    return v


def _norm2(v: Any) -> Any:
    return _norm(v, 2)



class AdaptiveAvgPool2d(Model):
    """``nn.AdaptiveAvgPool2d(output_size)`` for the cases that are a plain pooling.

    ``output_size`` is an int or a pair (``None`` keeps that input size). Supported:

    - ``output_size=1`` (or ``(1, 1)``): the mean over H and W (global average pooling), for
      any input size, known or not;
    - input sizes divisible by the output sizes: an average pool with
      ``kernel_size = stride = input_size // output_size``.

    Other sizes (PyTorch's overlapping windows) raise a ``ShapeMismatchError`` saying so as soon
    as the input's spatial size is known: when the model is built with known shapes, or at
    ``ml.compile(..., shapes=...)``. Give the input's spatial size at build or compile time: the
    kernel size is read off it then and written into the generated code as a constant. (Compiled
    without the spatial size, the kernel size is computed from each input when the model runs,
    and a size that is not divisible fails there, in the backend's pooling kernel.)

    >>> import mithril as ml
    >>> from mithril.models import AdaptiveAvgPool2d, Model
    >>> model = Model()
    >>> model |= AdaptiveAvgPool2d((2, 3))
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [1, 4, 8, 9]}).shapes["output"]
    [1, 4, 2, 3]
    """

    def __init__(self, output_size: int | tuple[int | None, int | None] | None, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        if output_size is None or isinstance(output_size, int):
            sizes: tuple[Any, ...] = (output_size, output_size)
        else:
            sizes = tuple(output_size)
        if len(sizes) != 2 or not all(
                s is None or (isinstance(s, int) and not isinstance(s, bool) and s > 0)
                for s in sizes):
            raise ArgumentError(f"AdaptiveAvgPool2d: output_size must be a positive int or a pair "
                                f"of positive ints / None, got {output_size!r}")
        self.output_size = sizes
        if sizes == (1, 1):
            mean = CATALOGUE["mean"]
            self |= Operator(mean, axis=(-2, -1), keepdim=True)(input="input", output="output")
            return
        if sizes == (None, None):
            self |= Operator(CATALOGUE["buffer"])(input="input", output="output")
            return
        self |= Operator(CATALOGUE["shape"])(input="input", output="input_shape")
        shape = self.input_shape
        kernel: list[Any] = []
        bad: Any = False
        for axis, out in zip((-2, -1), sizes, strict=True):
            if out is None:
                kernel.append(1)
                continue
            k = shape[axis] // out
            kernel.append(k)
            not_divisible = (shape[axis] - k * out) != 0
            bad = not_divisible if bad is False else (bad | not_divisible)
        self |= Operator(CATALOGUE["to_tuple"], n_inputs=2)(
            input1=kernel[0], input2=kernel[1], output="kernel")
        # (kernel, (reason,))[bad]: when a size is not divisible, the pooling's kernel_size is
        # the reason, which the pooling rule rejects with this text once the sizes are known
        # (and the kernels at run time, for sizes only known then)
        reason = (f"AdaptiveAvgPool2d(output_size={output_size!r}): the input's spatial size "
                  "is not divisible by the output size (supported: divisible sizes, and "
                  "output_size=1)",)
        self |= Operator(CATALOGUE["to_tuple"], n_inputs=2, input2=reason)(
            input1="kernel", output="kernel_choices")
        self |= Operator(CATALOGUE["indexer"])(input="kernel_choices", index=bad,
                                               output="kernel_size")
        self |= Operator(CATALOGUE["avg_pool2d"], stride=TBD, padding=(0, 0))(
            input="input", kernel_size="kernel_size", stride="kernel_size", output="output")


__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool1d", "MaxPool2d"]
