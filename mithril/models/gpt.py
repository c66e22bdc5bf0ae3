"""GPT-2, built from the layer library: a reference architecture and a build-speed benchmark.

``gpt2()`` builds the 12-layer, 768-wide model (vocabulary 50257, context 1024); smaller
configurations are a matter of arguments. Token ids arrive on ``input`` ``(B, T)`` and
position ids on ``positions`` ``(T,)`` (``0 .. T-1``, as PyTorch code gets from
``torch.arange(T)``); ``output`` holds the logits ``(B, T, vocab)``. As in GPT-2, the language
model head shares its weight with the token embedding (``wte``).
"""

from __future__ import annotations

from ..errors import ArgumentError
from ..framework.logical.model import IOKey, Model
from .layers import Embedding, Gelu, LayerNorm, Linear
from .primitives import Add, ScaledDotProduct


def causal_self_attention(d_model: int, n_head: int, name: str = "attn") -> Model:
    """GPT-2 attention: one ``c_attn`` projection to q, k, v, causal attention, ``c_proj``.

    >>> import mithril as ml
    >>> pm = ml.compile(causal_self_attention(8, 2), ml.NumpyBackend(),
    ...                 shapes={"input": [1, 3, 8]})
    >>> pm.shapes["output"]
    [1, 3, 8]
    """
    if d_model % n_head:
        raise ArgumentError(f"d_model={d_model} is not divisible by n_head={n_head}")
    attn = Model(name=name)
    attn |= Linear(3 * d_model, name="c_attn")(input="input", output="qkv")
    shape = attn.input.shape
    b, t = shape[0], shape[1]
    qkv = attn.qkv
    head = d_model // n_head
    q, k, v = (qkv[:, :, i * d_model:(i + 1) * d_model].reshape((b, t, n_head, head))
               .transpose((0, 2, 1, 3)) for i in range(3))
    attn |= ScaledDotProduct(is_causal=True)(query=q, key=k, value=v, output="heads")
    merged = attn.heads.transpose((0, 2, 1, 3)).reshape((b, t, d_model))
    attn |= Linear(d_model, name="c_proj")(input=merged, output=IOKey("output"))
    return attn


def gpt2_block(d_model: int, n_head: int, name: str | None = None) -> Model:
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""
    block = Model(name=name)
    block |= LayerNorm(d_model, name="ln_1")(input="input", output="h1")
    block |= causal_self_attention(d_model, n_head)(input="h1", output="a")
    block |= Add()(left="input", right="a", output="x1")
    block |= LayerNorm(d_model, name="ln_2")(input="x1", output="h2")
    mlp = Model(name="mlp")
    mlp |= Linear(4 * d_model, name="c_fc")(input="input")
    mlp += Gelu(approximate="tanh")
    mlp += Linear(d_model, name="c_proj")(output=IOKey("output"))
    block |= mlp(input="h2", output="m")
    block |= Add()(left="x1", right="m", output=IOKey("output"))
    return block


def gpt2(vocab_size: int = 50257, context_length: int = 1024, n_layer: int = 12,
         n_head: int = 12, d_model: int = 768, name: str = "gpt2") -> Model:
    """GPT-2 (defaults: the 124M-parameter configuration).

    >>> import mithril as ml
    >>> m = gpt2(vocab_size=11, context_length=8, n_layer=1, n_head=2, d_model=8)
    >>> pm = ml.compile(m, ml.NumpyBackend(), shapes={"input": [2, 5], "positions": [5]})
    >>> pm.shapes["output"]
    [2, 5, 11]
    """
    model = Model(name=name)
    model |= Embedding(vocab_size, d_model, name="wte")(
        input=IOKey("input", type=int), weight="wte", output="tok")
    model |= Embedding(context_length, d_model, name="wpe")(
        input=IOKey("positions", type=int), weight="wpe", output="pos")
    model.set_shapes(input=["B", "T"], positions=["T"])  # one call: one shared T
    model |= Add()(left="tok", right="pos", output="h")
    current = "h"
    for i in range(n_layer):
        model |= gpt2_block(d_model, n_head, name=f"h_{i}")(input=current, output=f"x{i}")
        current = f"x{i}"
    model |= LayerNorm(d_model, name="ln_f")(input=current, output="final")
    # the head shares the token embedding: Linear's weight (vocab, d) is wte's layout
    model |= Linear(vocab_size, use_bias=False, name="lm_head")(
        input="final", weight="wte", output=IOKey("output"))
    model.set_differentiability(wte=True, wpe=True)
    return model
