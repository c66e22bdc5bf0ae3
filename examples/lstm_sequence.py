"""An LSTM learns the "adding problem", a classic test of memory in recurrent networks.

Each input is a sequence of pairs ``(value, marker)``: the values are uniform in [0, 1) and
exactly two markers are 1, one in each half of the sequence. The target is the sum of the two
marked values. Predicting the average (1.0) every time gives a mean squared error of about
0.167; a network that remembers the first marked value until it sees the second gets close to 0.

The sequences have different lengths, as text does: every batch is padded to its own longest
sequence (a different T each time) and the true lengths go in as ``lengths``, with PyTorch's
packed-sequence meaning: padded steps are skipped and ``h_n`` is each sequence's state at its
own last step. The model is ``LSTM(2, hidden, batch_first=True, lengths=True)`` followed by a
``Linear`` on the last layer's ``h_n`` (``h_n[-1]``, from the connection algebra). The LSTM is
a loop over a symbolic time axis, so ONE compiled model serves every batch, whatever its T.

    python examples/lstm_sequence.py --backend torch
    python examples/lstm_sequence.py --length 20 --steps 3000     # a harder version
    python examples/lstm_sequence.py --backend numpy --small
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import example_parser, limit_threads, make_backend

import mithril as ml
from mithril.models import LSTM, Linear, Model


def adding_problem(rng: np.random.Generator, n: int, length: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sequences of lengths in ``[length // 2, length]``, padded with zeros to the
    longest of them: ``(n, T, 2)``, their lengths ``(n,)`` and targets ``(n, 1)``."""
    lengths = rng.integers(max(2, length // 2), length + 1, size=n)
    lengths[0] = length
    n_t = int(lengths.max())
    steps = np.arange(n_t)[None, :]
    valid = steps < lengths[:, None]
    values = np.where(valid, rng.uniform(0.0, 1.0, size=(n, n_t)), 0.0).astype(np.float32)
    markers = np.zeros((n, n_t), dtype=np.float32)
    rows = np.arange(n)
    half = lengths // 2
    markers[rows, (rng.random(n) * half).astype(int)] = 1.0  # one in each half of its length
    markers[rows, half + (rng.random(n) * (lengths - half)).astype(int)] = 1.0
    targets = (values * markers).sum(axis=1, keepdims=True)
    return np.stack([values, markers], axis=-1), lengths, targets


def create_model(hidden: int) -> Model:
    model = Model()
    model |= LSTM(input_size=2, hidden_size=hidden, batch_first=True, lengths=True)(
        input="input", lengths="lengths", h_n="h_n")
    # the last layer's state at each sequence's own last step, (N, hidden)
    model |= Linear(1)(input=model.h_n[-1], output="output")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--length", type=int, default=10,
                        help="longest sequence (default 10; the shortest is half of it)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (1e-2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and parameters")
    parser.add_argument("--small", action="store_true", help="a quick check: 30 steps")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.steps = 30
    if args.length < 4:
        parser.error("--length must be at least 4")

    backend = make_backend(args.backend)
    model = create_model(args.hidden)
    start = time.perf_counter()
    compiled = ml.compile(model, backend)
    params = compiled.randomize_params(seed=args.seed)
    print(f"LSTM(2, {args.hidden}) over any sequence length, then Linear(1): "
          f"{sum(int(np.prod(v.shape)) for v in params.values()):,} parameters "
          f"({', '.join(compiled.param_keys)}); compiled once for {args.backend} in "
          f"{time.perf_counter() - start:.2f}s (input {compiled.shapes['input']})")

    rng = np.random.default_rng(args.seed)
    x_test, len_test, y_test = adding_problem(rng, 1000, args.length)
    baseline = float(np.mean((y_test - 1.0) ** 2))
    print(f"adding problem, sequences of up to {args.length} steps: "
          f"always answering 1.0 scores an MSE of {baseline:.4f}")

    optimizer = ml.Adam(learning_rate=args.lr, max_grad_norm=1.0)
    optimizer_state = optimizer.init(params)
    start = time.perf_counter()
    report_every = max(1, args.steps // 5)
    seen_lengths: set[int] = set()
    for step in range(1, args.steps + 1):
        # this batch's longest sequence: anywhere from half the longest to the longest
        x, lengths, y = adding_problem(rng, args.batch_size,
                                       int(rng.integers(args.length // 2, args.length + 1)))
        seen_lengths.add(x.shape[1])
        inputs = {"input": backend.array(x), "lengths": backend.array(lengths)}
        targets = backend.array(y)
        prediction = compiled.evaluate(params, inputs)["output"]
        loss = backend.mse(prediction, targets)
        _, gradients = compiled.evaluate(params, inputs,
                                         {"output": backend.mse_grad(prediction, targets)})
        params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
        if step % report_every == 0 or step == args.steps:
            print(f"step {step:5d}/{args.steps}: batch MSE {float(backend.to_numpy(loss)):.4f} "
                  f"({time.perf_counter() - start:.1f}s)")
    print(f"one compiled model trained on batches padded to {len(seen_lengths)} different "
          f"lengths ({min(seen_lengths)} to {max(seen_lengths)} steps)")

    prediction = backend.to_numpy(compiled.evaluate(
        params, {"input": backend.array(x_test), "lengths": backend.array(len_test)})["output"])
    mse = float(np.mean((prediction - y_test) ** 2))
    print(f"test MSE on 1000 new sequences: {mse:.4f} (baseline {baseline:.4f}, "
          f"{baseline / max(mse, 1e-12):.0f}x lower)")
    for i in range(3):
        marked = np.flatnonzero(x_test[i, :, 1])
        values = " + ".join(f"{x_test[i, j, 0]:.3f}" for j in marked)
        print(f"  length {len_test[i]}, marked at {marked.tolist()}: {values} = "
              f"{y_test[i, 0]:.3f}, the LSTM says {prediction[i, 0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
