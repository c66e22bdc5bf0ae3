"""Pairing by layer and shape keeps each layer's tensors in declaration order.

When a Mithril layer and a torch module have different leaf names (``weight``/``bias`` against
``gamma``/``beta``) but the only matching shapes, ``load_torch_state_dict`` pairs them as a layer
("layer-shape"), tensor by tensor in the order each side declares them: the scale with the
scale, the shift with the shift. The values are chosen so that a swap changes the outputs, and
the outputs are compared with ``torch.nn.functional.layer_norm`` on the torch module's tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import mithril as ml
from mithril.interop import load_torch_state_dict
from mithril.models import LayerNorm, Linear, Model


class ScaleShift(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, size, dtype=torch.float64))
        self.beta = nn.Parameter(torch.linspace(-1.0, 1.0, size, dtype=torch.float64))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 5).double()
        self.norm = ScaleShift(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return nn.functional.layer_norm(h, (5,), self.norm.gamma, self.norm.beta)


def test_layer_paired_by_shape_keeps_scale_and_shift_in_order() -> None:
    model = Model()
    model |= Linear(5)(input_size=3)
    model += LayerNorm(5)
    compiled = ml.compile(model, ml.NumpyBackend(dtype=ml.float64), shapes={"input": [4, 3]})
    net = Net()
    params, _, report = load_torch_state_dict(compiled, net.state_dict())
    assert report.ok
    pairs = {mine: (theirs, how) for mine, theirs, _, how in report.matched}
    assert pairs["layernorm.weight"] == ("norm.gamma", "layer-shape")
    assert pairs["layernorm.bias"] == ("norm.beta", "layer-shape")

    x = np.random.default_rng(0).standard_normal((4, 3))
    ours = compiled.evaluate(params, {"input": x})["output"]
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
