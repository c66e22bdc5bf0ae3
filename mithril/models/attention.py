"""``MultiheadAttention``: PyTorch's ``nn.MultiheadAttention`` from catalogue primitives.

The projections are ``linear`` primitives on slices of ``in_proj_weight`` / ``in_proj_bias``,
the heads are a reshape and a transpose, and the attention itself is the
``scaled_dot_product`` primitive; ``out_proj`` is a ``Linear``. Parameter keys are PyTorch's,
so ``nn.MultiheadAttention``'s ``state_dict`` maps onto the compiled model key for key.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.model import Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE
from .layers import Linear


def _weight(name: str, shape: list[Any]) -> IOKey:
    return IOKey(name, shape=shape, type=float, differentiable=True)


class MultiheadAttention(Model):
    """``nn.MultiheadAttention(embed_dim, num_heads, bias=True, kdim=None, vdim=None,
    batch_first=True)`` with an optional causal mask (``is_causal=True``).

    Terminals: ``query`` ``(N, L, E)``, ``key`` ``(N, S, kdim)``, ``value`` ``(N, S, vdim)``
    (sequence first, ``(L, N, E)``, with ``batch_first=False``) and ``output`` ``(N, L, E)``.
    Connect one tensor to all three for self-attention, different ones for cross-attention.
    Note the default ``batch_first=True``, unlike PyTorch's ``False``.

    Parameters (PyTorch's names and layouts): ``in_proj_weight`` ``(3E, E)`` and
    ``in_proj_bias`` ``(3E,)`` hold the query, key and value projections stacked in that order
    (with ``kdim`` / ``vdim`` different from ``E``: ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight`` instead of ``in_proj_weight``); ``out_proj.weight`` ``(E, E)`` and
    ``out_proj.bias``. ``bias=False`` drops both biases.

    ``is_causal=True`` lets query position ``i`` attend to key positions ``<= i`` only
    (PyTorch: ``attn_mask=nn.Transformer.generate_square_subsequent_mask(L),
    is_causal=True``). Not supported: attention ``dropout``, ``add_bias_kv``,
    ``add_zero_attn``, other masks, returning the attention weights.

    >>> import mithril as ml
    >>> from mithril.models import Model, MultiheadAttention
    >>> model = Model()
    >>> model |= MultiheadAttention(16, num_heads=4)(query="x", key="x", value="x",
    ...                                                output="output")
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"x": [2, 5, 16]})
    >>> pm.shapes["output"], pm.shapes["multiheadattention.in_proj_weight"]
    ([2, 5, 16], [48, 16])
    >>> sorted(pm.randomize_params())  # doctest: +NORMALIZE_WHITESPACE
    ['multiheadattention.in_proj_bias', 'multiheadattention.in_proj_weight',
     'multiheadattention.out_proj.bias', 'multiheadattention.out_proj.weight']
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = True, *,
                 is_causal: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ArgumentError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not isinstance(num_heads, int) or num_heads < 1 or embed_dim % num_heads:
            raise ArgumentError(f"embed_dim={embed_dim} must be divisible by num_heads="
                                f"{num_heads!r}")
        if dropout:
            raise ArgumentError("MultiheadAttention: attention dropout is not supported (use "
                                "dropout=0.0; a Dropout layer can follow the output)")
        if add_bias_kv or add_zero_attn:
            raise ArgumentError("MultiheadAttention: add_bias_kv and add_zero_attn are not "
                                "supported")
        e = embed_dim
        kdim = e if kdim is None else kdim
        vdim = e if vdim is None else vdim
        self.embed_dim, self.num_heads, self.head_dim = e, num_heads, e // num_heads
        self.batch_first, self.is_causal, self.use_bias = batch_first, is_causal, bias
        packed = kdim == e and vdim == e

        # ---- inputs, batch first ----
        inputs: dict[str, Connection] = {}
        for term, size in (("query", e), ("key", kdim), ("value", vdim)):
            if batch_first:
                self |= Operator(CATALOGUE["buffer"])(
                    input=IOKey(term, shape=["N", None, size]), output=f"{term}_bf")
            else:
                self |= Operator(CATALOGUE["transpose"], axes=(1, 0, 2))(
                    input=IOKey(term, shape=[None, "N", size]), output=f"{term}_bf")
            inputs[term] = getattr(self, f"{term}_bf")

        # ---- projection weights: slices of the packed tensors, or three tensors ----
        if packed:
            self |= Operator(CATALOGUE["indexer"], index=slice(0, e))(
                input=_weight("in_proj_weight", [3 * e, e]), output="q_weight")
            weights = [self.q_weight, self.in_proj_weight[e:2 * e],
                       self.in_proj_weight[2 * e:3 * e]]
        else:
            weights = []
            for term, size in (("q", e), ("k", kdim), ("v", vdim)):
                self |= Operator(CATALOGUE["buffer"])(
                    input=_weight(f"{term}_proj_weight", [e, size]), output=f"{term}_weight")
                weights.append(getattr(self, f"{term}_weight"))
        biases: list[Any] = [None, None, None]
        if bias:
            self |= Operator(CATALOGUE["indexer"], index=slice(0, e))(
                input=_weight("in_proj_bias", [3 * e]), output="q_bias")
            biases = [self.q_bias, self.in_proj_bias[e:2 * e], self.in_proj_bias[2 * e:3 * e]]

        # ---- project, split heads: (N, T, E) -> (N, H, T, E / H) ----
        heads = []
        for (term, x), w, b in zip(inputs.items(), weights, biases, strict=True):
            self |= Operator(CATALOGUE["linear"])(input=x, weight=w, bias=b,
                                                  output=f"{term}_proj")
            shape = x.shape
            split = getattr(self, f"{term}_proj").reshape(
                (shape[0], shape[1], num_heads, self.head_dim))
            heads.append(split.transpose((0, 2, 1, 3)))

        # ---- attention, merge heads, output projection ----
        self |= Operator(CATALOGUE["scaled_dot_product"], attn_mask=None, is_causal=is_causal,
                         scale=None)(query=heads[0], key=heads[1], value=heads[2],
                                     output="attention")
        q_shape = inputs["query"].shape
        merged = self.attention.transpose((0, 2, 1, 3)).reshape((q_shape[0], q_shape[1], e))
        out_proj = Linear(e, bias, input_size=e, name="out_proj")
        if batch_first:
            self |= out_proj(input=merged, output=IOKey("output"))
        else:
            self |= out_proj(input=merged, output="output_bf")
            self |= Operator(CATALOGUE["transpose"], axes=(1, 0, 2))(
                input="output_bf", output=IOKey("output"))
        self.set_cin("query")
        self.set_cout("output")

        # ---- PyTorch's initialisation (xavier-uniform projections, zero biases) ----
        if packed:
            self.set_initializer("in_proj_weight", "xavier_uniform", [e, 3 * e])
        else:
            for term, size in (("q", e), ("k", kdim), ("v", vdim)):
                self.set_initializer(f"{term}_proj_weight", "xavier_uniform", [size, e])
        if bias:
            self.set_initializer("in_proj_bias", "zeros")
            self.set_initializer("out_proj.bias", "zeros")


__all__ = ["MultiheadAttention"]
