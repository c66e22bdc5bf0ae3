"""``ml.export_onnx``: a logical model and its parameters as an ONNX file.

The model is flattened and pruned exactly as ``ml.compile(..., inference=True)`` does
(running statistics, no dropout); the graph walk (:mod:`.walk`) then maps each primitive
through the table in :mod:`.mapping`. Nothing of the user's model changes: shapes given here
are applied inside an undo trail, as compile does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    CompileError,
    InputError,
    ShapeMismatchError,
    missing_package,
)
from ..framework.logical.model import BaseModel, ConnectSpec, Model, Operator
from ..framework.physical.compile import (
    check_determined,
    decide_open_kinds,
    shape_items,
    wrap_primitive,
)
from ..framework.physical.graph import flatten
from ..framework.physical.passes import Program, build_program
from ..framework.shapes import Trail
from .builder import ONNX_TYPES, GraphBuilder
from .mapping import UNSUPPORTED, table
from .naming import Names
from .walk import Emitter, Lit, SliceRef, TensorsRef, TupleRef, elem_type_of_kinds
from .writer import make_model, value_info, write_atomic

#: opset written when none is asked for: the first with ``Gelu`` (LayerNormalization: 17)
DEFAULT_OPSET = 20
MIN_OPSET = 17


class OnnxExportError(CompileError):
    """The model uses primitives (or cases of them) that have no ONNX form; the message names
    each one with its path in the model."""


def export_onnx(model: Any, params: Mapping[str, Any], path: str | os.PathLike[str], *,
                shapes: Mapping[str, Any] | None = None, state: Mapping[str, Any] | None = None,
                opset: int | None = None) -> str:
    """Write ``model`` with ``params`` (and ``state``) to ``path`` as an ONNX model.

    The graph computes the model's inference behaviour (running statistics, no dropout).
    ``params`` and ``state`` are arrays of any backend, keyed as ``CompiledModel.param_keys``
    and ``state_keys``; they become initialisers under the same keys, in the parameters' float
    type. Outputs that are absent (``None``, e.g. the running statistics of a batch norm
    that keeps none) are left out. ``shapes`` are input shapes as for ``ml.compile``: a
    symbol (``"N"``) stays a named dynamic axis. Inputs and outputs keep the model's names.
    ``opset`` defaults to 20 (17 is the lowest supported). The file is written atomically;
    its path is returned.

    Raises :class:`OnnxExportError` naming every primitive that cannot be exported, and
    ``InputError`` / ``ShapeMismatchError`` for missing, unknown or misshapen arrays.

    >>> import tempfile, os
    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(2)(input_size=3), ml.NumpyBackend(), shapes={"input": ["N", 3]})
    >>> params = pm.randomize_params(seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.onnx")
    >>> _ = ml.export_onnx(Linear(2)(input_size=3), params, path, shapes={"input": ["N", 3]})
    >>> import onnxruntime as ort
    >>> x = np.ones((4, 3), np.float32)
    >>> got = ort.InferenceSession(path).run(None, {"input": x})[0]
    >>> want = pm.evaluate(params, {"input": x})["output"]
    >>> bool(np.allclose(got, want, rtol=1e-5))
    True
    """
    try:
        import onnx
    except ImportError as err:
        raise missing_package("ONNX export", "onnx", "onnx") from err
    opset = DEFAULT_OPSET if opset is None else opset
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ArgumentError(f"opset must be an int from {MIN_OPSET} to {newest} (the newest "
                            f"this onnx package knows), got {opset!r}")
    model = _as_model(model)
    if not isinstance(params, Mapping):
        raise ArgumentTypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    if state is not None and not isinstance(state, Mapping):
        raise ArgumentTypeError(f"state must be a dict of arrays, got {type(state).__name__}")
    with Trail() as trail:
        try:
            proto = _export_in_trail(model, params, state or {}, shapes, opset)
        finally:
            trail.rollback()
    return write_atomic(proto, path)


def _as_model(model: Any) -> Model:
    if isinstance(model, ConnectSpec):
        spec = model
        if spec.args or spec.kwargs:
            model = Model()
            model |= spec
        else:
            model = spec.model
    if not isinstance(model, BaseModel):
        raise ArgumentTypeError(f"export_onnx needs a model, got {type(model).__name__}")
    if isinstance(model, Operator):
        model = wrap_primitive(model)
    if isinstance(model, Model) and not model.children:
        raise CompileError(f"model {model.path} is empty: add layers before exporting")
    return model


def to_numpy(x: Any) -> np.ndarray:
    """An array of any backend (NumPy, PyTorch, JAX, MLX) as a NumPy array (bfloat16, which
    NumPy lacks, as float32).

    >>> to_numpy([1.5, 2.0]).dtype
    dtype('float64')
    """
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if "bfloat16" in str(getattr(x, "dtype", "")):  # exported as float32
        if type(x).__module__.startswith("mlx"):
            import mlx.core as mx

            x = x.astype(mx.float32)
        else:
            return np.asarray(x).astype(np.float32)
    return np.asarray(x)


def _program(model: Model, shapes: Mapping[str, Any] | None) -> Program:
    if shapes:
        model.set_shapes(dict(shapes))
    graph = flatten(model)
    decide_open_kinds(graph, model)
    program = build_program(graph, inference=True)
    check_determined(program)
    return program


def _arrays(program: Program, params: Mapping[str, Any], state: Mapping[str, Any]
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Params and state as NumPy arrays in one float type, checked against the program."""
    for what, given, wanted in (("params", params, program.params),
                                ("state", state, program.state)):
        missing = [k for k in wanted if k not in given]
        extra = [k for k in given if k not in wanted]
        if missing or extra:
            hint = " (the running statistics: CompiledModel.state, or initial_state_dict for " \
                   "an untrained model)" if what == "state" and missing else ""
            raise InputError(f"export_onnx {what}: missing {missing}, unexpected {extra}; "
                             f"the model's {what} keys are {list(wanted)}{hint}")
    p = {k: to_numpy(v) for k, v in params.items()}
    s = {k: to_numpy(v) for k, v in state.items()}
    floats = [a.dtype for a in (*p.values(), *s.values()) if a.dtype.kind == "f"]
    float_dtype = floats[0] if floats else np.dtype(np.float32)
    for arrays, specs in ((p, program.params), (s, {k: vin for k, (vin, _) in
                                                    program.state.items()})):
        for k, v in specs.items():
            want = tuple(shape_items(v) or ())
            if arrays[k].shape != want:
                raise ShapeMismatchError(f"export_onnx: {k!r} has shape {list(arrays[k].shape)}"
                                         f", the model's is {list(want)}")
            if arrays[k].dtype.kind == "f":
                arrays[k] = arrays[k].astype(float_dtype, copy=False)
    return p, s, ONNX_TYPES[float_dtype.name]


def _dims(v: Any) -> list[Any] | None:
    items = shape_items(v)
    if items is None or any(isinstance(i, str) and "..." in i for i in items):
        return None
    return items


def _export_in_trail(model: Model, params: Mapping[str, Any], state: Mapping[str, Any],
                     shapes: Mapping[str, Any] | None, opset: int) -> Any:
    program = _program(model, shapes)
    p, s, float_type = _arrays(program, params, state)
    names = Names()
    for key in (*program.data, *program.outputs, *p, *s, *program.consts):
        if key not in names.used:
            names.reserve(key)
    b = GraphBuilder(opset, float_type, names)
    ex = Emitter(program, b)
    for key, v in program.params.items():
        ex.refs[id(v)] = b.initializer(key, p[key])
    for key, (vin, _) in program.state.items():
        ex.refs[id(vin)] = b.initializer(key, s[key])
    for key, v in program.consts.items():
        value = np.asarray(v.root.value)
        if value.dtype.kind == "f":
            value = value.astype(NUMPY_FLOAT[float_type])
        ex.refs[id(v)] = b.initializer(key, value)
    inputs = []
    for key, v in program.data.items():
        t = elem_type_of_kinds(v.root.kinds, float_type)
        b.types[key] = t
        ex.refs[id(v)] = key
        if v.root.items is not None:
            raise OnnxExportError(f"cannot export to ONNX: input {key!r} is a tuple of "
                                  "tensors; ONNX inputs are tensors: give its elements as "
                                  "separate inputs")
        if v.root.kind != "tensor" or _dims(v) is None:
            raise OnnxExportError(f"cannot export to ONNX: the rank of input {key!r} is not "
                                  "known (ONNX inputs have a fixed rank); give it with shapes=")
        inputs.append(value_info(key, t, _dims(v)))
    problems = ex.run(table(), UNSUPPORTED)
    if problems:
        raise OnnxExportError("cannot export to ONNX: " + "; ".join(problems))
    outputs = []
    renamed: dict[str, str] = {}  # intermediate name -> the output key it became
    for key, v in program.outputs.items():
        r = ex.ref(v)
        if isinstance(r, Lit) and r.value is None:
            continue  # an absent optional result (batch norm without running statistics)
        if isinstance(r, Lit):
            name = ex.const(r.value)
        elif isinstance(r, TupleRef):
            name = r.name
        elif isinstance(r, SliceRef):
            raise OnnxExportError(f"cannot export to ONNX: output {key!r} is a slice")
        elif isinstance(r, TensorsRef):
            raise OnnxExportError(f"cannot export to ONNX: output {key!r} is a tuple of "
                                  "tensors; expose its elements as outputs instead")
        else:
            name = r
        name = renamed.get(name, name)
        if not _rename_output(b, name, key, renamed):
            b.nodes.append(_identity(name, key, b.names.fresh(f"Identity:{key}")))
        b.types[key] = b.types[name]
        outputs.append(value_info(key, b.types[key], _output_dims(v, r)))
    return make_model(b, inputs, outputs, "mithril", f"exported from Mithril model "
                      f"{model.path}")


def _output_dims(v: Any, r: Any) -> list[Any] | None:
    """An output's dims: the model's for a tensor; ``[]`` for a number, ``[None]`` for a tuple
    of ints known at run time (a shape)."""
    if v.root.kind == "tensor":
        return _dims(v)
    if isinstance(r, Lit):
        return list(np.shape(r.value))
    return [None] if isinstance(r, TupleRef) else []


NUMPY_FLOAT = {ONNX_TYPES[n]: n for n in ("float16", "float32", "float64")}


def _rename_output(b: GraphBuilder, name: str, key: str, renamed: dict[str, str]) -> bool:
    """Let the node that computes ``name`` write the output ``key`` directly (no Identity);
    False where ``name`` is not an intermediate value of its own (an input, an initialiser,
    or a value another output already took)."""
    producer = next((n for n in b.nodes if name in n.output), None)
    if producer is None or name in renamed.values():
        return False
    for node in b.nodes:
        for field in (node.input, node.output):
            for i, x in enumerate(field):
                if x == name:
                    field[i] = key
    renamed[name] = key
    b.types[key] = b.types[name]
    return True


def _identity(src: str, dst: str, node_name: str) -> Any:
    from onnx import helper

    return helper.make_node("Identity", [src], [dst], name=node_name)
