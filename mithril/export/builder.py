"""Building one ONNX graph: nodes, constants and the element type of every value.

:class:`GraphBuilder` is what the op mappings write into. It knows the element type of each
ONNX value it has made (``Cast`` is inserted only where types differ), makes constants of the
right type, and hides the few operators whose signature changed between opsets (the
reductions take ``axes`` as an input from opset 18).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .naming import Names

#: NumPy dtype name -> ONNX TensorProto element type (values of onnx.TensorProto)
ONNX_TYPES = {"float16": 10, "float32": 1, "float64": 11, "int8": 3, "int16": 5, "int32": 6,
              "int64": 7, "uint8": 2, "bool": 9, "bfloat16": 16}
NUMPY_OF = {v: k for k, v in ONNX_TYPES.items() if k != "bfloat16"}
INT64, BOOL = ONNX_TYPES["int64"], ONNX_TYPES["bool"]
FLOATS = {ONNX_TYPES[n] for n in ("float16", "float32", "float64", "bfloat16")}
INTS = {ONNX_TYPES[n] for n in ("int8", "int16", "int32", "int64", "uint8")}


class GraphBuilder:
    """Collects the nodes and initialisers of one graph.

    ``float_type`` is the element type of the model's floats (that of its parameters).
    """

    def __init__(self, opset: int, float_type: int, names: Names) -> None:
        self.opset = opset
        self.float_type = float_type
        self.names = names
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.types: dict[str, int] = {}
        self._consts: dict[tuple[Any, ...], str] = {}

    # ---- values ----
    def type_of(self, name: str) -> int:
        return self.types[name]

    def node(self, op_type: str, inputs: Sequence[str], hint: str, n_out: int = 1,
             out_type: int | Sequence[int] | None = None, **attrs: Any) -> Any:
        """Add one node; returns its output name (or a list of names when ``n_out > 1``).

        ``out_type`` is the element type of the output(s); by default that of the first input
        (of the second for ``Where``).
        """
        from onnx import helper

        outs = [self.names.fresh(hint) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.names.fresh(f"{op_type}:{hint}"), **attrs))
        types = out_type if isinstance(out_type, list | tuple) else [out_type] * n_out
        like = inputs[1] if op_type == "Where" else inputs[0] if inputs else None
        for o, t in zip(outs, types, strict=True):
            self.types[o] = t if t is not None else self.types[like]
        return outs if n_out > 1 else outs[0]

    def initializer(self, name: str, array: np.ndarray) -> str:
        """A named initialiser (a parameter or state key, kept verbatim)."""
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(array))
        tensor.name = name
        self.initializers.append(tensor)
        self.types[name] = ONNX_TYPES[np.dtype(array.dtype).name]
        return name

    def const(self, value: Any, elem_type: int) -> str:
        """A constant tensor of ``elem_type`` (shared between uses of the same value)."""
        arr = np.asarray(value, dtype=NUMPY_OF[elem_type])
        key = (elem_type, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            from onnx import numpy_helper

            name = self.names.fresh("const")
            tensor = numpy_helper.from_array(arr, name)
            self.initializers.append(tensor)
            self.types[name] = elem_type
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-d int64 constant (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1), INT64)

    def cast(self, name: str, elem_type: int) -> str:
        if self.types[name] == elem_type:
            return name
        return self.node("Cast", [name], f"{name}_cast", out_type=elem_type, to=elem_type)

    # ---- operators whose form depends on the opset ----
    def reduce(self, op_type: str, x: str, axes: Sequence[int] | None, keepdims: bool,
               hint: str, out_type: int | None = None) -> str:
        """``ReduceSum`` / ``ReduceMean`` / ...: over ``axes`` (None: all of them)."""
        attrs: dict[str, Any] = {"keepdims": int(keepdims)}
        inputs = [x]
        if axes is not None:
            axes = [int(a) for a in axes]
            if op_type == "ReduceSum" or self.opset >= 18:
                inputs.append(self.ints(axes))
            else:
                attrs["axes"] = axes
        return self.node(op_type, inputs, hint, out_type=out_type, **attrs)

    def shape_of(self, x: str, hint: str, start: int | None = None,
                 end: int | None = None) -> str:
        """``Shape(x)[start:end]`` as a 1-d int64 tensor."""
        return self.node("Shape", [x], hint, out_type=INT64, start=start, end=end)
