"""PyTorch kernels: one function per tensor primitive of the catalogue.

Each kernel takes the catalogue's input terminals positionally, in catalogue order (see
``docs/dev/kernel-contract.md``). Gradients come from PyTorch's autograd, so every kernel is
written with differentiable torch operations. Several kernel names (``sum``, ``max``, ``min``)
shadow Python builtins inside this module; the builtins are reached through ``builtins``.
"""

from __future__ import annotations

import builtins
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ...framework import types as _types
from ..monomials import monomial_indices
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("torch")
kernel = registry.kernel

if TYPE_CHECKING:  # annotations only: keeps the kernel table free of non-kernels
    from collections.abc import Sequence
    from typing import Any

    Tensor = torch.Tensor
    Number = int | float | bool
    TensorOrNumber = Tensor | Number
    Axis = int | tuple[int, ...] | None
    BatchNormOut = tuple[Tensor, Tensor | None, Tensor | None]

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _torch_dtype(dtype: Any) -> torch.dtype:
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


def _tuple(value: int | Sequence[int], nd: int) -> tuple[int, ...]:
    """An int repeated ``nd`` times, or the given sequence as a tuple."""
    return (value,) * nd if isinstance(value, int) else tuple(value)


# ----------------------------------------------------------------------------------------------
# Binary elementwise (Python operators: numbers work on either side, torch promotion applies)
# ----------------------------------------------------------------------------------------------
@kernel("add")
def add(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left + right``."""
    return left + right


@kernel("subtract")
def subtract(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left - right``."""
    return left - right


@kernel("multiply")
def multiply(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left * right``."""
    return left * right


@kernel("divide")
def divide(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """True division ``left / right`` (ints give floats)."""
    return left / right


@kernel("floor_divide")
def floor_divide(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """Floor division ``left // right`` (rounds towards -inf, as NumPy)."""
    return left // right


@kernel("power")
def power(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left ** right``."""
    return left**right


@kernel("minimum")
def minimum(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """Elementwise minimum."""
    if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
        return builtins.min(left, right)
    return torch.minimum(*_as_tensors(left, right))


@kernel("maximum")
def maximum(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """Elementwise maximum."""
    if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
        return builtins.max(left, right)
    return torch.maximum(*_as_tensors(left, right))


@kernel("greater")
def greater(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left > right``."""
    return left > right


@kernel("greater_equal")
def greater_equal(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left >= right``."""
    return left >= right


@kernel("equal")
def equal(left: TensorOrNumber, right: TensorOrNumber) -> TensorOrNumber:
    """``left == right`` elementwise."""
    return left == right


@kernel("logical_and")
def logical_and(left: TensorOrNumber, right: TensorOrNumber) -> Tensor:
    """Elementwise logical and (a bool tensor)."""
    return torch.logical_and(*_as_tensors(left, right))


# ----------------------------------------------------------------------------------------------
# Unary elementwise
# ----------------------------------------------------------------------------------------------
@kernel("negate")
def negate(input: Tensor) -> Tensor:
    """``-input``."""
    return torch.neg(input)


@kernel("absolute")
def absolute(input: Tensor) -> Tensor:
    """``|input|``."""
    return torch.abs(input)


@kernel("exp")
def exp(input: Tensor) -> Tensor:
    """``e ** input``."""
    return torch.exp(input)


@kernel("log")
def log(input: Tensor) -> Tensor:
    """Natural logarithm."""
    return torch.log(input)


@kernel("sqrt")
def sqrt(input: Tensor) -> Tensor:
    """Square root."""
    return torch.sqrt(input)


@kernel("sign")
def sign(input: Tensor) -> Tensor:
    """-1, 0 or 1 by the sign of each element."""
    return torch.sign(input)


@kernel("sin")
def sin(input: Tensor) -> Tensor:
    """Sine."""
    return torch.sin(input)


@kernel("cos")
def cos(input: Tensor) -> Tensor:
    """Cosine."""
    return torch.cos(input)


@kernel("floor")
def floor(input: Tensor) -> Tensor:
    """Round down to the nearest integer (ints are returned as they are)."""
    return torch.floor(input)


@kernel("relu")
def relu(input: Tensor) -> Tensor:
    """``max(input, 0)``."""
    return torch.relu(input)


@kernel("sigmoid")
def sigmoid(input: Tensor) -> Tensor:
    """Logistic sigmoid."""
    return torch.sigmoid(input)


@kernel("tanh")
def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return torch.tanh(input)


@kernel("softplus")
def softplus(input: Tensor) -> Tensor:
    """``log(1 + exp(input))``, the identity above 20 (PyTorch's beta 1, threshold 20: the
    catalogue's definition)."""
    return F.softplus(_floating(input), beta=1.0, threshold=20.0)


@kernel("stop_gradient")
def stop_gradient(input: Tensor) -> Tensor:
    """``input`` cut from the autograd graph."""
    return input.detach()


@kernel("logical_not")
def logical_not(input: Tensor) -> Tensor:
    """Elementwise logical not (a bool tensor)."""
    return torch.logical_not(input)


@kernel("gelu")
def gelu(input: Tensor, approximate: bool = False) -> Tensor:
    """GELU; ``approximate=True`` uses the tanh form."""
    return F.gelu(_floating(input), approximate="tanh" if approximate else "none")


@kernel("nan_to_num")
def nan_to_num(input: Tensor, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Tensor:
    """Replace NaN and infinities (``None``: the dtype's largest / smallest value)."""
    return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf)


@kernel("softmax")
def softmax(input: Tensor, axis: int = -1) -> Tensor:
    """Softmax along ``axis``."""
    return torch.softmax(_floating(input), dim=axis)


@kernel("log_softmax")
def log_softmax(input: Tensor, axis: int = -1) -> Tensor:
    """Log-softmax along ``axis``."""
    return torch.log_softmax(_floating(input), dim=axis)


@kernel("cast")
def cast(input: TensorOrNumber, dtype: Any) -> Tensor:
    """``input`` converted to ``dtype`` (an ``ml`` dtype)."""
    target = _torch_dtype(dtype)
    if not isinstance(input, torch.Tensor):
        return torch.tensor(input, dtype=target)
    return input.to(target)


@kernel("where")
def where(condition: Tensor, input1: TensorOrNumber, input2: TensorOrNumber) -> Tensor:
    """``input1`` where ``condition`` holds, else ``input2`` (numbers allowed)."""
    if condition.dtype != torch.bool:
        condition = condition.bool()
    return torch.where(condition, input1, input2)


# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------
@kernel("matmul")
def matmul(left: Tensor, right: Tensor) -> Tensor:
    """Matrix product with NumPy broadcasting rules."""
    return left @ right


@kernel("linear")
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` with ``weight`` of shape ``(out, in)``."""
    return F.linear(input, weight, bias)


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------
def _no_axes(axis: Axis) -> bool:
    """True for ``axis=()``: reduce over nothing (torch would reduce over everything)."""
    return isinstance(axis, tuple) and len(axis) == 0


@kernel("sum")
def sum(input: Tensor, axis: Axis = None, keepdim: bool = False) -> Tensor:
    """Sum over ``axis`` (``None``: all)."""
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
    """Product over ``axis`` (``None``: all)."""
    if axis is None:
        out = torch.prod(input)
        return out.reshape((1,) * input.ndim) if keepdim else out
    axes = (axis,) if isinstance(axis, int) else axis
    out = input
    for a in sorted((a % input.ndim for a in axes), reverse=True):
        out = torch.prod(out, dim=a, keepdim=keepdim)
    return out


@kernel("argmax")
def argmax(input: Tensor, axis: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the maximum along ``axis`` (``None``: of the flattened array)."""
    return torch.argmax(input, dim=axis, keepdim=keepdim)


# ----------------------------------------------------------------------------------------------
# Shape manipulation
# ----------------------------------------------------------------------------------------------
@kernel("reshape")
def reshape(input: Tensor, shape: Sequence[int]) -> Tensor:
    """``input`` with a new shape (one entry may be -1)."""
    return torch.reshape(input, tuple(shape))


@kernel("transpose")
def transpose(input: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (``None``: reverse them)."""
    if axes is None:
        axes = tuple(range(input.ndim - 1, -1, -1))
    return input.permute(tuple(axes))


@kernel("broadcast_to")
def broadcast_to(input: Tensor, shape: Sequence[int]) -> Tensor:
    """``input`` broadcast to ``shape``."""
    return torch.broadcast_to(input, tuple(shape))


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
    """Zero padding with one ``(before, after)`` pair per dim."""
    flat: list[int] = []
    for before, after in reversed(tuple(pad_width)):
        flat += [before, after]
    return F.pad(input, flat)


def _has_negative_step(items: tuple[Any, ...]) -> bool:
    return any(isinstance(i, slice) and i.step is not None and i.step < 0 for i in items)


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
        if _has_negative_step(items):
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
    kind = _leaf_kind(input)
    if kind is float:
        dtype = float_dtype or torch.get_default_dtype()
    else:
        dtype = torch.int64 if kind is int else torch.bool
    return torch.tensor(input, dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# Convolution and pooling
# ----------------------------------------------------------------------------------------------
def _conv(fn: Any, nd: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any,
          padding: Any, dilation: Any, groups: int) -> Tensor:
    pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in _tuple(padding, nd)]
    if all(lo == hi for lo, hi in pairs):
        sym: tuple[int, ...] = tuple(lo for lo, _ in pairs)
    else:
        flat: list[int] = []
        for lo, hi in reversed(pairs):
            flat += [lo, hi]
        input = F.pad(input, flat)
        sym = (0,) * nd
    return fn(input, weight, bias, _tuple(stride, nd), sym, _tuple(dilation, nd), groups)


@kernel("conv2d")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d convolution (cross-correlation); ``padding`` holds ``(before, after)`` pairs."""
    return _conv(F.conv2d, 2, input, weight, bias, stride, padding, dilation, groups)


@kernel("max_pool2d")
def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> Tensor:
    """2-d max pooling (pads with -inf, floor mode)."""
    k = _tuple(kernel_size, 2)
    s = k if stride is None else _tuple(stride, 2)
    return F.max_pool2d(input, k, s, _tuple(padding, 2), _tuple(dilation, 2))


@kernel("avg_pool2d")
def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """2-d average pooling; zero padding counts in the average (PyTorch's default)."""
    k = _tuple(kernel_size, 2)
    s = k if stride is None else _tuple(stride, 2)
    return F.avg_pool2d(input, k, s, _tuple(padding, 2), ceil_mode=False,
                        count_include_pad=True)


# ----------------------------------------------------------------------------------------------
# Normalisation, embedding, attention, dropout
# ----------------------------------------------------------------------------------------------
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


@kernel("embedding")
def embedding(input: Tensor, weight: Tensor) -> Tensor:
    """Rows of ``weight`` picked by the integer ``input``."""
    return F.embedding(input, weight)


def _causal_mask(query: Tensor, key: Tensor, attn_mask: Tensor) -> Tensor:
    """``attn_mask`` combined with the lower-triangular causal mask."""
    length, source = query.shape[-2], key.shape[-2]
    keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
    if attn_mask.dtype == torch.bool:
        return attn_mask & keep
    return attn_mask.masked_fill(~keep, -math.inf)


@kernel("scaled_dot_product")
def scaled_dot_product(query: Tensor, key: Tensor, value: Tensor,
                       attn_mask: Tensor | None = None, is_causal: bool = False,
                       scale: float | None = None) -> Tensor:
    """``softmax(q @ k^T * scale + mask) @ v`` (PyTorch's scaled_dot_product_attention)."""
    if is_causal and attn_mask is not None:
        attn_mask, is_causal = _causal_mask(query, key, attn_mask), False
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                          is_causal=is_causal, scale=scale)


@kernel("dropout")
def dropout(input: Tensor, p: float = 0.5, rng: torch.Generator | None = None) -> Tensor:
    """Zero each element with probability ``p`` (drawn from ``rng``), scale the rest by 1/(1-p)."""
    if p == 0:
        return input
    keep = torch.empty_like(input).bernoulli_(1.0 - p, generator=rng)
    return input * keep * (1.0 / (1.0 - p))


@kernel("dropout", mode="inference")
def dropout_inference(input: Tensor, p: float = 0.5, rng: Any = None) -> Tensor:
    """Dropout at inference: ``input`` unchanged."""
    return input


@kernel("split_rng")
def split_rng(rng: torch.Generator, n: int) -> list[torch.Generator]:
    """``n`` generators for ``n`` random kernels: the same stateful generator ``n`` times."""
    return [rng] * n


@kernel("one_hot")
def one_hot(input: Tensor, num_classes: int) -> Tensor:
    """Boolean one-hot encoding along a new last axis."""
    return F.one_hot(input.long(), num_classes).bool()


# ----------------------------------------------------------------------------------------------
# Reference-catalogue additions
# ----------------------------------------------------------------------------------------------
def _size(shape: Any) -> tuple[int, ...]:
    """A shape given as an int or a sequence of ints, as a tuple."""
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


@kernel("arange")
def arange(start: Number = 0, stop: Number | None = None, step: Number = 1, dtype: Any = None,
           *, device: torch.device | str | None = None) -> Tensor:
    """``torch.arange(start, stop, step)``; ``dtype=None``: int64 for ints, else torch's
    default float dtype."""
    target = None if dtype is None else _torch_dtype(dtype)
    if target is None and all(isinstance(v, int) for v in (start, stop, step)):
        target = torch.int64
    return torch.arange(start, stop, step, dtype=target, device=device)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: torch.Generator | None = None) -> Tensor:
    """Standard normal samples of ``shape`` drawn from ``rng`` (``dtype=None``: torch's
    default float dtype)."""
    target = torch.get_default_dtype() if dtype is None else _torch_dtype(dtype)
    device = rng.device if rng is not None else None
    return torch.randn(_size(shape), generator=rng, dtype=target, device=device)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: torch.Generator | None = None) -> Tensor:
    """Integers uniform in ``[low, high)`` of ``shape`` (``dtype=None``: int64)."""
    target = torch.int64 if dtype is None else _torch_dtype(dtype)
    device = rng.device if rng is not None else None
    return torch.randint(low, high, _size(shape), generator=rng, dtype=target, device=device)


@kernel("cholesky")
def cholesky(input: Tensor) -> Tensor:
    """Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``)."""
    return torch.linalg.cholesky(input)


@kernel("eigvalsh")
def eigvalsh(input: Tensor) -> Tensor:
    """Eigenvalues (ascending) of symmetric matrices; only the lower triangle is read."""
    return torch.linalg.eigvalsh(input)


@kernel("unique")
def unique(input: Tensor) -> Tensor:
    """The sorted distinct values of ``input`` (flattened); the length depends on the data."""
    return torch.unique(input, sorted=True)


@kernel("polynomial_features")
def polynomial_features(input: Tensor, degree: int) -> Tensor:
    """Every monomial of the last axis' features with total degree 1..``degree`` (columns in
    scikit-learn's ``PolynomialFeatures(include_bias=False)`` order)."""
    idx = torch.from_numpy(monomial_indices(input.shape[-1], degree)).to(input.device)
    xa = torch.cat([input, torch.ones_like(input[..., :1])], dim=-1)
    out = xa[..., idx[:, 0]]
    for k in range(1, degree):
        out = out * xa[..., idx[:, k]]
    return out


@kernel("dtype_of")
def dtype_of(input: Tensor) -> Any:
    """The Mithril dtype (``ml.float32``, ...) of a tensor."""
    return _types.as_dtype(str(input.dtype))


