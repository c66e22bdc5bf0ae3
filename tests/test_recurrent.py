"""Recurrent layers against ``torch.nn`` with the same weights, in float64, on every backend.

Outputs (``output``, ``h_n``, ``c_n``) and gradients with respect to the input, the initial
state and every parameter are compared with PyTorch's autograd. The layers are loop primitives
over a symbolic time axis: one compiled model serves every sequence length, and ``lengths``
matches PyTorch's packed sequences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.errors import ShapeMismatchError, TerminalError
from mithril.models import IOKey, Linear, Model
from mithril.models.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

BACKENDS = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
            "mlx": "MlxBackend"}
TOL = 1e-10


def make(name: str) -> Any:
    return getattr(ml, BACKENDS[name])(dtype=ml.float64)


def assert_close(actual: Any, desired: np.ndarray, what: str, tol: float = TOL) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    err = float(np.max(np.abs(actual - desired))) if desired.size else 0.0
    scale = max(1.0, float(np.max(np.abs(desired))) if desired.size else 1.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g}"


def compare(backend_name: str, model: Model, ref: torch.nn.Module, inputs: dict[str, np.ndarray],
            forward: Any, out_names: list[str], seed: int = 0, jit: bool = False,
            data: dict[str, np.ndarray] | None = None) -> None:
    """Compile ``model``; check outputs and all gradients against ``ref`` (torch, float64).

    ``forward(ref, tensors)`` maps the torch inputs (by terminal name) to the outputs, in the
    order of ``out_names``.
    """
    backend = make(backend_name)
    data = data or {}
    pm = ml.compile(model, backend, shapes={k: list(v.shape) for k, v in inputs.items()},
                    trainable_keys=set(inputs), jit=jit)
    params_np = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    assert set(pm.randomize_params()) == set(params_np) | set(inputs)
    rng = np.random.default_rng(seed)
    ref_in = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    ref_outs = forward(ref, {**ref_in, **{k: torch.tensor(v) for k, v in data.items()}})
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
    outs, grads = pm.evaluate(params, {k: arr(v) for k, v in data.items()}, output_gradients={
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
    ("lstm", 2, True, True, True, True, {"proj_size": 4}),
    ("lstm", 1, False, False, False, False, {"proj_size": 2}),
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
                 initial_state=state, **extra)
    torch.manual_seed(seed)
    ref = theirs(IN, H, num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi,
                 **extra).double()
    rng = np.random.default_rng(seed + 1)
    inputs = {"input": rng.standard_normal((N, T, IN) if bf else (T, N, IN))}
    d = 2 if bi else 1
    lstm = kind == "lstm"
    if state:
        inputs["h_0"] = rng.standard_normal((layers * d, N, extra.get("proj_size") or H))
        if lstm:
            inputs["c_0"] = rng.standard_normal((layers * d, N, H))

    def forward(m: torch.nn.Module, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if lstm:
            out, (h, c) = m(x["input"], (x["h_0"], x["c_0"]) if state else None)
            return [out, h, c]
        out, h = m(x["input"], x.get("h_0"))
        return [out, h]

    return model, ref, inputs, forward, ["output", "h_n", "c_n"] if lstm else ["output", "h_n"]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("case", SEQ_CASES, ids=lambda c: "-".join(
    [c[0], f"L{c[1]}", "bf" if c[2] else "tm", "bi" if c[3] else "uni",
     "bias" if c[4] else "nobias", "h0" if c[5] else "zeros",
     *(f"{k}{v}" for k, v in c[6].items())]))
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
    model = LSTM(IN, H, num_layers=2, bidirectional=True)
    pm = ml.compile(model, ml.NumpyBackend(dtype=ml.float64))
    ref = torch.nn.LSTM(IN, H, num_layers=2, bidirectional=True)
    params = pm.randomize_params(seed=1)
    assert {k: list(v.shape) for k, v in params.items()} == {
        k: list(v.shape) for k, v in ref.state_dict().items()}
    bound = 1 / np.sqrt(H)
    for k, v in params.items():
        assert np.all(np.abs(v) <= bound), k
        assert np.max(np.abs(v)) > 0.5 * bound, k  # uniform over the whole range
    assert pm.shapes["output"] == ["T", "N", 2 * H]
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


def test_no_sequence_length_at_build_time() -> None:
    """The layer adds with |= / += without a length; the time axis stays a symbol."""
    outer = Model()
    outer |= LSTM(IN, H, batch_first=True)(input="x", output="y")
    outer += Linear(2)
    assert outer.shapes["x"] == ["N", "T", IN]
    assert outer.shapes["y"] == ["N", "T", H]
    fixed = Model()
    with pytest.raises(ShapeMismatchError, match="input"):  # seq_len= still fixes T if given
        fixed |= LSTM(IN, H, seq_len=4)(input=IOKey("x", shape=[5, N, IN]))
    with pytest.raises(ValueError, match="seq_len"):
        LSTM(IN, H)(input="x", seq_len=0)


def test_input_named_by_string_works_like_a_connection() -> None:
    """``input="e"`` (a string naming the parent's connection) as ``input=m.e``."""
    backend = make("numpy")
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    results = []
    for by_name in (True, False):
        m = Model()
        m |= Linear(IN)(input=IOKey("x", shape=[2, 6, 3]), output="e")
        m |= LSTM(IN, H, batch_first=True, name="lstm")(input="e" if by_name else m.e,
                                                         output="y")
        pm = ml.compile(m, backend)
        params = pm.randomize_params(seed=0)
        results.append(pm.evaluate(params, {"x": x})["y"])
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].shape == (2, 6, H)


# ----------------------------------------------------------------------------------------------
# One compiled model, any length (acceptance of issue 15)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_one_compiled_lstm_serves_t50_and_t200(backend_name: str) -> None:
    """``LSTM(16, 32, num_layers=2, batch_first=True)`` compiled once, evaluated at T=50 and
    T=200: outputs and parameter gradients equal ``nn.LSTM``'s (float64)."""
    backend = make(backend_name)
    pm = ml.compile(LSTM(16, 32, num_layers=2, batch_first=True), backend)
    torch.manual_seed(5)
    ref = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True).double()
    params = {k: backend.array(v.detach().numpy()) for k, v in ref.state_dict().items()}
    rng = np.random.default_rng(6)
    for n_t in (50, 200):
        x = rng.standard_normal((3, n_t, 16))
        out, (h, c) = ref(torch.tensor(x))
        seeds = {k: rng.standard_normal(tuple(v.shape)) for k, v in
                 (("output", out), ("h_n", h), ("c_n", c))}
        ref.zero_grad()
        sum((v * torch.tensor(seeds[k])).sum() for k, v in
            (("output", out), ("h_n", h), ("c_n", c))).backward()  # type: ignore[union-attr]
        outs, grads = pm.evaluate(params, {"input": backend.array(x)}, output_gradients={
            k: backend.array(v) for k, v in seeds.items()})
        for k, v in (("output", out), ("h_n", h), ("c_n", c)):
            assert_close(backend.to_numpy(outs[k]), v.detach().numpy(), f"T={n_t} {k}")
        for k, p in ref.named_parameters():
            assert_close(backend.to_numpy(grads[k]), p.grad.numpy(),  # type: ignore[union-attr]
                         f"T={n_t} grad {k}")


@pytest.mark.parametrize("backend_name", ["mlx", "torch", "jax"])
def test_float32_lstm_against_float64_torch(backend_name: str) -> None:
    """The acceptance LSTM in float32 (MLX's usual precision; jitted where the backend jits by
    default) against float64 ``nn.LSTM``, with a float32 tolerance."""
    backend = getattr(ml, BACKENDS[backend_name])(dtype=ml.float32)
    pm = ml.compile(LSTM(16, 32, num_layers=2, batch_first=True), backend)
    torch.manual_seed(11)
    ref = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True).double()
    params = {k: backend.array(v.detach().numpy().astype(np.float32))
              for k, v in ref.state_dict().items()}
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 50, 16))
    out, _ = ref(torch.tensor(x))
    seed = rng.standard_normal(tuple(out.shape))
    (out * torch.tensor(seed)).sum().backward()
    outs, grads = pm.evaluate(params, {"input": backend.array(x.astype(np.float32))},
                              output_gradients={"output": backend.array(seed.astype(np.float32))})
    assert_close(backend.to_numpy(outs["output"]), out.detach().numpy(), "output", tol=1e-6)
    for k, p in ref.named_parameters():
        assert_close(backend.to_numpy(grads[k]), p.grad.numpy(),  # type: ignore[union-attr]
                     f"grad {k}", tol=1e-5)


# ----------------------------------------------------------------------------------------------
# Variable lengths: PyTorch's packed sequences
# ----------------------------------------------------------------------------------------------
LENGTH_CASES = [
    # kind, num_layers, batch_first, bidirectional, initial state, extra
    ("lstm", 2, True, True, True, {}),
    ("lstm", 1, False, False, False, {"proj_size": 3}),
    ("gru", 2, False, True, True, {}),
    ("rnn", 1, True, True, False, {"nonlinearity": "tanh"}),
    ("rnn", 2, False, False, True, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("case", LENGTH_CASES, ids=lambda c: "-".join(
    [c[0], f"L{c[1]}", "bf" if c[2] else "tm", "bi" if c[3] else "uni",
     "h0" if c[4] else "zeros", *(f"{k}{v}" for k, v in c[5].items())]))
def test_lengths_match_packed_sequences(backend_name: str, case: tuple[Any, ...]) -> None:
    """``lengths`` against ``pack_padded_sequence`` -> ``nn.LSTM`` -> ``pad_packed_sequence``:
    padded steps are zeros, ``h_n``/``c_n`` at each sequence's last valid step; gradients of
    the input, the initial state and every parameter as PyTorch's."""
    kind, layers, bf, bi, state, extra = case
    n_t, n_b = 6, 4
    ours, theirs = SEQ[kind]
    model = ours(IN, H, num_layers=layers, batch_first=bf, bidirectional=bi,
                 initial_state=state, lengths=True, **extra)
    torch.manual_seed(7)
    ref = theirs(IN, H, num_layers=layers, batch_first=bf, bidirectional=bi, **extra).double()
    rng = np.random.default_rng(8)
    inputs = {"input": rng.standard_normal((n_b, n_t, IN) if bf else (n_t, n_b, IN))}
    lengths = np.array([3, 6, 1, 4], dtype=np.int64)  # unsorted, one full, one of length 1
    d = 2 if bi else 1
    lstm = kind == "lstm"
    if state:
        inputs["h_0"] = rng.standard_normal((layers * d, n_b, extra.get("proj_size") or H))
        if lstm:
            inputs["c_0"] = rng.standard_normal((layers * d, n_b, H))
    pack = torch.nn.utils.rnn

    def forward(m: torch.nn.Module, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        packed = pack.pack_padded_sequence(x["input"], x["lengths"], batch_first=bf,
                                           enforce_sorted=False)
        hx = ((x["h_0"], x["c_0"]) if lstm else x["h_0"]) if state else None
        out, hn = m(packed, hx)
        padded, _ = pack.pad_packed_sequence(out, batch_first=bf, total_length=n_t)
        return [padded, *hn] if lstm else [padded, hn]

    compare(backend_name, model, ref, inputs, forward,
            ["output", "h_n", "c_n"] if lstm else ["output", "h_n"], data={"lengths": lengths})


def test_lengths_need_the_flag() -> None:
    with pytest.raises(TerminalError, match="lengths=True"):
        LSTM(IN, H)(input="x", lengths="n")


# ----------------------------------------------------------------------------------------------
# Loading PyTorch weights
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_torch_state_dict_loads(kind: str) -> None:
    from mithril.interop import load_torch_state_dict

    extra = {"proj_size": 3} if kind == "lstm" else {}
    ours, theirs = SEQ[kind]
    torch.manual_seed(9)
    ref = theirs(IN, H, num_layers=2, bidirectional=True, batch_first=True, **extra).double()
    backend = make("torch")
    pm = ml.compile(ours(IN, H, num_layers=2, bidirectional=True, batch_first=True, **extra),
                    backend)
    params, _, _ = load_torch_state_dict(pm, ref.state_dict())
    assert set(params) == set(ref.state_dict())
    x = np.random.default_rng(10).standard_normal((2, 5, IN))
    out = pm.evaluate(params, {"input": backend.array(x)})
    expected = ref(torch.tensor(x))
    assert_close(backend.to_numpy(out["output"]), expected[0].detach().numpy(), "output")
    h_n = expected[1][0] if kind == "lstm" else expected[1]
    assert_close(backend.to_numpy(out["h_n"]), h_n.detach().numpy(), "h_n")


def test_initial_state_needs_the_flag() -> None:
    with pytest.raises(TerminalError, match="initial_state=True"):
        LSTM(IN, H)(input="x", h_0="h")
    with pytest.raises(TerminalError, match="initial_state=True"):
        LSTM(IN, H)(input="x", h0="h")  # the earlier spelling
    outer = Model()
    outer |= LSTM(IN, H)(input="x", h_0=None, c_0=None, output="y")  # zeros
    assert "h_0" not in outer.interface()


def test_initial_state_of_the_wrong_shape_is_a_clear_error() -> None:
    """A carry whose shape does not fit the state the loop keeps raises at the connection."""
    outer = Model()
    with pytest.raises(ShapeMismatchError, match="h_0"):
        outer |= LSTM(IN, H, num_layers=2, initial_state=True)(
            input=IOKey("x", shape=[T, N, IN]), h_0=IOKey("h", shape=[2, N, H + 1]))
    with pytest.raises(ShapeMismatchError, match="c_0"):
        outer |= LSTM(IN, H, proj_size=2, initial_state=True)(
            input=IOKey("x", shape=[T, N, IN]), c_0=IOKey("c", shape=[1, N, 2]))


def test_dropout_between_layers_is_off_in_inference() -> None:
    backend = make("numpy")
    plain = ml.compile(LSTM(IN, H, num_layers=2), backend, inference=True)
    dropped = ml.compile(LSTM(IN, H, num_layers=2, dropout=0.5), backend,
                         inference=True)
    train = ml.compile(LSTM(IN, H, num_layers=2, dropout=0.5), backend)
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
        LSTM(IN, 0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(IN, H, dropout=1.0)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(IN, H, proj_size=H)
    with pytest.raises(TypeError):
        GRU(IN, H, proj_size=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(IN, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="seq_len"):
        LSTM(IN, H, seq_len=0)


# ----------------------------------------------------------------------------------------------
# The loop primitive itself
# ----------------------------------------------------------------------------------------------
def test_loop_primitive_rejects_a_carry_that_changes_shape() -> None:
    """The primitive's own rule: the carry (h_0, c_0) must be (D, N, hidden) of the weights."""
    from mithril.framework.ops import CATALOGUE
    from mithril.models import Operator

    weights = {"weight_ih": IOKey("w_ih", shape=[4 * H, IN]),
               "weight_hh": IOKey("w_hh", shape=[4 * H, H])}
    ok = Model()
    ok |= Operator(CATALOGUE["lstm"], batch_first=False, bidirectional=False)(
        input=IOKey("x", shape=[T, N, IN]), h_0=IOKey("h", shape=[1, N, H]), **weights,
        output="y", h_n="h_n", c_n="c_n")
    assert ok.shapes["y"] == [T, N, H]
    assert ok.shapes["c_n"] == [1, N, H]
    for bad in ({"h_0": IOKey("h", shape=[1, N, H + 1])},
                {"c_0": IOKey("c", shape=[2, N, H])},
                {"weight_hh": IOKey("w_hh", shape=[3 * H, H])}):
        model = Model()
        with pytest.raises(ShapeMismatchError):
            model |= Operator(CATALOGUE["lstm"], batch_first=False, bidirectional=False)(
                input=IOKey("x", shape=[T, N, IN]), **{**weights, **bad}, output="y")
