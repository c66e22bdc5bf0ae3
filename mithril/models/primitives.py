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


def _make(class_name: str, op_name: str, doc: str, positional: tuple[str, ...] | None = None
          ) -> type[Primitive]:
    op = CATALOGUE[op_name]
    if positional is None:
        positional = tuple(t.name for t in op.inputs if t.kind == SCALAR)
    cls = type(class_name, (Primitive,), {"op_name": op_name, "positional": positional,
                                          "__doc__": doc, "__module__": __name__})
    return cls


# (LeakyRelu, Gelu, Softmax, LogSoftmax, Softplus and Concat live in layers.py with PyTorch's
# argument names.)
_TABLE: list[tuple[str, str, str]] = [
    ("Buffer", "buffer", "Passes its input through unchanged (useful to name a connection)."),
    ("Add", "add", "``left + right`` with broadcasting."),
    ("Subtract", "subtract", "``left - right`` with broadcasting."),
    ("Multiply", "multiply", "``left * right`` with broadcasting."),
    ("Divide", "divide", "``left / right`` (true division) with broadcasting."),
    ("FloorDivide", "floor_divide", "``left // right`` with broadcasting."),
    ("Power", "power", "``left ** right`` with broadcasting."),
    ("MatrixMultiply", "matmul", "``left @ right`` (batched, NumPy semantics)."),
    ("Minimum", "minimum", "Elementwise minimum."),
    ("Maximum", "maximum", "Elementwise maximum."),
    ("Absolute", "absolute", "``|x|``."),
    ("Negate", "negate", "``-x``."),
    ("Exponential", "exp", "``exp(x)``."),
    ("Log", "log", "Natural logarithm."),
    ("Sqrt", "sqrt", "Square root."),
    ("Square", "square", "``x * x``."),
    ("Sign", "sign", "Sign of x (-1, 0, 1)."),
    ("Sine", "sin", "``sin(x)``."),
    ("Cosine", "cos", "``cos(x)``."),
    ("Floor", "floor", "``floor(x)``."),
    ("Clamp", "clamp", "Clamp x into ``[min, max]``."),
    ("StableReciprocal", "reciprocal", "``1 / x``."),
    ("Relu", "relu", "``max(x, 0)`` (``nn.ReLU``)."),
    ("Sigmoid", "sigmoid", "``nn.Sigmoid``."),
    ("Tanh", "tanh", "``nn.Tanh``."),
    ("SiLU", "silu", "``nn.SiLU``."),
    ("StopGradient", "stop_gradient", "Identity whose gradient is zero (``detach``)."),
    ("Sum", "sum", "Sum over ``axis`` (all when None)."),
    ("Mean", "mean", "Mean over ``axis`` (all when None)."),
    ("Max", "max", "Maximum over ``axis``."),
    ("Min", "min", "Minimum over ``axis``."),
    ("Prod", "prod", "Product over ``axis``."),
    ("Variance", "variance", "Variance over ``axis`` with ``correction`` (0: biased)."),
    ("ArgMax", "argmax", "Index of the maximum over ``axis``."),
    ("ArgMin", "argmin", "Index of the minimum over ``axis``."),
    ("Shape", "shape", "The shape of a tensor, as a tuple."),
    ("Reshape", "reshape", "Reshape to ``shape`` (one -1 allowed)."),
    ("Size", "size", "Number of elements, or the size of ``dim``."),
    ("Transpose", "transpose", "Permute axes (reverse them when ``axes`` is None)."),
    ("PermuteTensor", "transpose", "Permute axes by ``axes``."),
    ("SwapAxes", "swap_axes", "Swap two axes."),
    ("Squeeze", "squeeze", "Drop axes of size 1."),
    ("Unsqueeze", "unsqueeze", "Insert an axis of size 1."),
    ("Indexer", "indexer", "``input[index]`` for ints, slices, None and Ellipsis."),
    ("BroadcastTo", "broadcast_to", "Broadcast to ``shape``."),
    ("Pad", "pad", "Zero padding by ``pad_width`` ((before, after) per dim)."),
    ("Where", "where", "``input1`` where ``condition`` else ``input2``."),
    ("IsNan", "isnan", "Elementwise NaN test."),
    ("NanToNum", "nan_to_num", "Replace NaN and infinities by numbers."),
    ("Cast", "cast", "Convert to ``dtype``."),
    ("Item", "item", "The Python number in a one-element tensor."),
    ("ToTensor", "to_tensor", "A tensor from a Python value."),
    ("ToTuple", "to_tuple", "A tuple from ``n`` values."),
    ("Greater", "greater", "``left > right``."),
    ("Less", "less", "``left < right``."),
    ("Equal", "equal", "``left == right``."),
    ("NotEqual", "not_equal", "``left != right``."),
    ("LessEqual", "less_equal", "``left <= right``."),
    ("GreaterEqual", "greater_equal", "``left >= right``."),
    ("LogicalNot", "logical_not", "Elementwise not."),
    ("LogicalAnd", "logical_and", "Elementwise and."),
    ("LogicalOr", "logical_or", "Elementwise or."),
    ("LogicalXOr", "logical_xor", "Elementwise exclusive or."),
    ("ShiftLeft", "shift_left", "``left << right``."),
    ("ShiftRight", "shift_right", "``left >> right``."),
    ("ScaledDotProduct", "scaled_dot_product", "softmax(q k^T * scale + mask) v."),
    ("Split", "split",
     "``torch.split(input, split_size, axis)`` with the chunks stacked on a new first axis: "
     "chunk ``i`` is ``output[i]`` (index the output, e.g. ``split.output[0]``). The length "
     "of ``axis`` must be a multiple of ``split_size`` (all chunks equal). "
     "``Split(2, axis=1)`` on a ``(3, 6)`` input gives a ``(3, 3, 2)`` output."),
    ("Slice", "to_slice",
     "A Python ``slice(start, stop, step)`` object, reusable as an ``Indexer`` index: "
     "``m |= Slice(1, None, 2)(output=\"s\")``, ``m |= Indexer()(input=\"x\", index=\"s\", "
     "output=\"y\")``. Values given here (ints or None, as in ``slice``) are constants; "
     "``ml.TBD`` makes that terminal an input (e.g. a stop computed from a shape)."),
    ("Unique", "unique",
     "The sorted distinct values of the (flattened) input, ``np.unique``. Its length depends "
     "on the data, so JAX and MLX cannot trace it: with ``jit`` on they run the model eagerly "
     "(with a warning); ``compile(..., jit=False)`` does so without one."),
    ("Dtype", "dtype_of",
     "The dtype of a tensor as a scalar (an ``ml`` dtype such as ``ml.float32``), known when "
     "the code runs; it can feed ``Cast``'s ``dtype``. As a model output it needs "
     "``jit=False`` on JAX (jitted functions return arrays only)."),
    ("ToList", "to_list", "A Python list of ``n`` scalar values (``ToList(n=3)``)."),
    ("TensorToList", "tensor_to_list",
     "A tensor as nested Python lists (``tolist()``); needs concrete values, so JAX and MLX "
     "with ``jit`` on run the model eagerly (with a warning; ``compile(..., jit=False)`` "
     "avoids it)."),
    ("RandInt", "randint",
     "Integers uniform in ``[low, high)`` of ``shape`` (int64 unless ``dtype``), drawn from "
     "the backend's random state on every call (``RandInt((2, 3), 0, 10)``)."),
    ("Cholesky", "cholesky",
     "Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``, "
     "batched over leading dims); the gradient is the symmetric one (PyTorch's)."),
    ("Eigvalsh", "eigvalsh",
     "Eigenvalues, ascending, of symmetric matrices (``(..., n, n) -> (..., n)``); gradient "
     "``V diag(g) V^T``."),
    ("PolynomialFeatures", "polynomial_features",
     "All monomials of the last axis' features of total degree 1..``degree`` "
     "(scikit-learn's ``PolynomialFeatures(degree, include_bias=False)`` columns): "
     "``(..., d) -> (..., C(d + degree, degree) - 1)``."),
    ("AtLeast1D", "atleast_1d", "``np.atleast_1d``: a 0-d input becomes shape ``(1,)``."),
]

__all__ = ["Primitive", "TBD"]
for _cls_name, _op_name, _doc in _TABLE:
    globals()[_cls_name] = _make(_cls_name, _op_name, _doc)
    __all__.append(_cls_name)
