"""Recurrent layers against ``torch.nn`` with the same weights, in float64, on every backend.

Outputs (``output``, ``h_n``, ``c_n``) and gradients with respect to the input, the initial
state and every parameter are compared with PyTorch's autograd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.errors import CompileError, TerminalError
from mithril.models import IOKey, Linear, Model
from mithril.models.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

BACKENDS = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
            "mlx": "MlxBackend"}
TOL = 1e-10


def make(name: str) -> Any:
    return getattr(ml, BACKENDS[name])(dtype=ml.float64)


def assert_close(actual: Any, desired: np.ndarray, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    err = float(np.max(np.abs(actual - desired))) if desired.size else 0.0
    scale = max(1.0, float(np.max(np.abs(desired))) if desired.size else 1.0)
    assert err <= TOL * scale, f"{what}: max error {err:.3g}"


def compare(backend_name: str, model: Model, ref: torch.nn.Module, inputs: dict[str, np.ndarray],
            forward: Any, out_names: list[str], seed: int = 0, jit: bool = False) -> None:
    """Compile ``model``; check outputs and all gradients against ``ref`` (torch, float64).

    ``forward(ref, tensors)`` maps the torch inputs (by terminal name) to the outputs, in the
    order of ``out_names``.
    """
    backend = make(backend_name)
    pm = ml.compile(model, backend, shapes={k: list(v.shape) for k, v in inputs.items()},
                    trainable_keys=set(inputs), jit=jit)
    params_np = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    assert set(pm.randomize_params()) == set(params_np) | set(inputs)
    rng = np.random.default_rng(seed)
    ref_in = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    ref_outs = forward(ref, ref_in)
    grads_out = {k: rng.standard_normal(tuple(o.shape)) for k, o in zip(out_names, ref_outs,
                                                                         strict=True)}
    loss = sum((o * torch.tensor(grads_out[k])).sum() for k, o in zip(out_names, ref_outs,
                                                                      strict=True))
    ref.zero_grad()
    loss.backward()  # type: ignore[union-attr]
    ref_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    ref_grads.update({k: t.grad.numpy() for k, t in ref_in.items()})

    arr = backend.array
    params = {k: arr(v) for k, v in params_np.items()}
    params.update({k: arr(v) for k, v in inputs.items()})  # trainable: gradients come back
    outs, grads = pm.evaluate(params, {}, output_gradients={
        k: arr(v) for k, v in grads_out.items()})
    for k, o in zip(out_names, ref_outs, strict=True):
        assert_close(backend.to_numpy(outs[k]), o.detach().numpy(), f"{backend_name} {k}")
    assert set(grads) == set(ref_grads)
    for k, g in ref_grads.items():
        assert_close(backend.to_numpy(grads[k]), g, f"{backend_name} grad {k}")


# ----------------------------------------------------------------------------------------------
# Sequence layers
# ----------------------------------------------------------------------------------------------
T, N, IN, H = 4, 3, 5, 6
SEQ_CASES = [
    # kind, num_layers, batch_first, bidirectional, bias, initial state, extra
    ("lstm", 1, False, False, True, False, {}),
    ("lstm", 2, True, True, True, True, {}),
    ("lstm", 2, False, True, False, False, {}),
    ("lstm", 1, True, False, False, True, {}),
    ("gru", 1, False, False, True, True, {}),
    ("gru", 2, True, True, True, False, {}),
    ("gru", 2, False, False, False, True, {}),
    ("rnn", 2, False, True, True, True, {"nonlinearity": "tanh"}),
    ("rnn", 1, True, False, True, False, {"nonlinearity": "relu"}),
]
SEQ = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU), "rnn": (RNN, torch.nn.RNN)}


def _seq_case(case: tuple[Any, ...], seed: int = 0) -> tuple[Model, torch.nn.Module,
                                                              dict[str, np.ndarray], Any,
                                                              list[str]]:
    kind, layers, bf, bi, bias, state, extra = case
    ours, theirs = SEQ[kind]
    model = ours(IN, H, num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi,
                 seq_len=T, initial_state=state, **extra)
    torch.manual_seed(seed)
    ref = theirs(IN, H, num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi,
                 **extra).double()
    rng = np.random.default_rng(seed + 1)
    inputs = {"input": rng.standard_normal((N, T, IN) if bf else (T, N, IN))}
    d = 2 if bi else 1
    lstm = kind == "lstm"
    if state:
        inputs["h0"] = rng.standard_normal((layers * d, N, H))
        if lstm:
            inputs["c0"] = rng.standard_normal((layers * d, N, H))

    def forward(m: torch.nn.Module, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if lstm:
            out, (h, c) = m(x["input"], (x["h0"], x["c0"]) if state else None)
            return [out, h, c]
        out, h = m(x["input"], x.get("h0"))
        return [out, h]

    return model, ref, inputs, forward, ["output", "h_n", "c_n"] if lstm else ["output", "h_n"]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("case", SEQ_CASES, ids=lambda c: "-".join(
    [c[0], f"L{c[1]}", "bf" if c[2] else "tm", "bi" if c[3] else "uni",
     "bias" if c[4] else "nobias", "h0" if c[5] else "zeros", *c[6].values()]))
def test_sequence_layer_matches_torch(backend_name: str, case: tuple[Any, ...]) -> None:
    model, ref, inputs, forward, outs = _seq_case(case)
    compare(backend_name, model, ref, inputs, forward, outs)


@pytest.mark.parametrize("backend_name", ["jax", "mlx"])
def test_lstm_under_jit(backend_name: str) -> None:
    model, ref, inputs, forward, outs = _seq_case(SEQ_CASES[1])
    compare(backend_name, model, ref, inputs, forward, outs, jit=True)


# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------
CELL_CASES = [
    # kind, bias, initial state, batched, extra
    ("lstm", True, True, True, {}),
    ("lstm", False, False, True, {}),
    ("lstm", True, True, False, {}),
    ("gru", True, True, True, {}),
    ("gru", False, False, True, {}),
    ("gru", True, True, False, {}),
    ("rnn", True, True, True, {"nonlinearity": "tanh"}),
    ("rnn", False, False, True, {"nonlinearity": "relu"}),
]
CELLS = {"lstm": (LSTMCell, torch.nn.LSTMCell), "gru": (GRUCell, torch.nn.GRUCell),
         "rnn": (RNNCell, torch.nn.RNNCell)}


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("case", CELL_CASES, ids=lambda c: "-".join(
    [c[0], "bias" if c[1] else "nobias", "hx" if c[2] else "zeros",
     "batched" if c[3] else "unbatched", *c[4].values()]))
def test_cell_matches_torch(backend_name: str, case: tuple[Any, ...]) -> None:
    kind, bias, state, batched, extra = case
    ours, theirs = CELLS[kind]
    model = ours(IN, H, bias=bias, initial_state=state, **extra)
    torch.manual_seed(3)
    ref = theirs(IN, H, bias=bias, **extra).double()
    rng = np.random.default_rng(4)
    lead = (N,) if batched else ()
    inputs = {"input": rng.standard_normal((*lead, IN))}
    lstm = kind == "lstm"
    if state:
        inputs["hx"] = rng.standard_normal((*lead, H))
        if lstm:
            inputs["cx"] = rng.standard_normal((*lead, H))

    def forward(m: torch.nn.Module, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if lstm:
            return list(m(x["input"], (x["hx"], x["cx"]) if state else None))
        return [m(x["input"], x.get("hx"))]

    compare(backend_name, model, ref, inputs, forward, ["output", "c_out"] if lstm else
            ["output"])


# ----------------------------------------------------------------------------------------------
# Building, naming, initialisation, errors
# ----------------------------------------------------------------------------------------------
def test_parameter_names_shapes_and_init_follow_torch() -> None:
    model = LSTM(IN, H, num_layers=2, bidirectional=True, seq_len=T)
    pm = ml.compile(model, ml.NumpyBackend(dtype=ml.float64))
    ref = torch.nn.LSTM(IN, H, num_layers=2, bidirectional=True)
    params = pm.randomize_params(seed=1)
    assert {k: list(v.shape) for k, v in params.items()} == {
        k: list(v.shape) for k, v in ref.state_dict().items()}
    bound = 1 / np.sqrt(H)
    for k, v in params.items():
        assert np.all(np.abs(v) <= bound), k
        assert np.max(np.abs(v)) > 0.5 * bound, k  # uniform over the whole range
    assert pm.shapes["output"] == [T, "N", 2 * H]
    assert pm.shapes["h_n"] == [4, "N", H]


def test_sequence_length_from_a_known_input_shape() -> None:
    outer = Model()
    outer |= LSTM(IN, H)(input=IOKey("x", shape=[T, 2, IN]), output="y", h_n="h", c_n="c")
    pm = ml.compile(outer, ml.NumpyBackend(dtype=ml.float64))
    assert pm.shapes["y"] == [T, 2, H]
    outer = Model()
    outer |= GRU(IN, H, batch_first=True)(input="x", seq_len=T, output="y")
    assert outer.shapes["x"][1] == T
    outer = Model()  # from a connection of the parent whose shape is known
    outer |= Linear(IN)(input=IOKey("x", shape=[2, T, 3]), output="z")
    outer |= RNN(IN, H, batch_first=True)(input=outer.z, output="y")
    assert outer.shapes["y"] == [2, T, H]


def test_sequence_length_unknown_is_a_clear_error() -> None:
    with pytest.raises(CompileError, match="seq_len"):
        ml.compile(LSTM(IN, H), ml.NumpyBackend(), shapes={"input": [T, N, IN]})
    with pytest.raises(CompileError, match="seq_len"):
        Model().extend(GRU(IN, H), input="x")
    with pytest.raises(CompileError, match="built for seq_len=4"):
        LSTM(IN, H, seq_len=4)(input="x", seq_len=5)


def test_initial_state_needs_the_flag() -> None:
    with pytest.raises(TerminalError, match="initial_state=True"):
        LSTM(IN, H, seq_len=T)(input="x", h0="h")
    outer = Model()
    outer |= LSTM(IN, H, seq_len=T)(input="x", h0=None, c0=None, output="y")  # zeros
    assert "h0" not in outer.interface()


def test_dropout_between_layers_is_off_in_inference() -> None:
    backend = make("numpy")
    plain = ml.compile(LSTM(IN, H, num_layers=2, seq_len=T), backend, inference=True)
    dropped = ml.compile(LSTM(IN, H, num_layers=2, dropout=0.5, seq_len=T), backend,
                         inference=True)
    train = ml.compile(LSTM(IN, H, num_layers=2, dropout=0.5, seq_len=T), backend)
    params = plain.randomize_params()
    x = np.random.default_rng(0).standard_normal((T, N, IN))
    a = plain.evaluate(params, {"input": x})["output"]
    b = dropped.evaluate(params, {"input": x})["output"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    c = train.evaluate(params, {"input": x})["output"]
    assert not np.allclose(a, c)
    assert "dropout" in train.code


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(IN, 0, seq_len=T)
    with pytest.raises(ValueError, match="dropout"):
        GRU(IN, H, dropout=1.0, seq_len=T)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(IN, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="seq_len"):
        LSTM(IN, H, seq_len=0)
