"""Reference-API models built from catalogue primitives (creation helpers, geometry, kernels,
classic estimators, metrics and recurrent wrappers).

Everything here is a composition of catalogue primitives, so it runs (and, where it makes
sense, differentiates) on every backend. Two conventions recur:

- *The backend's float dtype.* A model does not know its backend, so a model that creates
  floats (``Ones``, ``Eye``, ``Randn``, ``Arange`` with float steps, the metrics) reads the
  precision when the code runs: ``dtype_of(to_tensor(0.0))`` — ``to_tensor`` makes floats in the
  backend's dtype — and feeds it to ``cast`` / the creation primitive. Pass ``dtype=`` to fix
  another dtype.
- *Terminals given as values are constants.* ``Eye(3)`` has a constant ``N``; ``Eye()`` has an
  ``N`` input (``ml.TBD``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..framework import types as T
from ..framework.logical.meta import TBD
from ..framework.logical.model import BaseModel, Connection, IOKey, Model
from ..framework.physical.compiled import CompiledModel
from ._build import add_op

#: the reference's name for what ``ml.compile`` returns (``from mithril.models import
#: PhysicalModel``; also ``ml.PhysicalModel``)
PhysicalModel = CompiledModel

Ref = Connection | IOKey | str


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def conn_of(model: Model, name: str) -> Connection:
    """The named connection ``name`` of ``model``."""
    return model.named[name]


def float_dtype_of(model: Model) -> Connection:
    """A scalar connection holding the backend's float dtype when the code runs."""
    cached = model.__dict__.get("_float_dtype_conn")
    if cached is None:
        zero = add_op(model, "to_tensor", input=0.0)
        cached = add_op(model, "dtype_of", input=zero)
        model.__dict__["_float_dtype_conn"] = cached
    return cached


def _dtype_or_float(model: Model, dtype: Any) -> Any:
    """``dtype`` as an ``ml`` dtype, or (for None) the backend's float dtype at run time."""
    return float_dtype_of(model) if dtype is None else T.as_dtype(dtype)


def _out_type(dtype: Any) -> Any:
    """The element type of an output made in ``dtype`` (None: the backend's float)."""
    return float if dtype is None else T.as_dtype(dtype)


def key_of(name: str, value: Any) -> IOKey:
    """A terminal named ``name``: an input when ``value`` is ``TBD``, else a constant."""
    if isinstance(value, list):
        value = tuple(value)
    return IOKey(name, value=value)


def param_of(name: str, shape: list[Any] | None = None) -> IOKey:
    """A trainable terminal."""
    return IOKey(name, shape=shape, type=float, differentiable=True)


# ----------------------------------------------------------------------------------------------
# Scalars, creation and simple tensor helpers
# ----------------------------------------------------------------------------------------------
class Length(Model):
    """``len(input)``: the size of a tensor's first axis, as a Python int.

    >>> import mithril as ml
    >>> from mithril.models import Length
    >>> pm = ml.compile(Length(), ml.NumpyBackend(), shapes={"input": [5, 2]})
    >>> pm.evaluate({}, {"input": ml.NumpyBackend().ones(5, 2)})["output"]
    5
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        add_op(self, "size", out=IOKey("output"), input="input", dim=0)
        self.set_cin("input")
        self.set_cout("output")


class Arange(Model):
    """``arange(start, stop, step)`` as a 1-d tensor (NumPy semantics).

    With ``dtype=None`` the output is int64 when ``start``, ``stop`` and ``step`` are ints,
    and in the backend's float dtype when one of the values given here is a float. (Values
    connected later are assumed to be ints; pass ``dtype=`` when they are floats.) Each of
    ``start``, ``stop``, ``step`` is an input when left as ``ml.TBD``; ``stop`` is the
    canonical input.

    >>> import mithril as ml
    >>> from mithril.models import Arange
    >>> pm = ml.compile(Arange(stop=4), ml.NumpyBackend())
    >>> pm.evaluate()["output"].tolist()
    [0, 1, 2, 3]
    """

    def __init__(self, start: Any = 0, stop: Any = TBD, step: Any = 1, dtype: Any = None,
                 *, name: str | None = None) -> None:
        super().__init__(name)
        given = [v for v in (start, stop, step) if v is not TBD]
        dt: Any = None
        out_type: Any = None
        if dtype is not None:
            dt = T.as_dtype(dtype)
        elif any(isinstance(v, float) for v in given):
            dt, out_type = float_dtype_of(self), float
        add_op(self, "arange", out=IOKey("output", type=out_type), start=key_of("start", start),
             stop=key_of("stop", stop), step=key_of("step", step), dtype=dt)
        self.set_cin("stop")
        self.set_cout("output")


class _EyeBase(Model):
    equal = True

    def __init__(self, N: Any = TBD, M: Any = None, dtype: Any = None, *,  # noqa: N803
                 name: str | None = None) -> None:
        super().__init__(name)
        rows = add_op(self, "arange", stop=key_of("N", N))
        cols = rows if M is None else add_op(self, "arange", stop=key_of("M", M))
        mask = rows[:, None] == cols[None, :] if self.equal else rows[:, None] != cols[None, :]
        add_op(self, "cast", out=IOKey("output", type=_out_type(dtype)), input=mask,
             dtype=_dtype_or_float(self, dtype))
        self.set_cin("N")
        self.set_cout("output")


class Eye(_EyeBase):
    """The ``(N, M)`` identity matrix (``M=None``: square), in the backend's float dtype
    unless ``dtype`` is given.

    >>> import mithril as ml
    >>> from mithril.models import Eye
    >>> ml.compile(Eye(2, 3), ml.NumpyBackend()).evaluate()["output"].tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """

    equal = True


class EyeComplement(_EyeBase):
    """``1 - eye(N, M)``: ones with a zero diagonal (backend float dtype unless ``dtype``).

    >>> import mithril as ml
    >>> from mithril.models import EyeComplement
    >>> ml.compile(EyeComplement(2), ml.NumpyBackend()).evaluate()["output"].tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """

    equal = False


class ZerosLike(Model):
    """Zeros with the shape and dtype of ``input`` (``np.zeros_like``; no gradient flows).

    >>> import mithril as ml
    >>> from mithril.models import ZerosLike
    >>> pm = ml.compile(ZerosLike(), ml.NumpyBackend(), shapes={"input": [2]})
    >>> pm.evaluate({}, {"input": ml.NumpyBackend().ones(2)})["output"].tolist()
    [0.0, 0.0]
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        dt = add_op(self, "dtype_of", input="input")
        zero = add_op(self, "cast", input=add_op(self, "to_tensor", input=0), dtype=dt)
        add_op(self, "broadcast_to", out=IOKey("output"), input=zero,
             shape=conn_of(self, "input").shape)
        self.set_cin("input")
        self.set_cout("output")


class Ones(Model):
    """Ones of ``shape`` in the backend's float dtype (or ``dtype``).

    >>> import mithril as ml
    >>> from mithril.models import Ones
    >>> ml.compile(Ones((2, 2)), ml.NumpyBackend()).evaluate()["output"].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """

    def __init__(self, shape: Any = TBD, dtype: Any = None, *, name: str | None = None) -> None:
        super().__init__(name)
        one = add_op(self, "cast", input=add_op(self, "to_tensor", input=1),
                   dtype=_dtype_or_float(self, dtype))
        add_op(self, "broadcast_to", out=IOKey("output", type=_out_type(dtype)), input=one,
             shape=key_of("shape", shape))
        self.set_cin("shape")
        self.set_cout("output")


class Randn(Model):
    """Standard normal samples of ``shape`` in the backend's float dtype (or ``dtype``), drawn
    from the backend's random state on every call (seed it with ``backend.set_seed``).

    >>> import mithril as ml
    >>> from mithril.models import Randn
    >>> ml.compile(Randn((2, 3)), ml.NumpyBackend()).evaluate()["output"].shape
    (2, 3)
    """

    def __init__(self, shape: Any = TBD, dtype: Any = None, *, name: str | None = None) -> None:
        super().__init__(name)
        add_op(self, "randn", out=IOKey("output", type=_out_type(dtype)),
             shape=key_of("shape", shape), dtype=_dtype_or_float(self, dtype))
        self.set_cin("shape")
        self.set_cout("output")


class PositionalEncoding(Model):
    """Adds the sinusoidal position encoding of "Attention is all you need" to ``input``.

    ``input`` is ``(..., T, hidden_dim)`` (positions along axis -2); ``output = input + PE[:T]``
    with ``PE[p, 2i] = sin(p / 10000^(2i / hidden_dim))`` and ``PE[p, 2i + 1]`` the cosine.
    The table is computed when the code runs, for the actual ``T``; ``max_len`` is accepted
    for API compatibility and does not limit ``T``.

    >>> import mithril as ml
    >>> from mithril.models import PositionalEncoding
    >>> pm = ml.compile(PositionalEncoding(4), ml.NumpyBackend(), shapes={"input": [2, 3, 4]})
    >>> out = pm.evaluate({}, {"input": ml.NumpyBackend().zeros(2, 3, 4)})["output"]
    >>> [round(float(v), 3) for v in out[0, 1]]
    [0.841, 0.54, 0.01, 1.0]
    """

    def __init__(self, hidden_dim: int, max_len: int = 5000, *, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ArgumentError(f"hidden_dim must be a positive int, got {hidden_dim!r}")
        self.hidden_dim = hidden_dim
        self.max_len = max_len
        half = (hidden_dim + 1) // 2
        inv_freq = np.exp(np.arange(0, 2 * half, 2) * (-math.log(10000.0) / hidden_dim))
        x = add_op(self, "buffer", input=IOKey("input", type=float,
                                               shape=[("V", ...), None, hidden_dim]))
        positions = add_op(self, "arange", stop=x.shape[-2])
        pos = add_op(self, "cast", input=positions, dtype=add_op(self, "dtype_of", input=x))
        angles = pos[:, None] * inv_freq[None, :]  # (T, half)
        pairs = add_op(self, "concat", n=2, input1=angles.sin()[..., None],
                     input2=angles.cos()[..., None], axis=-1)  # (T, half, 2)
        table = pairs.reshape((-1, 2 * half))
        if 2 * half != hidden_dim:
            table = table[:, :hidden_dim]
        add_op(self, "add", out=IOKey("output"), left=x, right=table)
        self.set_cin("input")
        self.set_cout("output")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
class CartesianDifference(Model):
    """All pairwise differences: ``output[..., i, j, :] = left[..., i, :] - right[..., j, :]``
    for ``left`` ``(..., N, d)`` and ``right`` ``(..., M, d)``.

    >>> import mithril as ml
    >>> from mithril.models import CartesianDifference
    >>> pm = ml.compile(CartesianDifference(), ml.NumpyBackend(),
    ...                 shapes={"left": [2, 3], "right": [4, 3]})
    >>> pm.shapes["output"]
    [2, 4, 3]
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        left = add_op(self, "buffer", input="left")
        right = add_op(self, "buffer", input="right")
        add_op(self, "subtract", out=IOKey("output"), left=left[..., :, None, :],
             right=right[..., None, :, :])
        self.set_cin("left")
        self.set_cout("output")


class DistanceMatrix(Model):
    """Pairwise distances raised to the power ``norm``:
    ``output[..., i, j] = sum_k |left[..., i, k] - right[..., j, k]| ** norm``.

    With the default ``norm=2`` these are *squared* Euclidean distances (as the reference
    ``DistanceMatrix``; take ``** (1 / norm)`` for the Minkowski distance). ``norm=ml.TBD``
    makes it an input. ``left`` is ``(..., N, d)``, ``right`` ``(..., M, d)``.

    >>> import mithril as ml
    >>> from mithril.models import DistanceMatrix
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(DistanceMatrix(), bk, shapes={"left": [1, 2], "right": [2, 2]})
    >>> pm.evaluate({}, {"left": bk.array([[0.0, 0.0]]),
    ...                  "right": bk.array([[3.0, 4.0], [1.0, 0.0]])})["output"].tolist()
    [[25.0, 1.0]]
    """

    def __init__(self, norm: Any = 2, *, name: str | None = None) -> None:
        super().__init__(name)
        self.norm = norm
        left = add_op(self, "buffer", input="left")
        right = add_op(self, "buffer", input="right")
        diff = left[..., :, None, :] - right[..., None, :, :]
        if norm == 2 and not isinstance(norm, bool):
            powered = diff * diff
        else:
            powered = add_op(self, "power", left=abs(diff), right=key_of("norm", norm))
        add_op(self, "sum", out=IOKey("output"), input=powered, axis=-1)
        self.set_cin("left")
        self.set_cout("output")


class TransposedDiagonal(Model):
    """The diagonal of a square ``(N, N)`` input as an ``(N, 1)`` column.

    >>> import mithril as ml
    >>> from mithril.models import TransposedDiagonal
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(TransposedDiagonal(), bk, shapes={"input": [2, 2]})
    >>> pm.evaluate({}, {"input": bk.array([[1.0, 2.0], [3.0, 4.0]])})["output"].tolist()
    [[1.0], [4.0]]
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        x = add_op(self, "buffer", input=IOKey("input", shape=["N", "N"]))
        idx = add_op(self, "arange", stop=x.shape[0])
        on_diagonal = idx[:, None] == idx[None, :]
        kept = add_op(self, "where", condition=on_diagonal, input1=x, input2=0.0)
        add_op(self, "sum", out=IOKey("output"), input=kept, axis=1, keepdim=True)
        self.set_cin("input")
        self.set_cout("output")


class Trapezoid(Model):
    """The trapezoidal rule along the last axis: ``sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)``
    (``np.trapezoid(y, x)``); 1-d ``y`` and ``x`` give a 0-d output.

    >>> import mithril as ml
    >>> from mithril.models import Trapezoid
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(Trapezoid(), bk, shapes={"y": [3], "x": [3]})
    >>> float(pm.evaluate({}, {"y": bk.array([0.0, 1.0, 4.0]), "x": bk.array([0.0, 1.0, 2.0])})[
    ...     "output"])
    3.0
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        y = add_op(self, "buffer", input="y")
        x = add_op(self, "buffer", input="x")
        area = (x[..., 1:] - x[..., :-1]) * (y[..., 1:] + y[..., :-1]) * 0.5
        add_op(self, "sum", out=IOKey("output"), input=area, axis=-1)
        self.set_cin("y")
        self.set_cout("output")


# ----------------------------------------------------------------------------------------------
# Recurrent wrappers around a cell (RNNCell, LSTMCell, GRUCell)
# ----------------------------------------------------------------------------------------------
_STATE_TERMINALS = ("input", "hx", "cx")


class _CellFactory:
    """Fresh copies of a cell model (built with the template's constructor arguments)."""

    def __init__(self, cell: BaseModel) -> None:
        if isinstance(cell, type) or "_init_args" not in cell.__dict__:
            raise ArgumentTypeError("cell_type must be a cell instance such as RNNCell(4, 8)")
        self.cls: Callable[..., BaseModel] = type(cell)
        args, kwargs = cell.__dict__["_init_args"]
        self.args = tuple(args)
        self.kwargs = {k: v for k, v in kwargs.items() if k not in ("name", "initial_state")}
        probe = self(True)
        self.lstm = "c_out" in probe.output_terminals()
        self.params = [k for k in probe.input_terminals() if k not in _STATE_TERMINALS]

    def __call__(self, initial_state: bool) -> BaseModel:
        return self.cls(*self.args, initial_state=initial_state, **self.kwargs)


_RNN_DOC = """

    ``cell_type`` is a cell instance (``RNNCell``, ``LSTMCell``, ``GRUCell``) used as a
    template: every time step gets a fresh copy, and all steps share the parameters
    (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``). The sequence length is fixed
    when the model is built (the steps are unrolled). ``initial_state=False`` starts from
    zeros instead of the ``initial_hidden`` (and, for LSTM cells, ``initial_cell``) inputs.
"""


class ManyToOne(Model):
    """Runs a cell over ``max_sequence_length`` steps and returns the final hidden state.

    Inputs ``input0`` ... ``input{T-1}`` (each ``(N, input_size)``), ``initial_hidden``
    ``(N, hidden)`` (and ``initial_cell`` for LSTM cells); outputs ``output`` (the last hidden
    state; LSTM cells also ``cell``, the last cell state). The intermediate hidden states are
    the named connections ``hidden0`` ... ``hidden{T-2}``.

    >>> import mithril as ml
    >>> from mithril.models import ManyToOne, RNNCell
    >>> pm = ml.compile(ManyToOne(RNNCell(3, 4), 5), ml.NumpyBackend(),
    ...                 shapes={f"input{t}": [2, 3] for t in range(5)})
    >>> pm.shapes["output"]
    [2, 4]
    """

    def __init__(self, cell_type: BaseModel, max_sequence_length: int, *,
                 initial_state: bool = True, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise ArgumentError(f"max_sequence_length must be a positive int, got "
                                f"{max_sequence_length!r}")
        self.max_sequence_length = max_sequence_length
        if getattr(cell_type, "reference_cell", False):  # the reference's size-free cells
            from .reference_recurrent import many_to_one

            many_to_one(self, cell_type, max_sequence_length)
            return
        make = _CellFactory(cell_type)
        h: Ref = "initial_hidden"
        c: Ref = "initial_cell"
        for t in range(max_sequence_length):
            with_state = initial_state or t > 0
            last = t == max_sequence_length - 1
            terms: dict[str, Any] = {p: p for p in make.params}
            terms["input"] = f"input{t}"
            if with_state:
                terms["hx"] = h
                if make.lstm:
                    terms["cx"] = c
            terms["output"] = IOKey("output") if last else f"hidden{t}"
            if make.lstm:
                terms["c_out"] = IOKey("cell") if last else f"cell{t}"
            self |= make(with_state)(**terms)
            h, c = f"hidden{t}", f"cell{t}"
        self.set_cin("input0")
        self.set_cout("output")


class OneToMany(Model):
    """Generates ``max_sequence_length`` steps from one input.

    Step 0 reads ``input`` ``(N, input_size)`` and ``initial_hidden`` (and ``initial_cell``
    for LSTM cells); step ``t > 0`` reads the previous output ``output{t-1}`` — or, with
    ``teacher_forcing=True``, the input ``target{t-1}`` — so without teacher forcing the
    cell's ``input_size`` must equal its ``hidden_size``. Outputs ``output0`` ...
    ``output{T-1}`` (hidden states; the last is the canonical output).

    >>> import mithril as ml
    >>> from mithril.models import OneToMany, RNNCell
    >>> pm = ml.compile(OneToMany(RNNCell(4, 4), 3), ml.NumpyBackend(), shapes={"input": [2, 4]})
    >>> [pm.shapes[f"output{t}"] for t in range(3)]
    [[2, 4], [2, 4], [2, 4]]
    """

    def __init__(self, cell_type: BaseModel, max_sequence_length: int,
                 teacher_forcing: bool = False, *, initial_state: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise ArgumentError(f"max_sequence_length must be a positive int, got "
                                f"{max_sequence_length!r}")
        self.max_sequence_length = max_sequence_length
        self.teacher_forcing = bool(teacher_forcing)
        if getattr(cell_type, "reference_cell", False):  # the reference's size-free cells
            from .reference_recurrent import one_to_many

            one_to_many(self, cell_type, max_sequence_length, self.teacher_forcing)
            return
        make = _CellFactory(cell_type)
        for t in range(max_sequence_length):
            with_state = initial_state or t > 0
            terms: dict[str, Any] = {p: p for p in make.params}
            if t == 0:
                terms["input"] = "input"
            else:
                terms["input"] = f"target{t - 1}" if teacher_forcing else f"output{t - 1}"
            if with_state:
                terms["hx"] = "initial_hidden" if t == 0 else f"output{t - 1}"
                if make.lstm:
                    terms["cx"] = "initial_cell" if t == 0 else f"cell{t - 1}"
            terms["output"] = IOKey(f"output{t}", expose=True)
            if make.lstm:
                terms["c_out"] = f"cell{t}"
            self |= make(with_state)(**terms)
        self.set_cin("input")
        self.set_cout(f"output{max_sequence_length - 1}")


class EncoderDecoder(Model):
    """A sequence-to-sequence pair: a ``ManyToOne`` encoder whose final state starts a
    ``OneToMany`` decoder (separate parameters, same cell type).

    Encoder terminals keep ``ManyToOne``'s names (``input0`` ..., ``initial_hidden``, the cell
    parameters ``weight_ih`` ...); the decoder's are prefixed with ``decoder_``
    (``decoder_input``, ``decoder_weight_ih`` ...) except ``target{t}`` (teacher forcing).
    Outputs: the decoder's ``output0`` ... ``output{T_out-1}``; the encoder's final state is the
    named connection ``encoder_hidden`` (and ``encoder_cell``).

    >>> import mithril as ml
    >>> from mithril.models import EncoderDecoder, GRUCell
    >>> model = EncoderDecoder(GRUCell(3, 3), 4, 2)
    >>> shapes = {**{f"input{t}": [2, 3] for t in range(4)}, "decoder_input": [2, 3]}
    >>> pm = ml.compile(model, ml.NumpyBackend(), shapes=shapes)
    >>> sorted(k for k in pm.output_keys)
    ['output0', 'output1']
    """

    def __init__(self, cell_type: BaseModel, max_input_sequence_length: int,
                 max_target_sequence_length: int, teacher_forcing: bool = False, *,
                 initial_state: bool = True, name: str | None = None) -> None:
        super().__init__(name)
        if getattr(cell_type, "reference_cell", False):  # the reference's size-free cells
            from .reference_recurrent import encoder_decoder

            encoder_decoder(self, cell_type, max_input_sequence_length,
                            max_target_sequence_length, bool(teacher_forcing))
            return
        encoder = ManyToOne(cell_type, max_input_sequence_length, initial_state=initial_state)
        decoder = OneToMany(cell_type, max_target_sequence_length, teacher_forcing)
        lstm = "cell" in encoder.output_terminals()
        enc_terms: dict[str, Any] = {k: k for k in encoder.input_terminals()}
        enc_terms["output"] = "encoder_hidden"
        if lstm:
            enc_terms["cell"] = "encoder_cell"
        self |= encoder(**enc_terms)
        dec_terms: dict[str, Any] = {}
        for k in decoder.input_terminals():
            if k == "initial_hidden":
                dec_terms[k] = "encoder_hidden"
            elif k == "initial_cell":
                dec_terms[k] = "encoder_cell"
            elif k.startswith("target"):
                dec_terms[k] = k
            else:
                dec_terms[k] = f"decoder_{k}"
        for k in decoder.output_terminals():
            dec_terms[k] = IOKey(k)
        self |= decoder(**dec_terms)
        self.set_cin("input0")
        self.set_cout(f"output{max_target_sequence_length - 1}")


for _cls in (ManyToOne, OneToMany, EncoderDecoder):
    _cls.__doc__ = (_cls.__doc__ or "") + _RNN_DOC


__all__ = ["AUC", "Arange", "CartesianDifference", "DistanceMatrix", "ElementWiseAffine",
           "EncoderDecoder", "Eye", "EyeComplement", "F1", "KernelizedSVM", "Layer", "Length",
           "LinearSVM", "LogisticRegression", "ManyToOne", "OneToMany", "Ones", "PhysicalModel",
           "PolynomialKernel", "PolynomialRegression", "PositionalEncoding", "Precision",
           "QuadraticFormRegularizer", "RBFKernel", "Randn", "Recall", "TransposedDiagonal",
           "Trapezoid", "ZerosLike"]

# the estimators and metrics live in their own modules (imported last: they use the helpers
# above); their names stay available here and in mithril.models
from .reference_estimators import (  # noqa: E402
    ElementWiseAffine,
    KernelizedSVM,
    Layer,
    LinearSVM,
    LogisticRegression,
    PolynomialKernel,
    PolynomialRegression,
    QuadraticFormRegularizer,
    RBFKernel,
)
from .reference_metrics import AUC, F1, Precision, Recall  # noqa: E402
