"""Train the guide's ConvNet on real handwritten digits, on every installed backend.

The digits are scikit-learn's bundled 8x8 images (1,797 of them), upscaled to 32x32 with three
channels so that the guide's ConvNet (Conv2d, BatchNorm2d, Relu, MaxPool2d, ..., Linear) runs
on them unchanged. Every backend starts from the same parameters and sees the same batches, so
their loss curves can be compared directly.

The default batch size is 64. Training in float32 amplifies rounding differences: with
batches of 32 (45 Adam steps per epoch) two float32 runs that differ only in the order of
their sums end the first epoch about 1e-3 apart, as far as NumPy float32 is from NumPy float64.
With 64 (23 steps) the backends' first-epoch curves agree within about 5e-4.

    python examples/demo.py --help
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import Any

import numpy as np
from _common import BACKENDS, load_digits, make_backend

import mithril as ml
from mithril.models.zoo import conv_net as create_conv_net  # the guide's ConvNet


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def available_backends() -> list[str]:
    return [name for name in BACKENDS if importlib.util.find_spec(name)]  # named after the module


def train_one(name: str, data: tuple[np.ndarray, ...], args: argparse.Namespace,
              initial: dict[str, np.ndarray]) -> dict[str, Any]:
    """The guide's "Mithril Training" loop on one backend."""
    from tqdm import tqdm

    x_train, y_train, x_test, y_test = data
    model = create_conv_net()
    backend = make_backend(name)
    compiled_model = ml.compile(model, backend)
    params = {k: backend.array(v) for k, v in initial.items()}

    optimizer = ml.Adam(learning_rate=args.lr)
    optimizer_state = optimizer.init(params)
    losses: list[float] = []
    rng = np.random.default_rng(args.seed)  # the same batches on every backend
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"{name:>5}", unit="step", leave=True) as bar:
        for _epoch in range(args.epochs):
            for inputs_batch, targets_batch in batches(x_train, y_train, args.batch_size, rng):
                inputs = {"input": backend.array(inputs_batch)}
                targets = backend.array(targets_batch)

                outputs = compiled_model.evaluate(params, inputs)
                logits = outputs["output"]
                loss = backend.cross_entropy(logits, targets)

                loss_grad = backend.cross_entropy_grad(logits, targets)
                output_gradients = {"output": loss_grad}
                _, gradients = compiled_model.evaluate(params, inputs, output_gradients)

                params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
                losses.append(float(backend.to_numpy(loss)))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
    train_time = time.perf_counter() - start

    # evaluation: inference behaviour (BatchNorm running statistics) with the trained state
    inference = ml.compile(model, backend, inference=True)
    inference.state = compiled_model.state
    correct = 0
    for i in range(0, len(x_test), 256):
        logits = inference.evaluate(params, {"input": backend.array(x_test[i:i + 256])})
        predicted = np.argmax(backend.to_numpy(logits["output"]), axis=1)
        correct += int((predicted == y_test[i:i + 256]).sum())
    return {"backend": name, "accuracy": correct / len(x_test), "time": train_time,
            "losses": losses, "steps_per_epoch": -(-len(x_train) // args.batch_size)}


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        ax.plot(r["losses"], label=f"{r['backend']} ({r['accuracy']:.1%} test accuracy)",
                linewidth=1.2, alpha=0.85)
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_yscale("log")
    ax.set_title("The guide's ConvNet on scikit-learn digits, one model on every backend")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the guide's ConvNet on scikit-learn's handwritten digits (32x32, "
                    "3 channels) on every installed Mithril backend; print test accuracy and "
                    "time per backend and write a PNG of the loss curves.")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=None,
                        help="backends to train on (default: every installed one)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init, batches")
    parser.add_argument("--out", default="demo-output",
                        help="folder for the loss plot (default ./demo-output)")
    args = parser.parse_args(argv)

    names = args.backends or available_backends()
    data = load_digits(args.seed, size=32, channels=3)
    print(f"digits: {len(data[0])} training and {len(data[2])} test images, 3x32x32; "
          f"backends: {', '.join(names)}")
    reference = ml.compile(create_conv_net(), ml.NumpyBackend())
    initial = {k: np.asarray(v) for k, v in reference.randomize_params(seed=args.seed).items()}

    total_start = time.perf_counter()
    results = [train_one(name, data, args, initial) for name in names]
    total = time.perf_counter() - total_start

    first_epoch = results[0]["steps_per_epoch"]
    base = np.array(results[0]["losses"][:first_epoch])
    print()
    print(f"{'backend':<8} {'test accuracy':>13} {'train time':>11} {'per step':>9} "
          f"{'final loss':>11} {'max |loss - ' + results[0]['backend'] + '| (epoch 1)':>30}")
    for r in results:
        dev = float(np.max(np.abs(np.array(r["losses"][:first_epoch]) - base)))
        per_step = r["time"] / max(len(r["losses"]), 1) * 1e3
        print(f"{r['backend']:<8} {r['accuracy']:>13.2%} {r['time']:>10.1f}s "
              f"{per_step:>7.1f}ms {r['losses'][-1]:>11.4f} {dev:>30.2e}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "loss_curves.png")
    plot(results, path)
    print(f"\nall backends: {total:.1f}s; loss curves written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
