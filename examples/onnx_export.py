"""Train the guide's ConvNet briefly, export it to ONNX, and run it in onnxruntime.

1. the guide's ConvNet (``mithril.models.zoo.conv_net``) trained for a few steps on
   scikit-learn's digits (upscaled to 3x32x32) on the backend you choose;
2. ``ml.export_onnx`` with the trained parameters and BatchNorm running statistics, the batch
   left as the named dynamic axis ``"N"``;
3. onnxruntime runs the file at two batch sizes, and its outputs are compared with Mithril's
   inference model on the NumPy backend (they must agree to a relative 1e-5).

    pip install '.[onnx]'
    python examples/onnx_export.py --backend torch
    python examples/onnx_export.py --backend numpy --small     # a few seconds
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
from _common import example_parser, limit_threads, load_digits, make_backend

import mithril as ml
from mithril.models import zoo


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and parameters")
    parser.add_argument("--small", action="store_true", help="a quick run: 5 steps")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.steps = 5
    import onnxruntime as ort

    x_train, y_train, x_test, y_test = load_digits(args.seed, size=32, channels=3,
                                                   limit=300 if args.small else None)

    # ---- train briefly (the guide's loop) ----
    backend = make_backend(args.backend)
    shapes = {"input": ["N", 3, 32, 32]}
    trainer = ml.compile(zoo.conv_net(), backend, shapes=shapes)
    params = trainer.randomize_params(seed=args.seed)
    optimizer = ml.Adam(learning_rate=1e-3)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.steps):
        batch = rng.choice(len(x_train), args.batch_size, replace=False)
        inputs = {"input": backend.array(x_train[batch])}
        targets = backend.array(y_train[batch])
        logits = trainer.evaluate(params, inputs)["output"]
        grad = backend.cross_entropy_grad(logits, targets)
        _, grads = trainer.evaluate(params, inputs, {"output": grad})
        params, opt_state = optimizer.update(params, grads, opt_state)
    print(f"trained the ConvNet for {args.steps} steps on {args.backend}")

    # ---- export: the parameters and running statistics of any backend ----
    with tempfile.TemporaryDirectory() as folder:
        path = ml.export_onnx(zoo.conv_net(), params, os.path.join(folder, "convnet.onnx"),
                              shapes=shapes, state=trainer.state)
        print(f"exported {os.path.getsize(path):,} bytes to {os.path.basename(path)}")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        print("inputs:", [(i.name, i.shape) for i in session.get_inputs()],
              "outputs:", [(o.name, o.shape) for o in session.get_outputs()])

        # ---- the same numbers as Mithril's inference model (NumPy backend) ----
        reference = ml.compile(zoo.conv_net(), ml.NumpyBackend(), shapes=shapes,
                               inference=True)
        np_params = {k: backend.to_numpy(v) for k, v in params.items()}
        np_state = {k: backend.to_numpy(v) for k, v in trainer.state.items()}
        worst = 0.0
        for n in (len(x_test), 7):
            images = x_test[:n]
            got = session.run(None, {"input": images})[0]
            want = reference.evaluate(np_params, {"input": images}, state=np_state)
            want = np.asarray((want[0] if isinstance(want, tuple) else want)["output"])
            error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            worst = max(worst, error)
            print(f"batch {n}: onnxruntime vs Mithril (NumPy) max relative difference "
                  f"{error:.2e}; accuracy {(got.argmax(1) == y_test[:n]).mean():.1%}")
    agree = worst <= 1e-5
    print(f"onnxruntime agrees with Mithril: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
