"""Reference models of the user's guide, ready to use (``from mithril.models.zoo import ...``).

>>> import mithril as ml
>>> pm = ml.compile(conv_net(), ml.NumpyBackend(), shapes={"input": [2, 3, 32, 32]})
>>> pm.shapes["output"]
[2, 10]
"""

from __future__ import annotations

from ..framework.logical.model import Model
from .gpt import gpt2
from .layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d
from .primitives import Relu


def conv_net(num_classes: int = 10) -> Model:
    """The guide's ConvNet: two Conv2d-BatchNorm2d-Relu-MaxPool2d stages and a Linear head,
    for 3x32x32 inputs."""
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
    model += Linear(dimension=num_classes)(input_size=32 * 8 * 8)
    return model


__all__ = ["conv_net", "gpt2"]
