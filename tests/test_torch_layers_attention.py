"""MultiheadAttention with PyTorch's masks, dropout and attention weights, against
``torch.nn.MultiheadAttention`` (float64, random parameters) on every backend: outputs,
averaged and per-head weights, and the gradients of every parameter and of the query."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import Model, MultiheadAttention
from tests.backend_names import BACKENDS, backend_of

N, L, S, E, H = 2, 4, 5, 8, 2


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    bool_mask = rng.random((L, S)) < 0.4
    bool_mask[:, 0] = False  # every query sees a key (PyTorch gives NaN otherwise)
    padding = np.zeros((N, S), bool)
    padding[0, -1] = padding[1, 2] = True
    return {"bool2d": bool_mask, "padding": padding,
            "float2d": rng.standard_normal((L, S)),
            "float3d": rng.standard_normal((N * H, L, S)),
            "float_padding": rng.standard_normal((N, S))}


# name: (MultiheadAttention keywords, {input: mask name}, torch forward keywords)
CASES: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]] = {
    "bool_masks_averaged_weights": (
        {"attn_mask": "bool", "key_padding_mask": "bool", "need_weights": True},
        {"attn_mask": "bool2d", "key_padding_mask": "padding"}, {}),
    "float_mask_per_head_weights": (
        {"attn_mask": "float", "need_weights": True, "average_attn_weights": False},
        {"attn_mask": "float3d"}, {"average_attn_weights": False}),
    "float_2d_mask_and_float_padding": (
        {"attn_mask": "float", "key_padding_mask": "float"},
        {"attn_mask": "float2d", "key_padding_mask": "float_padding"}, {}),
    "padding_only_weights": (
        {"key_padding_mask": "bool", "need_weights": True}, {"key_padding_mask": "padding"}, {}),
    "weights_only": ({"need_weights": True}, {}, {}),
}


def _torch_module(**kw: Any) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=True, **kw).double()
    with torch.no_grad():  # off PyTorch's zero biases
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return ref


def _params(ref: nn.Module, backend: Any) -> dict[str, Any]:
    return {f"multiheadattention.{k}": backend.array(v.detach().numpy())
            for k, v in ref.named_parameters()}


def _model(terminals: dict[str, str], **kw: Any) -> Model:
    model = Model()
    outs = {"attn_weights": "attn_weights"} if kw.get("need_weights") else {}
    model |= MultiheadAttention(E, H, **kw)(query="q", key="kv", value="kv", output="output",
                                            **outs, **{k: k for k in terminals})
    return model


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_masks_and_weights_match_torch(backend_name: str, case: str) -> None:
    kw, feeds, torch_kw = CASES[case]
    masks = _masks()
    backend = backend_of(backend_name)
    rng = np.random.default_rng(0)
    q, kv = rng.standard_normal((N, L, E)), rng.standard_normal((N, S, E))
    ref = _torch_module()
    tq = torch.tensor(q, requires_grad=True)
    out, weights = ref(tq, torch.tensor(kv), torch.tensor(kv), need_weights=True,
                       **{k: torch.from_numpy(masks[v]) for k, v in feeds.items()}, **torch_kw)
    g_out = rng.standard_normal(tuple(out.shape))
    g_w = rng.standard_normal(tuple(weights.shape))
    loss = (out * torch.from_numpy(g_out)).sum()
    if kw.get("need_weights"):
        loss = loss + (weights * torch.from_numpy(g_w)).sum()
    loss.backward()

    pm = ml.compile(_model(feeds, **kw), backend, shapes={"q": [N, L, E], "kv": [N, S, E]},
                    trainable_keys={"q"})
    grads_in = {"output": backend.array(g_out)}
    if kw.get("need_weights"):
        grads_in["attn_weights"] = backend.array(g_w)
    outs, grads = pm.evaluate({**_params(ref, backend), "q": backend.array(q)},
                              {"kv": backend.array(kv),
                               **{k: backend.array(masks[v]) for k, v in feeds.items()}},
                              output_gradients=grads_in)
    tol = 1e-10
    np.testing.assert_allclose(backend.to_numpy(outs["output"]), out.detach().numpy(),
                               rtol=tol, atol=tol)
    if kw.get("need_weights"):
        np.testing.assert_allclose(backend.to_numpy(outs["attn_weights"]),
                                   weights.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(grads["q"]), tq.grad.numpy(), rtol=tol, atol=tol)
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(backend.to_numpy(grads[f"multiheadattention.{k}"]),
                                   p.grad.numpy(), rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_causal_with_padding_mask_matches_torch(backend_name: str) -> None:
    backend = backend_of(backend_name)
    x = np.random.default_rng(1).standard_normal((N, L, E))
    padding = np.zeros((N, L), bool)
    padding[1, 1] = True
    ref = _torch_module()
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    tx = torch.tensor(x)
    expected, _ = ref(tx, tx, tx, attn_mask=causal, key_padding_mask=torch.from_numpy(padding))
    model = Model()
    model |= MultiheadAttention(E, H, is_causal=True, key_padding_mask="bool")(
        query="x", key="x", value="x", key_padding_mask="pad", output="output")
    pm = ml.compile(model, backend, shapes={"x": [N, L, E]}, inference=True)
    out = pm.evaluate(_params(ref, backend), {"x": backend.array(x),
                                              "pad": backend.array(padding)})["output"]
    np.testing.assert_allclose(backend.to_numpy(out), expected.detach().numpy(), rtol=1e-10,
                               atol=1e-10)


def _by_hand(ref: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
             keep: torch.Tensor) -> torch.Tensor:
    """PyTorch's attention with a given dropout keep-mask (scaled), from the module's
    parameters."""
    w, b = ref.in_proj_weight, ref.in_proj_bias
    proj = [x @ w[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E] for i, x in enumerate((q, kv, kv))]
    qh, kh, vh = (p.reshape(p.shape[0], p.shape[1], H, E // H).transpose(1, 2) for p in proj)
    probs = torch.softmax((qh * (E // H) ** -0.5) @ kh.transpose(-2, -1), -1)
    merged = ((probs * keep) @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], E)
    return ref.out_proj(merged)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_dropout_drops_weights_in_training_only(backend_name: str) -> None:
    p = 0.3
    backend = backend_of(backend_name)
    backend.set_seed(0)
    rng = np.random.default_rng(2)
    n, lq, ls = 3, 6, 7
    q, kv = rng.standard_normal((n, lq, E)), rng.standard_normal((n, ls, E))
    ref = _torch_module(dropout=p)
    model = Model()
    model |= MultiheadAttention(E, H, dropout=p, need_weights=True, average_attn_weights=False)(
        query="q", key="kv", value="kv", output="output", attn_weights="attn_weights")
    shapes = {"q": [n, lq, E], "kv": [n, ls, E]}
    train = ml.compile(model, backend, shapes=shapes, trainable_keys={"q"})
    g = rng.standard_normal((n, lq, E))
    outs, grads = train.evaluate({**_params(ref, backend), "q": backend.array(q)},
                                 {"kv": backend.array(kv)},
                                 output_gradients={"output": backend.array(g)})
    dropped = backend.to_numpy(outs["attn_weights"])
    keep = torch.from_numpy((dropped != 0) / (1 - p))
    assert 0.15 < float((dropped == 0).mean()) < 0.45
    tq = torch.tensor(q, requires_grad=True)
    expected = _by_hand(ref, tq, torch.tensor(kv), keep)
    expected.backward(torch.from_numpy(g))
    with torch.no_grad():  # the kept weights are the softmax's, scaled by 1 / (1 - p)
        full = _by_hand(ref, tq, torch.tensor(kv), torch.ones_like(keep))
        assert torch.allclose(full, ref.eval()(tq, torch.tensor(kv), torch.tensor(kv))[0])
    np.testing.assert_allclose(backend.to_numpy(outs["output"]), expected.detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(grads["q"]), tq.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
    for k, prm in ref.named_parameters():
        np.testing.assert_allclose(backend.to_numpy(grads[f"multiheadattention.{k}"]),
                                   prm.grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=k)
    infer = ml.compile(model, backend, shapes=shapes, inference=True)
    out = infer.evaluate(_params(ref, backend),
                         {"q": backend.array(q), "kv": backend.array(kv)})["output"]
    np.testing.assert_allclose(backend.to_numpy(out), full.numpy(), rtol=1e-10, atol=1e-10)


def test_float32_masks_keep_float32() -> None:
    backend = backend_of("numpy", "float32")
    pm = ml.compile(_model({"attn_mask": ""}, attn_mask="bool"), backend,
                    shapes={"q": [N, L, E], "kv": [N, S, E]}, inference=True)
    params = {k: backend.array(v) for k, v in pm.randomize_params().items()}
    out = pm.evaluate(params, {"q": backend.randn(N, L, E), "kv": backend.randn(N, S, E),
                               "attn_mask": backend.array(_masks()["bool2d"])})["output"]
    assert out.dtype == np.float32


def test_mask_arguments() -> None:
    with pytest.raises(ml.ArgumentError, match="attn_mask"):
        MultiheadAttention(8, 2, attn_mask="int")
    with pytest.raises(ml.ArgumentError, match="dropout"):
        MultiheadAttention(8, 2, dropout=1.0)
