"""JAX kernels of the loop primitives: one ``jax.lax.scan`` per direction.

The input projection of all steps is one matrix product before the scan; the scanned body does
the hidden-state product and the gates. With ``lengths`` each step is masked (``jnp.where``):
steps at or past a sequence's length give zeros in ``output`` and keep the state, which is
PyTorch's packed-sequence semantics (the reverse direction starts at the last valid step).
Gradients come from JAX's autodiff of the scan.

>>> lstm = registry.kernels[("lstm", "default")]
>>> x, w_ih, w_hh = jnp.ones((5, 2, 3)), jnp.full((8, 3), 0.1), jnp.full((8, 2), 0.1)
>>> out, h_n, c_n = lstm(x, w_ih, w_hh, *[None] * 11, False, False)
>>> out.shape, h_n.shape, bool(jnp.allclose(out[-1], h_n[0]))
((5, 2, 2), (1, 2, 2), True)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ...framework.loops import CATALOGUE, GATES, positional_signature
from ...framework.scan import register_scan
from .kernels import registry

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _cell(mode: str, w: dict[str, Any]) -> Any:
    """The step function ``(h, c), xp -> (h', c')`` of one direction."""
    w_hh_t = w["weight_hh"].T
    b_hh, w_hr = w["bias_hh"], w["weight_hr"]

    def step(h: Any, c: Any, xp: Any) -> tuple[Any, Any]:
        gh = h @ w_hh_t
        if b_hh is not None:
            gh = gh + b_hh
        if mode == "lstm":
            i, f, g, o = jnp.split(xp + gh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            if w_hr is not None:
                h = h @ w_hr.T
            return h, c
        if mode == "gru":
            hs = gh.shape[-1] // 3
            r = jax.nn.sigmoid(xp[:, :hs] + gh[:, :hs])
            z = jax.nn.sigmoid(xp[:, hs:2 * hs] + gh[:, hs:2 * hs])
            n = jnp.tanh(xp[:, 2 * hs:] + r * gh[:, 2 * hs:])
            return (1 - z) * n + z * h, c
        pre = xp + gh
        return (jnp.tanh(pre) if mode == "rnn_tanh" else jax.nn.relu(pre)), c

    return step


def _run(mode: str, *args: Any) -> tuple[Any, ...]:
    a = dict(zip(CATALOGUE[mode].input_names, args, strict=True))
    lstm = mode == "lstm"
    x = a["input"]
    if a["batch_first"]:
        x = jnp.swapaxes(x, 0, 1)
    n_t, n_b = x.shape[0], x.shape[1]
    n_d = 2 if a["bidirectional"] else 1
    p = a["weight_hh"].shape[1]
    hid = a["weight_hh"].shape[0] // GATES[mode]
    mask = None
    if a["lengths"] is not None:
        mask = (jnp.arange(n_t)[:, None] < jnp.reshape(a["lengths"], (1, -1)))[..., None]
    per_direction = []
    for d in range(n_d):
        sfx = "_reverse" if d else ""
        w = {k: a.get(k + sfx) for k in _WEIGHTS}
        xp = x @ w["weight_ih"].T
        if w["bias_ih"] is not None:
            xp = xp + w["bias_ih"]
        h0 = jnp.zeros((n_b, p), x.dtype) if a["h_0"] is None else a["h_0"][d]
        c0 = None
        if lstm:
            c0 = jnp.zeros((n_b, hid), x.dtype) if a["c_0"] is None else a["c_0"][d]
        step = _cell(mode, w)

        def body(carry: Any, item: Any, step: Any = step) -> tuple[Any, Any]:
            if mask is None:  # item: the step's input projection
                h, c = step(*carry, item)
                return (h, c), h
            xp_t, m = item  # and the step's mask: past a sequence's end, keep the state
            h, c = step(*carry, xp_t)
            h = jnp.where(m, h, carry[0])
            if lstm:
                c = jnp.where(m, c, carry[1])
            return (h, c), jnp.where(m, h, 0)

        xs = xp if mask is None else (xp, mask)
        (h, c), out = jax.lax.scan(body, (h0, c0), xs, reverse=bool(d))
        per_direction.append((out, h, c))
    outs, h_n, c_n = zip(*per_direction, strict=True)
    output = jnp.concatenate(outs, axis=-1) if n_d > 1 else outs[0]
    if a["batch_first"]:
        output = jnp.swapaxes(output, 0, 1)
    result: tuple[Any, ...] = (output, jnp.stack(h_n))
    if lstm:
        result += (jnp.stack(c_n),)
    return result


for _mode in GATES:  # lstm, gru, rnn_tanh, rnn_relu: (output, h_n[, c_n])
    registry.kernel(_mode)(positional_signature(_mode)(functools.partial(_run, _mode)))

# issue 15: the generic loop (Scan) over a user's body model
register_scan(registry, "jax")
