"""Why the generated code failed: shape inference re-run with the shapes of the failing call.

``evaluate`` checks each input against the shapes the model was compiled with, one input at a
time. Shapes that fit one by one can still clash with each other or with a layer: a ConvNet
compiled without ``shapes=`` and fed 10x10 images passes those checks, and the framework then
fails inside the generated code (NumPy's ``ValueError: matmul: ...``, PyTorch's
``RuntimeError: mat1 and mat2 shapes cannot be multiplied``, ...). Only then, on the error path,
:func:`diagnose_failure` applies the concrete shapes of that call to the logical model (inside
an undo trail, so the model is left as it was) and lets shape inference find the layer that
cannot take them: the error names the layer path, its terminals and their shapes, and chains the
framework's exception. Nothing here runs while no call fails.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from ...errors import MithrilError, ShapeMismatchError
from ..logical.building import propagation_error
from ..logical.meta import TENSOR, make_kind
from ..logical.model import BaseModel, Model, Operator
from ..logical.symbols import readable_in
from ..shapes import (
    PropagationError,
    ShapeConflict,
    Trail,
    frag_from_template,
    propagate,
    unify_frags,
)

#: the file name the generated code is compiled under (``compiled.py``, without file_path=)
_GENERATED = "<mithril-generated>"


def diagnose_failure(compiled: Any, err: BaseException, inputs: Mapping[str, Any]) -> None:
    """Raise a :class:`ShapeMismatchError` chained to ``err`` when the shapes of ``inputs``
    contradict the model ``compiled`` was compiled from; otherwise return, having noted on
    ``err`` the line of generated code that raised it (the caller re-raises ``err``).

    ``CompiledModel.evaluate`` calls it when the generated code raises:

    >>> import mithril as ml
    >>> from mithril.models import Add
    >>> from mithril.framework.physical.diagnose import diagnose_failure
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(Add(), backend)  # no shapes=: any two shapes pass evaluate's checks
    >>> inputs = {"left": backend.ones(2, 4), "right": backend.ones(3, 4)}
    >>> try:
    ...     diagnose_failure(pm, ValueError("operands could not be broadcast"), inputs)
    ... except ml.ShapeMismatchError as e:
    ...     print(str(e)[:62])
    ...     print(type(e.__cause__).__name__)
    layer 'add' (Add): add at add: dimensions [2, 3] cannot be bro
    ValueError
    """
    if isinstance(err, MithrilError):
        return
    model = getattr(compiled, "logical_model", None)
    shapes = _shapes_of(inputs)
    message = None
    if isinstance(model, Model) and shapes:
        options = getattr(compiled, "compile_options", None) or {}
        try:
            message = _clash(model, compiled.backend, options, shapes)
        except Exception:  # the diagnosis must never hide the framework's own error
            message = None
    if message is None:
        _note_generated_line(compiled, err)
        return
    given = ", ".join(f"{k} {v}" for k, v in shapes.items())
    raise ShapeMismatchError(
        f"{message}; the inputs of this call have shapes {given}, which the model cannot take "
        f"({compiled.backend.name} raised {type(err).__name__}: {_first_line(err)}). Compile "
        "with shapes={...} to have them checked at compile time") from err


def _shapes_of(inputs: Mapping[str, Any]) -> dict[str, list[int]]:
    shapes = {}
    for key, x in inputs.items():
        shape = getattr(x, "shape", None)
        if shape is None:
            continue
        try:
            shapes[key] = [int(d) for d in shape]
        except (TypeError, ValueError):  # a traced or symbolic shape
            continue
    return shapes


def _clash(model: Model, backend: Any, options: Mapping[str, Any],
           shapes: dict[str, list[int]]) -> str | None:
    """Apply what compile applied, then the call's shapes; the conflict, described, or None."""
    from .compile import decide_open_kinds, set_constant_shapes, to_numpy
    from .graph import flatten

    with Trail() as trail:
        try:
            if options.get("shapes"):
                model.set_shapes(dict(options["shapes"]))
            consts = dict(options.get("constant_keys") or {})
            if consts:
                values = {k: to_numpy(backend, v) for k, v in consts.items()}
                set_constant_shapes(model, values)
                model.set_values(values)
            graph = flatten(model)
            decide_open_kinds(graph, model)
            by_name = {v.name: v for v in graph.values if v.is_root_terminal}
            for key, shape in shapes.items():
                value = by_name.get(key)
                if value is None or value.root.kind not in (TENSOR, None):
                    continue
                if value.root.kind is None:
                    make_kind(value.root, TENSOR)
                try:
                    unify_frags(value.root.shape, frag_from_template(shape))
                except ShapeConflict as conflict:
                    return readable_in(f"input {key!r}: {conflict}", (model, ""))
            propagate()
        except PropagationError as found:
            return _describe(found, model)
        finally:
            trail.rollback()
    return None


def _describe(found: PropagationError, model: Model) -> str:
    """The layer (the submodel holding the primitive that failed) and the conflict."""
    text = str(propagation_error(found, "", model))
    owner: BaseModel | None = found.constraint.owner
    if owner is None:
        return text
    layer = owner  # a primitive added directly to the compiled model is its own layer
    if isinstance(owner, Operator) and owner.parent is not None and owner.parent is not model:
        layer = owner.parent
    return f"layer {layer.path!r} ({type(layer).__name__}): {text}{_feeds(layer)}"


def _feeds(layer: BaseModel) -> str:
    """Which layers read the failing layer's outputs (where an expected size comes from)."""
    parent = layer.parent
    if parent is None:
        return ""
    binding = parent.bindings.get(id(layer), {})
    readers = [f"{child.path!r} ({type(child).__name__}) as {term!r}"
               for name in layer.output_terminals() if name in binding
               for child, term in binding[name].consumers]
    return f"; its output goes to {', '.join(readers)}" if readers else ""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _note_generated_line(compiled: Any, err: BaseException) -> None:
    """Name the line of generated code the error came from (``err.add_note``)."""
    code = getattr(compiled, "code", None)
    if not code or err.__traceback__ is None:
        return
    lines = code.splitlines()
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename == _GENERATED and frame.lineno and 0 < frame.lineno <= len(lines):
            err.add_note(f"Mithril: raised by line {frame.lineno} of the generated code "
                         f"(compiled.code): {lines[frame.lineno - 1].strip()}")
            return
