"""Layers with PyTorch's arguments and defaults, built from catalogue primitives.

Parameter layouts follow PyTorch (``Linear.weight`` is ``(out, in)``, convolutions OIHW) so a
``state_dict`` maps onto them without transposes, and ``randomize_params`` uses PyTorch's
default initialisers for each.

Modes: ``ml.compile(model, backend)`` builds *training* behaviour (``BatchNorm2d`` normalises
with batch statistics and updates its running statistics, ``Dropout`` is active);
``ml.compile(model, backend, inference=True)`` builds *inference* behaviour (running
statistics, ``Dropout`` is the identity). There is no ``model.train()`` / ``model.eval()``:
compile the model once per mode; both compiled models take the same parameter and state dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..framework.logical.meta import TBD
from ..framework.logical.model import BaseModel, ConnectSpec, IOKey, Model, Operator
from ..framework.ops import CATALOGUE
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d, _unsupported
from .primitives import Primitive


def _pair(v: Any, n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    if isinstance(v, tuple | list) and len(v) == n and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise ArgumentError(f"{what} must be an int or a tuple of {n} ints, got {v!r}")


def _param(name: str, shape: list[Any]) -> IOKey:
    return IOKey(name, shape=shape, type=float, differentiable=True)


def _fan_in_dims(model: Model, terminal: str, skip: int = 1) -> list[Any]:
    """The dims after the first ``skip`` of a parameter (its fan-in, PyTorch style)."""
    return model._resolve_terminal(terminal).meta.root().shape.normal().prefix[skip:]


def _alias(cls: str, mine: str, mine_value: Any, theirs: str, theirs_value: Any,
           default: Any) -> Any:
    """One value from two spellings of an argument (``Softmax(axis=...)`` / ``dim=...``)."""
    if mine_value is not None and theirs_value is not None and mine_value != theirs_value:
        raise ArgumentTypeError(f"{cls} got {mine}={mine_value!r} and {theirs}={theirs_value!r}; "
                                "they are two names for one argument, give one")
    if mine_value is not None:
        return mine_value
    if theirs_value is not None:
        return theirs_value
    return default


# ==============================================================================================
# Linear and convolutions
# ==============================================================================================
class Linear(Model):
    """``nn.Linear``: ``output = input @ weight.T + bias``; weight is ``(dimension, in)``.

    The input size may be given here, at call time (``Linear(10)(input_size=2048)``), or
    inferred from what the input is connected to. ``use_bias`` (the reference spelling) and
    ``bias`` (PyTorch's) are the same switch.

    >>> import mithril as ml
    >>> from mithril.models import Linear, Model
    >>> model = Model()
    >>> model |= Linear(3)(input_size=2)
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [4, 2]})
    >>> pm.shapes["output"], pm.shapes["linear.weight"]
    ([4, 3], [3, 2])
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
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, use_bias: bool | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        nd = self.nd
        if use_bias is not None:
            bias = use_bias
        if kernel_size is None:
            raise ArgumentError(f"{type(self).__name__} needs kernel_size")
        if padding_mode != "zeros":
            raise ArgumentError(f"{type(self).__name__}: only padding_mode='zeros' is supported, "
                                f"got {padding_mode!r} (pad the input with Pad first)")
        k = _pair(kernel_size, nd, "kernel_size")
        s = _pair(stride, nd, "stride")
        d = _pair(dilation, nd, "dilation")
        if not isinstance(groups, int) or groups < 1:
            raise ArgumentError(f"groups must be a positive int, got {groups!r}")
        if in_channels is not None and in_channels % groups:
            raise ArgumentError(f"in_channels={in_channels} is not divisible by groups={groups}")
        if out_channels is not None and out_channels % groups:
            raise ArgumentError(f"out_channels={out_channels} is not divisible by groups={groups}")
        pads = self._padding_pairs(padding, k, s, d)
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

    def _padding_pairs(self, padding: Any, k: tuple[int, ...], s: tuple[int, ...],
                       d: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """``(before, after)`` per spatial dim from ``padding`` in PyTorch's forms (the
        reference's ``Convolution1D``/``Convolution2D`` override it with the reference's)."""
        return _conv_padding(padding, k, s, d)


def _conv_padding(padding: Any, k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...]
                  ) -> tuple[tuple[int, int], ...]:
    if padding == "valid":
        return tuple((0, 0) for _ in k)
    if padding == "same":
        if any(x != 1 for x in s):
            raise ArgumentError("padding='same' needs stride 1 (as in PyTorch)")
        pads = []
        for ki, di in zip(k, d, strict=True):
            total = di * (ki - 1)
            pads.append((total // 2, total - total // 2))  # PyTorch: the extra one at the end
        return tuple(pads)
    if isinstance(padding, str):
        raise ArgumentError(f"padding must be an int, a tuple of ints, 'same' or 'valid', got "
                            f"{padding!r}")
    p = _pair(padding, len(k), "padding")
    return tuple((x, x) for x in p)


class Conv2d(_ConvNd):
    """``nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True)``; ``padding`` is an int, a pair, ``"same"`` (stride 1) or ``"valid"``.

    The weight is OIHW, ``(out_channels, in_channels // groups, kH, kW)``. ``use_bias`` is the
    reference spelling of ``bias``.

    >>> import mithril as ml
    >>> from mithril.models import Conv2d, Model
    >>> model = Model()
    >>> model |= Conv2d(3, 8, kernel_size=3, padding="same")
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 3, 10, 10]})
    >>> pm.shapes["output"], pm.shapes["conv2d.weight"]
    ([2, 8, 10, 10], [8, 3, 3, 3])
    """

    nd = 2


class Conv1d(_ConvNd):
    """``nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True)``; ``padding`` is an int, ``"same"`` (stride 1) or ``"valid"``.

    >>> import mithril as ml
    >>> from mithril.models import Conv1d, Model
    >>> model = Model()
    >>> model |= Conv1d(4, 6, kernel_size=3, stride=2)
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 4, 11]}).shapes["output"]
    [2, 6, 5]
    """

    nd = 1


# ==============================================================================================
# Normalisation
# ==============================================================================================
class BatchNorm2d(Model):
    """``nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)`` over the channel axis of ``(N, C, H, W)`` inputs.

    Training (``ml.compile(model, backend)``) normalises with the batch statistics (biased
    variance) and moves ``running_mean`` / ``running_var`` towards the batch mean and the
    unbiased batch variance by ``momentum``. Inference (``ml.compile(..., inference=True)``)
    normalises with the running statistics. The running statistics are *state*: a compiled
    model keeps them in ``pm.state`` and updates them on each training ``evaluate`` (or pass
    ``state=`` to manage them yourself); give the training model's state to the inference
    model with ``infer.state = train.state``. Without ``track_running_stats`` there is no state
    and both modes use batch statistics, as in PyTorch. ``momentum=None`` (cumulative average)
    is not supported.

    >>> import mithril as ml
    >>> from mithril.models import BatchNorm2d, Model
    >>> model = Model()
    >>> model |= BatchNorm2d(4)
    >>> backend = ml.NumpyBackend()
    >>> train = ml.compile(model, backend, shapes={"input": [8, 4, 5, 5]})
    >>> params = train.randomize_params()
    >>> out = train.evaluate(params, {"input": backend.randn(8, 4, 5, 5)})
    >>> sorted(train.state)
    ['batchnorm2d.running_mean', 'batchnorm2d.running_var']
    >>> infer = ml.compile(model, backend, inference=True, shapes={"input": [8, 4, 5, 5]})
    >>> infer.state = train.state
    >>> infer.evaluate(params, {"input": backend.randn(8, 4, 5, 5)})["output"].shape
    (8, 4, 5, 5)
    """

    def __init__(self, num_features: int | None = None, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, track_running_stats: bool = True,
                 *, name: str | None = None) -> None:
        super().__init__(name)
        if momentum is None or not 0 <= momentum <= 1:
            raise ArgumentError(f"momentum must be a float in [0, 1], got {momentum!r} "
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


class LayerNorm(Model):
    """``nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``:
    normalise over the trailing ``normalized_shape`` dims (biased variance), then scale and
    shift.

    Without ``normalized_shape`` (the reference API's ``LayerNorm()``), the last dim is
    normalised and its size is inferred. ``use_scale`` / ``use_bias`` are the reference
    spellings of ``elementwise_affine`` / ``bias``.

    >>> import mithril as ml
    >>> from mithril.models import LayerNorm, Model
    >>> model = Model()
    >>> model |= LayerNorm(6)
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 5, 6]}).shapes["layernorm.weight"]
    [6]
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


class GroupNorm(Model):
    """``nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)``: normalise each of
    ``num_groups`` groups of channels per sample (biased variance), then a per-channel scale
    and shift (``weight`` ones, ``bias`` zeros). The input is ``(N, C, *)``.

    ``bias=False`` (PyTorch's keyword) keeps the scale and drops the shift.

    >>> import mithril as ml
    >>> from mithril.models import GroupNorm, Model
    >>> model = Model()
    >>> model |= GroupNorm(2, 6)
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [3, 6, 4, 4]})
    >>> pm.shapes["output"], pm.shapes["groupnorm.weight"]
    ([3, 6, 4, 4], [6])
    """

    def __init__(self, num_groups: int, num_channels: int | None = None, eps: float = 1e-5,
                 affine: bool = True, *, bias: bool = True, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ArgumentError(f"num_groups must be a positive int, got {num_groups!r}")
        if num_channels is not None and num_channels % num_groups:
            raise ArgumentError(f"num_channels={num_channels} is not divisible by "
                                f"num_groups={num_groups}")
        c = [num_channels]
        self |= Operator(CATALOGUE["group_norm"], num_groups=num_groups, eps=float(eps))(
            input="input", output="output",
            weight=_param("weight", c) if affine else None,
            bias=_param("bias", c) if affine and bias else None)
        self.set_shapes(input=[None, num_channels, ...])
        if affine:
            self.set_initializer("weight", "ones")
            if bias:
                self.set_initializer("bias", "zeros")


# ==============================================================================================
# Reshaping (the pooling layers are in pooling.py)
# ==============================================================================================
class Flatten(Primitive):
    """``nn.Flatten(start_dim=1, end_dim=-1)`` — note PyTorch's default keeps the batch dim.

    >>> import mithril as ml
    >>> from mithril.models import Flatten
    >>> ml.compile(Flatten(), ml.NumpyBackend(), shapes={"input": [2, 3, 4, 5]}).shapes["output"]
    [2, 60]
    """

    op_name = "flatten"
    positional = ("start_dim", "end_dim")

    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, name: str | None = None) -> None:
        super().__init__(start_dim=start_dim, end_dim=end_dim, name=name)


class Concat(Primitive):
    """``torch.cat`` of ``n`` inputs (``input1`` ... ``inputN``) along ``axis`` (PyTorch:
    ``dim``); ``axis=None`` flattens and joins.

    >>> import mithril as ml
    >>> from mithril.models import Concat, Model
    >>> model = Model()
    >>> model |= Concat(n=3, dim=1)(input1="a", input2="b", input3="c", output="output")
    >>> pm = ml.compile(model, ml.NumpyBackend(),
    ...                 shapes={"a": [2, 1], "b": [2, 3], "c": [2, 2]})
    >>> pm.shapes["output"]
    [2, 6]
    """

    op_name = "concat"
    positional = ("axis",)

    def __init__(self, n: int = 2, axis: Any = None, *, dim: Any = None,
                 name: str | None = None) -> None:
        value = _alias("Concat", "axis", axis, "dim", dim, 0)
        super().__init__(axis=value, n=n, name=name)


# ==============================================================================================
# Activations (PyTorch's argument names; they are the catalogue's primitives)
# ==============================================================================================
class Gelu(Primitive):
    """``nn.GELU(approximate="none")``: ``x * Phi(x)``; ``approximate="tanh"`` (or ``True``)
    is the tanh form.

    >>> import mithril as ml
    >>> from mithril.models import Model, Gelu
    >>> model = Model()
    >>> model |= Gelu(approximate="tanh")
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(model, backend, shapes={"input": [3]})
    >>> out = pm.evaluate({}, {"input": backend.array([-1.0, 0, 2])})["output"]
    >>> [round(float(v), 4) for v in out]
    [-0.1588, 0.0, 1.9546]
    """

    op_name = "gelu"
    positional = ("approximate",)

    def __init__(self, approximate: str | bool = "none", *, name: str | None = None) -> None:
        if approximate is TBD:
            flag: Any = TBD
        elif approximate in ("none", False):
            flag = False
        elif approximate in ("tanh", True):
            flag = True
        else:
            raise ArgumentError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(approximate=flag, name=name)


class Softmax(Primitive):
    """``nn.Softmax(dim)``: ``exp(x) / sum(exp(x))`` along ``dim`` (also spelled ``axis``,
    the reference API's name). Unlike PyTorch, which guesses a dim when none is given, the
    default is the last axis.

    >>> import mithril as ml
    >>> from mithril.models import Model, Softmax
    >>> model = Model()
    >>> model |= Softmax(dim=0)
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(model, backend, shapes={"input": [2]})
    >>> out = pm.evaluate({}, {"input": backend.array([0.0, 1.0])})["output"]
    >>> [round(float(v), 4) for v in out]
    [0.2689, 0.7311]
    """

    op_name = "softmax"
    positional = ("axis",)

    def __init__(self, dim: Any = None, *, axis: Any = None, name: str | None = None) -> None:
        super().__init__(axis=_alias(type(self).__name__, "axis", axis, "dim", dim, -1),
                         name=name)


class LogSoftmax(Softmax):
    """``nn.LogSoftmax(dim)``: ``log(softmax(x))`` along ``dim`` (also spelled ``axis``;
    default the last axis).

    >>> import mithril as ml
    >>> from mithril.models import Model, LogSoftmax
    >>> model = Model()
    >>> model |= LogSoftmax(dim=1)
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 5]}).shapes["output"]
    [2, 5]
    """

    op_name = "log_softmax"


class LeakyRelu(Primitive):
    """``nn.LeakyReLU(negative_slope=0.01)``: ``x`` where positive, ``negative_slope * x``
    elsewhere (``slope`` is the reference spelling).

    >>> import mithril as ml
    >>> from mithril.models import Model, LeakyRelu
    >>> model = Model()
    >>> model |= LeakyRelu(negative_slope=0.2)
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(model, backend, shapes={"input": [2]})
    >>> out = pm.evaluate({}, {"input": backend.array([-1.0, 3.0])})["output"]
    >>> [round(float(v), 4) for v in out]
    [-0.2, 3.0]
    """

    op_name = "leaky_relu"
    positional = ("negative_slope",)

    def __init__(self, negative_slope: Any = None, *, slope: Any = None,
                 name: str | None = None) -> None:
        value = _alias("LeakyRelu", "slope", slope, "negative_slope", negative_slope, 0.01)
        super().__init__(slope=value, name=name)


class Softplus(Model):
    """``nn.Softplus(beta=1.0, threshold=20.0)``: ``log(1 + exp(beta * x)) / beta``, and ``x``
    itself where ``beta * x > threshold``.

    >>> import mithril as ml
    >>> from mithril.models import Model, Softplus
    >>> model = Model()
    >>> model |= Softplus(beta=2.0)
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(model, backend, shapes={"input": [2]})
    >>> out = pm.evaluate({}, {"input": backend.array([0.0, 30.0])})["output"]
    >>> [round(float(v), 4) for v in out]
    [0.3466, 30.0]
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.beta, self.threshold = float(beta), float(threshold)
        softplus = Operator(CATALOGUE["softplus"], name="softplus")
        if self.beta == 1.0 and self.threshold == 20.0:
            # the catalogue's softplus is PyTorch's default (linear above 20)
            self |= softplus(input="input", output="output")
            return
        if self.beta <= 0:
            raise ArgumentError(f"Softplus: beta must be positive, got {beta!r}")
        self |= Operator(CATALOGUE["multiply"], right=self.beta)(left="input", output="scaled")
        self |= softplus(input="scaled", output="soft")
        self |= Operator(CATALOGUE["greater"], right=self.threshold)(left="scaled",
                                                                      output="linear_part")
        self |= Operator(CATALOGUE["where"])(condition="linear_part", input1="input",
                                             input2=self.soft / self.beta, output="output")


# ==============================================================================================
# Dropout, embedding, MLP
# ==============================================================================================
class Dropout(Primitive):
    """``nn.Dropout(p=0.5)``: in training, zeroes each element with probability ``p`` and
    scales the others by ``1 / (1 - p)``; in inference, the identity.

    Training is ``ml.compile(model, backend)``: each ``evaluate`` draws a fresh mask from the
    backend's random state (reproducible with ``backend.set_seed(...)``), and the gradient is
    that mask times the output gradient. ``ml.compile(model, backend, inference=True)`` leaves
    the input unchanged.

    >>> import mithril as ml
    >>> from mithril.models import Dropout, Model
    >>> model = Model()
    >>> model |= Dropout(p=0.25)
    >>> backend = ml.NumpyBackend()
    >>> backend.set_seed(0)
    >>> train = ml.compile(model, backend, shapes={"input": [1000]})
    >>> kept = train.evaluate({}, {"input": backend.ones(1000)})["output"]
    >>> sorted({round(float(v), 4) for v in kept})
    [0.0, 1.3333]
    >>> infer = ml.compile(model, backend, shapes={"input": [1000]}, inference=True)
    >>> float(infer.evaluate({}, {"input": backend.ones(1000)})["output"].min())
    1.0
    """

    op_name = "dropout"
    positional = ("p",)

    def __init__(self, p: Any = 0.5, inplace: bool = False, *, name: str | None = None) -> None:
        if p is not TBD and not (isinstance(p, int | float) and 0 <= p < 1):
            raise ArgumentError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        super().__init__(p=p if p is TBD else float(p), name=name)


class Embedding(Model):
    """``nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``: rows of ``weight`` by
    integer index (``weight`` drawn from N(0, 1), as in PyTorch).

    ``padding_idx`` (negative counts from the end; needs ``num_embeddings``) is the row whose
    gradient is always zero, as in PyTorch, so training never changes it. Unlike PyTorch,
    ``randomize_params`` draws that row like the others instead of zeroing it (load or set it
    to zeros yourself).

    ``max_norm`` (with ``norm_type``, default 2): each looked-up row whose norm exceeds
    ``max_norm`` is scaled to ``max_norm`` in the forward, by ``max_norm / (norm + 1e-7)`` as
    in PyTorch, and the gradient reaches ``weight`` as if the rescaled row were the parameter
    (PyTorch renormalises the weight in place, without autograd). Unlike PyTorch, the
    parameter itself is not rewritten: the renormalised rows are used in every forward, but an
    optimizer updates the stored (unscaled) rows. ``scale_grad_by_freq`` and ``sparse`` are not
    supported.

    >>> import mithril as ml
    >>> from mithril.models import Embedding, Model
    >>> model = Model()
    >>> model |= Embedding(10, 4)
    >>> ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 7]}).shapes["output"]
    [2, 7, 4]
    """

    def __init__(self, num_embeddings: int | None = None, embedding_dim: int | None = None,
                 padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, *, name: str | None = None) -> None:
        super().__init__(name)
        _unsupported("Embedding", scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
        if max_norm is not None and not (isinstance(max_norm, int | float) and max_norm > 0):
            raise ArgumentError(f"Embedding: max_norm must be a positive number, got "
                                f"{max_norm!r}")
        if not (isinstance(norm_type, int | float) and norm_type > 0):
            raise ArgumentError(f"Embedding: norm_type must be a positive number, got "
                                f"{norm_type!r}")
        weight = _param("weight", [num_embeddings, embedding_dim])
        if padding_idx is not None:
            if num_embeddings is None:
                raise ArgumentError("Embedding: padding_idx needs num_embeddings")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ArgumentError(f"Embedding: padding_idx={padding_idx} is not a row of "
                                    f"{num_embeddings} embeddings")
            frozen = np.zeros((num_embeddings, 1), dtype=bool)
            frozen[padding_idx] = True
            # the padding row is used as is and receives no gradient
            self |= Operator(CATALOGUE["stop_gradient"])(input=weight, output="weight_frozen")
            self |= Operator(CATALOGUE["where"])(condition=frozen, input1="weight_frozen",
                                                 input2="weight", output="weight_used")
            weight = "weight_used"
        if max_norm is None:
            self |= Operator(CATALOGUE["embedding"])(
                input=IOKey("input", type=int), weight=weight, output="output")
        else:
            self |= Operator(CATALOGUE["embedding"])(
                input=IOKey("input", type=int), weight=weight, output="rows")
            rows = self.rows
            p = float(norm_type)
            if p == 2.0:
                norm = (rows * rows).sum(axis=-1, keepdim=True).sqrt()
            else:
                norm = (rows.abs() ** p).sum(axis=-1, keepdim=True) ** (1.0 / p)
            limit = float(max_norm)
            self |= Operator(CATALOGUE["where"])(
                condition=norm > limit, input1=limit / (norm + 1e-7), input2=1.0,
                output="row_scale")
            # PyTorch rescales the rows in place, outside autograd: the forward sees the
            # rescaled rows, the gradient flows to weight unscaled
            self |= Operator(CATALOGUE["stop_gradient"])(input=rows * self.row_scale - rows,
                                                         output="renorm_shift")
            self |= Operator(CATALOGUE["add"])(left=rows, right="renorm_shift",
                                               output="output")
        self.set_cout("output")
        self.set_initializer("weight", "normal")


class MLP(Model):
    """A stack of ``Linear`` layers, each followed by its activation — the reference's ``MLP``.

    ``MLP(activations, dimensions, input_name_templates=None, input=TBD, *, input_size=None,
    use_bias=True, name=None, **weights_biases)``: ``dimensions[i]`` is the output size of the
    i-th layer and ``activations[i]`` (a fresh model instance such as ``Relu()``; ``Buffer()``
    or ``None`` for none) follows it; both lists have one entry per layer. This is
    ``nn.Sequential(nn.Linear(in, d0), act0, nn.Linear(d0, d1), act1, ...)``.

    Terminals, in order: ``input``, then per layer ``weight{i}`` (``[dimensions[i], in]``, as
    ``nn.Linear.weight``) and ``bias{i}`` (``[dimensions[i]]``; none when ``use_bias=False``),
    then ``output``. ``input_name_templates`` renames the parameters: a dict with the keys
    ``"weight"`` and/or ``"bias"`` whose values replace the prefixes, so
    ``input_name_templates={"weight": "w", "bias": "b"}`` gives ``w0, b0, w1, b1, ...``.
    ``weights_biases`` gives parameters by those names: a value (array, ``ml.Tensor``) makes
    the parameter a constant of the model. ``input=`` does the same for ``input``.
    ``input_size`` (this package's) fixes the input size of the first layer.

    Connecting: ``mlp(input, output, **weights_biases)`` — positionally ``input`` then
    ``output``, parameters by keyword (``mlp(input="x", weight0="w")``).

    >>> import mithril as ml
    >>> from mithril.models import MLP, Buffer, Relu
    >>> mlp = MLP(activations=[Relu(), Relu(), Buffer()], dimensions=[64, 64, 10], input_size=32)
    >>> pm = ml.compile(mlp, ml.NumpyBackend(), shapes={"input": [8, 32]})
    >>> pm.shapes["output"], pm.shapes["weight2"], pm.shapes["bias0"]
    ([8, 10], [10, 64], [64])
    >>> named = MLP([Relu(), None], [4, 2], input_name_templates={"weight": "w", "bias": "b"})
    >>> [k for k in named.interface() if k not in ("input", "output")]
    ['w0', 'b0', 'w1', 'b1']
    """

    def __init__(self, activations: Sequence[BaseModel | None], dimensions: Sequence[int | None],
                 input_name_templates: dict[str, str] | None = None, input: Any = TBD, *,
                 input_size: int | None = None, use_bias: bool = True,
                 name: str | None = None, **weights_biases: Any) -> None:
        super().__init__(name)
        activations, dimensions = list(activations), list(dimensions)
        if len(activations) != len(dimensions):
            raise ArgumentError(f"MLP needs one activation (or None) per layer: got "
                                f"{len(activations)} activations for {len(dimensions)} dimensions")
        if not dimensions:
            raise ArgumentError("MLP needs at least one layer")
        if not isinstance(input_name_templates, dict | None):
            raise ArgumentTypeError(
                f"MLP input_name_templates must be a dict such as {{'weight': 'w', 'bias': "
                f"'b'}}, got {input_name_templates!r}")
        templates = dict(input_name_templates or {})
        unknown = sorted(set(templates) - {"weight", "bias"})
        if unknown or not all(isinstance(v, str) and v for v in templates.values()):
            raise ArgumentError(
                f"MLP input_name_templates takes the keys 'weight' and 'bias' with non-empty "
                f"string prefixes, got {input_name_templates!r}")
        w_prefix = templates.get("weight", "weight")
        b_prefix = templates.get("bias", "bias")
        params = [(f"{w_prefix}{i}", f"{b_prefix}{i}" if use_bias else None)
                  for i in range(len(dimensions))]
        known = {n for pair in params for n in pair if n is not None}
        if len(known) != len(dimensions) * (2 if use_bias else 1):
            raise ArgumentError(f"MLP input_name_templates {input_name_templates!r} give the "
                                "weights and biases the same names")
        extra = sorted(set(weights_biases) - known)
        if extra:
            raise ArgumentError(f"MLP has no parameter {', '.join(map(repr, extra))}; its "
                                f"parameters: {', '.join(sorted(known))}")

        def key(term: str) -> IOKey:
            value = weights_biases.get(term, TBD)
            return IOKey(term) if value is TBD else IOKey(term, value=value)

        for i, (act, dim) in enumerate(zip(activations, dimensions, strict=True)):
            if act is not None and not isinstance(act, BaseModel):
                raise ArgumentTypeError(
                    f"MLP activations must be models such as Relu() (Buffer() or None for "
                    f"none), got {act!r}")
            layer = Linear(dim, use_bias, input_size=input_size if i == 0 else None)
            w_name, b_name = params[i]
            conns: dict[str, Any] = {"weight": key(w_name)}
            if b_name is not None:
                conns["bias"] = key(b_name)
            if i == 0:
                conns["input"] = IOKey("input") if input is TBD else IOKey("input", value=input)
                self |= layer(**conns)
            else:
                self += layer(**conns)
            if act is not None:
                self += act
        self._param_names = tuple(sorted(known))

    def connect(self, *args: Any, **kwargs: Any) -> ConnectSpec:
        """Connect ``input`` and ``output`` (also positionally, in that order) and the
        parameters (``weight0=...``, by keyword)."""
        names = ("input", "output")
        if len(args) > len(names):
            raise ArgumentError(f"MLP.connect takes at most {len(names)} positional terminals "
                                f"(input, output); give the parameters by name "
                                f"({', '.join(self._param_names)})")
        for term, value in zip(names, args, strict=False):
            if term in kwargs:
                raise ArgumentError(f"MLP.connect got {term!r} twice")
            kwargs[term] = value
        return super().connect(**kwargs)

    __call__ = connect


__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Concat", "Conv1d", "Conv2d",
           "Dropout", "Embedding", "Flatten", "Gelu", "GroupNorm", "LayerNorm", "LeakyRelu",
           "Linear", "LogSoftmax", "MLP", "MaxPool1d", "MaxPool2d", "Softmax", "Softplus"]
