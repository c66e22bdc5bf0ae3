"""PyTorch kernels: one function per tensor primitive of the catalogue.

Each kernel takes the catalogue's input terminals positionally, in catalogue order (see
``docs/dev/kernel-contract.md``); where PyTorch's own function has exactly the primitive's
semantics it is the kernel. Gradients come from PyTorch's autograd, so every kernel is written
with differentiable torch operations. Several kernel names (``sum``, ``max``) shadow Python
builtins inside this module; the builtins are reached through ``builtins``.
"""

from __future__ import annotations

import builtins
import math
import operator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ...framework import types as _types
from ..kernel_args import int_tuple, pad_pairs, polynomial, size_tuple
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("torch")
kernel = registry.kernel

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable, Sequence

    Tensor = torch.Tensor
    TensorOrNumber = Tensor | int | float | bool
    Axis = int | tuple[int, ...] | None
    BatchNormOut = tuple[Tensor, Tensor | None, Tensor | None]

DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64", "int8",
                                            "int16", "int32", "int64", "uint8", "bool")}


def native_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype for an ``ml`` dtype (or anything ``types.as_dtype`` accepts)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[_types.as_dtype(dtype).name]


def _floating(x: Tensor) -> Tensor:
    """``x`` itself if it is a float tensor, else ``x`` in torch's default float dtype."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _as_tensors(left: TensorOrNumber, right: TensorOrNumber) -> tuple[Tensor, Tensor]:
    """Make a Python number on either side a 0-d tensor on the other side's device."""
    if not isinstance(left, torch.Tensor):
        device = right.device if isinstance(right, torch.Tensor) else None
        left = torch.as_tensor(left, device=device)
    if not isinstance(right, torch.Tensor):
        right = torch.as_tensor(right, device=left.device)
    return left, right


def _flat_pad(pairs: Sequence[Sequence[int]]) -> list[int]:
    """``(before, after)`` pairs per dim as ``F.pad``'s flat list, last dim first."""
    return [n for pair in reversed(tuple(pairs)) for n in pair]


def _extremum(torch_fn: Callable[..., Tensor], python_fn: Callable[..., Any]
              ) -> Callable[[TensorOrNumber, TensorOrNumber], TensorOrNumber]:
    """An elementwise min/max kernel: ``python_fn`` on two numbers, else ``torch_fn``."""

    def extremum(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
        if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
            return python_fn(left, right)
        return torch_fn(*_as_tensors(left, right))

    return extremum


# the Python operators take numbers on either side (torch promotion applies); the catalogue
# documents each primitive
registry.kernels_from({
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "divide": operator.truediv, "floor_divide": operator.floordiv, "power": operator.pow,
    "greater": operator.gt, "greater_equal": operator.ge, "equal": operator.eq,
    "matmul": operator.matmul,
    "minimum": _extremum(torch.minimum, builtins.min),
    "maximum": _extremum(torch.maximum, builtins.max),
    "logical_and": lambda left, right: torch.logical_and(*_as_tensors(left, right)),
    "negate": torch.neg, "absolute": torch.abs, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "sign": torch.sign, "sin": torch.sin, "cos": torch.cos,
    "floor": torch.floor, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "logical_not": torch.logical_not, "nan_to_num": torch.nan_to_num,
    "stop_gradient": torch.Tensor.detach,
    # beta 1, threshold 20 (the identity above it): the catalogue's definition
    "softplus": lambda input: F.softplus(_floating(input), beta=1.0, threshold=20.0),
    "gelu": lambda input, approximate=False: F.gelu(
        _floating(input), approximate="tanh" if approximate else "none"),
    "softmax": lambda input, axis=-1: torch.softmax(_floating(input), dim=axis),
    "log_softmax": lambda input, axis=-1: torch.log_softmax(_floating(input), dim=axis),
    "linear": F.linear, "argmax": torch.argmax, "embedding": F.embedding,
    "transpose": lambda input, axes=None: input.permute(
        tuple(reversed(range(input.ndim))) if axes is None else tuple(axes)),
    "reshape": lambda input, shape: torch.reshape(input, tuple(shape)),
    "broadcast_to": lambda input, shape: torch.broadcast_to(input, tuple(shape)),
    "one_hot": lambda input, num_classes: F.one_hot(input.long(), num_classes).bool(),
    "cholesky": torch.linalg.cholesky, "eigvalsh": torch.linalg.eigvalsh,
    "unique": torch.unique,  # sorted
    "dtype_of": lambda input: _types.as_dtype(str(input.dtype)),
    # one stateful generator serves every random kernel of a call
    "split_rng": lambda rng, n: [rng] * n,
})
registry.kernels_from({"dropout": lambda input, p=0.5, rng=None: input}, mode="inference")


@kernel("cast")
def cast(input: TensorOrNumber, dtype: Any) -> Tensor:
    """``input`` converted to ``dtype`` (an ``ml`` dtype)."""
    target = native_dtype(dtype)
    if not isinstance(input, torch.Tensor):
        return torch.tensor(input, dtype=target)
    return input.to(target)


@kernel("where")
def where(condition: TensorOrNumber, input1: TensorOrNumber, input2: TensorOrNumber) -> Tensor:
    """``torch.where``; a Python bool condition (a comparison of numbers) works too."""
    if not isinstance(condition, torch.Tensor):
        tensors = [t for t in (input1, input2) if isinstance(t, torch.Tensor)]
        condition = torch.as_tensor(condition, device=tensors[0].device if tensors else None)
    return torch.where(condition.bool(), input1, input2)


# ---- reductions: ``axis=()`` reduces over nothing (torch would reduce over everything) ----
def _no_axes(axis: Axis) -> bool:
    return isinstance(axis, tuple) and len(axis) == 0


@kernel("sum")
def sum(input: Tensor, axis: Axis = None, keepdim: bool = False) -> Tensor:
    if _no_axes(axis):
        return input
    return torch.sum(input, dim=axis, keepdim=keepdim)


@kernel("max")
def max(input: Tensor, axis: Axis = None, keepdim: bool = False) -> Tensor:
    """Maximum over ``axis`` (``None``: all); ties share the gradient."""
    if _no_axes(axis):
        return input
    return torch.amax(input, dim=() if axis is None else axis, keepdim=keepdim)


@kernel("prod")
def prod(input: Tensor, axis: Axis = None, keepdim: bool = False) -> Tensor:
    if axis is None:
        out = torch.prod(input)
        return out.reshape((1,) * input.ndim) if keepdim else out
    axes = (axis,) if isinstance(axis, int) else axis
    out = input
    for a in sorted((a % input.ndim for a in axes), reverse=True):
        out = torch.prod(out, dim=a, keepdim=keepdim)
    return out


# ---- shapes and indexing ----
@kernel("concat")
def concat(*args: Any, axis: Any = ...) -> Tensor:
    """Join tensors along ``axis``; ``axis=None`` flattens them first.

    Called as ``concat(t1, ..., tn, axis)`` (positionally) or ``concat(t1, ..., axis=a)``.
    """
    tensors = list(args)
    if axis is ...:
        axis = tensors.pop() if tensors and not isinstance(tensors[-1], torch.Tensor) else 0
    if axis is None:
        return torch.cat([t.reshape(-1) for t in tensors])
    return torch.cat(tensors, dim=axis)


@kernel("pad")
def pad(input: Tensor, pad_width: Sequence[tuple[int, int]]) -> Tensor:
    return F.pad(input, _flat_pad(pad_width))


def _reverse_slices(input: Tensor, items: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
    """Rewrite negative-step slices (unsupported by torch) as positive ones on a flipped input."""
    used = builtins.sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        pos = items.index(Ellipsis)
        items = items[:pos] + (slice(None),) * (input.ndim - used) + items[pos + 1:]
    dim, flips, out = 0, [], []
    for item in items:
        if item is None:
            out.append(item)
            continue
        if isinstance(item, slice) and item.step is not None and item.step < 0:
            n = input.shape[dim]
            start, stop, step = item.indices(n)
            flips.append(dim)
            item = slice(n - 1 - start, n - 1 - stop, -step)
        out.append(item)
        dim += 1
    return torch.flip(input, flips), tuple(out)


@kernel("indexer")
def indexer(input: Any, index: Any) -> Any:
    """``input[index]`` (NumPy basic indexing, including negative slice steps)."""
    if isinstance(input, torch.Tensor):
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, slice) and i.step is not None and i.step < 0 for i in items):
            input, index = _reverse_slices(input, items)
    return input[index]


def _leaf_kind(value: Any) -> type:
    """``float`` if any leaf of a nested list is a float, ``bool`` if all are, else ``int``."""
    if isinstance(value, list | tuple):
        kinds = {_leaf_kind(v) for v in value}
        if float in kinds:
            return float
        return bool if kinds == {bool} else int
    if isinstance(value, bool):
        return bool
    return int if isinstance(value, int) else float


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """A Python number or nested list as a tensor (floats in ``float_dtype``, ints int64)."""
    dtypes = {float: float_dtype or torch.get_default_dtype(), int: torch.int64, bool: torch.bool}
    return torch.tensor(input, dtype=dtypes[_leaf_kind(input)], device=device)


# ---- convolution and pooling ----
@kernel("conv2d")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d convolution (cross-correlation); ``padding`` holds ``(before, after)`` pairs."""
    pairs = pad_pairs(padding, 2)
    sym: tuple[int, ...] = tuple(lo for lo, _ in pairs)
    if any(lo != hi for lo, hi in pairs):
        input, sym = F.pad(input, _flat_pad(pairs)), (0, 0)
    return F.conv2d(input, weight, bias, int_tuple(stride, 2), sym, int_tuple(dilation, 2), groups)


def _window(kernel_size: Any, stride: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Pooling window and stride (``stride=None``: the window)."""
    k = int_tuple(kernel_size, 2)
    return k, k if stride is None else int_tuple(stride, 2)


@kernel("max_pool2d")
def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> Tensor:
    """2-d max pooling (pads with -inf, floor mode)."""
    return F.max_pool2d(input, *_window(kernel_size, stride), int_tuple(padding, 2),
                        int_tuple(dilation, 2))


@kernel("avg_pool2d")
def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """2-d average pooling; zero padding counts in the average (PyTorch's default)."""
    return F.avg_pool2d(input, *_window(kernel_size, stride), int_tuple(padding, 2),
                        ceil_mode=False, count_include_pad=True)


# ---- normalisation, attention, randomness ----
@kernel("batch_norm")
def batch_norm(input: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
               running_mean: Tensor | None = None, running_var: Tensor | None = None,
               momentum: float = 0.1, eps: float = 1e-5) -> BatchNormOut:
    """Training batch norm over channel axis 1: ``(output, new_running_mean, new_running_var)``.

    The running statistics given are not modified: PyTorch updates copies of them in place
    (``new = (1 - momentum) * running + momentum * batch_stat``, unbiased variance).
    """
    if running_mean is None or running_var is None:
        out = F.batch_norm(input, None, None, weight, bias, True, momentum, eps)
        return out, None, None
    new_mean, new_var = running_mean.clone(), running_var.clone()
    out = F.batch_norm(input, new_mean, new_var, weight, bias, True, momentum, eps)
    return out, new_mean, new_var


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                         running_mean: Tensor | None = None, running_var: Tensor | None = None,
                         momentum: float = 0.1, eps: float = 1e-5) -> BatchNormOut:
    """Batch norm with the running statistics (batch statistics when they are ``None``)."""
    training = running_mean is None or running_var is None
    stats = (None, None) if training else (running_mean, running_var)
    out = F.batch_norm(input, *stats, weight, bias, training, momentum, eps)
    return out, running_mean, running_var


@kernel("scaled_dot_product")
def scaled_dot_product(query: Tensor, key: Tensor, value: Tensor,
                       attn_mask: Tensor | None = None, is_causal: bool = False,
                       scale: float | None = None) -> Tensor:
    """PyTorch's scaled_dot_product_attention; a mask with ``is_causal`` is combined with the
    lower-triangular causal mask."""
    if is_causal and attn_mask is not None:
        keep = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool,
                          device=query.device).tril()
        if attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & keep
        else:
            attn_mask = attn_mask.masked_fill(~keep, -math.inf)
        is_causal = False
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                          is_causal=is_causal, scale=scale)


@kernel("dropout")
def dropout(input: Tensor, p: float = 0.5, rng: torch.Generator | None = None) -> Tensor:
    """Zero each element with probability ``p`` (drawn from ``rng``), scale the rest by 1/(1-p)."""
    if p == 0:
        return input
    keep = torch.empty_like(input).bernoulli_(1.0 - p, generator=rng)
    return input * keep * (1.0 / (1.0 - p))


@kernel("arange")
def arange(start: Any = 0, stop: Any = None, step: Any = 1, dtype: Any = None,
           *, device: torch.device | str | None = None) -> Tensor:
    """``dtype=None``: int64 for ints, else torch's default float dtype."""
    target = None if dtype is None else native_dtype(dtype)
    if target is None and all(isinstance(v, int) for v in (start, stop, step)):
        target = torch.int64
    return torch.arange(start, stop, step, dtype=target, device=device)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: torch.Generator | None = None) -> Tensor:
    """Drawn from ``rng``, on its device (``dtype=None``: torch's default float dtype)."""
    target = torch.get_default_dtype() if dtype is None else native_dtype(dtype)
    return torch.randn(size_tuple(shape), generator=rng, dtype=target,
                       device=getattr(rng, "device", None))


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: torch.Generator | None = None) -> Tensor:
    """Drawn from ``rng``, on its device (``dtype=None``: int64)."""
    target = torch.int64 if dtype is None else native_dtype(dtype)
    return torch.randint(low, high, size_tuple(shape), generator=rng, dtype=target,
                         device=getattr(rng, "device", None))


registry.kernels_from({"polynomial_features": lambda input, degree: polynomial(
    torch.cat([input, torch.ones_like(input[..., :1])], dim=-1), degree,
    lambda xa, columns: xa[..., torch.from_numpy(columns).to(xa.device)])})
