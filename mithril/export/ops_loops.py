"""ONNX mappings of the loop primitives: ONNX's own ``LSTM``, ``GRU`` and ``RNN`` operators.

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
from .walk import Emitter, Unsupported

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
