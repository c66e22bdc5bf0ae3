"""The reference's variable-length sequence models over its size-free cells (``OneToMany``,
``EncoderDecoder``, ``EncoderDecoderInference`` of ``RNNCell()`` / ``LSTMCell()``) and its
time-slot helpers (``mithril.utils.utils``), checked against PyTorch float64 autograd written
from the documented step equations, on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.errors import ArgumentError
from mithril.models import (
    EncoderDecoder,
    EncoderDecoderInference,
    LSTMCell,
    Mean,
    OneToMany,
    RNNCell,
    SquaredError,
    TrainModel,
)
from mithril.utils.utils import pack_data_into_time_slots, unpack_time_slot_data
from tests.backend_names import WIDEST, ids_of, tolerances
from tests.backend_names import backend_of as make

BACKENDS = WIDEST
IDS = ids_of(BACKENDS)
RNG = np.random.default_rng(11)

tol = tolerances((1e-10, 1e-12), (2e-5, 2e-6))


# ---- time slots -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_pack_data_into_time_slots_sorts_longest_first_and_slices_each_step(
        backend: tuple[str, str]) -> None:
    b = make(*backend)
    lens = [2, 4, 1, 4, 3]
    seqs = [RNG.normal(size=(n, 2)) for n in lens]
    tails = [RNG.normal(size=(n, 1)) for n in (3, 1, 2, 2, 4)]
    data = [(b.array(s), b.array(t)) for s, t in zip(seqs, tails, strict=True)]
    slots, ordered = pack_data_into_time_slots(data, b)
    order = [1, 3, 4, 0, 2]  # longest first, ties in the given order
    assert [id(s) for s in ordered] == [id(data[i]) for i in order]
    assert sorted(slots) == ["input0", "input1", "input2", "input3"]
    for t in range(4):
        want = np.stack([seqs[i][t] for i in order if lens[i] > t])[:, None, :]
        np.testing.assert_array_equal(np.asarray(slots[f"input{t}"]), want.astype(
            np.asarray(slots["input0"]).dtype))
    # the targets of the input-sorted samples, sorted again: indices into that order
    idx, tslots, by_target = pack_data_into_time_slots(ordered, b, key=("target",), index=1,
                                                       return_indices=True)
    tl = [tails[i].shape[0] for i in order]  # [1, 2, 4, 3, 2]
    assert idx == [2, 3, 1, 4, 0]
    assert [x[1].shape[0] for x in by_target] == sorted(tl, reverse=True)
    np.testing.assert_array_equal(np.asarray(tslots["target3"])[:, 0, 0],
                                  np.asarray([tails[order[2]][3, 0]], dtype=np.asarray(
                                      tslots["target3"]).dtype))
    # given lengths and already sorted data: kept as it is; unsorted with sorted_data raises
    same, kept = pack_data_into_time_slots(ordered, b, lengths=np.array([4, 4, 3, 2, 1]),
                                           sorted_data=True)
    assert kept == ordered and sorted(same) == sorted(slots)
    with pytest.raises(ArgumentError, match="not in decreasing order"):
        pack_data_into_time_slots(data, b, sorted_data=True)


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_unpack_time_slot_data_pads_stacks_and_undoes_the_sort(backend: tuple[str, str]
                                                                 ) -> None:
    b = make(*backend)
    lens = [1, 3, 2]  # sorted order [1, 2, 0]: not its own inverse
    seqs = [RNG.normal(size=(n, 2)) for n in lens]
    idx, slots, _ = pack_data_into_time_slots([(b.array(s),) for s in seqs], b,
                                              key=("out",), return_indices=True)
    packed = unpack_time_slot_data(b, slots, max_length=3, max_size=3, output_dim=2,
                                   key="out")
    assert tuple(packed.shape) == (3, 3, 2)
    for row, i in enumerate(idx):  # sorted row j is sample idx[j], zero padded
        want = np.zeros((3, 2))
        want[:lens[i]] = seqs[i]
        np.testing.assert_allclose(np.asarray(packed[row]), want, **tol(backend[1]))
    back = unpack_time_slot_data(b, slots, 3, 3, 2, key="out", indices=idx)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(np.asarray(back[i])[:lens[i]], s, **tol(backend[1]))
    with pytest.raises(ArgumentError, match="no 'missing'0"):
        unpack_time_slot_data(b, slots, 3, 3, 2, key="missing")


# ---- the size-free cells unrolled, against PyTorch ---------------------------------------

def torch_step(kind: str, p: dict[str, Any], pre: str, x: Any, h: Any, c: Any
               ) -> tuple[Any, Any, Any]:
    """One step of the reference's cell (documented equations): new hidden, cell, output."""
    import torch

    n = x.shape[0]
    if kind == "rnn":
        h = torch.tanh(h[:n] @ p[pre + "w_hh"].T + x @ p[pre + "w_ih"].T + p[pre + "bias_h"])
        return h, None, (h @ p[pre + "w_ho"].T + p[pre + "bias_o"]
                         if pre + "w_ho" in p else None)
    z = torch.cat([x, h[:n]], dim=-1)
    g = {k: z @ p[f"{pre}w_{k}"].T + p[f"{pre}bias_{k}"] for k in "ifco"}
    c = c[:n] * torch.sigmoid(g["f"]) + torch.sigmoid(g["i"]) * torch.tanh(g["c"])
    h = torch.tanh(c) * torch.sigmoid(g["o"])
    return h, c, (h @ p[pre + "w_out"].T + p[pre + "bias_out"] if pre + "w_out" in p
                  else None)  # an encoder has no output projection


def cell_params(kind: str, d_in: int, d_hid: int, d_out: int, pre: str = ""
                ) -> dict[str, np.ndarray]:
    if kind == "rnn":
        return {pre + "w_ih": RNG.normal(size=(d_hid, d_in)) * 0.6,
                pre + "w_hh": RNG.normal(size=(d_hid, d_hid)) * 0.6,
                pre + "w_ho": RNG.normal(size=(d_out, d_hid)),
                pre + "bias_h": RNG.normal(size=(d_hid,)), pre + "bias_o": RNG.normal(
                    size=(d_out,))}
    p = {f"{pre}w_{g}": RNG.normal(size=(d_hid, d_in + d_hid)) * 0.6 for g in "ifco"}
    p |= {f"{pre}bias_{g}": RNG.normal(size=(d_hid,)) for g in "ifco"}
    return p | {pre + "w_out": RNG.normal(size=(d_out, d_hid)),
                pre + "bias_out": RNG.normal(size=(d_out,))}


def encoder_params(kind: str, d_in: int, d_hid: int) -> dict[str, np.ndarray]:
    """An encoder's parameters: its outputs are read by nothing, so its output projection
    (``w_ho``/``bias_o``, ``w_out``/``bias_out``) is not a parameter of the model."""
    dropped = ("w_ho", "bias_o") if kind == "rnn" else ("w_out", "bias_out")
    return {k: v for k, v in cell_params(kind, d_in, d_hid, 1).items() if k not in dropped}


def check_against_torch(b: Any, dtype: str, pm: Any, p: dict[str, np.ndarray],
                        data: dict[str, np.ndarray], torch_outs: list[Any], tp: dict[str, Any]
                        ) -> None:
    import torch

    og_np = {f"output{t}": RNG.normal(size=tuple(o.shape)) for t, o in enumerate(torch_outs)}
    out, grads = pm.evaluate({k: b.array(v) for k, v in p.items()},
                             {k: b.array(v) for k, v in data.items()},
                             output_gradients={k: b.array(v) for k, v in og_np.items()})
    for t, o in enumerate(torch_outs):
        np.testing.assert_allclose(np.asarray(out[f"output{t}"]), o.detach().numpy(),
                                   **tol(dtype))
    total = sum((o * torch.tensor(og_np[f"output{t}"])).sum() for t, o in enumerate(torch_outs))
    total.backward()
    assert sorted(grads) == sorted(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(grads[k]), tp[k].grad.numpy(), **tol(dtype),
                                   err_msg=k)


@pytest.mark.parametrize("teacher_forcing", [False, True], ids=["free", "teacher"])
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_one_to_many_over_reference_cells_matches_torch(backend: tuple[str, str], kind: str,
                                                        teacher_forcing: bool) -> None:
    import torch

    b = make(*backend)
    rows = [4, 3, 1]  # target{t} rows: the sequences still running at step t
    d, d_hid = 2, 3  # without teacher forcing the output feeds the next input: d_out = d_in
    cell = RNNCell() if kind == "rnn" else LSTMCell()
    model = OneToMany(cell, 3, teacher_forcing=teacher_forcing)
    assert [f"output{t}" for t in range(3)] == [k for k in model.output_terminals()
                                                if k.startswith("output")]
    p = cell_params(kind, d, d_hid, d)
    data = {"input": RNG.normal(size=(4, 1, d)), "initial_hidden": RNG.normal(size=(4, 1,
                                                                                    d_hid))}
    if kind == "lstm":
        data["initial_cell"] = RNG.normal(size=(4, 1, d_hid))
    data |= {f"target{t}": RNG.normal(size=(n, 1, d)) for t, n in enumerate(rows)}
    if not teacher_forcing:
        data.pop("target0")
    pm = ml.compile(model, b, shapes={k: list(v.shape) for k, v in data.items()} | {
        "w_out" if kind == "lstm" else "w_ho": [d, d_hid]})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    h = torch.tensor(data["initial_hidden"])
    c = torch.tensor(data["initial_cell"]) if kind == "lstm" else None
    x, outs = torch.tensor(data["input"]), []
    for t, n in enumerate(rows):
        if t > 0:
            src = torch.tensor(data[f"target{t - 1}"]) if teacher_forcing else outs[-1]
            x = src[:n]
        h, c, o = torch_step(kind, tp, "", x, h, c)
        outs.append(o)
    check_against_torch(b, backend[1], pm, p, data, outs, tp)


def encoder_decoder_data(kind: str, in_lens: list[int], tgt_lens: list[int], d: int,
                         d_hid: int) -> tuple[dict[str, np.ndarray], list[int], list[Any]]:
    """Random sequences packed as the reference's example packs them."""
    b = ml.NumpyBackend(dtype=ml.float64)
    samples = [(RNG.normal(size=(n, d)), RNG.normal(size=(m, d)))
               for n, m in zip(in_lens, tgt_lens, strict=True)]
    slots, by_input = pack_data_into_time_slots(samples, b)
    idx, tslots, _ = pack_data_into_time_slots(by_input, b, key=("target",), index=1,
                                               return_indices=True)
    k = len(samples)
    data = slots | tslots | {"initial_hidden": RNG.normal(size=(k, 1, d_hid)),
                             "decoder_input": RNG.normal(size=(k, 1, d)),
                             "indices": np.array(idx)}
    if kind == "lstm":
        data |= {"initial_cell": RNG.normal(size=(k, 1, d_hid)),
                 "decoder_initial_cell": RNG.normal(size=(k, 1, d_hid))}
    return data, idx, by_input


def torch_encoder(kind: str, tp: dict[str, Any], data: dict[str, np.ndarray], steps: int
                  ) -> Any:
    """The final hidden state of every input-sorted sequence (``hidden_concat``)."""
    import torch

    h = torch.tensor(data["initial_hidden"])
    c = torch.tensor(data["initial_cell"]) if kind == "lstm" else None
    compl = []
    for t in range(steps):
        x = torch.tensor(data[f"input{t}"])
        compl.append(h[x.shape[0]:])
        h, c, _ = torch_step(kind, tp, "", x, h, c)
    return torch.cat([h, *compl[::-1]], dim=0)


@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["teacher", "free"])
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_encoder_decoder_over_reference_cells_matches_torch(backend: tuple[str, str],
                                                            kind: str, teacher_forcing: bool
                                                            ) -> None:
    import torch

    b = make(*backend)
    d, d_hid = 1, 3
    in_lens, tgt_lens = [2, 4, 3, 4, 1], [3, 1, 2, 3, 2]
    data, idx, _ = encoder_decoder_data(kind, in_lens, tgt_lens, d, d_hid)
    model = EncoderDecoder(RNNCell() if kind == "rnn" else LSTMCell(), 4, 3,
                           teacher_forcing=teacher_forcing)
    if not teacher_forcing:  # target0 is read only as step 1's input
        data.pop("target0")
    assert {"indices", "decoder_input", "input0", "target1"} <= set(model.input_terminals())
    assert model.canonical_inputs() == ["input0", "decoder_input"]
    p = encoder_params(kind, d, d_hid) | cell_params(kind, d, d_hid, d, "decoder_")
    pm = ml.compile(model, b, shapes={k: list(v.shape) for k, v in data.items()
                                      if k != "indices"}
                    | {k: list(v.shape) for k, v in p.items()})
    assert sorted(pm.param_keys) == sorted(p)
    data["indices"] = data["indices"].astype(np.int64)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    # the decoder starts from the encoder's states reordered into target-sorted order
    h = torch_encoder(kind, tp, data, 4)[torch.tensor(idx)]
    c = torch.tensor(data["decoder_initial_cell"]) if kind == "lstm" else None
    x, outs = torch.tensor(data["decoder_input"]), []
    for t in range(3):
        if t > 0:
            src = torch.tensor(data[f"target{t - 1}"]) if teacher_forcing else outs[-1]
            x = src[:data[f"target{t}"].shape[0]]
        h, c, o = torch_step(kind, tp, "decoder_", x, h, c)
        outs.append(o)
    check_against_torch(b, backend[1], pm, p, data, outs, tp)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_encoder_decoder_inference_feeds_back_whole_outputs(backend: tuple[str, str],
                                                            kind: str) -> None:
    import torch

    b = make(*backend)
    d, d_hid = 1, 4
    data, _, _ = encoder_decoder_data(kind, [3, 1, 2], [1, 1, 1], d, d_hid)
    for k in ("indices", "target0"):
        data.pop(k)
    if kind == "lstm":  # the decoder reads only the first rows of a longer cell state
        data["decoder_initial_cell"] = RNG.normal(size=(5, 1, d_hid))
    p = encoder_params(kind, d, d_hid) | cell_params(kind, d, d_hid, d, "decoder_")
    model = EncoderDecoderInference(RNNCell() if kind == "rnn" else LSTMCell(), 3, 4)
    assert not any(k.startswith("target") or k == "indices" for k in model.input_terminals())
    pm = ml.compile(model, b, shapes={k: list(v.shape) for k, v in data.items()}
                    | {k: list(v.shape) for k, v in p.items()})
    assert sorted(pm.param_keys) == sorted(p)
    out = pm.evaluate({k: b.array(v) for k, v in p.items()},
                      {k: b.array(v) for k, v in data.items()})
    tp = {k: torch.tensor(v) for k, v in p.items()}
    h = torch_encoder(kind, tp, data, 3)
    c = torch.tensor(data["decoder_initial_cell"]) if kind == "lstm" else None
    x = torch.tensor(data["decoder_input"])
    for t in range(4):
        h, c, x = torch_step(kind, tp, "decoder_", x, h, c)
        np.testing.assert_allclose(np.asarray(out[f"output{t}"]), x.numpy(), **tol(backend[1]))


def test_encoder_decoder_trains_as_the_reference_example_does() -> None:
    """The example's pipeline in small: packed slots as constants, one ``SquaredError`` a
    target step; ``final_cost`` is the sum of the per-step means (NumPy float64) and plain
    gradient descent on it lowers it; the trained parameters evaluate the inference model."""
    import torch

    b = ml.TorchBackend(dtype=ml.float64)
    data, idx, _ = encoder_decoder_data("lstm", [3, 2, 3, 1], [2, 3, 1, 2], 1, 3)
    model = EncoderDecoder(LSTMCell(), 3, 3, teacher_forcing=True)
    tm = TrainModel(model)
    for t in range(3):
        tm.add_loss(SquaredError(), reduce_steps=[Mean()], input=f"output{t}",
                    target=f"target{t}")
    consts = {k: b.array(v) for k, v in data.items() if k != "indices"}
    consts["indices"] = b.array(np.array(idx, dtype=np.int64))
    pm = ml.compile(tm, b, constant_keys=consts)
    p = pm.randomize_params(seed=3)
    out, grads = pm.evaluate_all(p)
    tp = {k: torch.tensor(np.asarray(v)) for k, v in p.items()}
    h = torch_encoder("lstm", tp, data, 3)[torch.tensor(idx)]
    c, x, want = torch.tensor(data["decoder_initial_cell"]), torch.tensor(
        data["decoder_input"]), 0.0
    for t in range(3):
        if t > 0:
            x = torch.tensor(data[f"target{t - 1}"])[:data[f"target{t}"].shape[0]]
        h, c, o = torch_step("lstm", tp, "decoder_", x, h, c)
        want += float(((o - torch.tensor(data[f"target{t}"])) ** 2).mean())
    np.testing.assert_allclose(float(out["final_cost"]), want, rtol=1e-12)
    first = float(out["final_cost"])
    for _ in range(30):
        p = {k: v - 0.05 * grads[k] for k, v in p.items()}
        out, grads = pm.evaluate_all(p)
    assert float(out["final_cost"]) < 0.8 * first
    infer = ml.compile(EncoderDecoderInference(LSTMCell(), 3, 2), b, shapes_at_evaluate=True,
                       data_keys={"input0", "input1", "input2", "initial_hidden",
                                  "initial_cell", "decoder_input", "decoder_initial_cell"})
    one = {k: consts[k][:1] for k in ("input0", "input1", "input2", "initial_hidden",
                                      "initial_cell", "decoder_input",
                                      "decoder_initial_cell")}
    res = infer.evaluate(p, one)
    assert tuple(res["output1"].shape) == (1, 1, 1)
