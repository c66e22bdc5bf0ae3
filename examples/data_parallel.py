"""Data-parallel training: the guide's ConvNet, its batches split over several devices.

    python examples/data_parallel.py                              # one process, one device
    torchrun --nproc-per-node 2 examples/data_parallel.py         # 2 processes (gloo on CPU)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python examples/data_parallel.py --backend jax            # 4 simulated JAX devices

The same script runs in every case. It shows:

1. the backend owns the devices — ``ml.TorchBackend(device_mesh=(world size,))`` (one process
   per device, as ``torchrun`` starts them) or ``ml.JaxBackend(device_mesh=(devices,))``;
2. the strategy is a compile option — ``ml.compile(model, backend, parallel=DataParallel())``
   on the guide's ConvNet, unchanged, and the plan it resolves to;
3. that each device holds only its part of every batch, while parameters are replicated;
4. the guide's training loop, unchanged: DTensor (PyTorch) or ``jax.jit`` (JAX) turn batch
   means, BatchNorm statistics and parameter gradients into sums over all devices;
5. the check: the same steps on a single device without a mesh give the same loss curve.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import mithril as ml
from mithril.models.zoo import conv_net as create_conv_net  # the guide's ConvNet
from mithril.parallel import DataParallel, shard_shapes


def make_batches(steps: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable synthetic task: the label is the brightest quadrant of the image (0-3)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 4, (steps, batch))
    for s in range(steps):
        for i in range(batch):
            q = y[s, i]
            x[s, i, :, (q // 2) * 16:(q // 2) * 16 + 16, (q % 2) * 16:(q % 2) * 16 + 16] += 1.0
    return x, y


def train(backend: Any, parallel: Any, xs: np.ndarray, ys: np.ndarray, seed: int,
          report: bool) -> list[float]:
    """The guide's training loop; returns the loss of every step."""
    compiled = ml.compile(create_conv_net(), backend, parallel=parallel)
    params = compiled.randomize_params(seed=seed)
    optimizer = ml.Adam(learning_rate=1e-3)
    opt_state = optimizer.init(params)
    losses = []
    for step in range(len(xs)):
        inputs = {"input": backend.array(xs[step])}   # the global batch; the plan splits it
        targets = backend.array(ys[step])
        logits = compiled.evaluate(params, inputs)["output"]
        loss = backend.cross_entropy(logits, targets)
        loss_grad = backend.cross_entropy_grad(logits, targets)
        _, gradients = compiled.evaluate(params, inputs, {"output": loss_grad})
        params, opt_state = optimizer.update(params, gradients, opt_state)
        losses.append(float(backend.to_numpy(loss)))
        if report and (step % 5 == 0 or step == len(xs) - 1):
            print(f"  step {step + 1:3d}  loss {losses[-1]:.4f}")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["torch", "jax"], default="torch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="10 steps (a few seconds)")
    args = parser.parse_args()
    steps = 10 if args.small else args.steps

    if args.backend == "torch":
        import torch.distributed as dist

        backend = ml.TorchBackend(device_mesh=(_world_size(),))  # joins torchrun's group
        rank, devices = dist.get_rank(), dist.get_world_size()
        where = f"{devices} process(es) (torch.distributed, gloo on the CPU)"
    else:
        import jax

        devices = len(jax.devices())
        backend = ml.JaxBackend(device_mesh=(devices,))
        rank, where = 0, f"{devices} JAX device(s) in one process"
    show = rank == 0

    if show:
        print(f"data parallel on {where}: {backend.device_mesh}")
    xs, ys = make_batches(steps, args.batch_size, args.seed)

    # what the plan does to one batch and to the parameters
    compiled = ml.compile(create_conv_net(), backend, parallel=DataParallel())
    batch = compiled.place_inputs({"input": backend.array(xs[0])})["input"]
    params = compiled.randomize_params(seed=args.seed)
    if show:
        compiled.parallel.summary()
        piece = list(shard_shapes(batch)[0])
        who = f"rank {rank} holds" if args.backend == "torch" else "each device holds"
        print(f"{who} input {piece} of the batch {list(batch.shape)}; "
              f"conv2d.weight {list(shard_shapes(params['conv2d.weight'])[0])} (replicated)")

    start = time.perf_counter()
    if show:
        print(f"training {steps} steps, global batch {args.batch_size}:")
    losses = train(backend, DataParallel(), xs, ys, args.seed, report=show)
    elapsed = time.perf_counter() - start

    # the same steps on one device, without a mesh (every process computes it on its own)
    single_backend = ml.TorchBackend() if args.backend == "torch" else ml.JaxBackend()
    start = time.perf_counter()
    single = train(single_backend, None, xs, ys, args.seed, report=False)
    single_time = time.perf_counter() - start
    diff = float(np.max(np.abs(np.array(losses) - np.array(single))))
    if show:
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {elapsed:.1f} s "
              f"(one device without a mesh: {single_time:.1f} s)")
        print(f"same loss curve as one device: {diff < 1e-4} (largest difference {diff:.1e}, "
              "float32)")
    if args.backend == "torch":
        dist.barrier()
        dist.destroy_process_group()


def _world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


if __name__ == "__main__":
    main()
