"""Issue 15: recurrent layers (loop primitives) against hand-written framework code, same run.

- PyTorch: ``LSTM`` / ``GRU`` forward + backward (``evaluate`` with output gradients) against
  ``nn.LSTM`` / ``nn.GRU`` forward + ``backward`` with the same weights.
- JAX: ``LSTM`` forward + backward (``jit=True``) against a hand-written LSTM as a
  ``jax.lax.scan`` under ``jax.jit`` (``jax.vjp`` of the same loss).
- Build + compile time of ``LSTM(16, 32, num_layers=2, batch_first=True)`` compiled for
  T=50 and for T=500: the layer is a loop over a symbolic length, so T does not enter.

Times are CPU time of this process (``time.process_time``), best of several runs; the
ratio column is ours / theirs (lower is better). The PyTorch rows run with one intra-op thread
(restored afterwards): on a shared 2-core machine, spinning worker threads add CPU time to
whichever side happens to be disturbed, which swamps a ratio of two equal kernels.

    python -m benchmarks.recurrent
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .timing import best_time, table

BATCH, IN, HIDDEN, LAYERS = 16, 32, 64, 2
CLOCK = time.process_time


def _data(n_t: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, n_t, IN)).astype(np.float32)
    seeds = {"output": rng.standard_normal((BATCH, n_t, HIDDEN)).astype(np.float32)}
    return x, seeds


def torch_pair(kind: str, n_t: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ours on the PyTorch backend, ``nn.LSTM``/``nn.GRU``): forward + backward."""
    import torch

    import mithril as ml
    from mithril.models import GRU, LSTM

    ours_cls, ref_cls = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU)}[kind]
    torch.manual_seed(0)
    ref = ref_cls(IN, HIDDEN, num_layers=LAYERS, batch_first=True)
    backend = ml.TorchBackend()
    pm = ml.compile(ours_cls(IN, HIDDEN, num_layers=LAYERS, batch_first=True), backend)
    params = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    x, seeds = _data(n_t)
    xt = torch.tensor(x)
    gt = torch.tensor(seeds["output"])
    inputs = {"input": xt}
    out_grads = {"output": gt}

    def ours() -> Any:
        return pm.evaluate(params, inputs, out_grads)

    def theirs() -> Any:
        ref.zero_grad(set_to_none=True)
        out, _ = ref(xt)
        out.backward(gt)
        return out

    return ours, theirs


def _jax_lstm_reference(params: dict[str, Any], x: Any) -> Any:
    """A hand-written stacked LSTM (PyTorch's gate order) as one ``lax.scan`` per layer."""
    import jax
    import jax.numpy as jnp

    h_seq = jnp.swapaxes(x, 0, 1)  # (T, N, F)
    for layer in range(LAYERS):
        w_ih, w_hh = params[f"weight_ih_l{layer}"], params[f"weight_hh_l{layer}"]
        b = params[f"bias_ih_l{layer}"] + params[f"bias_hh_l{layer}"]
        xp = h_seq @ w_ih.T + b
        n_h = w_hh.shape[1]

        def step(carry: Any, xp_t: Any, w_hh: Any = w_hh, n_h: int = n_h) -> Any:
            h, c = carry
            z = xp_t + h @ w_hh.T
            i = jax.nn.sigmoid(z[:, :n_h])
            f = jax.nn.sigmoid(z[:, n_h:2 * n_h])
            g = jnp.tanh(z[:, 2 * n_h:3 * n_h])
            o = jax.nn.sigmoid(z[:, 3 * n_h:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[0], n_h), x.dtype)
        _, h_seq = jax.lax.scan(step, (zeros, zeros), xp)
    return jnp.swapaxes(h_seq, 0, 1)


def jax_pair(n_t: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ours on the JAX backend with jit, a hand-written jitted ``lax.scan`` LSTM)."""
    import jax
    import jax.numpy as jnp

    import mithril as ml
    from mithril.models import LSTM

    backend = ml.JaxBackend()
    pm = ml.compile(LSTM(IN, HIDDEN, num_layers=LAYERS, batch_first=True), backend, jit=True)
    params = pm.randomize_params(seed=0)
    x, seeds = _data(n_t)
    inputs = {"input": jnp.asarray(x)}
    out_grads = {"output": jnp.asarray(seeds["output"])}

    def ours() -> Any:
        out, grads = pm.evaluate(params, inputs, out_grads)
        return jax.block_until_ready((out, grads))

    @jax.jit
    def fwd_bwd(params: Any, x: Any, g: Any) -> Any:
        out, pullback = jax.vjp(lambda p: _jax_lstm_reference(p, x), params)
        return out, pullback(g)[0]

    def theirs() -> Any:
        return jax.block_until_ready(fwd_bwd(params, inputs["input"], out_grads["output"]))

    return ours, theirs


def build_compile_time(n_t: int) -> float:
    """Build ``LSTM(16, 32, num_layers=2, batch_first=True)`` and compile it for length T."""
    import mithril as ml
    from mithril.models import LSTM

    backend = ml.TorchBackend()

    def once() -> Any:
        return ml.compile(LSTM(16, 32, num_layers=2, batch_first=True), backend,
                          shapes={"input": [BATCH, n_t, 16]})

    return best_time(once, repeat=5, number=3)


def run() -> str:
    import torch

    rows = [["recurrent (fwd+bwd, batch 16, 32->64, 2 layers)", "ours ms", "theirs ms",
             "ratio"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind in ("lstm", "gru"):
            for n_t in (100, 500):
                ours, theirs = torch_pair(kind, n_t)
                a = best_time(ours, repeat=5, number=2, clock=CLOCK)
                b = best_time(theirs, repeat=5, number=2, clock=CLOCK)
                rows.append([f"PyTorch {kind.upper()} T={n_t} vs nn.{kind.upper()}",
                             f"{a * 1e3:.2f}", f"{b * 1e3:.2f}", f"{a / b:.2f}"])
    finally:
        torch.set_num_threads(threads)
    if importlib.util.find_spec("jax") is not None:
        for n_t in (100, 500):
            ours, theirs = jax_pair(n_t)
            a = best_time(ours, repeat=5, number=3, clock=CLOCK)
            b = best_time(theirs, repeat=5, number=3, clock=CLOCK)
            rows.append([f"JAX LSTM T={n_t} vs jitted lax.scan", f"{a * 1e3:.2f}",
                         f"{b * 1e3:.2f}", f"{a / b:.2f}"])
    t50, t500 = build_compile_time(50), build_compile_time(500)
    rows.append(["build+compile LSTM(16, 32, 2): T=500 vs T=50", f"{t500 * 1e3:.2f}",
                 f"{t50 * 1e3:.2f}", f"{t500 / t50:.2f}"])
    return table(rows)


if __name__ == "__main__":
    print(run())
