"""A ResNet-18 trained on scikit-learn's bundled 8x8 handwritten digits.

The network is torchvision's ResNet-18 layout (a stem, four stages of two basic blocks with
64, 128, 256 and 512 channels, global average pooling, a linear classifier; about 11 million
parameters), with the usual small-image stem: a 3x3 convolution and no max pooling, since the
digits are only 8x8. Each basic block is a function returning a fresh ``Model`` whose branches
(main path and shortcut) are wired by name, the way a PyTorch ``forward`` would use variables.

The default is a short run (a few dozen steps) that already classifies most test digits;
``--steps`` trains longer, ``--width 16`` makes a narrower, much faster network.

    python examples/resnet18_digits.py                      # 25 steps on PyTorch
    python examples/resnet18_digits.py --steps 300          # about 99% test accuracy
    python examples/resnet18_digits.py --backend jax --small
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import example_parser, limit_threads, load_digits, make_backend

import mithril as ml
from mithril.models import (
    AdaptiveAvgPool2d,
    Add,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    Model,
    Relu,
)


def basic_block(in_channels: int, out_channels: int, stride: int, name: str) -> Model:
    """ResNet's basic block: two 3x3 convolutions and a shortcut, added, then ReLU."""
    block = Model(name=name)
    block |= Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                    bias=False, name="conv1")(input="input", output="conv1_out")
    block |= BatchNorm2d(out_channels, name="bn1")(input="conv1_out", output="bn1_out")
    block |= Relu()(input="bn1_out", output="relu1_out")
    block |= Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False,
                    name="conv2")(input="relu1_out", output="conv2_out")
    block |= BatchNorm2d(out_channels, name="bn2")(input="conv2_out", output="main")
    shortcut = "input"
    if stride != 1 or in_channels != out_channels:   # project the shortcut to the new shape
        block |= Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                        name="downsample_conv")(input="input", output="projected")
        block |= BatchNorm2d(out_channels, name="downsample_bn")(input="projected",
                                                                 output="shortcut")
        shortcut = "shortcut"
    block |= Add()(left="main", right=shortcut, output="sum")
    block |= Relu()(input="sum", output="output")
    return block


def resnet18(width: int = 64, in_channels: int = 1, num_classes: int = 10) -> Model:
    model = Model()
    model |= Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False, name="conv1")
    model += BatchNorm2d(width, name="bn1")
    model += Relu()
    channels = width
    for stage, (out_channels, stride) in enumerate(
            [(width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)], start=1):
        model += basic_block(channels, out_channels, stride, name=f"layer{stage}_0")
        model += basic_block(out_channels, out_channels, 1, name=f"layer{stage}_1")
        channels = out_channels
    model += AdaptiveAvgPool2d(1)
    model += Flatten()
    model += Linear(num_classes, name="fc")
    return model



def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--steps", type=int, default=25,
                        help="training steps (default 25; 300 reach about 99%%)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--width", type=int, default=64,
                        help="channels of the first stage (default 64, ResNet-18's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and parameters")
    parser.add_argument("--small", action="store_true",
                        help="a quick check: width 8, 3 steps of 16 images, 64 test images")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.width, args.steps, args.batch_size = 8, 3, 16

    x_train, y_train, x_test, y_test = load_digits(args.seed)
    if args.small:
        x_test, y_test = x_test[:64], y_test[:64]
    backend = make_backend(args.backend)
    model = resnet18(width=args.width)
    start = time.perf_counter()
    train = ml.compile(model, backend)
    params = train.randomize_params(seed=args.seed)
    n_params = sum(int(np.prod(value.shape)) for value in params.values())
    print(f"ResNet-18 (width {args.width}): {n_params:,} parameters in {len(params)} tensors, "
          f"{len(train.state)} BatchNorm statistics; compiled for {args.backend} in "
          f"{time.perf_counter() - start:.1f}s")
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 1x8x8")

    optimizer = ml.Adam(learning_rate=args.lr)
    optimizer_state = optimizer.init(params)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    report_every = max(1, args.steps // 5)
    for step in range(1, args.steps + 1):
        batch = rng.choice(len(x_train), size=args.batch_size, replace=False)
        inputs = {"input": backend.array(x_train[batch])}
        targets = backend.array(y_train[batch])
        logits = train.evaluate(params, inputs)["output"]
        loss = backend.cross_entropy(logits, targets)
        _, gradients = train.evaluate(params, inputs,
                                      {"output": backend.cross_entropy_grad(logits, targets)})
        params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
        if step % report_every == 0 or step == args.steps:
            print(f"step {step:4d}/{args.steps}: loss {float(backend.to_numpy(loss)):.4f} "
                  f"({(time.perf_counter() - start) / step:.2f}s per step)")

    # the trained BatchNorm statistics go to an inference build of the same model
    infer = ml.compile(model, backend, inference=True)
    infer.state = train.state
    correct = 0
    for i in range(0, len(x_test), 128):
        logits = infer.evaluate(params, {"input": backend.array(x_test[i:i + 128])})["output"]
        correct += int((np.argmax(backend.to_numpy(logits), axis=1) == y_test[i:i + 128]).sum())
    print(f"test accuracy after {args.steps} steps: {correct / len(x_test):.1%} "
          f"({correct}/{len(x_test)}; chance is 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
