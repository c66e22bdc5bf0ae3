"""Embedding(padding_idx): outputs and gradients equal torch.nn.Embedding's on every backend
(the padding row's gradient is zero, so training never moves it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import Embedding, IOKey, Model
from tests.backend_names import BACKENDS, backend_of


@pytest.mark.parametrize("padding_idx", [2, -1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_padding_row_gets_no_gradient(backend_name, padding_idx):
    dtype = "float32" if backend_name == "mlx" else "float64"
    backend = backend_of(backend_name, dtype)
    torch.manual_seed(0)
    ref = nn.Embedding(6, 3, padding_idx=padding_idx).double()
    with torch.no_grad():
        ref.weight.normal_()  # a non-zero padding row: its value is used as is
    ids = np.array([[2, 5, 0, 2], [5, 1, 3, 4]])
    model = Model()
    model |= Embedding(6, 3, padding_idx=padding_idx)(input="input", output=IOKey("output"))
    pm = ml.compile(model, backend, shapes={"input": list(ids.shape)})
    params = {"embedding.weight": backend.array(ref.weight.detach().numpy())}
    grad_out = np.random.default_rng(1).standard_normal((2, 4, 3))
    out, grads = pm.evaluate(params, {"input": backend.array(ids)},
                             output_gradients={"output": backend.array(grad_out)})
    expected = ref(torch.from_numpy(ids))
    expected.backward(torch.from_numpy(grad_out))
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(out["output"]), expected.detach().numpy(),
                               rtol=tol, atol=tol)
    got = backend.to_numpy(grads["embedding.weight"])
    np.testing.assert_allclose(got, ref.weight.grad.numpy(), rtol=tol, atol=tol)
    row = padding_idx % 6
    assert np.all(got[row] == 0) and np.abs(got).sum() > 0


def test_padding_idx_arguments():
    with pytest.raises(ml.ArgumentError, match="not a row"):
        Embedding(4, 2, padding_idx=4)
    with pytest.raises(ml.ArgumentError, match="needs num_embeddings"):
        Embedding(None, 2, padding_idx=0)
    with pytest.raises(ml.ArgumentError, match="max_norm"):
        Embedding(4, 2, max_norm=0.0)  # max_norm itself: tests/test_torch_layers_embedding.py
