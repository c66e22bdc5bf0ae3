"""Loop primitives of the catalogue: recurrent layers run over a symbolic time axis.

``lstm``, ``gru``, ``rnn_tanh`` and ``rnn_relu`` are one recurrent layer each (one or both
directions) applied over every step of a sequence whose length stays a symbol until the arrays
arrive: nothing is unrolled when the model is built, and one compiled model serves any length.
Terminals follow PyTorch's ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` for one layer:

- ``input`` ``(T, N, F)`` (``(N, T, F)`` with ``batch_first``);
- ``weight_ih`` ``(G*H, F)``, ``weight_hh`` ``(G*H, P)``, optional ``bias_ih`` / ``bias_hh``
  ``(G*H,)`` (G = 4, 3, 1 gates in PyTorch's order), for ``lstm`` an optional projection
  ``weight_hr`` ``(P, H)`` (``proj_size``; P = H without it), and the ``*_reverse`` copies used
  when ``bidirectional``;
- optional ``h_0`` ``(D, N, P)`` (and ``c_0`` ``(D, N, H)``), zeros when absent;
- optional ``lengths`` ``(N,)`` (integers): PyTorch's packed-sequence semantics, steps at or
  past a sequence's length give zeros in ``output`` and leave its state unchanged, so ``h_n``
  (``c_n``) is the state at its last valid step (the reverse direction starts there).

Outputs: ``output`` ``(T, N, D*P)`` (``(N, T, D*P)``), ``h_n`` ``(D, N, P)`` and for ``lstm``
``c_n`` ``(D, N, H)``. Every backend lowers them to its own loop (``jax.lax.scan``, PyTorch's
fused ``torch._VF`` kernels, a NumPy loop with a hand-written backward through time; see
``mithril/backends/*/loops.py``). The decomposition, a Python loop of core kernels, is the
reference they are checked against and what a backend without a kernel of its own runs (MLX,
``tests/minimal_backend.py``).

>>> from mithril.framework.ops import CATALOGUE
>>> CATALOGUE["lstm"].output_names, CATALOGUE["gru"].output_names
(('output', 'h_n', 'c_n'), ('output', 'h_n'))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from . import types as T
from .logical.meta import SCALAR, TBD, TENSOR, Meta
from .ops import CATALOGUE, OpDef, Term, register
from .rules import dv, ensure_rank, out_kinds, set_shape
from .shapes import Dim, ShapeConflict, set_dim, unify_dims

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def positional_signature(mode: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a ``*args`` loop kernel's arguments: the catalogue's input names of ``mode``.

    The generated code calls kernels positionally; this makes the order inspectable, as for
    every other kernel (``inspect.signature(kernel)`` lists the catalogue's terminals).
    """

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(name, kind) for name in CATALOGUE[mode].input_names]
        vars(fn)["__signature__"] = inspect.Signature(params)
        return fn

    return declare
LOOP_OPS = tuple(GATES)


def _present(m: Meta) -> bool | None:
    """True for a tensor, False for an absent optional (None), None while undecided."""
    if m.kind == TENSOR:
        return True
    if m.kind == SCALAR and m.value is None:
        return False
    return None


def _rule(mode: str) -> Callable[..., bool]:
    """The shape rule of one recurrent layer (``mode`` in ``GATES``)."""
    gates = GATES[mode]
    lstm = mode == "lstm"

    def rule(*metas: Meta) -> bool:
        names = CATALOGUE[mode].input_names + CATALOGUE[mode].output_names
        m = dict(zip(names, metas, strict=True))
        for key in ("output", "h_n", *(("c_n",) if lstm else ())):
            out_kinds(m[key], T.FLOAT)
        bf, bidir = m["batch_first"].value, m["bidirectional"].value
        if bf is TBD or bidir is TBD:
            return False
        n_dirs = 2 if bidir else 1
        x = ensure_rank(m["input"], 3)
        t_dim, n_dim, f_dim = (x[1], x[0], x[2]) if bf else (x[0], x[1], x[2])
        g_dim, p_dim = ensure_rank(m["weight_hh"], 2)
        # the hidden size: c_n's last dim for the LSTM (the projection may make P smaller)
        h_dim = ensure_rank(m["c_n"], 3)[2] if lstm else p_dim
        done = True
        suffixes = ("", "_reverse") if bidir else ("",)
        for sfx in suffixes:
            w_ih = m["weight_ih" + sfx]
            w_hh = m["weight_hh" + sfx]
            if _present(w_ih) is False or _present(w_hh) is False:
                raise ShapeConflict(f"{mode} needs weight_ih{sfx} and weight_hh{sfx}"
                                    + (" (bidirectional)" if sfx else ""))
            if _present(w_ih) is None or _present(w_hh) is None:
                done = False
                continue
            set_shape(w_ih, [g_dim, f_dim])
            set_shape(w_hh, [g_dim, p_dim])
            for b in ("bias_ih", "bias_hh"):
                state = _present(m[b + sfx])
                if state:
                    set_shape(m[b + sfx], [g_dim])
                done &= state is not None
            if lstm:
                state = _present(m["weight_hr" + sfx])
                if state:
                    set_shape(m["weight_hr" + sfx], [p_dim, h_dim])
                elif state is False:
                    unify_dims(h_dim, p_dim)
                done &= state is not None
        gv = dv(g_dim)
        if gv is not None and gv % gates:
            raise ShapeConflict(f"{mode} weight_hh has {gv} rows, not a multiple of its "
                                f"{gates} gates")
        hv = dv(h_dim)
        if gv is not None and hv is None:
            set_dim(h_dim, gv // gates)
        elif hv is not None and gv is None:
            set_dim(g_dim, gates * hv)
        elif hv is not None and gv != gates * hv:
            raise ShapeConflict(f"{mode} weight_hh has {gv} rows, expected {gates} x "
                                f"hidden size {hv} = {gates * hv}")
        state_p = [Dim(n_dirs), n_dim, p_dim]
        for key in ("h_0", "h_n"):
            if key == "h_n" or _present(m[key]):
                set_shape(m[key], state_p)
        done &= _present(m["h_0"]) is not None
        if lstm:
            for key in ("c_0", "c_n"):
                if key == "c_n" or _present(m["c_0"]):
                    set_shape(m[key], [Dim(n_dirs), n_dim, h_dim])
            done &= _present(m["c_0"]) is not None
        if _present(m["lengths"]):
            set_shape(m["lengths"], [n_dim])
        done &= _present(m["lengths"]) is not None
        out = ensure_rank(m["output"], 3)
        unify_dims(out[1 if bf else 0], t_dim)
        unify_dims(out[0 if bf else 1], n_dim)
        if n_dirs == 1:
            unify_dims(out[2], p_dim)
        else:
            pv = dv(p_dim)
            if pv is None:
                return False
            set_dim(out[2], n_dirs * pv)
        return done

    return rule


def _terms(mode: str) -> tuple[Term, ...]:
    lstm = mode == "lstm"
    weights = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", *(["weight_hr"] if lstm else [])]
    terms = [Term("input", TENSOR, T.FLOAT)]
    for sfx in ("", "_reverse"):
        for w in weights:
            required = not sfx and w in ("weight_ih", "weight_hh")
            terms.append(Term(w + sfx, TENSOR, T.FLOAT, optional=not required))
    terms.append(Term("h_0", TENSOR, T.FLOAT, optional=True))
    if lstm:
        terms.append(Term("c_0", TENSOR, T.FLOAT, optional=True))
    terms += [Term("lengths", TENSOR, T.INT, optional=True, differentiable=False),
              Term("batch_first", SCALAR, T.BOOL, default=False),
              Term("bidirectional", SCALAR, T.BOOL, default=False)]
    return tuple(terms)


def _decompose(mode: str) -> Callable[..., Any]:
    """The loop in core kernels: a Python loop over the steps (the reference every fused
    kernel is checked against, and what a backend without a kernel of its own runs)."""
    gates = GATES[mode]
    lstm = mode == "lstm"

    def formula(k: Any, *args: Any) -> tuple[Any, ...]:
        a = dict(zip(CATALOGUE[mode].input_names, args, strict=True))
        x = a["input"]
        if a["batch_first"]:
            x = k.swap_axes(x, 0, 1)
        n_t = x.shape[0]
        p = a["weight_hh"].shape[1]
        hid = a["weight_hh"].shape[0] // gates
        lengths = None if a["lengths"] is None else k.unsqueeze(a["lengths"], -1)
        every = slice(None)
        outs, h_n, c_n = [], [], []
        for d in range(2 if a["bidirectional"] else 1):
            w = {key: a.get(key + ("_reverse" if d else "")) for key in _WEIGHTS}
            xp = k.linear(x, w["weight_ih"], w["bias_ih"])
            zero = k.multiply(k.indexer(xp, (0, every, slice(0, 1))), 0.0)  # (N, 1)
            h = k.multiply(k.indexer(xp, (0, every, slice(0, p))), 0.0) \
                if a["h_0"] is None else k.indexer(a["h_0"], d)
            c = None
            if lstm:
                c = k.multiply(k.indexer(xp, (0, every, slice(0, hid))), 0.0) \
                    if a["c_0"] is None else k.indexer(a["c_0"], d)
            out_t: dict[int, Any] = {}
            for t in (range(n_t - 1, -1, -1) if d else range(n_t)):
                h_new, c_new = _cell(k, mode, k.indexer(xp, t), h, c, w, hid)
                if lengths is None:
                    h, c = h_new, c_new
                    out_t[t] = h
                else:
                    valid = k.less(t, lengths)  # (N, 1)
                    out_t[t] = k.where(valid, h_new, zero)
                    h = k.where(valid, h_new, h)
                    if lstm:
                        c = k.where(valid, c_new, c)
            outs.append(k.concat(*(k.unsqueeze(out_t[t], 0) for t in range(n_t)), 0))
            h_n.append(k.unsqueeze(h, 0))
            c_n.append(k.unsqueeze(c, 0) if lstm else None)
        output = k.concat(*outs, -1) if len(outs) > 1 else outs[0]
        if a["batch_first"]:
            output = k.swap_axes(output, 0, 1)
        result: tuple[Any, ...] = (output, k.concat(*h_n, 0) if len(h_n) > 1 else h_n[0])
        if lstm:
            result += (k.concat(*c_n, 0) if len(c_n) > 1 else c_n[0],)
        return result

    return formula


def _cell(k: Any, mode: str, xp: Any, h: Any, c: Any, w: dict[str, Any], hid: int
          ) -> tuple[Any, Any]:
    """One step in core kernels: the new ``(h, c)`` (``c`` None but for the LSTM)."""
    every = slice(None)

    def part(z: Any, i: int) -> Any:
        return k.indexer(z, (every, slice(i * hid, (i + 1) * hid)))

    gh = k.linear(h, w["weight_hh"], w["bias_hh"])
    if mode == "lstm":
        z = k.add(xp, gh)
        i, f, o = k.sigmoid(part(z, 0)), k.sigmoid(part(z, 1)), k.sigmoid(part(z, 3))
        c = k.add(k.multiply(f, c), k.multiply(i, k.tanh(part(z, 2))))
        h = k.multiply(o, k.tanh(c))
        if w["weight_hr"] is not None:
            h = k.linear(h, w["weight_hr"], None)
        return h, c
    if mode == "gru":
        r = k.sigmoid(k.add(part(xp, 0), part(gh, 0)))
        zg = k.sigmoid(k.add(part(xp, 1), part(gh, 1)))
        n = k.tanh(k.add(part(xp, 2), k.multiply(r, part(gh, 2))))
        return k.add(n, k.multiply(zg, k.subtract(h, n))), None
    pre = k.add(xp, gh)
    return (k.tanh(pre) if mode == "rnn_tanh" else k.relu(pre)), None


_DOCS = {"lstm": "one LSTM layer over a sequence (PyTorch's nn.LSTM layer; loop)",
         "gru": "one GRU layer over a sequence (PyTorch's nn.GRU layer; loop)",
         "rnn_tanh": "one tanh Elman RNN layer over a sequence (nn.RNN layer; loop)",
         "rnn_relu": "one relu Elman RNN layer over a sequence (nn.RNN layer; loop)"}

for _mode in LOOP_OPS:
    _outs = (Term("output", kinds=T.FLOAT), Term("h_n", kinds=T.FLOAT),
             *((Term("c_n", kinds=T.FLOAT),) if _mode == "lstm" else ()))
    register(OpDef(_mode, _terms(_mode), _outs, _rule(_mode), doc=_DOCS[_mode],
                   decompose=_decompose(_mode)))

__all__ = ["GATES", "LOOP_OPS"]
