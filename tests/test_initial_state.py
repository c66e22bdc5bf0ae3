"""Fresh values equal a fresh ``torch.nn`` module's, on every backend.

A compiled model's ``initial_state_dict`` (BatchNorm running statistics) and the
``randomize_params`` values of layers whose PyTorch initialisation is a constant (norm scales
and shifts) must be exactly PyTorch's: a model that keeps its own state starts from them, so a
wrong start (running mean at ones, say) shifts every later running statistic. The second test
follows one training call of a model that keeps its own state from that start and compares the
running statistics with a fresh ``nn.BatchNorm2d`` after one forward in training mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import BatchNorm2d, GroupNorm, LayerNorm, Model
from tests.backend_names import BACKENDS, backend_of

SHAPE = [6, 3, 4, 5]


def _np(backend: Any, x: object) -> np.ndarray:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def _single(layer: Model) -> Model:
    model = Model()
    model |= layer
    return model


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_batchnorm_initial_state_is_torch_fresh_buffers(backend_name: str) -> None:
    backend = backend_of(backend_name, "float32" if backend_name == "mlx" else "float64")
    compiled = ml.compile(_single(BatchNorm2d(3, momentum=0.25)), backend,
                          shapes={"input": SHAPE})
    module = nn.BatchNorm2d(3, momentum=0.25)
    initial = compiled.initial_state_dict
    assert sorted(initial) == ["batchnorm2d.running_mean", "batchnorm2d.running_var"]
    np.testing.assert_array_equal(_np(backend, initial["batchnorm2d.running_mean"]),
                                  module.running_mean.numpy())
    np.testing.assert_array_equal(_np(backend, initial["batchnorm2d.running_var"]),
                                  module.running_var.numpy())


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_kept_state_after_one_step_equals_fresh_torch_module(backend_name: str) -> None:
    dtype = "float32" if backend_name == "mlx" else "float64"
    backend = backend_of(backend_name, dtype)
    compiled = ml.compile(_single(BatchNorm2d(3, momentum=0.25)), backend,
                          shapes={"input": SHAPE})
    x = np.random.default_rng(1).normal(2.0, 3.0, SHAPE)
    params = compiled.randomize_params(seed=0)
    compiled.evaluate(params, {"input": backend.array(x)})  # keeps its own state

    module = nn.BatchNorm2d(3, momentum=0.25).double().train()
    module(torch.from_numpy(x))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(_np(backend, compiled.state["batchnorm2d.running_mean"]),
                               module.running_mean.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(_np(backend, compiled.state["batchnorm2d.running_var"]),
                               module.running_var.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layer,module", [
    (BatchNorm2d(3), nn.BatchNorm2d(3)),
    (LayerNorm(5), nn.LayerNorm(5)),
    (GroupNorm(num_groups=3, num_channels=3), nn.GroupNorm(3, 3)),
], ids=["batchnorm2d", "layernorm", "groupnorm"])
def test_constant_initialisers_equal_torch(layer: Model, module: nn.Module) -> None:
    compiled = ml.compile(_single(layer), ml.NumpyBackend(dtype=ml.float64),
                          shapes={"input": SHAPE})
    params = compiled.randomize_params(seed=3)
    name = next(iter(params)).split(".")[0]
    expected = {f"{name}.{k}": v.detach().numpy() for k, v in module.named_parameters()}
    assert sorted(params) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(_np(compiled.backend, params[key]), value)
