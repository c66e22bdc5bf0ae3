"""The catalogue's primitives as models users can add (``Add()``, ``Relu()``, ``Mean(axis=1)``).

Each class is a thin, named view of one catalogue entry; its keyword arguments fix the entry's
scalar terminals (``Softmax(axis=-1)``), and ``ml.TBD`` leaves one open as an input.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentTypeError
from ..framework.logical.meta import TBD
from ..framework.logical.model import Operator
from ..framework.ops import CATALOGUE, SCALAR


class Primitive(Operator):
    """Base of the named primitive classes; ``op_name`` is the catalogue entry."""

    op_name: str = ""
    positional: tuple[str, ...] = ()

    def __init__(self, *args: Any, name: str | None = None, **values: Any) -> None:
        if len(args) > len(self.positional):
            raise ArgumentTypeError(f"{type(self).__name__} takes at most {len(self.positional)} "
                                    f"positional arguments ({', '.join(self.positional)})")
        for k, v in zip(self.positional, args, strict=False):
            if k in values:
                raise ArgumentTypeError(f"{type(self).__name__} got {k!r} twice")
            values[k] = v
        n = values.pop("n", None)
        super().__init__(CATALOGUE[self.op_name], name=name, n_inputs=n, **values)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        op = CATALOGUE[cls.op_name]  # KeyError at import for a misspelled primitive
        if "positional" not in cls.__dict__:
            cls.positional = tuple(t.name for t in op.inputs if t.kind == SCALAR)
        if op.public is None:
            op.public = cls.__name__


# (LeakyRelu, Gelu, Softmax, LogSoftmax, Softplus and Concat live in layers.py with PyTorch's
# argument names.)
class Buffer(Primitive):
    """Passes its input through unchanged (useful to name a connection)."""

    op_name = "buffer"


class Add(Primitive):
    """``left + right`` with broadcasting."""

    op_name = "add"


class Subtract(Primitive):
    """``left - right`` with broadcasting."""

    op_name = "subtract"


class Multiply(Primitive):
    """``left * right`` with broadcasting."""

    op_name = "multiply"


class Divide(Primitive):
    """``left / right`` (true division) with broadcasting."""

    op_name = "divide"


class FloorDivide(Primitive):
    """``left // right`` with broadcasting."""

    op_name = "floor_divide"


class Power(Primitive):
    """``left ** right`` with broadcasting."""

    op_name = "power"


class MatrixMultiply(Primitive):
    """``left @ right`` (batched, NumPy semantics)."""

    op_name = "matmul"


class Minimum(Primitive):
    """Elementwise minimum."""

    op_name = "minimum"


class Maximum(Primitive):
    """Elementwise maximum."""

    op_name = "maximum"


class Absolute(Primitive):
    """``|x|``."""

    op_name = "absolute"


class Negate(Primitive):
    """``-x``."""

    op_name = "negate"


class Exponential(Primitive):
    """``exp(x)``."""

    op_name = "exp"


class Log(Primitive):
    """Natural logarithm."""

    op_name = "log"


class Sqrt(Primitive):
    """Square root."""

    op_name = "sqrt"


class Square(Primitive):
    """``x * x``."""

    op_name = "square"


class Sign(Primitive):
    """Sign of x (-1, 0, 1)."""

    op_name = "sign"


class Sine(Primitive):
    """``sin(x)``."""

    op_name = "sin"


class Cosine(Primitive):
    """``cos(x)``."""

    op_name = "cos"


class Floor(Primitive):
    """``floor(x)``."""

    op_name = "floor"


class Clamp(Primitive):
    """Clamp x into ``[min, max]``."""

    op_name = "clamp"


class StableReciprocal(Primitive):
    """``1 / x``."""

    op_name = "reciprocal"


class Relu(Primitive):
    """``max(x, 0)`` (``nn.ReLU``)."""

    op_name = "relu"


class Sigmoid(Primitive):
    """``nn.Sigmoid``."""

    op_name = "sigmoid"


class Tanh(Primitive):
    """``nn.Tanh``."""

    op_name = "tanh"


class SiLU(Primitive):
    """``nn.SiLU``."""

    op_name = "silu"


class StopGradient(Primitive):
    """Identity whose gradient is zero (``detach``)."""

    op_name = "stop_gradient"


class Sum(Primitive):
    """Sum over ``axis`` (all when None)."""

    op_name = "sum"


class Mean(Primitive):
    """Mean over ``axis`` (all when None)."""

    op_name = "mean"


class Max(Primitive):
    """Maximum over ``axis``."""

    op_name = "max"


class Min(Primitive):
    """Minimum over ``axis``."""

    op_name = "min"


class Prod(Primitive):
    """Product over ``axis``."""

    op_name = "prod"


class Variance(Primitive):
    """Variance over ``axis`` with ``correction`` (0: biased)."""

    op_name = "variance"


class ArgMax(Primitive):
    """Index of the maximum over ``axis``."""

    op_name = "argmax"


class ArgMin(Primitive):
    """Index of the minimum over ``axis``."""

    op_name = "argmin"


class Shape(Primitive):
    """The shape of a tensor, as a tuple."""

    op_name = "shape"


class Reshape(Primitive):
    """Reshape to ``shape`` (one -1 allowed)."""

    op_name = "reshape"


class Size(Primitive):
    """Number of elements, or the size of ``dim``."""

    op_name = "size"


class Transpose(Primitive):
    """Permute axes (reverse them when ``axes`` is None)."""

    op_name = "transpose"


class PermuteTensor(Primitive):
    """Permute axes by ``axes``."""

    op_name = "transpose"


class SwapAxes(Primitive):
    """Swap two axes."""

    op_name = "swap_axes"


class Squeeze(Primitive):
    """Drop axes of size 1."""

    op_name = "squeeze"


class Unsqueeze(Primitive):
    """Insert an axis of size 1."""

    op_name = "unsqueeze"


class Indexer(Primitive):
    """``input[index]`` for ints, slices, None and Ellipsis."""

    op_name = "indexer"


class BroadcastTo(Primitive):
    """Broadcast to ``shape``."""

    op_name = "broadcast_to"


class Pad(Primitive):
    """Zero padding by ``pad_width`` ((before, after) per dim)."""

    op_name = "pad"


class Where(Primitive):
    """``input1`` where ``condition`` else ``input2``."""

    op_name = "where"


class IsNan(Primitive):
    """Elementwise NaN test."""

    op_name = "isnan"


class NanToNum(Primitive):
    """Replace NaN and infinities by numbers."""

    op_name = "nan_to_num"


class Cast(Primitive):
    """Convert to ``dtype``."""

    op_name = "cast"


class Item(Primitive):
    """The Python number in a one-element tensor."""

    op_name = "item"


class ToTensor(Primitive):
    """A tensor from a Python value."""

    op_name = "to_tensor"


class ToTuple(Primitive):
    """A tuple from ``n`` values: Python values (a constant when they are known) or tensors
    (``h = ToTuple(n=2)(a, b)``; ``h[1]`` is ``b`` itself, its shape and its gradient)."""

    op_name = "to_tuple"


class Greater(Primitive):
    """``left > right``."""

    op_name = "greater"


class Less(Primitive):
    """``left < right``."""

    op_name = "less"


class Equal(Primitive):
    """``left == right``."""

    op_name = "equal"


class NotEqual(Primitive):
    """``left != right``."""

    op_name = "not_equal"


class LessEqual(Primitive):
    """``left <= right``."""

    op_name = "less_equal"


class GreaterEqual(Primitive):
    """``left >= right``."""

    op_name = "greater_equal"


class LogicalNot(Primitive):
    """Elementwise not."""

    op_name = "logical_not"


class LogicalAnd(Primitive):
    """Elementwise and."""

    op_name = "logical_and"


class LogicalOr(Primitive):
    """Elementwise or."""

    op_name = "logical_or"


class LogicalXOr(Primitive):
    """Elementwise exclusive or."""

    op_name = "logical_xor"


class ShiftLeft(Primitive):
    """``left << right``."""

    op_name = "shift_left"


class ShiftRight(Primitive):
    """``left >> right``."""

    op_name = "shift_right"


class ScaledDotProduct(Primitive):
    """softmax(q k^T * scale + mask) v."""

    op_name = "scaled_dot_product"


class Split(Primitive):
    """``torch.split(input, split_size, axis)`` with the chunks stacked on a new first axis:
    chunk ``i`` is ``output[i]`` (index the output, e.g. ``split.output[0]``). The length of
    ``axis`` must be a multiple of ``split_size`` (all chunks equal). ``Split(2, axis=1)``
    on a ``(3, 6)`` input gives a ``(3, 3, 2)`` output.
    """

    op_name = "split"


class Slice(Primitive):
    """A Python ``slice(start, stop, step)`` object, reusable as an ``Indexer`` index: ``m
    |= Slice(1, None, 2)(output="s")``, ``m |= Indexer()(input="x", index="s",
    output="y")``. Values given here (ints or None, as in ``slice``) are constants;
    ``ml.TBD`` makes that terminal an input (e.g. a stop computed from a shape).
    """

    op_name = "to_slice"


class Unique(Primitive):
    """The sorted distinct values of the (flattened) input, ``np.unique``. Its length
    depends on the data, so JAX and MLX cannot trace it: with ``jit`` on they run the model
    eagerly (with a warning); ``compile(..., jit=False)`` does so without one.
    """

    op_name = "unique"


class Dtype(Primitive):
    """The dtype of a tensor as a scalar (an ``ml`` dtype such as ``ml.float32``), known
    when the code runs; it can feed ``Cast``'s ``dtype``. As a model output it needs
    ``jit=False`` on JAX (jitted functions return arrays only).
    """

    op_name = "dtype_of"


class ToList(Primitive):
    """A Python list of ``n`` values (``ToList(n=3)``), Python values or tensors, as
    ``ToTuple``."""

    op_name = "to_list"


class TensorToList(Primitive):
    """A tensor as nested Python lists (``tolist()``); needs concrete values, so JAX and MLX
    with ``jit`` on run the model eagerly (with a warning; ``compile(..., jit=False)``
    avoids it).
    """

    op_name = "tensor_to_list"


class RandInt(Primitive):
    """Integers uniform in ``[low, high)`` of ``shape`` (int64 unless ``dtype``), drawn from
    the backend's random state on every call (``RandInt((2, 3), 0, 10)``).
    """

    op_name = "randint"


class Cholesky(Primitive):
    """Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``,
    batched over leading dims); the gradient is the symmetric one (PyTorch's).
    """

    op_name = "cholesky"


class Eigvalsh(Primitive):
    """Eigenvalues, ascending, of symmetric matrices (``(..., n, n) -> (..., n)``); gradient
    ``V diag(g) V^T``.
    """

    op_name = "eigvalsh"


class PolynomialFeatures(Primitive):
    """All monomials of the last axis' features of total degree 1..``degree``
    (scikit-learn's ``PolynomialFeatures(degree, include_bias=False)`` columns): ``(..., d)
    -> (..., C(d + degree, degree) - 1)``.
    """

    op_name = "polynomial_features"


class AtLeast1D(Primitive):
    """``np.atleast_1d``: a 0-d input becomes shape ``(1,)``."""

    op_name = "atleast_1d"


__all__ = ["Primitive", "TBD", "Buffer", "Add", "Subtract", "Multiply", "Divide", "FloorDivide",
           "Power", "MatrixMultiply", "Minimum", "Maximum", "Absolute", "Negate", "Exponential",
           "Log", "Sqrt", "Square", "Sign", "Sine", "Cosine", "Floor", "Clamp", "StableReciprocal",
           "Relu", "Sigmoid", "Tanh", "SiLU", "StopGradient", "Sum", "Mean", "Max", "Min", "Prod",
           "Variance", "ArgMax", "ArgMin", "Shape", "Reshape", "Size", "Transpose",
           "PermuteTensor", "SwapAxes", "Squeeze", "Unsqueeze", "Indexer", "BroadcastTo", "Pad",
           "Where", "IsNan", "NanToNum", "Cast", "Item", "ToTensor", "ToTuple", "Greater", "Less",
           "Equal", "NotEqual", "LessEqual", "GreaterEqual", "LogicalNot", "LogicalAnd",
           "LogicalOr", "LogicalXOr", "ShiftLeft", "ShiftRight", "ScaledDotProduct", "Split",
           "Slice", "Unique", "Dtype", "ToList", "TensorToList", "RandInt", "Cholesky", "Eigvalsh",
           "PolynomialFeatures", "AtLeast1D"]
