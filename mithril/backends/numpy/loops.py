"""NumPy kernels and VJPs of the loop primitives (``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``).

A layer runs as a Python loop over the time axis (one matrix product per step for the hidden
state; the input projection of all steps is one product before the loop). ``<mode>_fwd`` keeps
what each step computed, and ``<mode>_vjp`` walks the steps back (backpropagation through time).
``lengths`` masks steps at or past each sequence's length: they give zeros in ``output`` and
leave the state as it was, which is PyTorch's packed-sequence semantics.

Inputs are the catalogue's, in its order (``mithril/framework/loops.py``).

>>> lstm = registry.kernels[("lstm", "default")]
>>> x, w_ih, w_hh = np.ones((5, 2, 3)), np.full((8, 3), 0.1), np.full((8, 2), 0.1)
>>> out, h_n, c_n = lstm(x, w_ih, w_hh, *[None] * 11, False, False)
>>> out.shape, h_n.shape, bool(np.allclose(out[-1], h_n[0]))
((5, 2, 2), (1, 2, 2), True)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ...framework.loops import CATALOGUE, GATES, positional_signature
from ...framework.scan import register_scan
from .kernels import _output_of, registry
from .kernels import sigmoid as _sigmoid

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _step(mode: str, xp: np.ndarray, h: np.ndarray, c: np.ndarray | None, w: dict[str, Any]
          ) -> tuple[np.ndarray, np.ndarray | None, tuple[Any, ...]]:
    """One step: new (h, c) and what the backward needs."""
    gh = h @ w["weight_hh"].T
    if w["bias_hh"] is not None:
        gh = gh + w["bias_hh"]
    if mode == "lstm":
        hs = gh.shape[-1] // 4
        z = xp + gh
        i, f, o = _sigmoid(z[:, :hs]), _sigmoid(z[:, hs:2 * hs]), _sigmoid(z[:, 3 * hs:])
        g = np.tanh(z[:, 2 * hs:3 * hs])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        hh = o * tc
        h_new = hh @ w["weight_hr"].T if w["weight_hr"] is not None else hh
        return h_new, c_new, (i, f, g, o, tc, hh)
    if mode == "gru":
        hs = gh.shape[-1] // 3
        r = _sigmoid(xp[:, :hs] + gh[:, :hs])
        zg = _sigmoid(xp[:, hs:2 * hs] + gh[:, hs:2 * hs])
        ghn = gh[:, 2 * hs:]
        n = np.tanh(xp[:, 2 * hs:] + r * ghn)
        return (1 - zg) * n + zg * h, None, (r, zg, n, ghn)
    pre = xp + gh
    h_new = np.tanh(pre) if mode == "rnn_tanh" else np.maximum(pre, 0)
    return h_new, None, (pre,)


def _step_vjp(mode: str, dh_new: np.ndarray, dc_new: np.ndarray | None, h: np.ndarray,
              c: np.ndarray | None, saved: tuple[Any, ...], w: dict[str, Any],
              grads: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of one unmasked step: (d xp, d h_prev, d c_prev); weight grads accumulate."""
    dc_prev = None
    if mode == "lstm":
        i, f, g, o, tc, hh = saved
        if w["weight_hr"] is not None:
            grads["weight_hr"] += dh_new.T @ hh
            dhh = dh_new @ w["weight_hr"]
        else:
            dhh = dh_new
        dc = dc_new + dhh * o * (1 - tc * tc)
        dz = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f),
                             dc * i * (1 - g * g), dhh * tc * o * (1 - o)], axis=-1)
        dgh = dxp = dz
        dc_prev = dc * f
    elif mode == "gru":
        r, zg, n, ghn = saved
        dn = dh_new * (1 - zg)
        dpre_n = dn * (1 - n * n)
        dpre_r = dpre_n * ghn * r * (1 - r)
        dpre_z = dh_new * (h - n) * zg * (1 - zg)
        dxp = np.concatenate([dpre_r, dpre_z, dpre_n], axis=-1)
        dgh = np.concatenate([dpre_r, dpre_z, dpre_n * r], axis=-1)
    else:
        (pre,) = saved
        if mode == "rnn_tanh":
            t = np.tanh(pre)
            dgh = dh_new * (1 - t * t)
        else:
            dgh = dh_new * (pre > 0)
        dxp = dgh
    grads["weight_hh"] += dgh.T @ h
    if grads.get("bias_hh") is not None:
        grads["bias_hh"] += dgh.sum(axis=0)
    dh_prev = dgh @ w["weight_hh"] + (dh_new * zg if mode == "gru" else 0)
    return dxp, dh_prev, dc_prev


def _forward(mode: str, *args: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The layer's outputs and what each step computed (the cache of ``_backward``)."""
    a = dict(zip(CATALOGUE[mode].input_names, args, strict=True))
    lstm = mode == "lstm"
    x = np.asarray(a["input"])
    if a["batch_first"]:
        x = x.transpose(1, 0, 2)
    n_t, n_b = x.shape[0], x.shape[1]
    n_d = 2 if a["bidirectional"] else 1
    p = a["weight_hh"].shape[1]
    hid = a["weight_hh"].shape[0] // GATES[mode]
    mask = None
    if a["lengths"] is not None:  # (T, N, 1): 1 where step t is inside sequence n
        lens = np.asarray(a["lengths"]).reshape(-1)
        mask = (np.arange(n_t)[:, None] < lens[None, :]).astype(x.dtype)[..., None]
    outs, h_n, c_n, dirs = [], [], [], []
    for d in range(n_d):
        sfx = "_reverse" if d else ""
        w = {k: a.get(k + sfx) for k in _WEIGHTS}
        xp = x @ w["weight_ih"].T
        if w["bias_ih"] is not None:
            xp = xp + w["bias_ih"]
        h = np.zeros((n_b, p), x.dtype) if a["h_0"] is None else a["h_0"][d]
        c = (np.zeros((n_b, hid), x.dtype) if a["c_0"] is None else a["c_0"][d]) if lstm else None
        out = np.zeros((n_t, n_b, p), x.dtype)
        steps = []
        for t in (range(n_t - 1, -1, -1) if d else range(n_t)):
            h_new, c_new, saved = _step(mode, xp[t], h, c, w)
            steps.append((t, h, c, saved))
            if mask is None:
                h, c = h_new, c_new
                out[t] = h
            else:
                m = mask[t]
                out[t] = m * h_new
                h = m * h_new + (1 - m) * h
                if lstm:
                    c = m * c_new + (1 - m) * c
        outs.append(out)
        h_n.append(h)
        c_n.append(c)
        dirs.append((w, xp, steps))
    output = np.concatenate(outs, axis=-1) if n_d > 1 else outs[0]
    if a["batch_first"]:
        output = output.transpose(1, 0, 2)
    result = (np.ascontiguousarray(output), np.stack(h_n), *([np.stack(c_n)] if lstm else []))
    return result, {"x": x, "dirs": dirs, "mask": mask}


def _backward(mode: str, grad: Any, output: Any, *args: Any, cache: dict[str, Any] | None = None
              ) -> tuple[Any, ...]:
    """Backpropagation through time."""
    if cache is None:
        cache = _forward(mode, *args)[1]
    a = dict(zip(CATALOGUE[mode].input_names, args, strict=True))
    lstm = mode == "lstm"
    g_out, g_hn, g_cn = grad if lstm else (*grad, None)
    x, mask = cache["x"], cache["mask"]
    n_b = x.shape[1]
    if g_out is not None:
        g_out = np.asarray(g_out)
        if a["batch_first"]:
            g_out = g_out.transpose(1, 0, 2)
    grads: dict[str, Any] = {k: None for k in CATALOGUE[mode].input_names}
    dx = np.zeros_like(x)
    p = a["weight_hh"].shape[1]
    g_h0, g_c0 = [], []
    for d, (w, xp, steps) in enumerate(cache["dirs"]):
        sfx = "_reverse" if d else ""
        wg = {k: (np.zeros_like(w[k]) if w[k] is not None else None) for k in _WEIGHTS}
        dh = np.zeros((n_b, p), x.dtype) if g_hn is None else np.array(g_hn[d])
        dc = (np.zeros_like(steps[0][2]) if g_cn is None else np.array(g_cn[d])) if lstm else None
        dxp = np.zeros_like(xp)
        for t, h, c, saved in reversed(steps):
            g_t = g_out[t, :, d * p:(d + 1) * p] if g_out is not None else None
            if mask is None:
                dh_new = dh if g_t is None else dh + g_t
                dxp[t], dh, dc = _step_vjp(mode, dh_new, dc, h, c, saved, w, wg)
            else:
                m = mask[t]
                dh_new = m * dh + (m * g_t if g_t is not None else 0)
                dc_new = m * dc if lstm else None
                dxp[t], dh_prev, dc_prev = _step_vjp(mode, dh_new, dc_new, h, c, saved, w, wg)
                dh = (1 - m) * dh + dh_prev
                if lstm:
                    dc = (1 - m) * dc + dc_prev
        flat = dxp.reshape(-1, dxp.shape[-1])
        wg["weight_ih"] = flat.T @ x.reshape(-1, x.shape[-1])
        if w["bias_ih"] is not None:
            wg["bias_ih"] = flat.sum(axis=0)
        dx += dxp @ w["weight_ih"]
        for k in _WEIGHTS:
            if w[k] is not None:
                grads[k + sfx] = wg[k].astype(w[k].dtype, copy=False)
        g_h0.append(dh)
        g_c0.append(dc)
    if a["h_0"] is not None:
        grads["h_0"] = np.stack(g_h0).astype(a["h_0"].dtype, copy=False)
    if lstm and a["c_0"] is not None:
        grads["c_0"] = np.stack(g_c0).astype(a["c_0"].dtype, copy=False)
    grads["input"] = dx.transpose(1, 0, 2).copy() if a["batch_first"] else dx
    return tuple(grads[k] for k in CATALOGUE[mode].input_names)


for _mode in GATES:  # per recurrent layer: the kernel, its training variant and its VJP
    _fwd = positional_signature(_mode)(functools.partial(_forward, _mode))
    registry.kernel(_mode, mode="with_cache")(_fwd)
    registry.kernel(_mode)(_output_of(_fwd))
    registry.vjp(_mode)(functools.partial(_backward, _mode))

# issue 15: the generic loop (Scan) over a user's body model
register_scan(registry, "numpy")
