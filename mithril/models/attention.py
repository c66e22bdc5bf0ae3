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
from ._build import add_op
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
    is_causal=True``).

    Masks are inputs, as in PyTorch's ``forward``; since a terminal has one type, the
    constructor says which are used and of what type: ``attn_mask="bool"`` / ``"float"`` adds
    an input terminal ``attn_mask`` of shape ``(L, S)`` or ``(N * num_heads, L, S)``, and
    ``key_padding_mask="bool"`` / ``"float"`` an input ``key_padding_mask`` ``(N, S)``. As in
    PyTorch, a boolean mask is True where attending is *not* allowed (the score becomes
    ``-inf``), a float mask is added to the scores, and the two masks (and ``is_causal``) add
    up; a query that may attend to nothing gets NaN, as in PyTorch. ``dropout=p`` drops
    attention weights in training (``ml.compile(model, backend)``; none with
    ``inference=True``). ``need_weights=True`` adds the output ``attn_weights``: the
    attention weights (after dropout), averaged over the heads ``(N, L, S)``, or per head
    ``(N, num_heads, L, S)`` with ``average_attn_weights=False``. Not supported:
    ``add_bias_kv``, ``add_zero_attn``.

    (The ``scaled_dot_product`` primitive, ``ScaledDotProduct``, takes the opposite boolean
    convention, that of ``F.scaled_dot_product_attention``: True where attending *is*
    allowed; a float mask is added.)

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
                 is_causal: bool = False, attn_mask: str | None = None,
                 key_padding_mask: str | None = None, need_weights: bool = False,
                 average_attn_weights: bool = True, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ArgumentError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not isinstance(num_heads, int) or num_heads < 1 or embed_dim % num_heads:
            raise ArgumentError(f"embed_dim={embed_dim} must be divisible by num_heads="
                                f"{num_heads!r}")
        if not (isinstance(dropout, int | float) and 0 <= dropout < 1):
            raise ArgumentError(f"MultiheadAttention: dropout must be a probability in [0, 1), "
                                f"got {dropout!r}")
        for what, kind in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
            if kind not in (None, "bool", "float"):
                raise ArgumentError(f"MultiheadAttention: {what} must be None, 'bool' or "
                                    f"'float' (the type of the mask input), got {kind!r}")
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
        if attn_mask or key_padding_mask or dropout or need_weights:
            self._attention_by_parts(heads, float(dropout), attn_mask, key_padding_mask,
                                     need_weights, average_attn_weights)
        else:
            self |= Operator(CATALOGUE["scaled_dot_product"], attn_mask=None,
                             is_causal=is_causal, scale=None)(
                query=heads[0], key=heads[1], value=heads[2], output="attention")
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

    def _attention_by_parts(self, heads: list[Connection], p: float, attn_mask: str | None,
                            key_padding_mask: str | None, need_weights: bool,
                            average: bool) -> None:
        """PyTorch's attention with masks, dropout and weights: scores of the scaled query,
        plus the masks as ``-inf`` / added floats, softmax, dropout, times the values."""
        q, k, v = heads  # (N, H, L, E / H), (N, H, S, E / H)
        scores = (q * (1.0 / float(self.head_dim)) ** 0.5) @ k.transpose((0, 1, 3, 2))
        lq, ls = scores.shape[-2], scores.shape[-1]
        if self.is_causal:
            rows = add_op(self, "arange", stop=lq)
            cols = add_op(self, "arange", stop=ls)
            scores = scores + _additive(self, rows[:, None] < cols[None, :], scores)
        if attn_mask is not None:
            mask = IOKey("attn_mask", type=bool if attn_mask == "bool" else float,
                         differentiable=False)
            added = add_op(self, "buffer", input=mask)
            if attn_mask == "bool":
                added = _additive(self, added, scores)
            # (L, S) or (N * H, L, S) -> (1 or N, 1 or H, L, S)
            flat = added.reshape((-1, lq, ls))
            batch = (flat.shape[0] + (self.num_heads - 1)) // self.num_heads
            scores = scores + flat.reshape((batch, -1, lq, ls))
        if key_padding_mask is not None:
            mask = IOKey("key_padding_mask", type=bool if key_padding_mask == "bool" else float,
                         differentiable=False)
            added = add_op(self, "buffer", input=mask)
            if key_padding_mask == "bool":
                added = _additive(self, added, scores)
            scores = scores + added[:, None, None, :]
        weights = add_op(self, "softmax", input=scores, axis=-1)
        if p:
            weights = add_op(self, "dropout", input=weights, p=p)
        add_op(self, "matmul", out="attention", left=weights, right=v)
        if need_weights:
            add_op(self, "buffer", out=IOKey("attn_weights"),
                   input=weights.mean(axis=1) if average else weights)


def _additive(model: Model, hidden: Connection, like: Connection) -> Connection:
    """A boolean mask (True: hidden) as the float to add to the scores (``-inf`` / 0), in
    the dtype of ``like``."""
    added = add_op(model, "where", condition=hidden, input1=float("-inf"), input2=0.0)
    return add_op(model, "cast", input=added, dtype=add_op(model, "dtype_of", input=like))


__all__ = ["MultiheadAttention"]
