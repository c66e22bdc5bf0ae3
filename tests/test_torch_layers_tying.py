"""Weight tying by name: ``Linear(...)(weight="wte.weight")`` shares the embedding's weight
(one parameter, gradients of both uses summed), checked against a tied torch model on every
backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import Embedding, IOKey, Linear, Model, Tanh
from tests.backend_names import BACKENDS, backend_of


def _tied_model() -> Model:
    model = Model()
    model |= Embedding(7, 4, name="wte")(input="input", output="h")
    model |= Tanh()(input="h", output="t")
    model |= Linear(7, use_bias=False)(input="t", weight="wte.weight", output=IOKey("output"))
    return model


class TorchTied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.wte(ids)))


def test_tying_by_name_makes_one_parameter() -> None:
    pm = ml.compile(_tied_model(), ml.NumpyBackend(), shapes={"input": [2, 3]})
    assert sorted(pm.randomize_params()) == ["wte.weight"]
    assert pm.shapes["wte.weight"] == [7, 4]


def test_an_unknown_name_still_makes_a_new_input() -> None:
    model = Model()
    model |= Embedding(7, 4, name="wte")(input="input", output="h")
    model |= Linear(7, use_bias=False)(input="h", weight="head_weight", output=IOKey("output"))
    pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 3]})
    assert sorted(pm.randomize_params()) == ["head_weight", "wte.weight"]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_tied_gradients_are_summed_like_torch(backend_name: str) -> None:
    backend = backend_of(backend_name, "float32" if backend_name == "mlx" else "float64")
    torch.manual_seed(0)
    ref = TorchTied().double()
    ids = np.array([[1, 6, 0], [3, 3, 5]])
    g = np.random.default_rng(1).standard_normal((2, 3, 7))
    out = ref(torch.from_numpy(ids))
    out.backward(torch.from_numpy(g))
    pm = ml.compile(_tied_model(), backend, shapes={"input": list(ids.shape)})
    params = {"wte.weight": backend.array(ref.wte.weight.detach().numpy())}
    outs, grads = pm.evaluate(params, {"input": backend.array(ids, dtype=ml.int64)},
                              output_gradients={"output": backend.array(g)})
    tol = 1e-5 if backend_name == "mlx" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(outs["output"]), out.detach().numpy(),
                               rtol=tol, atol=tol)
    # the gradient is the sum of the embedding's and the head's: neither alone matches
    np.testing.assert_allclose(backend.to_numpy(grads["wte.weight"]),
                               ref.wte.weight.grad.numpy(), rtol=tol, atol=tol)
