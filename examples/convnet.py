"""The ConvNet of the migration guide, trained on one backend, evaluated, saved and reloaded.

Shows, on scikit-learn's bundled handwritten digits (upscaled to 3x32x32 so that the guide's
network applies unchanged):

1. building the ConvNet with ``|=`` and ``+=`` and compiling it for the backend you choose;
2. the guide's training loop (``evaluate`` -> loss -> ``evaluate`` with the loss gradient ->
   ``optimizer.update``);
3. evaluation with an inference build that takes over the BatchNorm running statistics;
4. saving the architecture (JSON) and the parameters and state (safetensors), loading both
   into a fresh model and checking that it predicts exactly the same.

    python examples/convnet.py --backend torch
    python examples/convnet.py --backend numpy --small     # a few seconds
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
from _common import example_parser, limit_threads, load_digits, make_backend

import mithril as ml
from mithril.models import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Model, Relu


def create_conv_net() -> Model:
    """The guide's ConvNet: two conv-BN-ReLU-pool stages and a linear classifier."""
    model = Model()
    model |= Conv2d(in_channels=3, out_channels=16, kernel_size=3, padding=1)
    model += BatchNorm2d(num_features=16)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Conv2d(in_channels=16, out_channels=32, kernel_size=3, padding=1)
    model += BatchNorm2d(num_features=32)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Flatten()
    model += Linear(dimension=10)(input_size=32 * 8 * 8)
    return model




def predict(compiled, params, backend, images: np.ndarray) -> np.ndarray:
    """Class predictions, 256 images at a time."""
    out = []
    for start in range(0, len(images), 256):
        logits = compiled.evaluate(params, {"input": backend.array(images[start:start + 256])})
        out.append(np.argmax(backend.to_numpy(logits["output"]), axis=1))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and parameters")
    parser.add_argument("--small", action="store_true",
                        help="a quick run: 300 images and one epoch")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.epochs = 1

    x_train, y_train, x_test, y_test = load_digits(args.seed, size=32, channels=3,
                                                   limit=300 if args.small else None)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 3x32x32; "
          f"backend: {args.backend}")

    # ---- build and compile ----
    model = create_conv_net()
    backend = make_backend(args.backend)
    compiled_model = ml.compile(model, backend)
    params = compiled_model.randomize_params(seed=args.seed)
    n_params = sum(int(np.prod(value.shape)) for value in params.values())
    print(f"ConvNet: {len(params)} parameter tensors, {n_params:,} numbers")

    # ---- the guide's training loop ----
    optimizer = ml.Adam(learning_rate=args.lr)
    optimizer_state = optimizer.init(params)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        losses = []
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            inputs = {"input": backend.array(x_train[batch])}
            targets = backend.array(y_train[batch])

            outputs = compiled_model.evaluate(params, inputs)
            logits = outputs["output"]
            loss = backend.cross_entropy(logits, targets)

            loss_grad = backend.cross_entropy_grad(logits, targets)
            _, gradients = compiled_model.evaluate(params, inputs, {"output": loss_grad})
            params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
            losses.append(float(backend.to_numpy(loss)))
        print(f"epoch {epoch + 1}/{args.epochs}: mean training loss {np.mean(losses):.4f} "
              f"({time.perf_counter() - start:.1f}s)")

    # ---- evaluate: inference behaviour with the trained running statistics ----
    inference = ml.compile(model, backend, inference=True)
    inference.state = compiled_model.state
    predictions = predict(inference, params, backend, x_test)
    accuracy = float((predictions == y_test).mean())
    print(f"test accuracy: {accuracy:.1%}")

    # ---- save, load into a fresh model, compare ----
    with tempfile.TemporaryDirectory() as folder:
        arch_path = os.path.join(folder, "convnet.json")
        params_path = os.path.join(folder, "convnet.safetensors")
        with open(arch_path, "w") as f:
            json.dump(model.to_dict(), f)
        ml.save_params(params_path, params, state=compiled_model.state,
                       metadata={"test_accuracy": f"{accuracy:.4f}"})
        sizes = os.path.getsize(arch_path), os.path.getsize(params_path)

        with open(arch_path) as f:
            loaded_model = Model.from_dict(json.load(f))
        reloaded = ml.compile(loaded_model, backend, inference=True)
        loaded_params, loaded_state = ml.load_params(params_path, reloaded)
        reloaded.state = loaded_state
        metadata = ml.read_metadata(params_path)
    same = np.array_equal(predict(reloaded, loaded_params, backend, x_test), predictions)
    print(f"saved {sizes[0]:,} bytes of architecture and {sizes[1]:,} bytes of parameters; "
          f"the reloaded model (metadata {metadata}) predicts the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
