"""``ml.compile``: logical model -> flat graph -> passes -> generated code -> CompiledModel.

Compiling never changes the user's model: shapes and constants given here are applied inside
an undo trail that is rolled back once everything needed has been read off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ...errors import ArgumentTypeError, CompileError, ShapeMismatchError
from .. import types as T
from ..logical.base import BaseModel, ConnectSpec
from ..logical.building import Building, propagation_error, shape_list
from ..logical.meta import SCALAR, TBD, TENSOR, make_kind, set_value
from ..logical.model import Model
from ..logical.primitive import Operator
from ..logical.symbols import derived_names
from ..shapes import PropagationError, Trail, propagate
from .codegen import CodeWriter, literal
from .compiled import CompiledModel
from .graph import FlatGraph, Node, Value, flatten
from .passes import Program, build_program
from .program_info import DataSpec, ParamSpec, ProgramInfo, ShapePattern


def compile(model: BaseModel, backend: Any, *, shapes: Mapping[str, Any] | None = None,
            constant_keys: Mapping[str, Any] | None = None,
            data_keys: Iterable[str] | None = None, trainable_keys: Iterable[str] | None = None,
            discard_keys: Iterable[str] | None = None, inference: bool = False,
            jit: bool | None = None, file_path: str | None = None, safe_names: bool = True,
            outputs: Iterable[str] | None = None, parallel: Any = None,
            train: Any = None, use_short_namings: bool | None = None,
            shapes_at_evaluate: bool = False) -> CompiledModel | ShapeDeferredModel:
    """Compile ``model`` for ``backend``.

    - ``shapes``: input shapes (``{"input": [32, 3, 32, 32]}``); symbols such as ``"N"`` stay
      symbolic. Without it, any shape that parameters do not fix stays free.
    - ``constant_keys``: inputs fixed at compile time (folded into the code).
    - ``data_keys`` / ``trainable_keys``: force inputs to be data or trainable parameters.
    - ``discard_keys``: outputs not to compute; ``outputs``: extra named values to return.
    - ``inference=True``: inference behaviour (running statistics, no dropout) and no gradient
      code.
    - ``jit``: wrap the generated code with the framework's JIT (default: on for JAX and MLX,
      off for PyTorch and NumPy).
    - ``file_path``: write the generated code there (exactly the code that runs).
    - ``safe_names=False``: name variables ``v``, ``v_2``, ... instead of after terminals.
    - ``use_short_namings``: the reference Mithril's key names for the values of submodels.
      ``False``: the submodel path joined by ``_`` (``mlp_fc_weight``; an unnamed submodel is
      its lower-case class name, numbered ``linear_0``, ``linear_1`` when its parent has
      several); ``True``: the terminal name alone, numbered ``weight_0``, ``weight_1`` where
      several share it. Default (``None``): this project's dotted paths (``mlp.fc.weight``).
      ``shapes``, ``constant_keys`` and the other key arguments take the names chosen here.
    - ``shapes_at_evaluate=True``: where parameter shapes are not fixed (no ``shapes=``, free
      layer sizes), compile at the first ``evaluate`` with the shapes of the arrays given
      there, as the reference Mithril does (:class:`ShapeDeferredModel`); without it such a
      model raises ``CompileError`` here, naming the parameter.
    - ``parallel``: how arrays are split over the backend's device mesh
      (``ml.DataParallel()``, ``ml.TensorParallel()``, their sum; ``docs/parallel.md``);
      without it, arrays on a backend with a device mesh keep the layout they are given.
    - ``train``: ``ml.TrainStep(optimizer, loss=...)`` adds ``compiled.train_step``, model,
      loss and optimizer fused into one step function (``jax.jit`` / ``mx.compile``;
      ``torch.compile`` when asked; ``physical/fused.py``).

    >>> import mithril as ml
    >>> from mithril.models import Model, Linear
    >>> pm = ml.compile(Linear(2)(input_size=3), ml.NumpyBackend(), shapes={"input": [5, 3]})
    >>> sorted(pm.input_keys)
    ['bias', 'input', 'weight']
    """
    from ...backends.backend import Backend

    if train is not None:  # the fused training step on top of the compiled model (fused.py)
        from .fused import attach_train_step

        return attach_train_step(compile(
            model, backend, shapes=shapes, constant_keys=constant_keys, data_keys=data_keys,
            trainable_keys=trainable_keys, discard_keys=discard_keys, inference=inference,
            jit=jit, file_path=file_path, safe_names=safe_names, outputs=outputs,
            parallel=parallel, use_short_namings=use_short_namings), train)
    if not isinstance(backend, Backend):
        raise ArgumentTypeError(f"backend must be a Mithril backend such as ml.TorchBackend(), got "
                                f"{type(backend).__name__}")
    if isinstance(model, ConnectSpec):  # e.g. ml.compile(Linear(2)(input_size=3), ...)
        spec = model
        if spec.args or spec.kwargs:
            model = Model()
            model |= spec
        else:
            model = spec.model
    if not isinstance(model, BaseModel):
        raise ArgumentTypeError(f"compile needs a model, got {type(model).__name__}")
    data_keys, trainable_keys, discard_keys, outputs = (
        None if k is None else tuple(k) for k in (data_keys, trainable_keys, discard_keys,
                                                  outputs))
    if isinstance(model, Operator):
        primitive = model
        try:
            return _compile_model(wrap_primitive(primitive), backend, shapes, constant_keys,
                                  data_keys, trainable_keys, discard_keys, inference, jit,
                                  file_path, safe_names, outputs, parallel, use_short_namings)
        finally:  # compiling leaves the primitive as it was: free, compilable again
            primitive.parent = None
            primitive._local_name = None
    try:
        return _compile_model(model, backend, shapes, constant_keys, data_keys, trainable_keys,
                              discard_keys, inference, jit, file_path, safe_names, outputs,
                              parallel, use_short_namings)
    except UndeterminedShapeError as err:
        if not shapes_at_evaluate:
            raise UndeterminedShapeError(
                f"{err}; or compile(..., shapes_at_evaluate=True) to take them from the "
                "arrays given to evaluate") from None
        # as the reference: shapes nothing fixed yet come from the arrays given to evaluate
        options = {"shapes": shapes, "constant_keys": constant_keys, "data_keys": data_keys,
                   "trainable_keys": trainable_keys, "discard_keys": discard_keys,
                   "inference": inference, "jit": jit, "file_path": file_path,
                   "safe_names": safe_names, "outputs": outputs, "parallel": parallel,
                   "use_short_namings": use_short_namings}
        return ShapeDeferredModel(model, backend, options, str(err))


class UndeterminedShapeError(CompileError):
    """A parameter's or state's shape is not fixed by the model, ``shapes=`` or constants."""


class ShapeDeferredModel:
    """What ``ml.compile(..., shapes_at_evaluate=True)`` returns when parameter shapes are not
    known yet (no ``shapes=``, the layer sizes free), as the reference Mithril allows: the
    model is compiled at the first ``evaluate`` with the shapes of the parameters and inputs
    given there (once per new set of shapes; later calls with those shapes use that compiled
    model). ``randomize_params``
    needs the shapes first: compile with ``shapes=`` for it.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(2), ml.NumpyBackend(dtype=ml.float64), shapes_at_evaluate=True)
    >>> out = pm.evaluate({"weight": np.ones((2, 3)), "bias": np.zeros(2)},
    ...                   {"input": np.ones((4, 3))})
    >>> out["output"].tolist(), pm.shapes["weight"]
    ([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], [2, 3])
    """

    def __init__(self, model: BaseModel, backend: Any, options: dict[str, Any],
                 reason: str) -> None:
        self.logical_model = model
        self.backend = backend
        self.compile_options = options
        self.constant_keys = frozenset(options["constant_keys"] or ())
        self._reason = reason
        self._compiled: dict[tuple[Any, ...], CompiledModel] = {}
        self._last: CompiledModel | None = None

    def _for(self, params: Mapping[str, Any] | None, data: Mapping[str, Any] | None
             ) -> CompiledModel:
        given = {**(params or {}), **(data or {})}
        shapes = {k: tuple(v.shape) for k, v in given.items()
                  if k not in self.constant_keys and getattr(v, "shape", None) is not None}
        key = tuple(sorted(shapes.items()))
        pm = self._compiled.get(key)
        if pm is None:
            options = dict(self.compile_options)
            options["shapes"] = {**{k: list(v) for k, v in shapes.items()},
                                 **dict(options["shapes"] or {})}
            pm = compile(self.logical_model, self.backend, **options)
            self._compiled[key] = pm
        self._last = pm
        return pm

    def evaluate(self, params: Mapping[str, Any] | None = None,
                 inputs: Mapping[str, Any] | None = None, output_gradients: Any = None,
                 state: Any = None, rng: Any = None, *,
                 data: Mapping[str, Any] | None = None) -> Any:
        """``CompiledModel.evaluate`` of the model compiled for these arrays' shapes."""
        return self._for(params, inputs if data is None else data).evaluate(
            params, inputs, output_gradients, state, rng, data=data)

    def evaluate_all(self, params: Mapping[str, Any] | None = None,
                     data: Mapping[str, Any] | None = None, output_gradients: Any = None) -> Any:
        """``CompiledModel.evaluate_all`` of the model compiled for these arrays' shapes."""
        return self._for(params, data).evaluate_all(params, data, output_gradients)

    __call__ = evaluate

    def randomize_params(self, *args: Any, **kwargs: Any) -> Any:
        """Needs the parameters' shapes: after an ``evaluate``, those of its compiled model."""
        if self._last is None:
            raise CompileError(f"{self._reason}; or pass the parameters to evaluate, which "
                               "compiles the model for their shapes")
        return self._last.randomize_params(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        last = self.__dict__.get("_last")
        if last is None:
            raise CompileError(f"{name} is not known before the shapes are: "
                               f"{self.__dict__.get('_reason')}")
        return getattr(last, name)


def _compile_model(model: BaseModel, backend: Any, shapes: Any, constant_keys: Any,
                   data_keys: Any, trainable_keys: Any, discard_keys: Any, inference: bool,
                   jit: bool | None, file_path: str | None, safe_names: bool, outputs: Any,
                   parallel: Any, use_short_namings: bool | None = None) -> CompiledModel:
    finalize = getattr(model, "finalize", None)
    if callable(finalize):
        finalize()  # TrainModel: sum the objectives into final_cost
    if isinstance(model, Model) and not model.children:
        raise CompileError(f"model {model.path} is empty: add layers before compiling")
    with Trail() as trail:
        try:
            compiled = _compile_in_trail(model, backend, shapes, constant_keys, data_keys,
                                         trainable_keys, discard_keys, inference, jit,
                                         file_path, safe_names, outputs, use_short_namings)
        finally:
            trail.rollback()
    # what produced it, so the model can be recompiled (e.g. its inference twin)
    compiled.logical_model = model
    compiled.constant_keys = frozenset(constant_keys or ())
    compiled.compile_options = {
        "shapes": shapes, "constant_keys": constant_keys, "data_keys": data_keys,
        "trainable_keys": trainable_keys, "discard_keys": discard_keys, "jit": jit,
        "safe_names": safe_names, "outputs": outputs, "parallel": parallel,
        "use_short_namings": use_short_namings}
    if parallel is not None or getattr(backend, "device_mesh", None) is not None:
        # parallelism (mithril/parallel): the only hook in compile
        from ...parallel.compiled import parallelize

        compiled = parallelize(compiled, parallel)
    return compiled


def wrap_primitive(op: Operator) -> Model:
    if op.parent is not None:
        raise CompileError(f"{op.path} is part of another model; compile that model instead")
    wrapper = Model()
    wrapper |= op.connect(**{n: n for n in (*op.input_names, *op.output_names)
                             if op.conns[n].meta.root().value is TBD or n in op.output_names})
    return wrapper


def _compile_in_trail(model: BaseModel, backend: Any, shapes: Any, constant_keys: Any,
                      data_keys: Any, trainable_keys: Any, discard_keys: Any, inference: bool,
                      jit: bool | None, file_path: str | None, safe_names: bool,
                      outputs: Any, use_short_namings: bool | None = None) -> CompiledModel:
    renames: dict[str, str] = {}
    if use_short_namings is not None and isinstance(model, Model):
        renames = reference_names(model, flatten(model), short=bool(use_short_namings))
        back = {new: old for old, new in renames.items()}
        shapes = {back.get(k, k) if isinstance(k, str) else k: v
                  for k, v in (shapes or {}).items()}
        constant_keys = {back.get(k, k): v for k, v in (constant_keys or {}).items()}
    if shapes:
        model.set_shapes(dict(shapes))
    consts = dict(constant_keys or {})
    if consts:
        values = {k: to_numpy(backend, v) for k, v in consts.items()}
        set_constant_shapes(model, values)
        model.set_values(values)
    graph = flatten(model)
    for v in graph.values:
        v.name = renames.get(v.name, v.name)
    if renames:
        graph.inputs = {renames.get(k, k): v for k, v in graph.inputs.items()}
        graph.outputs = {renames.get(k, k): v for k, v in graph.outputs.items()}
    decide_open_kinds(graph, model)
    extra = list(outputs or ())
    discard = set(discard_keys or ())
    if outputs is not None:
        discard |= set(graph.outputs) - set(extra)
    program = build_program(graph, inference=inference, data_keys=data_keys or (),
                            trainable_keys=trainable_keys or (), discard_keys=discard,
                            extra_outputs=extra)
    # symbols nobody named print as the terminal and axis they come from (input.dim0), in
    # messages, in compiled.shapes and in evaluate's messages
    with derived_names((model, "")):
        check_determined(program)
        info = _snapshot(program, graph)
    kernels = backend.kernel_table()
    fwd_variants = {k[:-4] for k in kernels if k.endswith("_fwd")} if backend.manual_gradients \
        else set()
    writer = CodeWriter(program, set(kernels), backend.exprs, readable=safe_names,
                        fwd_variants=fwd_variants)
    forward_src, _ = writer.forward("forward", with_cache=False)
    train_writer = None
    if backend.manual_gradients and not inference:
        train_writer = writer
    return CompiledModel(
        backend=backend, info=replace(info, uses_rng=bool(writer.random_nodes)),
        forward_source=forward_src,
        writer=train_writer, kernels=kernels, constants=_constants(program, backend),
        inference=inference, jit=jit, file_path=file_path)


def reference_names(model: Model, graph: FlatGraph, short: bool) -> dict[str, str]:
    """The reference Mithril's names for the values of ``graph`` named after a submodel path
    (``block.linear.weight``): ``block_linear_0_weight`` (``short=False``; unnamed submodels
    are their lower-case class name, numbered from 0 where a parent has several of one class)
    or the terminal name, numbered where several share it (``short=True``). Names without a
    path (the model's own terminals) stay.

    >>> from mithril.models import Model, Linear
    >>> m = Model()
    >>> m |= Linear(2)(input="input")
    >>> m += Linear(1)(output="output")
    >>> names = reference_names(m, flatten(m), short=False)
    >>> names["linear.weight"], names["linear_1.weight"]
    ('linear_0_weight', 'linear_1_weight')
    >>> names = reference_names(m, flatten(m), short=True)
    >>> names["linear.weight"], names["linear_1.weight"]
    ('weight_0', 'weight_1')
    """
    segments: dict[str, str] = {}

    def walk(m: Model, prefix: str, ref_prefix: str) -> None:
        unnamed: dict[str, list[BaseModel]] = {}
        for child in m.children:
            if child.name is None:
                unnamed.setdefault(child.class_name, []).append(child)
        for child in m.children:
            local = child._local_name or child.class_name
            if child.name is not None:
                seg = child.name
            else:
                same = unnamed[child.class_name]
                seg = (child.class_name if len(same) == 1 else
                       f"{child.class_name}_{same.index(child)}")
            segments[f"{prefix}{local}"] = f"{ref_prefix}{seg}"
            if isinstance(child, Model):
                walk(child, f"{prefix}{local}.", f"{ref_prefix}{seg}_")

    walk(model, "", "")
    own = {v.name for v in graph.values if "." not in v.name}
    pathed = [v.name for v in graph.values if "." in v.name]
    out: dict[str, str] = {}
    if not short:
        for name in pathed:
            head, _, term = name.rpartition(".")
            ref = segments.get(head)
            out[name] = f"{ref}_{term}" if ref is not None else name.replace(".", "_")
        return out
    by_term: dict[str, list[str]] = {}
    for name in dict.fromkeys(pathed):
        by_term.setdefault(name.rpartition(".")[2], []).append(name)
    for term, names in by_term.items():
        if len(names) == 1 and term not in own:
            out[names[0]] = term
        else:
            for i, name in enumerate(names):
                out[name] = f"{term}_{i}"
    return out


def set_constant_shapes(model: BaseModel, values: dict[Any, Any]) -> None:
    """An array constant fixes its terminal's shape, which must fit what the model (and
    ``shapes=``) says; its shape then informs the inference like ``shapes=`` does."""
    for key, value in values.items():
        if not isinstance(value, np.ndarray):
            continue
        root = model._resolve_terminal(key).meta.root()  # TerminalError for unknown keys
        if root.kind == SCALAR:
            continue
        before = shape_list(root.shape) if root.kind == TENSOR else None
        shape = list(value.shape)
        try:
            model.set_shapes({key: shape})
        except ShapeMismatchError as err:
            if before is not None and all(isinstance(d, int) for d in before):
                # the model says exactly what it should be
                raise ShapeMismatchError(
                    f"constant {key!r} has shape {shape}, but the model's shape for it is "
                    f"{before}") from None
            raise ShapeMismatchError(f"constant {key!r} has shape {shape}, which contradicts "
                                     f"the model: {err}") from None


def to_numpy(backend: Any, value: Any) -> Any:
    if isinstance(value, int | float | bool | tuple | list | str) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return value
    return backend.to_numpy(value)


def decide_open_kinds(graph: FlatGraph, model: BaseModel) -> None:
    """Decide inputs still open between "a tensor" and "absent" (optional terminals).

    An optional tensor (a bias, an attention mask) that no model named at any level was
    never connected: it is absent (``None``). A named one is a real tensor input.
    """
    with Building(model, "compile"):
        for v in graph.values:
            r = v.root
            if r.kind is None and v.producer is None and r.value is TBD:
                optional = v.consumers and all(
                    n.prim.terms[n.prim.input_names[n.inputs.index(v)]].optional
                    for n in v.consumers)
                if optional and not v.named:
                    make_kind(r, SCALAR)
                    set_value(r, None)
                elif v.consumers and all(n.op.name in ("to_tuple", "to_list")
                                         for n in v.consumers):
                    make_kind(r, SCALAR)  # an element of a tuple: a Python value
                else:
                    make_kind(r, TENSOR)
    try:
        propagate()
    except PropagationError as err:
        raise propagation_error(err, "", model) from None


def shape_items(v: Value) -> list[Any] | None:
    r = v.root
    if r.kind != TENSOR:
        return None
    f = r.shape.normal()
    items: list[Any] = [d.value if d.value is not None else repr(d) for d in f.prefix]
    if f.var is not None:
        items.append(repr(f.var))
        items += [d.value if d.value is not None else repr(d) for d in f.suffix]
    return items


def check_determined(program: Program) -> None:
    for key, v in program.params.items():
        items = shape_items(v)
        if items is None or not all(isinstance(i, int) for i in items):
            raise UndeterminedShapeError(
                f"cannot determine the shape of parameter {key!r} (so far {items}); give the "
                "input shape with compile(..., shapes={...}) or fix the layer sizes (e.g. "
                "Linear(...)(input_size=...), Conv2d(in_channels=...), "
                "LayerNorm(normalized_shape=...))")
    for key, (vin, _) in program.state.items():
        items = shape_items(vin)
        if items is None or not all(isinstance(i, int) for i in items):
            raise UndeterminedShapeError(
                f"cannot determine the shape of state {key!r} (so far {items})")
    if program.unknown_scalars:
        raise CompileError(
            f"value {program.unknown_scalars[0]!r} is not known at compile time: it depends on "
            "shapes that are not known; give the input shapes with compile(..., shapes={...})")


def _pattern(v: Value, symbols: dict[int, int]) -> ShapePattern:
    r = v.root
    if r.kind != TENSOR:
        return ShapePattern(None, ())
    f = r.shape.normal()
    if f.var is not None:
        return ShapePattern(None, ())
    dims: list[int | tuple[str, int]] = []
    for d in f.prefix:
        if d.value is not None:
            dims.append(d.value)
        else:
            sid = symbols.setdefault(id(d), len(symbols))
            dims.append((repr(d), sid))
    return ShapePattern(len(dims), tuple(dims))


def _snapshot(program: Program, graph: FlatGraph) -> ProgramInfo:
    """Everything the compiled model needs, read off before the trail is rolled back."""
    symbols: dict[int, int] = {}
    params = {}
    for key, v in program.params.items():
        r = v.root
        init = None
        if r.init is not None:
            fan_in = []
            for d in r.init.fan_in:
                val = d if isinstance(d, int) else d.root().value
                fan_in.append(val)
            init = (r.init.kind, fan_in)
        params[key] = ParamSpec(tuple(shape_items(v) or ()), init, r.kinds)
    state = {}
    for key, (vin, _) in program.state.items():
        r = vin.root
        init = (r.init.kind, []) if r.init is not None else ("zeros", [])
        state[key] = ParamSpec(tuple(shape_items(vin) or ()), init, r.kinds)
    data = {key: DataSpec(_pattern(v, symbols), v.root.kinds, v.root.kind) for key, v in
            program.data.items()}
    # after the data: an output's symbols are those of the inputs that fix them
    output_specs = {key: DataSpec(_pattern(v, symbols), v.root.kinds, v.root.kind)
                    for key, v in program.outputs.items()}
    shapes: dict[str, Any] = {}
    for v in graph.values:
        if v.is_root_terminal or v.producer is not None:
            shapes.setdefault(v.name, shape_items(v) if v.root.kind == TENSOR else
                              (literal_value(program, v)))
    return ProgramInfo(params=params, state=state, data=data, outputs=list(program.outputs),
                       output_specs=output_specs, shapes=shapes,
                       unused=frozenset(program.unused_inputs),
                       float_data=frozenset(_float_data(program)), uses_rng=False)


def _float_data(program: Program) -> set[str]:
    """Data tensors the model computes with in its float precision: an int or bool array there
    is a mistake (PyTorch refuses ``int @ float``, the others silently promote).

    A data input is one when it may be a float (its kinds include float) and reaches, at a
    differentiable terminal, a primitive that also reads a parameter or a state (always of the
    backend's float dtype) — directly, or through primitives whose output may still be an int
    or bool (``Relu``, ``Flatten``, indexing; a cast to float or ``x * 0.5`` ends the path).
    """
    floats = {id(v) for v in program.params.values()}
    floats |= {id(vin) for vin, _ in program.state.values()}
    readers: dict[int, list[tuple[Node, int]]] = {}
    for node in program.nodes:
        for i, v in enumerate(node.inputs):
            readers.setdefault(id(v), []).append((node, i))
    out = set()
    for key, v in program.data.items():
        r = v.root
        if r.kind != TENSOR or not r.kinds & T.FLOAT:
            continue
        seen = {id(v)}
        stack = [v]
        while stack and key not in out:
            u = stack.pop()
            for node, i in readers.get(id(u), ()):
                if not node.prim.in_terms[i].differentiable:
                    continue
                if any(id(w) in floats and node.prim.in_terms[j].differentiable
                       for j, w in enumerate(node.inputs) if j != i):
                    out.add(key)
                    break
                for o in node.outputs:
                    ro = o.root
                    if (id(o) not in seen and ro.kind == TENSOR
                            and ro.kinds & (T.INT | T.BOOL)):
                        seen.add(id(o))
                        stack.append(o)
    return out


def literal_value(program: Program, v: Value) -> Any:
    ok, value = program.literal(v)
    return value if ok else None


def _constants(program: Program, backend: Any) -> dict[str, Any]:
    out = {}
    for key, v in program.consts.items():
        value = v.root.value
        if v.root.kind == SCALAR:
            literal(value)  # validates that it can be written into code
            out[key] = value
        else:
            out[key] = backend.array(np.asarray(value))
    return out
