"""Models the benchmarks measure, in Mithril and hand-written framework code."""

from __future__ import annotations

from mithril.models import Add, Linear, Model, Relu


def residual_block(width: int) -> Model:
    block = Model()
    block |= Linear(width)(input="input", output="h1")
    block |= Relu()(input="h1", output="h2")
    block |= Linear(width)(input="h2", output="h3")
    block |= Add()(left="h3", right="input", output="output")
    return block


def residual_stack(n: int, width: int = 64, in_size: int = 32) -> Model:
    """``n`` residual blocks (Linear, Relu, Linear, Add) with named terminals."""
    model = Model()
    model |= Linear(width)(input_size=in_size, input="input")
    for _ in range(n):
        model += residual_block(width)
    return model


def mlp(width: int = 1024, depth: int = 4, in_size: int = 1024) -> Model:
    model = Model()
    model |= Linear(width)(input_size=in_size)
    for i in range(depth - 1):
        model += Relu()
        model += Linear(width if i < depth - 2 else 10)
    return model
