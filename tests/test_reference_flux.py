"""The reference Mithril's Flux single-stream block, written with the reference's spellings,
against the same block written in PyTorch float64 (issue 14).

The block reads an IOKey's ``.shape`` inside a reshape target before the IOKey is connected
(``Reshape()(x, shape=(x.shape[0], x.shape[1], 3, heads, -1))``): building that expression
once created a second terminal of the IOKey's name, the reshape read a terminal without a
shape and ``linear2``'s input size stayed unknown. The outputs are compared on every backend,
the gradients of every parameter and input on NumPy with torch autograd.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril import IOKey
from mithril.models import (
    Buffer,
    Cast,
    Concat,
    Gelu,
    LayerNorm,
    Linear,
    Model,
    Multiply,
    Reshape,
    ScaledDotProduct,
    SiLU,
    Transpose,
)
from tests.backend_names import WIDEST, backend_of, ids_of, tolerances

BACKENDS = WIDEST
IDS = ids_of(BACKENDS)
HIDDEN, HEADS, MLP_RATIO = 8, 2, 2.0
SHAPES = {"input": [2, 5, HIDDEN], "vec": [2, HIDDEN], "pe": [1, 1, 5, 2, 2, 2]}

tol = tolerances((1e-10, 1e-12), (1e-4, 1e-5))


# ---- an IOKey's shape inside a reshape target, before the IOKey is connected ----
@pytest.mark.parametrize("target", ["items", "whole"])
def test_reshape_by_the_shape_of_an_unconnected_iokey_reads_one_terminal(target: str) -> None:
    x = IOKey("input")
    s = x.shape
    shape = (s[0], s[1], 3, 2, -1) if target == "items" else s
    m = Model()
    m |= Reshape()(x, shape=shape, output=IOKey("output"))
    assert m.input_terminals() == ["input"]
    m.set_shapes(input=[2, 5, 12])
    expected = [2, 5, 3, 2, 2] if target == "items" else [2, 5, 12]
    assert m.shapes["output"] == expected  # inferred before compiling
    b = ml.NumpyBackend(dtype=ml.float64)
    v = np.random.default_rng(0).normal(size=(2, 5, 12))
    out = ml.compile(m, b).evaluate({}, {"input": v})["output"]
    np.testing.assert_array_equal(out, v.reshape(expected))


# ---- the block, with the reference's spellings ----
def _rms_norm(dim: int, name: str, dtype: Any) -> Model:
    block = Model(name=name)
    x = IOKey("input")
    scale = IOKey("scale", shape=[dim], differentiable=True)
    block |= Cast(dtype=dtype)(input=x, output="input_casted")
    rrms = 1 / ((block.input_casted ** 2).mean(axis=-1, keepdim=True) + 1e-6).sqrt()
    block |= Cast()(block.input_casted * rrms, dtype=x.dtype(), output=IOKey("casted"))
    block |= Multiply()(left="casted", right=scale, output=IOKey("output"))
    return block


def _rope(freqs: IOKey, x: Any) -> Any:
    # pairs of the last axis rotated by 2x2 matrices: (B, H, L, D/2, 1, 2) against pe
    return freqs[..., 0] * x[..., 0] + freqs[..., 1] * x[..., 1]


def _attention() -> Model:
    block = Model()
    q, k, pe = IOKey("q", type=ml.Tensor), IOKey("k", type=ml.Tensor), IOKey("pe")
    for name, t in (("q", q), ("k", k)):
        s = t.shape
        block |= Reshape()(t, shape=(s[0], s[1], s[2], -1, 1, 2), output=f"{name}_pairs")
        block |= Reshape()(_rope(pe, getattr(block, f"{name}_pairs")), shape=s,
                           output=f"{name}_rot_raw")
        block |= Cast()(input=f"{name}_rot_raw", dtype=t.dtype(), output=f"{name}_rot")
    block |= ScaledDotProduct(is_causal=False)(query="q_rot", key="k_rot", value="v",
                                                output="context")
    ctx_shape = block.context.shape
    block |= Transpose(axes=(0, 2, 1, 3))(block.context, output="t_out")
    block.set_cout("t_out")
    block += Reshape()(shape=(ctx_shape[0], ctx_shape[2], -1), output=IOKey("output"))
    return block


def _heads(num_heads: int) -> Model:
    block = Model()
    x = IOKey("input")
    s = x.shape
    block += Reshape()(x, shape=(s[0], s[1], 3, num_heads, -1))
    block += Transpose(axes=(2, 0, 3, 1, 4))(output=IOKey("output"))
    return block


def single_stream_block(hidden: int, num_heads: int, mlp_ratio: float,
                        norm_dtype: Any = ml.float) -> Model:
    """Flux's single-stream block: modulated pre-norm, one linear to q, k, v and the MLP's
    hidden layer, RMS-normed q and k (computed in ``norm_dtype``: Flux's ``ml.float`` is
    float32), rotary attention, GELU(tanh), one linear back and a gated residual."""
    x, vec, pe = IOKey("input"), IOKey("vec"), IOKey("pe")
    head_dim, mlp_hidden = hidden // num_heads, int(hidden * mlp_ratio)
    mod = Model(name="modulation")
    mod |= SiLU()(input="input")
    mod += Linear(hidden * 3, name="lin")(output="lin_out")
    mod |= Buffer()(mod.lin_out[:, None, :].split(3, axis=-1), IOKey("mod_1"))

    block = Model()
    block |= mod(input=vec, mod_1="mod")
    block |= LayerNorm(use_scale=False, use_bias=False, name="pre_norm")(input=x,
                                                                         output="pre_norm")
    x_mod = (1 + block.mod[1]) * block.pre_norm + block.mod[0]
    block |= Linear(hidden * 3 + mlp_hidden, name="linear1")(input=x_mod, output="lin1_out")
    block |= _heads(num_heads)(input=block.lin1_out[..., : 3 * hidden], output="qkv")
    norm = Model(name="norm")
    norm |= _rms_norm(head_dim, "query_norm", norm_dtype)(input="q_in", output=IOKey("q_out"))
    norm |= _rms_norm(head_dim, "key_norm", norm_dtype)(input="k_in", output=IOKey("k_out"))
    block |= norm(q_in=block.qkv[0], k_in=block.qkv[1], q_out="q_out", k_out="k_out")
    block |= _attention()(q="q_out", k="k_out", v=block.qkv[2], pe=pe, output="attn")
    block |= Gelu(approximate=True)(input=block.lin1_out[..., 3 * hidden:], output="mlp_act")
    block |= Concat(n=2, axis=2)(input1="attn", input2="mlp_act", output="concat_out")
    block |= Linear(hidden, name="linear2")(input="concat_out", output="lin2_out")
    block |= Buffer()(x + block.mod[2] * block.lin2_out, output=IOKey("output"))
    return block


# ---- the same block in PyTorch ----
def torch_block(p: dict[str, torch.Tensor], hidden: int, num_heads: int,
                norm_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x, vec, pe = p["input"], p["vec"], p["pe"]
    lin = torch.nn.functional.silu(vec) @ p["modulation.lin.weight"].T + p["modulation.lin.bias"]
    shift, scale, gate = lin[:, None, :].chunk(3, dim=-1)
    normed = torch.nn.functional.layer_norm(x, (hidden,), eps=1e-5)
    h = ((1 + scale) * normed + shift) @ p["linear1.weight"].T + p["linear1.bias"]
    qkv, mlp = h[..., : 3 * hidden], h[..., 3 * hidden:]
    bsz, length = x.shape[0], x.shape[1]
    q, k, v = qkv.reshape(bsz, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)

    def rms(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t = t.to(norm_dtype)
        return (t * (1 / ((t ** 2).mean(-1, keepdim=True) + 1e-6).sqrt())).to(w.dtype) * w

    q, k = rms(q, p["norm.query_norm.scale"]), rms(k, p["norm.key_norm.scale"])

    def rotate(t: torch.Tensor) -> torch.Tensor:
        pairs = t.reshape(*t.shape[:-1], -1, 1, 2)
        return (pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]).reshape(t.shape)

    q, k = rotate(q), rotate(k)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
    att = att.permute(0, 2, 1, 3).reshape(bsz, length, -1)
    act = torch.nn.functional.gelu(mlp, approximate="tanh")
    out = torch.cat([att, act], dim=2) @ p["linear2.weight"].T + p["linear2.bias"]
    return x + gate * out


def _values(pm: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(14)
    shapes = pm.shapes
    return {k: rng.normal(size=shapes[k]) for k in [*pm.param_keys, *SHAPES]}


def _compiled(name: str, dtype: str, norm_dtype: Any = ml.float64) -> tuple[Any, Any]:
    b = backend_of(name, dtype)
    model = single_stream_block(HIDDEN, HEADS, MLP_RATIO, norm_dtype)
    pm = ml.compile(model, b, shapes=SHAPES, trainable_keys=set(SHAPES), jit=False)
    return b, pm


def test_block_builds_with_every_shape_inferred() -> None:
    model = single_stream_block(HIDDEN, HEADS, MLP_RATIO)
    model.set_shapes(**SHAPES)
    shapes = model.shapes
    assert shapes["linear2.weight"] == [HIDDEN, HIDDEN + int(HIDDEN * MLP_RATIO)]
    assert shapes["qkv"] == [3, 2, HEADS, 5, HIDDEN // HEADS]
    assert shapes["output"] == SHAPES["input"]


def _torch_out(vals: dict[str, np.ndarray], norm_dtype: torch.dtype) -> np.ndarray:
    with torch.no_grad():
        return torch_block({k: torch.tensor(v) for k, v in vals.items()}, HIDDEN, HEADS,
                           norm_dtype).numpy()


@pytest.mark.parametrize(("name", "dtype"), BACKENDS, ids=IDS)
def test_block_matches_torch(name: str, dtype: str) -> None:
    """RMS norms in float64 (in float32 on MLX): the whole block to float64 precision."""
    b, pm = _compiled(name, dtype, ml.float64 if dtype == "float64" else ml.float32)
    vals = _values(pm)
    out = b.to_numpy(pm.evaluate({k: b.array(v) for k, v in vals.items()})["output"])
    np.testing.assert_allclose(out, _torch_out(vals, torch.float64), **tol(dtype))


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_block_as_flux_writes_it_norms_in_float32(name: str) -> None:
    """With Flux's ``Cast(dtype=ml.float)`` the norms round to float32 inside a float64
    block: the outputs agree with PyTorch's float32 norms to float32 precision and differ
    from the all-float64 block by about that much."""
    b, pm = _compiled(name, "float64", ml.float)
    vals = _values(pm)
    out = b.to_numpy(pm.evaluate({k: b.array(v) for k, v in vals.items()})["output"])
    np.testing.assert_allclose(out, _torch_out(vals, torch.float32), rtol=1e-5, atol=1e-5)
    exact = _torch_out(vals, torch.float64)
    assert 1e-9 < np.max(np.abs(out - exact) / np.abs(exact)) < 1e-5


def test_block_gradients_match_torch_autograd() -> None:
    b, pm = _compiled("numpy", "float64")
    vals = _values(pm)
    out_grad = np.random.default_rng(5).normal(size=SHAPES["input"])
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in vals.items()}
    torch_block(leaves, HIDDEN, HEADS).backward(torch.tensor(out_grad))
    _, grads = pm.evaluate({k: b.array(v) for k, v in vals.items()},
                           output_gradients={"output": b.array(out_grad)})
    assert set(grads) == set(leaves)
    for k, leaf in leaves.items():
        assert leaf.grad is not None
        np.testing.assert_allclose(b.to_numpy(grads[k]), leaf.grad.numpy(), rtol=1e-9,
                                   atol=1e-11, err_msg=k)
