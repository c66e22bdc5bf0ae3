"""PyTorch kernels of the loop primitives: PyTorch's own fused recurrent kernels.

``lstm``, ``gru``, ``rnn_tanh`` and ``rnn_relu`` call ``torch._VF.<mode>`` (the kernels behind
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``) for one layer, both directions in one call; with
``lengths`` the sequence is packed (``pack_padded_sequence``) and the packed variant runs, so
padded steps give zeros and ``h_n`` / ``c_n`` are taken at each sequence's last valid step,
exactly as a ``PackedSequence`` through ``nn.LSTM``. Gradients come from autograd.

>>> lstm = registry.kernels[("lstm", "default")]
>>> x, w_ih, w_hh = torch.ones(5, 2, 3), torch.full((8, 3), 0.1), torch.full((8, 2), 0.1)
>>> out, h_n, c_n = lstm(x, w_ih, w_hh, *[None] * 11, False, False)
>>> tuple(out.shape), tuple(h_n.shape), bool(torch.allclose(out[-1], h_n[0]))
((5, 2, 2), (1, 2, 2), True)
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.nn.utils import rnn as rnn_utils

from ...framework.loops import CATALOGUE, GATES, positional_signature
from ...framework.scan import register_scan
from .kernels import registry

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _run(mode: str, *args: Any) -> tuple[Any, ...]:
    a = dict(zip(CATALOGUE[mode].input_names, args, strict=True))
    lstm = mode == "lstm"
    x = a["input"]
    bf, bidir = bool(a["batch_first"]), bool(a["bidirectional"])
    n_d = 2 if bidir else 1
    n_b = x.shape[0 if bf else 1]
    w_hh = a["weight_hh"]
    p = w_hh.shape[1]
    hid = w_hh.shape[0] // GATES[mode]
    has_bias = a["bias_ih"] is not None or a["bias_hh"] is not None
    flat: list[torch.Tensor] = []
    for sfx in (("", "_reverse") if bidir else ("",)):
        for k in _WEIGHTS:
            v = a.get(k + sfx)
            if v is None and k.startswith("bias") and has_bias:
                v = torch.zeros(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device)
            if v is not None:
                flat.append(v)
    zeros = functools.partial(torch.zeros, n_d, n_b, dtype=x.dtype, device=x.device)
    hx: Any = zeros(p) if a["h_0"] is None else a["h_0"]
    if lstm:
        hx = (hx, zeros(hid) if a["c_0"] is None else a["c_0"])
    fn = getattr(torch._VF, mode)
    lengths = a["lengths"]
    if lengths is None:
        return tuple(fn(x, hx, flat, has_bias, 1, 0.0, False, bidir, bf))
    n_t = x.shape[1 if bf else 0]
    packed = rnn_utils.pack_padded_sequence(x, lengths.detach().to("cpu", torch.int64),
                                            batch_first=bf, enforce_sorted=False)
    order, back = packed.sorted_indices, packed.unsorted_indices
    hx = tuple(s.index_select(1, order) for s in hx) if lstm else hx.index_select(1, order)
    res = fn(packed.data, packed.batch_sizes, hx, flat, has_bias, 1, 0.0, False, bidir)
    out_packed = rnn_utils.PackedSequence(res[0], packed.batch_sizes, order, back)
    output, _ = rnn_utils.pad_packed_sequence(out_packed, batch_first=bf, total_length=n_t)
    return (output, *(s.index_select(1, back) for s in res[1:]))


for _mode in GATES:  # lstm, gru, rnn_tanh, rnn_relu: (output, h_n[, c_n])
    registry.kernel(_mode)(positional_signature(_mode)(functools.partial(_run, _mode)))

# issue 15: the generic loop (Scan) over a user's body model
register_scan(registry, "python")
