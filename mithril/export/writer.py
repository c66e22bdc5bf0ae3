"""Assembling the ONNX model, checking it, and writing it atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from ..errors import CompileError
from .builder import GraphBuilder

#: ONNX IR version written: the one onnx 1.14+ and onnxruntime 1.15+ all read
IR_VERSION = 9


def value_info(name: str, elem_type: int, shape: Sequence[Any] | None) -> Any:
    """A graph input or output: ints are fixed dims, strings named dynamic axes, None an
    unnamed one; ``shape=None`` leaves the rank open."""
    from onnx import helper

    if shape is None:
        return helper.make_tensor_value_info(name, elem_type, None)
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def make_model(builder: GraphBuilder, inputs: list[Any], outputs: list[Any],
               graph_name: str, doc: str) -> Any:
    """The ModelProto, checked with ``onnx.checker`` (full check, with shape inference)."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(builder.nodes, graph_name, inputs, outputs,
                              initializer=builder.initializers, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", builder.opset)],
                              producer_name="mithril", ir_version=IR_VERSION)
    if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
        _infer_output_ranks(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:  # a bug in a mapping, not in the user's model
        raise CompileError(f"the exported ONNX graph is invalid: {err}") from err
    except onnx.shape_inference.InferenceError as err:
        raise CompileError(f"the exported ONNX graph is invalid: {err}") from err
    return model


def _infer_output_ranks(model: Any) -> None:
    """Outputs whose rank Mithril left open (e.g. indexing with a slice computed at run time)
    take the rank ONNX shape inference finds, with every dim dynamic."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    found = {o.name: o for o in inferred.graph.output}
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            continue
        other = found.get(out.name)
        if other is None or not other.type.tensor_type.HasField("shape"):
            raise CompileError(f"cannot export to ONNX: the rank of output {out.name!r} is not "
                               "known; give the input shapes with shapes=")
        out.type.tensor_type.shape.SetInParent()
        for _ in other.type.tensor_type.shape.dim:
            out.type.tensor_type.shape.dim.add()


def write_atomic(model: Any, path: str | os.PathLike[str]) -> str:
    """Write ``model`` to ``path`` through a temporary file in the same folder, so that the
    path holds either the old file or the complete new one, never a partial write.

    >>> import os, tempfile
    >>> from onnx import helper
    >>> graph = helper.make_graph([], "empty", [], [])
    >>> path = write_atomic(helper.make_model(graph), os.path.join(tempfile.mkdtemp(), "e.onnx"))
    >>> sorted(os.listdir(os.path.dirname(path)))
    ['e.onnx']
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=".mithril-onnx-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
