"""Embedding(max_norm, norm_type): outputs and gradients equal torch.nn.Embedding's on every
backend (rows above max_norm rescaled in the forward, gradients as PyTorch's in-place
renormalisation gives them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import Embedding, IOKey, Model
from tests.backend_names import BACKENDS, backend_of

CASES = {
    "l2": {"max_norm": 1.5},
    "l1": {"max_norm": 2.0, "norm_type": 1.0},
    "l3_padding": {"max_norm": 1.2, "norm_type": 3.0, "padding_idx": 1},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_max_norm_matches_torch(backend_name: str, case: str) -> None:
    kw = CASES[case]
    backend = backend_of(backend_name, "float32" if backend_name == "mlx" else "float64")
    weight = np.random.default_rng(0).standard_normal((6, 3))
    weight[4] *= 0.1  # a row under the limit: used as is
    ids = np.array([[2, 5, 0, 2], [4, 1, 3, 4]])
    g = np.random.default_rng(1).standard_normal((2, 4, 3))
    ref = nn.Embedding(6, 3, **kw).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(weight))
    expected = ref(torch.from_numpy(ids))
    expected.backward(torch.from_numpy(g))
    norms = np.linalg.norm(weight, ord=kw.get("norm_type", 2.0), axis=1)
    assert (norms[ids] > kw["max_norm"]).any() and (norms[ids] < kw["max_norm"]).any()

    model = Model()
    model |= Embedding(6, 3, **kw)(input="input", output=IOKey("output"))
    pm = ml.compile(model, backend, shapes={"input": list(ids.shape)})
    out, grads = pm.evaluate({"embedding.weight": backend.array(weight)},
                             {"input": backend.array(ids, dtype=ml.int64)},
                             output_gradients={"output": backend.array(g)})
    tol = 1e-5 if backend_name == "mlx" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(out["output"]), expected.detach().numpy(),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(grads["embedding.weight"]),
                               ref.weight.grad.numpy(), rtol=tol, atol=tol)


def test_max_norm_arguments() -> None:
    with pytest.raises(ml.ArgumentError, match="max_norm"):
        Embedding(4, 2, max_norm=-1.0)
    with pytest.raises(ml.ArgumentError, match="norm_type"):
        Embedding(4, 2, max_norm=1.0, norm_type=0)
    with pytest.raises(ml.ArgumentError, match="sparse"):
        Embedding(4, 2, sparse=True)
