"""GPT-2 from the layer library: the full model compiles everywhere; a small one matches a
hand-written PyTorch GPT-2 with the same weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models.gpt import gpt2

BACKENDS = ["NumpyBackend", "TorchBackend", "JaxBackend", "MlxBackend"]
SMALL = {"vocab_size": 50, "context_length": 16, "n_layer": 2, "n_head": 4, "d_model": 32}


class TorchBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.h)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(nn.functional.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class TorchGPT2(nn.Module):
    def __init__(self, vocab_size, context_length, n_layer, n_head, d_model) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d_model), nn.Embedding(context_length,
                                                                               d_model)
        self.blocks = nn.ModuleList(TorchBlock(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied head


def _torch_param(net: TorchGPT2, key: str) -> nn.Parameter:
    """The torch parameter that holds Mithril's ``key``."""
    names = {"ln_1": "ln_1", "ln_2": "ln_2", "attn.c_attn": "c_attn", "attn.c_proj": "attn_proj",
             "mlp.c_fc": "c_fc", "mlp.c_proj": "mlp_proj"}
    if key in ("wte", "wpe"):
        return getattr(net, key).weight
    if key.startswith("ln_f."):
        return getattr(net.ln_f, key.split(".")[1])
    layer, rest = key.split(".", 1)
    sub, kind = rest.rsplit(".", 1)
    block = net.blocks[int(layer.removeprefix("h_"))]
    return getattr(getattr(block, names[sub]), kind)


def _load(net: TorchGPT2, params: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for key, value in params.items():
            _torch_param(net, key).copy_(torch.from_numpy(value))


def _random_params() -> dict[str, np.ndarray]:
    """PyTorch's initialisation, then LayerNorm scales and shifts away from their 1 / 0
    defaults (so that swapping ln_1 and ln_2, or dropping a shift, changes the numbers)."""
    ref = ml.compile(gpt2(**SMALL), ml.NumpyBackend(dtype=ml.float64))
    params = {k: np.asarray(v) for k, v in ref.randomize_params(seed=0).items()}
    rng = np.random.default_rng(1)
    for k, v in params.items():
        if ".ln_" in f".{k}" and k.endswith(".weight"):
            params[k] = 1.0 + 0.5 * rng.standard_normal(v.shape)
        elif ".ln_" in f".{k}" and k.endswith(".bias"):
            params[k] = 0.5 * rng.standard_normal(v.shape)
    assert len(params) == 4 + 12 * SMALL["n_layer"]  # wte, wpe, ln_f and 12 per block
    return params


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_small_gpt2_matches_handwritten_pytorch(backend_name):
    """Logits and the gradients of every parameter (for random output gradients) equal a
    hand-written PyTorch GPT-2's with the same weights, in float64."""
    backend = getattr(ml, backend_name)(dtype=ml.float64)
    params = _random_params()
    net = TorchGPT2(**SMALL).double()
    _load(net, params)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, SMALL["vocab_size"], (3, 11))
    out_grad = rng.standard_normal((3, 11, SMALL["vocab_size"]))
    logits = net(torch.from_numpy(idx))
    (logits * torch.from_numpy(out_grad)).sum().backward()
    pm = ml.compile(gpt2(**SMALL), backend)
    out, grads = pm.evaluate({k: backend.array(v) for k, v in params.items()},
                             {"input": backend.array(idx), "positions": backend.arange(11)},
                             output_gradients={"output": backend.array(out_grad)})
    np.testing.assert_allclose(backend.to_numpy(out["output"]), logits.detach().numpy(),
                               rtol=1e-9, atol=1e-9)
    assert set(grads) == set(params)
    for key in params:
        want = _torch_param(net, key).grad.numpy()
        np.testing.assert_allclose(backend.to_numpy(grads[key]), want, rtol=1e-7, atol=1e-9,
                                   err_msg=f"gradient of {key}")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_full_gpt2_compiles_on_every_backend(backend_name):
    pm = ml.compile(gpt2(), getattr(ml, backend_name)())
    assert pm.shapes["output"] == ["B", "T", 50257]
    assert sum(math.prod(s.shape) for s in pm._params.values()) == 124_439_808  # GPT-2 small
