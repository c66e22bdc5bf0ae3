"""Hand-written torch.nn versions of the guide's models, loaded with Mithril's parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class TorchConvNet(nn.Module):
    """The guide's PyTorch ConvNet, verbatim."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.relu2(x)
        x = self.pool2(x)
        x = self.flatten(x)
        x = self.fc(x)
        return x


#: Mithril parameter key -> torch ConvNet parameter name
CONVNET_NAMES = {
    "conv2d.weight": "conv1.weight", "conv2d.bias": "conv1.bias",
    "batchnorm2d.weight": "bn1.weight", "batchnorm2d.bias": "bn1.bias",
    "conv2d_1.weight": "conv2.weight", "conv2d_1.bias": "conv2.bias",
    "batchnorm2d_1.weight": "bn2.weight", "batchnorm2d_1.bias": "bn2.bias",
    "linear.weight": "fc.weight", "linear.bias": "fc.bias",
}


def load_into(module: nn.Module, params: dict[str, Any], names: dict[str, str],
              to_numpy: Any) -> None:
    own = dict(module.named_parameters())
    with torch.no_grad():
        for key, tname in names.items():
            own[tname].copy_(torch.from_numpy(np.asarray(to_numpy(params[key]))))
