"""``Model.to_dict()`` / ``Model.from_dict()``: a versioned, JSON-compatible model schema.

Document (version 1)::

    {"format": "mithril.model", "version": 1, "model": NODE}

    NODE = {"kind": "layer", "class": "Linear", "name": null, "args": [...], "kwargs": {...}}
         | {"kind": "primitive", "op": "reshape", "name": null, "n_inputs": null,
            "values": {terminal: VALUE}}
         | {"kind": "composite", "name": "block", "connections": [CONN, ...],
            "children": [{"model": NODE, "terminals": {terminal: connection index}}],
            "cin": index | null, "cout": index | null, "more_cins": [index, ...]}
    CONN = {"key": name | null, "expose": bool, "value": VALUE (constants only),
            "shape": [int | "symbol" | null | ["V3", "..."]] | null, "kinds": int,
            "differentiable": bool | null,
            "items": {"type": "tuple" | "list", "elements": [{"tensor": true} | {"value":
                      VALUE} | {"items": ...}, ...]} (an input holding a tuple of tensors)}

Library layers are stored as their class and constructor arguments; compositions are stored
structurally, with every connection's current shape (equal symbols mean equal dims), so any
composition round-trips. Values are tagged (tuples, slices, dtypes, arrays, inf/nan). Loading
instantiates only classes registered from ``mithril.models`` and catalogue primitives: nothing
in a document is imported, evaluated or executed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import MithrilError, ModelFileError
from .. import types as T
from ..ops import CATALOGUE
from ..shapes import Dim, Frag
from .meta import TBD, TENSOR
from .model import BaseModel, Connection, IOKey, Model, Operator
from .sequences import TensorSlot

FORMAT, VERSION = "mithril.model", 1


# ----------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------
def encode_value(v: Any) -> Any:
    """A JSON-compatible form of a constant (tagged where JSON has no equivalent)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, tuple):
        return {"tuple": [encode_value(x) for x in v]}
    if isinstance(v, list):
        return [encode_value(x) for x in v]
    if isinstance(v, slice):
        return {"slice": [encode_value(v.start), encode_value(v.stop), encode_value(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    if v is TBD:  # a scalar terminal wired to a connection
        return {"tbd": True}
    if isinstance(v, T.Dtype):
        return {"dtype": v.name}
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise ModelFileError(f"cannot store an array of {v.dtype}")
        return {"array": {"dtype": v.dtype.name, "shape": list(v.shape),
                          "data": v.ravel().tolist()}}
    if isinstance(v, np.generic):
        return encode_value(v.item())
    if isinstance(v, BaseModel):
        return {"model": model_node(v)}
    if isinstance(v, dict):
        return {"dict": {str(k): encode_value(x) for k, x in v.items()}}
    raise ModelFileError(f"cannot store a value of type {type(v).__name__}: {v!r}")


#: how deep models and values may nest in a document (real models nest a few levels; a deeper
#: document would exhaust Python's recursion limit while being read)
MAX_DEPTH = 100


def _check_depth(depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        shown = where if len(where) <= 80 else f"{where[:77]}..."
        raise ModelFileError(f"{shown}: models and values nest more than {MAX_DEPTH} levels "
                             "deep in this document")


def decode_value(v: Any, where: str, depth: int = 0) -> Any:
    if v is None or isinstance(v, bool | str | int | float):
        return v
    _check_depth(depth, where)
    depth += 1
    if isinstance(v, list):
        return [decode_value(x, where, depth) for x in v]
    if not isinstance(v, dict) or len(v) != 1:
        raise ModelFileError(f"{where}: malformed value {v!r}")
    (tag, body), = v.items()
    if tag == "float" and body in ("inf", "-inf", "nan"):
        return float(body)
    if tag == "tuple" and isinstance(body, list):
        return tuple(decode_value(x, where, depth) for x in body)
    if tag == "slice" and isinstance(body, list) and len(body) == 3:
        return slice(*(decode_value(x, where, depth) for x in body))
    if tag == "ellipsis" and body is True:
        return Ellipsis
    if tag == "tbd" and body is True:
        return TBD
    if tag == "dtype" and body in T.DTYPES:
        return T.DTYPES[body]
    if tag == "array" and isinstance(body, dict):
        dtype, shape, data = body.get("dtype"), body.get("shape"), body.get("data")
        if dtype not in ("bool", "int8", "int16", "int32", "int64", "uint8", "float16",
                         "float32", "float64") or not isinstance(shape, list) or \
                not isinstance(data, list) or not all(isinstance(s, int) and s >= 0
                                                      for s in shape):
            raise ModelFileError(f"{where}: malformed array")
        if math.prod(shape) != len(data):
            raise ModelFileError(f"{where}: array data does not fit its shape {shape}")
        return np.asarray(data, dtype=dtype).reshape(shape)
    if tag == "model" and isinstance(body, dict):
        return build_node(body, where, depth)
    if tag == "dict" and isinstance(body, dict):
        return {k: decode_value(x, where, depth) for k, x in body.items()}
    raise ModelFileError(f"{where}: unknown value tag {tag!r}")


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _registry() -> dict[str, type]:
    import mithril.models as models

    out: dict[str, type] = {}
    for name in getattr(models, "__all__", ()):
        cls = getattr(models, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls not in (
                Model, BaseModel, Operator):
            out[cls.__name__] = cls
    return out


def model_to_dict(model: BaseModel) -> dict[str, Any]:
    """The document for ``model`` (see the module docstring)."""
    return {"format": FORMAT, "version": VERSION, "model": model_node(model)}


def model_node(model: BaseModel) -> dict[str, Any]:
    registry = _registry()
    cls = type(model)
    if isinstance(model, Operator) and cls.__name__ not in registry:
        values = {k: encode_value(v) for k, v in getattr(model, "_values", {}).items()}
        n = len(model.in_terms) - (len(model.op.inputs) - 1) if model.op.variadic else None
        return {"kind": "primitive", "op": model.op.name, "name": model.name, "n_inputs": n,
                "values": values}
    if getattr(model, "serialize_structurally", False):
        finalize = getattr(model, "finalize", None)
        if callable(finalize):
            finalize()  # a TrainModel: store it with its final_cost
    elif cls.__name__ in registry and cls in (
            registry[cls.__name__], getattr(registry[cls.__name__], "guide_class", None)) \
            and hasattr(model, "_init_args"):
        # (``guide_class``: a name serving both APIs builds the guide's class from its
        # arguments, e.g. ``RNNCell(3, 4)``)
        args, kwargs = model._init_args
        kwargs = dict(kwargs)
        extra = getattr(model, "_serial_kwargs", None)
        if callable(extra):
            kwargs.update(extra())
        kwargs.pop("name", None)
        return {"kind": "layer", "class": cls.__name__, "name": model.name,
                "args": [encode_value(a) for a in args],
                "kwargs": {k: encode_value(v) for k, v in kwargs.items()},
                "shapes": _layer_shapes(model)}
    if not isinstance(model, Model):
        raise ModelFileError(f"cannot store model type {cls.__name__}")
    return _composite_node(model)


class _Symbols:
    """Names symbols by union-find root so equal dims get equal names in one document."""

    def __init__(self) -> None:
        self.dims: dict[int, str] = {}
        self.vars: dict[int, str] = {}

    def template(self, f: Frag) -> list[Any]:
        n = f.normal()
        items: list[Any] = [self.dim(d) for d in n.prefix]
        if n.var is not None:
            r = n.var.root()
            items.append([self.vars.setdefault(id(r), f"V{len(self.vars) + 1}"), "..."])
            items += [self.dim(d) for d in n.suffix]
        return items

    def dim(self, d: Dim) -> Any:
        r = d.root()
        if r.value is not None:
            return r.value
        name = self.dims.get(id(r))
        if name is None:
            taken = set(self.dims.values())
            name = r.name if r.name and r.name not in taken else f"d{len(self.dims) + 1}"
            while name in taken:
                name += "_"
            self.dims[id(r)] = name
        return name


def _layer_shapes(model: BaseModel) -> dict[str, Any]:
    """Shapes a layer's terminals have beyond what its constructor gives (e.g. input_size)."""
    symbols = _Symbols()
    out = {}
    for name, conn in model.interface().items():
        meta = conn.meta.root()
        if meta.kind == TENSOR:
            out[name] = symbols.template(meta.shape)
    return out


def _composite_node(model: Model) -> dict[str, Any]:
    symbols = _Symbols()
    index = {id(c): i for i, c in enumerate(model.conns)}
    conns = []
    for c in model.conns:
        meta = c.meta.root()
        entry: dict[str, Any] = {"key": c.key, "expose": bool(c.expose),
                                 "kinds": meta.kinds, "differentiable": meta.differentiable,
                                 "shape": symbols.template(meta.shape)
                                 if meta.kind == TENSOR else None}
        if c.producer is None and meta.value is not TBD and not _holds_symbols(meta.value):
            entry["value"] = encode_value(meta.value)
        elif c.producer is None and meta.items is not None:
            entry["items"] = encode_items(meta.items)  # a tuple input (Tensor() slots)
        conns.append(entry)
    children = []
    for child, binding in model.iter_children():
        children.append({"model": model_node(child),
                         "terminals": {t: index[id(c)] for t, c in binding.items()}})
    cin, cout = model._cin, model._cout
    return {"kind": "composite", "class": "Model", "name": model.name, "connections": conns,
            "children": children,
            "cin": None if cin is None else index.get(id(cin)),
            "cout": None if cout is None else index.get(id(cout)),
            "more_cins": [index[id(c)] for c in model._more_cins if id(c) in index]}


def encode_items(items: Any) -> dict[str, Any]:
    """A tuple (list) input's elements: ``{"tensor": true}`` for a tensor slot, ``{"value":
    ...}`` for a constant, ``{"items": ...}`` for a nested tuple."""
    out = []
    for m in items:
        r = m.root()
        if r.kind == TENSOR:
            out.append({"tensor": True})
        elif r.items is not None:
            out.append({"items": encode_items(r.items)})
        elif r.value is not TBD and not _holds_symbols(r.value):
            out.append({"value": encode_value(r.value)})
        else:
            out.append({})
    return {"type": type(items).__name__, "elements": out}


def decode_items(doc: Any, where: str, depth: int = 0) -> Any:
    """The tuple value (``Tensor()`` slots, constants) :func:`encode_items` wrote."""
    _check_depth(depth, where)
    _expect(isinstance(doc, dict) and doc.get("type") in ("tuple", "list") and isinstance(
        doc.get("elements"), list), where, "bad 'items' of a tuple input")
    values: list[Any] = []
    for e in doc["elements"]:
        _expect(isinstance(e, dict), where, "bad element of a tuple input")
        if e.get("tensor") is True:
            values.append(TensorSlot())
        elif "items" in e:
            values.append(decode_items(e["items"], where, depth + 1))
        elif "value" in e:
            values.append(decode_value(e["value"], where, depth + 1))
        else:
            _expect(False, where, "an element of a tuple input of unknown kind")
    return tuple(values) if doc["type"] == "tuple" else values


def _holds_symbols(v: Any) -> bool:
    if isinstance(v, Dim):
        return True
    if isinstance(v, tuple | list):
        return any(_holds_symbols(x) for x in v)
    return False


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def model_from_dict(doc: Any) -> BaseModel:
    """Rebuild a model from :func:`model_to_dict`'s document, validating everything."""
    if not isinstance(doc, dict):
        raise ModelFileError(f"a model document is a dict, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"not a Mithril model document (format {doc.get('format')!r})")
    version = doc.get("version")
    if version != VERSION:
        raise ModelFileError(f"model document version {version!r} is not supported (this "
                             f"Mithril reads version {VERSION})")
    try:
        return build_node(doc.get("model"), "model")
    except RecursionError:  # MAX_DEPTH keeps documents well below the limit; a last guard
        raise ModelFileError("the model document nests too deeply to be read") from None


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ModelFileError(f"{where}: {what}")


def build_node(node: Any, where: str, depth: int = 0) -> BaseModel:
    _expect(isinstance(node, dict), where, "a model node must be a dict")
    _check_depth(depth, where)
    depth += 1
    kind = node.get("kind")
    name = node.get("name")
    _expect(name is None or isinstance(name, str), where, "name must be a string")
    if kind == "primitive":
        op = node.get("op")
        _expect(isinstance(op, str) and op in CATALOGUE, where, f"unknown primitive {op!r}")
        values = node.get("values", {})
        _expect(isinstance(values, dict), where, "values must be a dict")
        n = node.get("n_inputs")
        _expect(n is None or (isinstance(n, int) and 0 < n < 10_000), where, "bad n_inputs")
        decoded = {k: decode_value(v, f"{where}.{k}", depth) for k, v in values.items()}
        try:
            return Operator(CATALOGUE[op], name=name, n_inputs=n, **decoded)
        except MithrilError as err:
            raise ModelFileError(f"{where}: {err}") from None
    if kind == "layer":
        cls_name = node.get("class")
        registry = _registry()
        _expect(isinstance(cls_name, str) and cls_name in registry, where,
                f"unknown model class {cls_name!r}")
        args = node.get("args", [])
        kwargs = node.get("kwargs", {})
        _expect(isinstance(args, list) and isinstance(kwargs, dict), where, "bad arguments")
        args = [decode_value(a, f"{where}.args", depth) for a in args]
        kwargs = {str(k): decode_value(v, f"{where}.{k}", depth) for k, v in kwargs.items()}
        try:
            model = registry[cls_name](*args, name=name, **kwargs)
        except (TypeError, ValueError, MithrilError) as err:
            raise ModelFileError(f"{where}: cannot build {cls_name}: {err}") from None
        shapes = node.get("shapes") or {}
        _expect(isinstance(shapes, dict), where, "shapes must be a dict")
        if shapes:
            _apply_shapes(model, {k: _template(v, where) for k, v in shapes.items()}, where)
        return model
    if kind == "composite":
        return _build_composite(node, where, depth)
    raise ModelFileError(f"{where}: unknown node kind {kind!r}")


def _template(t: Any, where: str) -> list[Any] | None:
    if t is None:
        return None
    _expect(isinstance(t, list), where, f"malformed shape {t!r}")
    out: list[Any] = []
    for item in t:
        if isinstance(item, list):
            _expect(len(item) == 2 and isinstance(item[0], str) and item[1] == "...", where,
                    f"malformed variadic {item!r}")
            out.append((item[0], ...))
        elif item is None or isinstance(item, str) or (isinstance(item, int) and
                                                        not isinstance(item, bool) and
                                                        item >= 0):
            out.append(item)
        else:
            raise ModelFileError(f"{where}: malformed dimension {item!r}")
    return out


def _apply_shapes(model: BaseModel, shapes: dict[Any, Any], where: str) -> None:
    shapes = {k: v for k, v in shapes.items() if v is not None}
    try:
        model.set_shapes(shapes)
    except MithrilError as err:
        raise ModelFileError(f"{where}: shapes do not fit the model: {err}") from None


def _build_composite(node: dict[str, Any], where: str, depth: int) -> Model:
    conns = node.get("connections")
    children = node.get("children")
    _expect(isinstance(conns, list) and isinstance(children, list), where,
            "a composite needs 'connections' and 'children' lists")
    for i, c in enumerate(conns):
        _expect(isinstance(c, dict), f"{where}.connections[{i}]", "must be a dict")
        key = c.get("key")
        _expect(key is None or isinstance(key, str), f"{where}.connections[{i}]", "bad key")
    model = Model(name=node.get("name"))
    made: dict[int, Connection] = {}

    def target(i: Any, child_where: str) -> Any:
        _expect(isinstance(i, int) and 0 <= i < len(conns), child_where,
                f"connection index {i!r} out of range")
        if i in made:
            return made[i]
        c = conns[i]
        if "items" in c:
            return IOKey(c.get("key"), value=decode_items(c["items"], child_where),
                         expose=bool(c.get("expose")))
        if c.get("key") is not None:
            return IOKey(c["key"], expose=bool(c.get("expose")))
        if "value" in c:
            return decode_value(c["value"], child_where, depth)
        if c.get("expose"):
            return IOKey(None, expose=True)
        return TBD

    for j, entry in enumerate(children):
        cw = f"{where}.children[{j}]"
        _expect(isinstance(entry, dict), cw, "must be a dict")
        terminals = entry.get("terminals")
        _expect(isinstance(terminals, dict), cw, "needs a 'terminals' dict")
        child = build_node(entry.get("model"), cw, depth)
        binding = {t: target(i, cw) for t, i in terminals.items()}
        binding = {t: v for t, v in binding.items() if v is not TBD}
        try:
            model |= child(**binding)
        except MithrilError as err:
            raise ModelFileError(f"{cw}: {err}") from None
        for t, i in terminals.items():
            made.setdefault(i, model.bindings[id(child)][t])
    shapes: dict[Any, Any] = {}
    for i, c in enumerate(conns):
        if i in made and c.get("shape") is not None:
            shapes[made[i]] = _template(c["shape"], f"{where}.connections[{i}]")
    _apply_shapes(model, shapes, where)
    for i, c in enumerate(conns):
        if i not in made:
            continue
        flag = c.get("differentiable")
        if isinstance(flag, bool):
            made[i].meta.root().differentiable = flag
        kinds = c.get("kinds")
        if isinstance(kinds, int) and 0 < kinds <= T.ANY:
            try:
                model.set_types({made[i]: kinds})
            except MithrilError as err:
                raise ModelFileError(f"{where}.connections[{i}]: {err}") from None
    for attr, setter in (("cin", model.set_cin), ("cout", model.set_cout)):
        i = node.get(attr)
        if i is not None:
            _expect(i in made, where, f"{attr} refers to an unused connection")
            setter(made[i])
    more = node.get("more_cins") or []
    _expect(isinstance(more, list) and all(isinstance(i, int) and i in made for i in more), where,
            "more_cins refers to unused connections")
    if more and model._cin_fixed is not None:
        model.set_cin(model._cin_fixed, *(made[i] for i in more))
    return model
