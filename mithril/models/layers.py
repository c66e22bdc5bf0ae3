"""Layers with PyTorch's arguments and defaults, built from catalogue primitives.

Parameter layouts follow PyTorch (``Linear.weight`` is ``(out, in)``, convolutions OIHW) so a
``state_dict`` maps onto them without transposes, and ``randomize_params`` uses PyTorch's
default initialisers for each.
"""

from __future__ import annotations

from typing import Any

from ..framework.logical.meta import TBD
from ..framework.logical.model import ConnectSpec, IOKey, Model, Operator
from ..framework.ops import CATALOGUE
from .primitives import Primitive


def _pair(v: Any, n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    if isinstance(v, tuple | list) and len(v) == n and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {v!r}")


def _param(name: str, shape: list[Any]) -> IOKey:
    return IOKey(name, shape=shape, type=float, differentiable=True)


def _fan_in_dims(model: Model, terminal: str, skip: int = 1) -> list[Any]:
    """The dims after the first ``skip`` of a parameter (its fan-in, PyTorch style)."""
    return model._resolve_terminal(terminal).meta.root().shape.normal().prefix[skip:]  # type: ignore[union-attr]


class Linear(Model):
    """``nn.Linear``: ``output = input @ weight.T + bias``; weight is ``(dimension, in)``.

    The input size may be given here, at call time (``Linear(10)(input_size=2048)``), or
    inferred from what the input is connected to.

    >>> import mithril as ml
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(3)(input_size=2), ml.NumpyBackend(), shapes={"input": [4, 2]})
    >>> pm.shapes["output"]
    [4, 3]
    """

    def __init__(self, dimension: int | None = None, use_bias: bool = True, *,
                 input_size: int | None = None, bias: bool | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        if bias is not None:
            use_bias = bias
        self.dimension = dimension
        self.use_bias = use_bias
        w = _param("weight", [dimension, input_size])
        b = _param("bias", [dimension]) if use_bias else None
        self |= Operator(CATALOGUE["linear"])(input="input", weight=w, bias=b, output="output")
        fan_in = _fan_in_dims(self, "weight")
        self.set_initializer("weight", "kaiming_uniform", fan_in)
        if use_bias:
            self.set_initializer("bias", "kaiming_uniform", fan_in)

    def connect(self, *args: Any, input_size: int | None = None, **kw: Any) -> ConnectSpec:
        if input_size is not None:
            self.set_shapes(weight=[self.dimension, input_size])
        return super().connect(*args, **kw)

    __call__ = connect


class _ConvNd(Model):
    nd = 2

    def __init__(self, in_channels: int | None = None, out_channels: int | None = None,
                 kernel_size: int | tuple[int, ...] | None = None, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True, *,
                 use_bias: bool | None = None, name: str | None = None) -> None:
        super().__init__(name)
        nd = self.nd
        if use_bias is not None:
            bias = use_bias
        if kernel_size is None:
            raise ValueError(f"{type(self).__name__} needs kernel_size")
        k = _pair(kernel_size, nd, "kernel_size")
        s = _pair(stride, nd, "stride")
        d = _pair(dilation, nd, "dilation")
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if in_channels is not None and in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        if out_channels is not None and out_channels % groups:
            raise ValueError(f"out_channels={out_channels} is not divisible by groups={groups}")
        pads = _conv_padding(padding, k, s, d)
        w_in = None if in_channels is None else in_channels // groups
        w = _param("weight", [out_channels, w_in, *k])
        b = _param("bias", [out_channels]) if bias else None
        op = CATALOGUE[f"conv{nd}d"]
        self |= Operator(op, stride=s, padding=pads, dilation=d, groups=groups)(
            input="input", weight=w, bias=b, output="output")
        if in_channels is not None:
            self.set_shapes(input=[..., in_channels, *([None] * nd)])
        fan_in = _fan_in_dims(self, "weight")
        self.set_initializer("weight", "kaiming_uniform", fan_in)
        if bias:
            self.set_initializer("bias", "kaiming_uniform", fan_in)


def _conv_padding(padding: Any, k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...]
                  ) -> tuple[tuple[int, int], ...]:
    if padding == "valid":
        return tuple((0, 0) for _ in k)
    if padding == "same":
        if any(x != 1 for x in s):
            raise ValueError("padding='same' needs stride 1 (as in PyTorch)")
        pads = []
        for ki, di in zip(k, d, strict=True):
            total = di * (ki - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    p = _pair(padding, len(k), "padding")
    return tuple((x, x) for x in p)


class Conv2d(_ConvNd):
    """``nn.Conv2d`` with PyTorch's arguments (padding also ``"same"`` / ``"valid"``)."""

    nd = 2


class Conv1d(_ConvNd):
    """``nn.Conv1d`` with PyTorch's arguments."""

    nd = 1


class BatchNorm2d(Model):
    """``nn.BatchNorm2d``: batch statistics and running-statistics updates in training,
    running statistics in inference (``compile(..., inference=True)``).

    ``running_mean`` / ``running_var`` are state: the compiled model keeps and updates them.
    """

    def __init__(self, num_features: int | None = None, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, track_running_stats: bool = True,
                 *, name: str | None = None) -> None:
        super().__init__(name)
        if momentum is None or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r} "
                             "(cumulative averaging, momentum=None, is not supported)")
        c = [num_features]
        terminals: dict[str, Any] = {
            "input": "input", "output": "output",
            "weight": _param("weight", c) if affine else None,
            "bias": _param("bias", c) if affine else None,
            "running_mean": IOKey("running_mean", shape=c, type=float, differentiable=False)
            if track_running_stats else None,
            "running_var": IOKey("running_var", shape=c, type=float, differentiable=False)
            if track_running_stats else None,
        }
        self |= Operator(CATALOGUE["batch_norm"], momentum=float(momentum), eps=float(eps))(
            **terminals)
        if num_features is not None:
            self.set_shapes(input=[None, num_features, None, None])
        else:
            self.set_shapes(input=[None, None, None, None])
        if affine:
            self.set_initializer("weight", "ones")
            self.set_initializer("bias", "zeros")
        if track_running_stats:
            self.set_initializer("running_mean", "zeros")
            self.set_initializer("running_var", "ones")


class MaxPool2d(Primitive):
    """``nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0, dilation=1)``."""

    op_name = "max_pool2d"
    positional = ("kernel_size", "stride", "padding", "dilation")

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, *, name: str | None = None) -> None:
        super().__init__(kernel_size=_norm2(kernel_size), stride=_norm2(stride),
                         padding=_norm2(padding), dilation=_norm2(dilation), name=name)


class MaxPool1d(Primitive):
    """``nn.MaxPool1d(kernel_size, stride=kernel_size, padding=0, dilation=1)``."""

    op_name = "max_pool1d"
    positional = ("kernel_size", "stride", "padding", "dilation")

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, *, name: str | None = None) -> None:
        super().__init__(kernel_size=_norm(kernel_size, 1), stride=_norm(stride, 1),
                         padding=_norm(padding, 1), dilation=_norm(dilation, 1), name=name)


class AvgPool2d(Primitive):
    """``nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0)`` (padding counted)."""

    op_name = "avg_pool2d"
    positional = ("kernel_size", "stride", "padding")

    def __init__(self, kernel_size: Any = TBD, stride: Any = None, padding: Any = 0, *,
                 name: str | None = None) -> None:
        super().__init__(kernel_size=_norm2(kernel_size), stride=_norm2(stride),
                         padding=_norm2(padding), name=name)


def _norm(v: Any, n: int) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    if isinstance(v, list):
        return tuple(v)
    return v


def _norm2(v: Any) -> Any:
    return _norm(v, 2)


class Flatten(Primitive):
    """``nn.Flatten(start_dim=1, end_dim=-1)`` — note PyTorch's default keeps the batch dim."""

    op_name = "flatten"
    positional = ("start_dim", "end_dim")

    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, name: str | None = None) -> None:
        super().__init__(start_dim=start_dim, end_dim=end_dim, name=name)


class Dropout(Primitive):
    """``nn.Dropout(p)``: zeroes elements with probability ``p`` and scales the rest by
    ``1/(1-p)`` in training; the identity in inference."""

    op_name = "dropout"
    positional = ("p",)


class LayerNorm(Model):
    """``nn.LayerNorm``: normalise over the trailing ``normalized_shape`` dims.

    Without ``normalized_shape`` (the reference API's ``LayerNorm()``), the last dim is
    normalised and its size is inferred. ``use_scale`` / ``use_bias`` are the reference
    spellings of ``elementwise_affine`` / ``bias``.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...] | None = None, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *,
                 use_scale: bool | None = None, use_bias: bool | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        from ..framework.shapes import Dim

        scale = elementwise_affine if use_scale is None else use_scale
        shift = (elementwise_affine and bias) if use_bias is None else use_bias
        if normalized_shape is None:
            shape: tuple[Any, ...] = (Dim(),)
        elif isinstance(normalized_shape, int):
            shape = (normalized_shape,)
        else:
            shape = tuple(normalized_shape)
        dims = [d if isinstance(d, int) else None for d in shape]
        self |= Operator(CATALOGUE["layer_norm"], normalized_shape=shape, eps=float(eps))(
            input="input", output="output",
            weight=_param("weight", dims) if scale else None,
            bias=_param("bias", dims) if shift else None)
        if scale:
            self.set_initializer("weight", "ones")
        if shift:
            self.set_initializer("bias", "zeros")


class Embedding(Model):
    """``nn.Embedding(num_embeddings, embedding_dim)``: rows of ``weight`` by index."""

    def __init__(self, num_embeddings: int | None = None, embedding_dim: int | None = None, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        self |= Operator(CATALOGUE["embedding"])(
            input=IOKey("input", type=int), weight=_param("weight", [num_embeddings,
                                                                      embedding_dim]),
            output="output")
        self.set_initializer("weight", "normal")


__all__ = ["AvgPool2d", "BatchNorm2d", "Conv1d", "Conv2d", "Dropout", "Embedding", "Flatten",
           "LayerNorm", "Linear", "MaxPool1d", "MaxPool2d"]
