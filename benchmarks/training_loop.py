"""Issue 16: the guide's training step against hand-written framework code, same run.

- PyTorch: the guide's loop (evaluate, cross_entropy, cross_entropy_grad, evaluate with
  output gradients, ``ml.Adam.update``) against ``zero_grad`` / forward / ``backward`` /
  ``torch.optim.Adam.step`` on the same ConvNet (batch 32, float32).
- JAX: the same guide loop against one ``jax.jit`` of ``value_and_grad`` plus the optax Adam
  update (with BatchNorm running statistics, as the guide's model keeps them).
Times are CPU time of this process (``time.process_time``), best of several runs.

- ``ml.Adam.update`` (and AdamW, SGD with momentum, RMSprop, Adagrad) on JAX and MLX against
  one jitted optax update of the same tree (small: 2 parameters; large: 8 parameters of 256k
  floats), interleaved, best of each; and MLX's Adam against Adam written by hand in MLX
  (one ``mx.compile``), the floor on that framework. On a CPU the MLX rows measure MLX's
  kernels more than ours: our update runs at that floor (Adam's step scalars are computed in
  Python for small trees, so it is below it there), SGD with momentum (no square root, no
  division) matches optax on the large tree, and the rules with a square root and a division
  per element (Adam, RMSprop, Adagrad) take about twice optax's time there, in MLX's fused CPU
  loop itself (MLX 0.32).

    python -m benchmarks.training_loop
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .timing import best_time, table

BATCH = 32
REPEAT = 5
NUMBER = 5
#: CPU time of this process (all its threads): other jobs on a shared machine disturb it far
#: less than wall time, and both sides of a ratio use the same threads
CLOCK = time.process_time


def _convnet() -> Any:
    from tests.guide_models import create_conv_net

    return create_conv_net()


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32),
            rng.integers(0, 10, BATCH))


def guide_step(backend: Any) -> Callable[[], Any]:
    """One step of the guide's loop, written as in the guide."""
    import mithril as ml

    compiled_model = ml.compile(_convnet(), backend, shapes={"input": [BATCH, 3, 32, 32]})
    params = compiled_model.randomize_params(seed=0)
    optimizer = ml.Adam(learning_rate=0.001)
    box = {"params": params, "state": optimizer.init(params)}
    x, y = _data()
    inputs = {"input": backend.array(x)}
    targets = backend.array(y)

    def step() -> Any:
        params = box["params"]
        outputs = compiled_model.evaluate(params, inputs)
        logits = outputs["output"]
        loss = backend.cross_entropy(logits, targets)
        loss_grad = backend.cross_entropy_grad(logits, targets)
        _, gradients = compiled_model.evaluate(params, inputs, {"output": loss_grad})
        box["params"], box["state"] = optimizer.update(params, gradients, box["state"])
        return loss, box["params"]

    return step


def fused_step(backend: Any) -> Callable[[], Any]:
    """The same step as a compile option: ``ml.compile(..., train=ml.TrainStep(...))`` (one
    ``jax.jit`` on JAX; one autograd pass and the foreach update on PyTorch)."""
    import mithril as ml

    optimizer = ml.Adam(learning_rate=0.001)
    compiled_model = ml.compile(_convnet(), backend, shapes={"input": [BATCH, 3, 32, 32]},
                                train=ml.TrainStep(optimizer, loss="cross_entropy"))
    params = compiled_model.randomize_params(seed=0)
    box = {"p": params, "o": optimizer.init(params), "s": compiled_model.initial_state_dict}
    x, y = _data()
    inputs = {"input": backend.array(x), "target": backend.array(y)}
    run = compiled_model.train_step

    def step() -> Any:
        box["p"], box["o"], box["s"], loss = run(box["p"], box["o"], box["s"], inputs)
        return loss

    return step


def torch_step() -> Callable[[], Any]:
    import torch
    from torch import nn

    from tests.torch_reference import TorchConvNet

    torch.manual_seed(0)
    net = TorchConvNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    x, y = _data()
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> Any:
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def jax_step() -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    import mithril as ml

    ref = ml.compile(_convnet(), ml.NumpyBackend(), shapes={"input": [BATCH, 3, 32, 32]})
    params = {k: jnp.asarray(v, jnp.float32) for k, v in ref.randomize_params(seed=0).items()}
    stats = {k: jnp.asarray(v, jnp.float32) for k, v in ref.initial_state_dict.items()}

    def forward(p: dict[str, Any], s: dict[str, Any], x: Any) -> tuple[Any, dict[str, Any]]:
        new = {}
        for c, n in (("conv2d", "batchnorm2d"), ("conv2d_1", "batchnorm2d_1")):
            x = lax.conv_general_dilated(x, p[f"{c}.weight"], (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = x + p[f"{c}.bias"][None, :, None, None]
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            count = x.size / x.shape[1]
            new[f"{n}.running_mean"] = 0.9 * s[f"{n}.running_mean"] + 0.1 * mean
            new[f"{n}.running_var"] = (0.9 * s[f"{n}.running_var"]
                                       + 0.1 * var * count / (count - 1))
            x = ((x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + 1e-5)
                 * p[f"{n}.weight"][None, :, None, None] + p[f"{n}.bias"][None, :, None, None])
            x = lax.reduce_window(jax.nn.relu(x), -jnp.inf, lax.max, (1, 1, 2, 2),
                                  (1, 1, 2, 2), "VALID")
        x = x.reshape(x.shape[0], -1)
        return x @ p["linear.weight"].T + p["linear.bias"], new

    def loss_fn(p: Any, s: Any, x: Any, y: Any) -> Any:
        logits, new = forward(p, s, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    tx = optax.adam(0.001)

    @jax.jit
    def train_step(p: Any, s: Any, opt: Any, x: Any, y: Any) -> Any:
        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), new, opt, loss

    x, y = _data()
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    box = {"p": params, "s": stats, "opt": tx.init(params)}

    def step() -> Any:
        box["p"], box["s"], box["opt"], loss = train_step(box["p"], box["s"], box["opt"], xs,
                                                          ys)
        return loss

    return step


def _sync(name: str) -> Callable[[Any], Any] | None:
    if name == "jax":
        import jax

        return jax.block_until_ready
    if name == "mlx":
        import mlx.core as mx

        return lambda out: mx.eval(out)
    return None


def _ratio_rows() -> list[list[str]]:
    import mithril as ml

    rows = [["step (ConvNet, batch 32, float32)", "ours", "hand-written", "ratio"]]
    cases = [("torch", ml.TorchBackend, torch_step), ("jax", ml.JaxBackend, jax_step)]
    for name, cls, hand in cases:
        if not importlib.util.find_spec(name) or (name == "jax" and not
                                                   importlib.util.find_spec("optax")):
            continue
        theirs = hand()
        sync = _sync(name)
        for label, ours in (("guide loop", guide_step(cls())), ("fused", fused_step(cls()))):
            # interleaved repeats, best of each: the machine is shared and noisy
            t_ours = t_theirs = float("inf")
            for _ in range(3):
                t_ours = min(t_ours, best_time(ours, repeat=REPEAT, number=NUMBER, sync=sync,
                                               clock=CLOCK))
                t_theirs = min(t_theirs, best_time(theirs, repeat=REPEAT, number=NUMBER,
                                                   sync=sync, clock=CLOCK))
            rows.append([f"{name} {label}", f"{t_ours * 1e3:.2f} ms",
                         f"{t_theirs * 1e3:.2f} ms", f"{t_ours / t_theirs:.2f}x"])
    return rows


def _trees(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    small = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4)}
    large = {f"p{i}": rng.standard_normal((512, 512)) for i in range(8)}
    return {"small (2 arrays)": small, "large (8 x 262k)": large}


def _optimizer_pairs() -> list[tuple[str, Any, Any]]:
    """(name, ml optimizer factory, the optax transformation doing the same work)."""
    import optax

    import mithril as ml

    return [("Adam", lambda: ml.Adam(learning_rate=0.001), optax.adam(0.001)),
            ("AdamW", lambda: ml.AdamW(learning_rate=0.001), optax.adamw(0.001)),
            ("SGD+momentum", lambda: ml.SGD(learning_rate=0.01, momentum=0.9),
             optax.sgd(0.01, momentum=0.9)),
            ("RMSprop", lambda: ml.RMSprop(learning_rate=0.01), optax.rmsprop(0.01)),
            ("Adagrad", lambda: ml.Adagrad(learning_rate=0.01), optax.adagrad(0.01))]


def _mlx_adam() -> Callable[..., Any]:
    """Adam written by hand in MLX, one ``mx.compile`` of the whole tree (the MLX floor)."""
    import mlx.core as mx

    def update(p: Any, g: Any, m: Any, v: Any, t: Any) -> Any:
        t = t + 1
        m = {k: 0.9 * m[k] + 0.1 * g[k] for k in p}
        v = {k: 0.999 * v[k] + 0.001 * (g[k] * g[k]) for k in p}
        c1 = 1 - 0.9 ** t.astype(mx.float32)
        c2 = mx.sqrt(1 - 0.999 ** t.astype(mx.float32))
        return {k: p[k] - 0.001 / c1 * m[k] / (mx.sqrt(v[k]) / c2 + 1e-8) for k in p}, m, v, t

    return mx.compile(update)


def _adam_rows() -> list[list[str]]:
    if not importlib.util.find_spec("optax"):
        return [["optax is not installed"]]
    import jax
    import jax.numpy as jnp
    import optax

    import mithril as ml

    rows = [["ml optimizer update vs jitted optax", "ml", "optax (JAX)", "ratio"]]
    has_mlx = importlib.util.find_spec("mlx") is not None
    backends = [("jax", ml.JaxBackend())] + ([("mlx", ml.MlxBackend())] if has_mlx else [])
    for label, tree in _trees(np.random.default_rng(0)).items():
        number = 50 if label.startswith("small") else 10
        jp = {k: jnp.asarray(v, jnp.float32) for k, v in tree.items()}
        jg = {k: v * 0.1 for k, v in jp.items()}
        for opt_name, make, tx in _optimizer_pairs():
            def optax_update(p: Any, g: Any, opt: Any, tx: Any = tx) -> Any:
                updates, opt = tx.update(g, opt, p)
                return optax.apply_updates(p, updates), opt

            jitted = jax.jit(optax_update)
            box = {"o": tx.init(jp)}

            def theirs(jp: Any = jp, jg: Any = jg, box: Any = box, jitted: Any = jitted) -> Any:
                out, box["o"] = jitted(jp, jg, box["o"])
                return out

            for name, backend in backends:
                params = {k: backend.array(v.astype(np.float32)) for k, v in tree.items()}
                grads = {k: v * 0.1 for k, v in params.items()}
                opt = make()
                state = {"s": opt.init(params)}

                def ours(params: Any = params, grads: Any = grads, opt: Any = opt,
                         state: Any = state) -> Any:
                    out, state["s"] = opt.update(params, grads, state["s"])
                    return out

                t_ours = t_theirs = float("inf")
                for _ in range(3):  # interleaved, best of each: the machine is shared
                    t_ours = min(t_ours, best_time(ours, repeat=REPEAT, number=number,
                                                   sync=_sync(name), clock=CLOCK))
                    t_theirs = min(t_theirs, best_time(theirs, repeat=REPEAT, number=number,
                                                       sync=jax.block_until_ready,
                                                       clock=CLOCK))
                rows.append([f"{name} {opt_name} {label}", f"{t_ours * 1e6:.0f} us",
                             f"{t_theirs * 1e6:.0f} us", f"{t_ours / t_theirs:.2f}x"])
        if has_mlx:  # MLX's own floor: Adam written by hand in MLX, one mx.compile
            import mlx.core as mx

            backend = dict(backends)["mlx"]
            params = {k: backend.array(v.astype(np.float32)) for k, v in tree.items()}
            grads = {k: v * 0.1 for k, v in params.items()}
            hand = _mlx_adam()
            mbox = {"m": {k: mx.zeros_like(v) for k, v in params.items()},
                    "v": {k: mx.zeros_like(v) for k, v in params.items()},
                    "t": mx.array(0, dtype=mx.int32)}

            def mlx_hand(params: Any = params, grads: Any = grads, mbox: Any = mbox,
                         hand: Any = hand) -> Any:
                out, mbox["m"], mbox["v"], mbox["t"] = hand(params, grads, mbox["m"],
                                                            mbox["v"], mbox["t"])
                return out, mbox["m"], mbox["v"]

            opt = ml.Adam(learning_rate=0.001)
            state = {"s": opt.init(params)}

            def ours_mlx(params: Any = params, grads: Any = grads, opt: Any = opt,
                         state: Any = state) -> Any:
                out, state["s"] = opt.update(params, grads, state["s"])
                return out, state["s"]

            t_ours = t_hand = float("inf")
            for _ in range(3):
                t_ours = min(t_ours, best_time(ours_mlx, repeat=REPEAT, number=number,
                                               sync=_sync("mlx"), clock=CLOCK))
                t_hand = min(t_hand, best_time(mlx_hand, repeat=REPEAT, number=number,
                                               sync=_sync("mlx"), clock=CLOCK))
            rows.append([f"mlx Adam {label} vs hand-written mx.compile Adam",
                         f"{t_ours * 1e6:.0f} us", f"{t_hand * 1e6:.0f} us (MLX)",
                         f"{t_ours / t_hand:.2f}x"])
    return rows


def run() -> str:
    return table(_ratio_rows()) + "\n\n" + table(_adam_rows())


if __name__ == "__main__":
    print(run())
