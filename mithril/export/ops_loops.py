"""ONNX mappings of the loop primitives: ONNX's own ``LSTM``, ``GRU`` and ``RNN`` operators,
and ``Scan`` for the generic loop (the ``scan`` primitive of each ``Scan`` layer, at the end).

PyTorch's layouts are rearranged in the graph: gate blocks reordered (PyTorch ``i, f, g, o`` ->
ONNX ``i, o, f, c``; ``r, z, n`` -> ``z, r, h``), the directions stacked into ONNX's leading
axis, the two biases joined into ``B``, ``lengths`` passed as ``sequence_lens`` (int32) and the
output ``(T, D, N, H)`` turned into ``(T, N, D*H)`` (or batch-first). GRU uses
``linear_before_reset=1``, which is PyTorch's formula. ONNX's LSTM has no projection, so an
LSTM with ``proj_size`` is not exportable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..framework.loops import GATES
from ..framework.physical.graph import Node
from .mapping import maps
from .walk import Emitter, Lit, Unsupported

#: PyTorch's gate blocks in ONNX's order
_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
_OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _absent(ex: Emitter, name: str) -> bool:
    v = ex.arg(name)
    return ex.is_lit(v) and ex.lit(v) is None


def _stacked(ex: Emitter, names: list[str], perm: np.ndarray | None, hint: str) -> str:
    """The directions' tensors (rows reordered by ``perm``) stacked on a new leading axis."""
    parts = []
    for name in names:
        t = ex.tensor(ex.arg(name))
        if perm is not None:
            t = ex.b.node("Gather", [t, ex.b.ints(perm)], ex.hint(hint), axis=0)
        parts.append(ex.b.node("Unsqueeze", [t, ex.b.ints([0])], ex.hint(hint)))
    return parts[0] if len(parts) == 1 else ex.b.node("Concat", parts, ex.hint(hint), axis=0)


@maps("lstm", "gru", "rnn_tanh", "rnn_relu")
def _recurrent(ex: Emitter, node: Node) -> list[Any]:
    mode = node.op.name
    bidir, bf = bool(ex.value("bidirectional")), bool(ex.value("batch_first"))
    sfx = ["", "_reverse"] if bidir else [""]
    if mode == "lstm" and not _absent(ex, "weight_hr"):
        raise Unsupported("ONNX's LSTM operator has no projection (proj_size)")
    dims = ex.dims(ex.arg("weight_hh"))
    if dims is None or dims[1] is None:
        raise Unsupported("the hidden size is not known")
    hid = int(dims[1])
    perm = np.concatenate([np.arange(g * hid, (g + 1) * hid) for g in _ORDER[mode]])
    x = ex.tensor(ex.arg("input"))
    if bf:
        x = ex.b.node("Transpose", [x], ex.hint("_tm"), perm=[1, 0, 2])
    w = _stacked(ex, [f"weight_ih{s}" for s in sfx], perm, "_W")
    r = _stacked(ex, [f"weight_hh{s}" for s in sfx], perm, "_R")
    inputs = [x, w, r]
    if _absent(ex, "bias_ih") and _absent(ex, "bias_hh"):
        inputs.append("")
    else:
        per_dir = []
        for s in sfx:
            parts = []
            for b in ("bias_ih", "bias_hh"):
                if _absent(ex, b + s):
                    parts.append(ex.b.const(np.zeros(GATES[mode] * hid), ex.type_of(x)))
                else:
                    parts.append(ex.b.node("Gather", [ex.tensor(ex.arg(b + s)), ex.b.ints(perm)],
                                           ex.hint("_B"), axis=0))
            joined = ex.b.node("Concat", parts, ex.hint("_B"), axis=0)
            per_dir.append(ex.b.node("Unsqueeze", [joined, ex.b.ints([0])], ex.hint("_B")))
        inputs.append(per_dir[0] if len(per_dir) == 1 else
                      ex.b.node("Concat", per_dir, ex.hint("_B"), axis=0))
    if _absent(ex, "lengths"):
        inputs.append("")
    else:
        inputs.append(ex.b.cast(ex.tensor(ex.arg("lengths")), 6))  # int32
    for state in ("h_0", "c_0") if mode == "lstm" else ("h_0",):
        inputs.append("" if _absent(ex, state) else ex.tensor(ex.arg(state)))
    while inputs[-1] == "":
        inputs.pop()
    attrs: dict[str, Any] = {"hidden_size": hid,
                             "direction": "bidirectional" if bidir else "forward"}
    if mode == "gru":
        attrs["linear_before_reset"] = 1
    if mode.startswith("rnn"):
        attrs["activations"] = ["Tanh" if mode == "rnn_tanh" else "Relu"] * len(sfx)
    n_out = 3 if mode == "lstm" else 2
    outs = ex.b.node(_OP[mode], inputs, ex.hint(), n_out=n_out, out_type=ex.type_of(x), **attrs)
    y = ex.b.node("Transpose", [outs[0]], ex.hint("_y"), perm=[2, 0, 1, 3] if bf else
                  [0, 2, 1, 3])  # (N, T, D, H) or (T, N, D, H)
    y = ex.b.node("Reshape", [y, ex.b.ints([0, 0, -1])], ex.hint())
    return [y, *outs[1:]]


# ---- the generic loop: ``Scan`` as ONNX's ``Scan`` -----------------------------------------

@maps("scan")
def _scan(ex: Emitter, node: Node) -> list[Any]:
    """ONNX ``Scan`` (its form since opset 9): the carries are its state variables, the
    per-step inputs its scan inputs, the stacked outputs its scan outputs, all along the
    layer's axis. The body is a subgraph made by this exporter from the body model; the body's
    parameters are not inputs of the subgraph but read from the outer graph by name (ONNX's
    outer-scope references), so each is stored once, as the outer initialiser of its key."""
    from ..framework.scan import BODIES

    key = ex.value("body")
    spec = BODIES.get(key)
    if spec is None:
        raise Unsupported(f"no Scan body has id {key}")
    carries = [ex.tensor(ex.arg(c)) for c, _ in spec.carry]
    xs = [ex.tensor(ex.arg(k)) for k in spec.xs]
    params = {k: ex.tensor(ex.arg(k)) for k in spec.params}
    carry_dims = [ex.dims(ex.arg(c)) for c, _ in spec.carry]
    x_dims = []
    for k in spec.xs:
        d = ex.dims(ex.arg(k))
        if d is None:
            raise Unsupported(f"the rank of per-step input {k!r} is not known; give shapes=")
        del d[spec.axis]
        x_dims.append(d)
    graph = _body_graph(ex, spec, carries, carry_dims, xs, x_dims, params)
    n_out = len(spec.carry) + len(spec.ys)
    out_types = [o.type.tensor_type.elem_type for o in graph.output]
    outs = ex.b.node("Scan", [*carries, *xs], ex.hint(), n_out=n_out, out_type=out_types,
                     body=graph, num_scan_inputs=len(xs),
                     scan_input_axes=[spec.axis] * len(xs),
                     scan_output_axes=[spec.axis] * len(spec.ys) or None)
    return outs if isinstance(outs, list) else [outs]


def _body_graph(ex: Emitter, spec: Any, carries: list[str], carry_dims: list[Any],
                xs: list[str], x_dims: list[Any], params: dict[str, str]) -> Any:
    """The ONNX subgraph of ``spec.body``: inputs the carries then one step of each per-step
    input, outputs the next carries then the per-step outputs (every value named from the
    export's one :class:`Names`, so nothing shadows a name of the outer graph)."""
    from onnx import helper

    from ..framework.physical.compile import decide_open_kinds
    from ..framework.physical.graph import flatten
    from ..framework.physical.passes import build_program
    from ..framework.shapes import Trail
    from .builder import GraphBuilder
    from .mapping import UNSUPPORTED, table
    from .onnx_export import NUMPY_FLOAT
    from .writer import value_info

    body = spec.body
    carry_in = [c for c, _ in spec.carry]
    wanted = [c for _, c in spec.carry] + list(spec.ys)
    inputs = carry_in + list(spec.xs) + list(spec.params)
    outer = ex.b
    b = GraphBuilder(outer.opset, outer.float_type, outer.names)
    with Trail() as trail:
        try:
            flat = flatten(body)
            decide_open_kinds(flat, body)
            program = build_program(flat, inference=True, trainable_keys=[
                k for k in inputs if k in flat.inputs],
                discard_keys=set(flat.outputs) - set(wanted))
            if program.state:
                raise Unsupported(f"its body {body.path} has state {sorted(program.state)}")
            sub = Emitter(program, b)
            graph_inputs = []
            for name, ref, dims in zip([*carry_in, *spec.xs], [*carries, *xs],
                                       [*carry_dims, *x_dims], strict=True):
                t = outer.type_of(ref)
                step = outer.names.fresh(f"{ref}_step" if name in spec.xs else f"{ref}_carry")
                b.types[step] = t
                graph_inputs.append(value_info(step, t, dims))
                if name in program.params:
                    sub.refs[id(program.params[name])] = step
            for name, ref in params.items():
                b.types[ref] = outer.type_of(ref)  # read from the outer graph by name
                if name in program.params:
                    sub.refs[id(program.params[name])] = ref
            for name, v in program.consts.items():
                value = np.asarray(v.root.value)
                if value.dtype.kind == "f":
                    value = value.astype(NUMPY_FLOAT[outer.float_type])
                sub.refs[id(v)] = b.initializer(outer.names.fresh(name), value)
            problems = sub.run(table(), UNSUPPORTED)
            if problems:
                raise Unsupported(f"its body {body.path} cannot be exported: "
                                  + "; ".join(problems))
            graph_outputs = []
            for name in wanted:
                r = sub.ref(program.outputs[name])
                if isinstance(r, Lit):
                    src = sub.const(r.value)
                elif isinstance(r, str):
                    src = r
                else:
                    raise Unsupported(f"its body's output {name!r} is not a tensor")
                # a fresh name for each output: one value may be a carry and a per-step
                # output, or a body input passed through
                dst = b.node("Identity", [src], f"{name}_out")
                graph_outputs.append(value_info(dst, b.type_of(dst), None))
        finally:
            trail.rollback()
    return helper.make_graph(b.nodes, outer.names.fresh(f"scan_body:{body.path}"),
                             graph_inputs, graph_outputs, initializer=b.initializers)
