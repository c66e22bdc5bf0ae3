"""``ConvTranspose1d`` / ``ConvTranspose2d``: PyTorch's transposed convolutions with its
arguments, on the catalogue's ``conv_transpose1d`` / ``conv_transpose2d`` primitives."""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.model import IOKey, Model, Operator
from ..framework.ops import CATALOGUE


def _ints(v: Any, n: int, what: str, low: int) -> tuple[int, ...]:
    items = tuple(v) if isinstance(v, tuple | list) else (v,) * n
    if len(items) != n or not all(isinstance(x, int) and not isinstance(x, bool) and x >= low
                                  for x in items):
        raise ArgumentError(f"{what} must be an int >= {low} or a tuple of {n} such ints, "
                            f"got {v!r}")
    return items


class _ConvTransposeNd(Model):
    nd = 2

    def __init__(self, in_channels: int | None = None, out_channels: int | None = None,
                 kernel_size: int | tuple[int, ...] | None = None, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", *, use_bias: bool | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        nd, cls = self.nd, type(self).__name__
        if use_bias is not None:
            bias = use_bias
        if kernel_size is None:
            raise ArgumentError(f"{cls} needs kernel_size")
        if padding_mode != "zeros":
            raise ArgumentError(f"{cls}: only padding_mode='zeros' is supported (as in "
                                f"PyTorch), got {padding_mode!r}")
        k = _ints(kernel_size, nd, f"{cls}: kernel_size", 1)
        s = _ints(stride, nd, f"{cls}: stride", 1)
        p = _ints(padding, nd, f"{cls}: padding", 0)
        op = _ints(output_padding, nd, f"{cls}: output_padding", 0)
        d = _ints(dilation, nd, f"{cls}: dilation", 1)
        for i in range(nd):
            if op[i] >= max(s[i], d[i]):
                raise ArgumentError(f"{cls}: output_padding {output_padding!r} must be smaller "
                                    f"than stride {stride!r} or dilation {dilation!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ArgumentError(f"{cls}: groups must be a positive int, got {groups!r}")
        for what, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c is not None and c % groups:
                raise ArgumentError(f"{cls}: {what}={c} is not divisible by groups={groups}")
        w_out = None if out_channels is None else out_channels // groups
        weight = IOKey("weight", shape=[in_channels, w_out, *k], type=float, differentiable=True)
        b = IOKey("bias", shape=[out_channels], type=float, differentiable=True) if bias else None
        self |= Operator(CATALOGUE[f"conv_transpose{nd}d"], stride=s, padding=p,
                         output_padding=op, dilation=d, groups=groups)(
            input="input", weight=weight, bias=b, output="output")
        if in_channels is not None:
            self.set_shapes(input=[..., in_channels, *([None] * nd)])
        # PyTorch: kaiming-uniform with the fan-in of weight.shape[1:] (out / groups x kernel)
        fan_in = self._resolve_terminal("weight").meta.root().shape.normal().prefix[1:]
        self.set_initializer("weight", "kaiming_uniform", fan_in)
        if bias:
            self.set_initializer("bias", "kaiming_uniform", fan_in)


class ConvTranspose2d(_ConvTransposeNd):
    """``nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1)`` (PyTorch's argument order).

    The weight is ``(in_channels, out_channels // groups, kH, kW)``, as in PyTorch; the output
    size is ``(H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.
    ``use_bias`` is another spelling of ``bias``. Not supported: the ``output_size`` argument
    of PyTorch's ``forward`` (use ``output_padding``).

    >>> import mithril as ml
    >>> from mithril.models import ConvTranspose2d, Model
    >>> model = Model()
    >>> model |= ConvTranspose2d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [1, 4, 5, 5]})
    >>> pm.shapes["output"], pm.shapes["convtranspose2d.weight"]
    ([1, 2, 10, 10], [4, 2, 3, 3])
    """

    nd = 2


class ConvTranspose1d(_ConvTransposeNd):
    """``nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1)``; the weight is
    ``(in_channels, out_channels // groups, k)``.

    >>> import mithril as ml
    >>> from mithril.models import ConvTranspose1d, Model
    >>> model = Model()
    >>> model |= ConvTranspose1d(4, 6, kernel_size=3, stride=2, groups=2)
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 4, 7]}).shapes["output"]
    [2, 6, 15]
    """

    nd = 1


__all__ = ["ConvTranspose1d", "ConvTranspose2d"]
