"""The reference Mithril's size-free recurrent cells (``RNNCell()``, ``LSTMCell()``), beside the
guide's ``nn.RNNCell``/``nn.LSTMCell``-style ``RNNCell(input_size, hidden_size)``;
``mithril.models.RNNCell`` / ``LSTMCell`` give one or the other by their arguments. Also the
sequence models over them (``ManyToOne``, ``OneToMany``, ``EncoderDecoder``,
``EncoderDecoderInference``).

The reference's cell works on variable-length batches sorted by length: at each step the
``input`` has ``N`` rows, the previous hidden state ``prev_hidden`` ``M >= N`` rows; the first
``N`` rows of ``prev_hidden`` continue, the other ``M - N`` (sequences that already ended) are
passed out as ``hidden_compl``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.model import IOKey, Model
from . import recurrent as _recurrent
from ._build import add_op
from .layers import Linear
from .reference import conn_of, param_of

_UNSET: Any = object()


def _guide_when_sized(cls: Any, input_size: Any = _UNSET, hidden_size: Any = _UNSET,
                      *args: Any, **kwargs: Any) -> Any:
    """``__new__`` of the size-free reference cells: given sizes (or PyTorch's arguments),
    the guide's ``nn.RNNCell`` / ``nn.LSTMCell`` (``cls.guide_class``) instead."""
    if input_size is not _UNSET or hidden_size is not _UNSET or args or (
            kwargs.keys() - {"name"}):
        return cls.guide_class(None if input_size is _UNSET else input_size, hidden_size,
                               *args, **kwargs)
    return Model.__new__(cls)


def _batch_rows(cell: Model, *states: str) -> tuple[Any, list[Any]]:
    """``(N, [state[:N] ...])``: a variable-length step reads the first ``N`` rows (the
    rows of ``input``) of each previous state."""
    n = add_op(cell, "size", input=IOKey("input", type=float, differentiable=False), dim=0)
    head = add_op(cell, "to_slice", start=None, stop=n, step=None)
    rows = [add_op(cell, "indexer", index=head,
                   input=IOKey(name, type=float, differentiable=False)) for name in states]
    return n, rows


class RNNCell(Model):
    """An Elman cell with an output projection, the reference's ``RNNCell()`` (no sizes: they
    come from the shapes of its inputs and parameters)::

        hidden = tanh(prev_hidden[:N] @ w_hh^T + input @ w_ih^T + bias_h)
        output = hidden @ w_ho^T + bias_o
        hidden_compl = prev_hidden[N:]

    with ``input`` ``(N, 1, d_in)``, ``prev_hidden`` ``(M, 1, d_hid)`` (``M >= N``), ``w_ih``
    ``(d_hid, d_in)``, ``w_hh`` ``(d_hid, d_hid)``, ``w_ho`` ``(d_out, d_hid)``, ``bias_h``
    ``(d_hid)``, ``bias_o`` ``(d_out)``. Terminals in the reference's order: ``input``,
    ``prev_hidden``, ``w_ih``, ``w_hh``, ``w_ho``, ``bias_h``, ``bias_o`` -> ``hidden``,
    ``hidden_compl``, ``output``; ``input`` and ``prev_hidden`` are not differentiable.

    ``RNNCell(input_size, hidden_size, ...)`` (sizes given) is the guide's ``nn.RNNCell``
    (:class:`mithril.models.recurrent.RNNCell`).

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import RNNCell
    >>> shapes = {"input": [2, 1, 3], "prev_hidden": [3, 1, 4], "w_ho": [5, 4]}
    >>> pm = ml.compile(RNNCell(), ml.NumpyBackend(), shapes=shapes)
    >>> pm.shapes["w_ih"], pm.shapes["output"], pm.shapes["hidden_compl"]
    ([4, 3], [2, 1, 5], [1, 1, 4])
    """

    #: what ``RNNCell(input_size, hidden_size, ...)`` builds
    guide_class = _recurrent.RNNCell
    #: the reference's cell protocol (what ManyToOne reads)
    reference_cell = True
    shared_keys = ("w_ih", "w_hh", "w_ho", "bias_h", "bias_o")
    state_keys = ("hidden",)

    __new__ = _guide_when_sized

    def __init__(self, input_size: Any = _UNSET, hidden_size: Any = _UNSET, *args: Any,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name)
        # built in the order of the reference's terminals: input, prev_hidden, w_ih, w_hh,
        # w_ho, bias_h, bias_o -> hidden, hidden_compl, output
        n, (prev,) = _batch_rows(self, "prev_hidden")
        self |= Linear(use_bias=False)(input="input", weight=param_of("w_ih"), output="_xh")
        self |= Linear(use_bias=False)(input=prev, weight=param_of("w_hh"), output="_hh")
        self |= Linear(use_bias=False)(input=IOKey("hidden", expose=True),
                                       weight=param_of("w_ho"), output="_ho")
        pre = add_op(self, "add", left=conn_of(self, "_xh"), right=conn_of(self, "_hh"))
        pre = add_op(self, "add", left=pre, right=param_of("bias_h"))
        add_op(self, "tanh", out="hidden", input=pre)
        tail = add_op(self, "to_slice", start=n, stop=None, step=None)
        add_op(self, "indexer", out=IOKey("hidden_compl"), input="prev_hidden", index=tail)
        add_op(self, "add", out=IOKey("output"), left=conn_of(self, "_ho"),
               right=param_of("bias_o"))
        self.set_shapes({"input": ["N", 1, "d_in"], "prev_hidden": ["M", 1, "d_hid"],
                         "w_ih": ["d_hid", "d_in"], "w_hh": ["d_hid", "d_hid"],
                         "w_ho": ["d_out", "d_hid"], "bias_h": ["d_hid"], "bias_o": ["d_out"]})
        self.set_cin("input")
        self.set_cout("output")


class LSTMCell(Model):
    """The reference's size-free LSTM cell with an output projection, ``LSTMCell()``; with
    ``x = concat(input, prev_hidden[:N])`` on the last axis::

        cell = prev_cell[:N] * sigmoid(x @ w_f^T + bias_f)
               + sigmoid(x @ w_i^T + bias_i) * tanh(x @ w_c^T + bias_c)
        hidden = tanh(cell) * sigmoid(x @ w_o^T + bias_o)
        output = hidden @ w_out^T + bias_out,   hidden_compl = prev_hidden[N:]

    ``w_i``, ``w_f``, ``w_c``, ``w_o`` are ``(d_hid, d_in + d_hid)``, ``w_out``
    ``(d_out, d_hid)``; ``prev_cell`` may have more rows than ``prev_hidden`` (only its
    first ``N`` are read). Terminals in the reference's order: ``input``, ``prev_hidden``,
    ``prev_cell``, ``w_i``, ``w_f``, ``w_c``, ``w_o``, ``w_out``, ``bias_f``, ``bias_i``,
    ``bias_c``, ``bias_o``, ``bias_out`` -> ``hidden``, ``cell``, ``hidden_compl``,
    ``output``. ``LSTMCell(input_size, hidden_size)`` is the guide's ``nn.LSTMCell``.

    >>> import mithril as ml
    >>> from mithril.models import LSTMCell
    >>> shapes = {"input": [2, 1, 3], "prev_hidden": [2, 1, 4], "prev_cell": [2, 1, 4],
    ...           "w_out": [1, 4]}
    >>> pm = ml.compile(LSTMCell(), ml.NumpyBackend(), shapes=shapes)
    >>> pm.shapes["w_f"], pm.shapes["output"]
    ([4, 7], [2, 1, 1])
    """

    guide_class = _recurrent.LSTMCell
    reference_cell = True
    shared_keys = ("w_i", "w_f", "w_c", "w_o", "w_out", "bias_f", "bias_i", "bias_c",
                   "bias_o", "bias_out")
    state_keys = ("hidden", "cell")

    __new__ = _guide_when_sized

    def __init__(self, input_size: Any = _UNSET, hidden_size: Any = _UNSET, *args: Any,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name)
        n, (prev, prev_c) = _batch_rows(self, "prev_hidden", "prev_cell")
        x = add_op(self, "concat", n=2, input1="input", input2=prev, axis=-1)
        gates = {}
        for g in ("i", "f", "c", "o"):
            self |= Linear(use_bias=False)(input=x, weight=param_of(f"w_{g}"), output=f"_{g}")
            gates[g] = conn_of(self, f"_{g}")
        self |= Linear(use_bias=False)(input=IOKey("hidden", expose=True),
                                       weight=param_of("w_out"), output="_ho")
        act = {"f": "sigmoid", "i": "sigmoid", "c": "tanh", "o": "sigmoid"}
        gated = {g: add_op(self, act[g], input=add_op(self, "add", left=gates[g],
                                                        right=param_of(f"bias_{g}")))
                 for g in ("f", "i", "c", "o")}
        kept = add_op(self, "multiply", left=prev_c, right=gated["f"])
        new = add_op(self, "multiply", left=gated["i"], right=gated["c"])
        cell = add_op(self, "add", out=IOKey("cell", expose=True), left=kept, right=new)
        add_op(self, "multiply", out="hidden", left=add_op(self, "tanh", input=cell),
               right=gated["o"])
        tail = add_op(self, "to_slice", start=n, stop=None, step=None)
        add_op(self, "indexer", out=IOKey("hidden_compl"), input="prev_hidden", index=tail)
        add_op(self, "add", out=IOKey("output"), left=conn_of(self, "_ho"),
               right=param_of("bias_out"))
        self.set_shapes({"input": ["N", 1, "d_in"], "prev_hidden": ["M", 1, "d_hid"],
                         "prev_cell": ["K", 1, "d_hid"], "w_i": ["d_hid", "d_sum"],
                         "w_f": ["d_hid", "d_sum"], "w_c": ["d_hid", "d_sum"],
                         "w_o": ["d_hid", "d_sum"], "w_out": ["d_out", "d_hid"],
                         "bias_f": ["d_hid"], "bias_i": ["d_hid"], "bias_c": ["d_hid"],
                         "bias_o": ["d_hid"], "bias_out": ["d_out"]})
        self.set_cin("input")
        self.set_cout("output")


def _encoder(model: Model, cls: Any, length: int, *, outputs: bool) -> Any:
    """Unroll the reference's ``ManyToOne`` steps into ``model``; returns ``hidden_concat``
    (exposed when ``outputs``, else an internal connection)."""
    cells: list[Any] = []
    for t in range(length):
        cur = cls()
        terms: dict[str, Any] = {k: k for k in cls.shared_keys}
        terms["input"] = IOKey(f"input{t}")
        for key in cls.state_keys:
            terms[f"prev_{key}"] = (IOKey(f"initial_{key}") if t == 0 else
                                    getattr(cells[-1], key))
        if outputs:  # else unnamed: an internal connection nothing reads
            terms["output"] = IOKey(f"output{t}")
        model |= cur(**terms)
        cells.append(cur)
    last = cells[-1]
    parts = [last.hidden, last.hidden_compl, *(c.hidden_compl for c in cells[-2:0:-1])]
    named = {"out": IOKey("hidden_concat")} if outputs else {}
    return add_op(model, "concat", n=len(parts), axis=0, **named,
                  **{f"input{i + 1}": p for i, p in enumerate(parts)})


def many_to_one(model: Model, cell: Any, length: int) -> None:
    """Build the reference's ``ManyToOne`` over a reference cell into ``model``: step ``t``
    reads ``input{t}`` and the previous step's ``hidden`` (step 0: ``initial_hidden``), writes
    ``output{t}``; ``hidden_concat`` joins (axis 0) the last step's ``hidden`` with the
    ``hidden_compl`` of every later-to-earlier step, the final hidden state of every sequence
    of a batch sorted by length (longest first)."""
    _encoder(model, type(cell), length, outputs=True)
    model.set_cin("input0")
    model.set_cout("hidden_concat")


def _decoder(model: Model, cls: Any, length: int, *, teacher_forcing: bool,
             inference: bool, prefix: str = "", initial_hidden: Any = None) -> None:
    """Unroll the reference's ``OneToMany`` (``inference``: ``OneToManyInference``) steps
    into ``model``. Step 0 reads ``{prefix}input`` and ``{prefix}initial_{state}`` (or the
    connection ``initial_hidden``); step ``t > 0`` reads the first ``N_t`` rows of
    ``target{t-1}`` (teacher forcing) or of the previous ``output``, ``N_t`` the number of
    rows of ``target{t}`` (inference: the whole previous output). Writes ``output{t}``."""
    prev: Any = None
    for t in range(length):
        cur = cls()
        terms: dict[str, Any] = {k: prefix + k for k in cls.shared_keys}
        if t == 0:
            terms["input"] = IOKey(prefix + "input", type=float, differentiable=False)
            for key in cls.state_keys:
                terms[f"prev_{key}"] = (initial_hidden if key == "hidden" and
                                        initial_hidden is not None else
                                        IOKey(f"{prefix}initial_{key}"))
        else:
            for key in cls.state_keys:
                terms[f"prev_{key}"] = getattr(prev, key)
            if inference:
                terms["input"] = prev.output
            else:
                n = add_op(model, "size", dim=0, input=IOKey(f"target{t}", type=float,
                                                             differentiable=False))
                src = (IOKey(f"target{t - 1}", type=float, differentiable=False)
                       if teacher_forcing else prev.output)
                head = add_op(model, "to_slice", start=None, stop=n, step=None)
                terms["input"] = add_op(model, "indexer", input=src, index=head)
        terms["output"] = IOKey(f"output{t}", expose=True)
        model |= cur(**terms)
        prev = cur


def one_to_many(model: Model, cell: Any, length: int, teacher_forcing: bool) -> None:
    """Build the reference's ``OneToMany`` over a reference cell into ``model`` (terminals
    ``input``, ``initial_{state}``, the cell's parameters, ``target1`` ... (teacher forcing
    also ``target0``) -> ``output0`` ... ``output{T-1}``)."""
    _decoder(model, type(cell), length, teacher_forcing=teacher_forcing, inference=False)
    model.set_cin("input")
    model.set_cout(f"output{length - 1}")


def encoder_decoder(model: Model, cell: Any, input_length: int, target_length: int,
                    teacher_forcing: bool, *, inference: bool = False) -> None:
    """Build the reference's ``EncoderDecoder`` (``inference``: ``EncoderDecoderInference``)
    over a reference cell into ``model``: a ``ManyToOne`` encoder (``input{t}``,
    ``initial_{state}``, the cell's parameters) whose ``hidden_concat`` — reordered by
    ``PermuteTensor`` with ``indices`` in training, as it is in inference — is the decoder's
    initial hidden state; the decoder's terminals are ``decoder_``-prefixed
    (``decoder_input``, ``decoder_initial_cell``, ``decoder_w_ih`` ...) except ``target{t}``;
    outputs ``output0`` ... (the decoder's)."""
    from .reference_ops import PermuteTensor

    cls = type(cell)
    hidden = _encoder(model, cls, input_length, outputs=False)
    if not inference:
        perm = PermuteTensor()
        model |= perm(input=hidden, indices=IOKey("indices"))
        hidden = perm.output
    _decoder(model, cls, target_length, teacher_forcing=teacher_forcing,
             inference=inference, prefix="decoder_", initial_hidden=hidden)
    model.set_cin("input0", "decoder_input")
    model.set_cout(f"output{target_length - 1}")


class EncoderDecoderInference(Model):
    """The reference's ``EncoderDecoderInference(cell_type, max_input_sequence_length,
    max_target_sequence_length)``: the ``EncoderDecoder`` of a size-free reference cell
    (``RNNCell()``, ``LSTMCell()``) run for prediction. The encoder's ``hidden_concat``
    starts the decoder directly (no ``indices``) and every decoder step after the first
    reads the whole previous ``output`` (no ``target{t}``), so the cell's ``d_out`` must equal
    its ``d_in``. Its terminals are named as ``EncoderDecoder``'s, so trained parameters
    evaluate it unchanged.

    >>> import mithril as ml
    >>> from mithril.models import EncoderDecoderInference, RNNCell
    >>> model = EncoderDecoderInference(RNNCell(), 2, 3)
    >>> shapes = {"input0": [1, 1, 1], "input1": [1, 1, 1], "initial_hidden": [1, 1, 4],
    ...           "decoder_input": [1, 1, 1], "w_ho": [1, 4], "decoder_w_ho": [1, 4]}
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes=shapes)
    >>> sorted(pm.output_keys)
    ['output0', 'output1', 'output2']
    """

    def __init__(self, cell_type: Any, max_input_sequence_length: int,
                 max_target_sequence_length: int, *, name: str | None = None) -> None:
        super().__init__(name)
        if not getattr(cell_type, "reference_cell", False):
            raise ArgumentError(f"EncoderDecoderInference takes a size-free reference cell "
                                f"(RNNCell(), LSTMCell()), got {type(cell_type).__name__}")
        for arg, val in (("max_input_sequence_length", max_input_sequence_length),
                         ("max_target_sequence_length", max_target_sequence_length)):
            if not isinstance(val, int) or val < 1:
                raise ArgumentError(f"EncoderDecoderInference: {arg} must be a positive "
                                    f"int, got {val!r}")
        encoder_decoder(self, cell_type, max_input_sequence_length,
                        max_target_sequence_length, False, inference=True)
