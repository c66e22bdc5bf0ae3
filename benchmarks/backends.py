"""Forward+backward time of each backend against hand-written code of the same framework."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import handwritten as hw
from .models import mlp
from .timing import best_time, table

MLP_DEPTH, MLP_WIDTH, MLP_BATCH = 4, 1024, 64
CONV_BATCH = 32


def _convnet() -> Any:
    from tests.guide_models import create_conv_net

    return create_conv_net()


def _setup(backend: Any, model: Any, shape: list[int], jit: bool, seed: int = 0
           ) -> tuple[Callable[[], Any], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    import mithril as ml

    pm = ml.compile(model, backend, shapes={"input": shape}, jit=jit)
    ref = ml.compile(model, ml.NumpyBackend(), shapes={"input": shape})
    raw = {k: np.asarray(v) for k, v in ref.randomize_params(seed=seed).items()}
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(ref.shapes["output"]).astype(np.float32)
    params = {k: backend.array(v) for k, v in raw.items()}
    data = {"input": backend.array(x)}
    og = {"output": backend.array(g)}

    def step() -> Any:
        return pm.evaluate(params, data, output_gradients=og)

    return step, raw, x, g


def _sync(name: str) -> Callable[[Any], Any]:
    if name == "jax":
        import jax

        return lambda out: jax.block_until_ready(out)
    if name == "mlx":
        import mlx.core as mx

        return lambda out: mx.eval(out)
    return lambda out: out


def _reference(name: str, model_name: str, raw: dict[str, np.ndarray], x: np.ndarray,
               g: np.ndarray) -> Callable[[], Any]:
    if name in ("torch", "numpy"):
        import torch

        p = {k: torch.from_numpy(v) for k, v in raw.items()}
        step = hw.torch_convnet(p) if model_name == "convnet" else hw.torch_mlp(p, MLP_DEPTH)
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        return lambda: step(xt, gt)
    if name == "jax":
        import jax.numpy as jnp

        fn = hw.jax_convnet() if model_name == "convnet" else hw.jax_mlp(MLP_DEPTH)
        p = {k: jnp.asarray(v) for k, v in raw.items()}
        xj, gj = jnp.asarray(x), jnp.asarray(g)
        return lambda: fn(p, xj, gj)
    import mlx.core as mx

    fn = hw.mlx_convnet() if model_name == "convnet" else hw.mlx_mlp(MLP_DEPTH)
    p = {k: mx.array(v) for k, v in raw.items()}
    xm, gm = mx.array(x), mx.array(g)
    return lambda: fn(p, xm, gm)


REFERENCE_NAME = {"numpy": "PyTorch eager", "torch": "nn.Module eager", "jax": "jax.jit",
                  "mlx": "mx.compile"}


def run(repeat: int = 7) -> str:
    import os

    import mithril as ml

    threads = os.environ.get("MITHRIL_BENCH_THREADS")
    if threads and importlib.util.find_spec("torch"):
        import torch

        torch.set_num_threads(int(threads))

    names = ["numpy"] + [n for n in ("torch", "jax", "mlx") if importlib.util.find_spec(n)]
    models = {"convnet": (_convnet, [CONV_BATCH, 3, 32, 32]),
              "mlp": (lambda: mlp(MLP_WIDTH, MLP_DEPTH, MLP_WIDTH),
                      [MLP_BATCH, MLP_WIDTH])}
    rows = [["backend", "model", "hand-written", "reference ms", "Mithril ms", "wall ratio",
             "CPU ratio"]]
    for name in names:
        backend = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
                   "mlx": ml.MlxBackend}[name]()
        for model_name, (make, shape) in models.items():
            step, raw, x, g = _setup(backend, make(), shape, jit=name in ("jax", "mlx"))
            ref = _reference(name, model_name, raw, x, g)
            sync = _sync(name)
            # interleave to share the machine's noise fairly
            t_ref = t_ml = c_ref = c_ml = float("inf")
            for _ in range(3):
                t_ref = min(t_ref, best_time(ref, repeat=repeat, number=3, sync=sync))
                t_ml = min(t_ml, best_time(step, repeat=repeat, number=3, sync=sync))
                c_ref = min(c_ref, best_time(ref, repeat=repeat, number=3, sync=sync,
                                             clock=time.process_time))
                c_ml = min(c_ml, best_time(step, repeat=repeat, number=3, sync=sync,
                                           clock=time.process_time))
            label = "ConvNet b32" if model_name == "convnet" else \
                f"MLP {MLP_DEPTH}x{MLP_WIDTH} b{MLP_BATCH}"
            rows.append([name, label, REFERENCE_NAME[name], f"{t_ref * 1e3:.2f}",
                         f"{t_ml * 1e3:.2f}", f"{t_ml / t_ref:.2f}x", f"{c_ml / c_ref:.2f}x"])
    return ("Forward+backward, Mithril vs hand-written code of the same framework "
            "(targets: torch <= 1.05x, jax <= 1.05x; numpy <= 3x PyTorch).\n"
            "Wall: best-of wall time; CPU: best-of process CPU time (robust on a shared "
            "machine). Threads: " + _threads() + "\n" + table(rows))


def _threads() -> str:
    import os

    return os.environ.get("MITHRIL_BENCH_THREADS", "framework default")


if __name__ == "__main__":
    print(run())
