"""The reference Mithril's remaining rows (issue 14): ``PhysicalModel.evaluate_all``,
``evaluate(params, data=...)`` with compile-time constants given again,
``canonical_input`` / ``canonical_output``, ``expose_keys`` under a second name,
``compile(use_short_namings=...)``, the size-free reference ``RNNCell()`` / ``LSTMCell()`` with
``ManyToOne`` / ``OneToMany``, parameter shapes inferred at evaluate and
``mithril.backends.with_autograd``. Numbers are compared with NumPy float64 and PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey, TerminalError
from mithril.models import (
    Linear,
    Mean,
    Model,
    Relu,
    Sigmoid,
    SquaredError,
    TrainModel,
)
from tests.backend_names import WIDEST, ids_of, tolerances
from tests.backend_names import backend_of as make

BACKENDS = WIDEST
IDS = ids_of(BACKENDS)
RNG = np.random.default_rng(7)

tol = tolerances((1e-10, 1e-12), (2e-5, 1e-6))


def regression(b: Any) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    tm = TrainModel(Linear(2)(input_size=3))
    tm.add_loss(SquaredError(), input="output", target="target", reduce_steps=[Mean()])
    x, t = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    w, bias = RNG.normal(size=(2, 3)), RNG.normal(size=(2,))
    return tm, {"weight": w, "bias": bias}, {"input": x, "target": t}


# ---- evaluate_all ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_evaluate_all_gives_outputs_and_final_cost_gradients(backend: tuple[str, str]) -> None:
    b = make(*backend)
    tm, p, d = regression(b)
    pm = ml.compile(tm, b, shapes={"input": [4, 3]})
    params = {k: b.array(v) for k, v in p.items()}
    outputs, grads = pm.evaluate_all(params, {k: b.array(v) for k, v in d.items()})
    err = d["input"] @ p["weight"].T + p["bias"] - d["target"]
    np.testing.assert_allclose(float(outputs["final_cost"]), np.mean(err ** 2), **tol(backend[1]))
    np.testing.assert_allclose(np.asarray(grads["weight"]), 2 * err.T @ d["input"] / err.size,
                               **tol(backend[1]))
    np.testing.assert_allclose(np.asarray(grads["bias"]), 2 * err.sum(0) / err.size,
                               **tol(backend[1]))
    # an explicit output gradient is passed through: twice the seed, twice the gradient
    _, grads2 = pm.evaluate_all(params, {k: b.array(v) for k, v in d.items()},
                                output_gradients={"final_cost": b.array(2.0)})
    np.testing.assert_allclose(np.asarray(grads2["weight"]), 2 * np.asarray(grads["weight"]),
                               **tol(backend[1]))


def test_evaluate_all_with_constant_keys_given_again_and_data_keyword() -> None:
    """The reference's loop: ``pm.evaluate_all(params, constant_keys)`` where every input was
    compiled as a constant; and ``evaluate(params, data=...)``."""
    b = ml.NumpyBackend(dtype=ml.float64)
    tm, p, d = regression(b)
    pm = ml.compile(tm, b, constant_keys={k: b.array(v) for k, v in d.items()})
    assert pm.constant_keys == {"input", "target"}
    out_a, g_a = pm.evaluate_all(p, {k: b.array(v) for k, v in d.items()})
    out_b, g_b = pm.evaluate(p, output_gradients=True)
    assert float(out_a["final_cost"]) == float(out_b["final_cost"])
    np.testing.assert_array_equal(g_a["weight"], g_b["weight"])
    # constants given again are ignored (not used): other values give the same result
    out_c = pm.evaluate(p, data={"input": b.array(d["input"] + 100.0)})
    assert float(out_c["final_cost"]) == float(out_b["final_cost"])
    # a key that is neither an input nor a constant is still an error
    with pytest.raises(ml.InputError, match="unknown"):
        pm.evaluate(p, data={"inptu": b.array(d["input"])})
    with pytest.raises(ml.ArgumentError, match="both inputs and data"):
        pm.evaluate(p, {}, data={})


# ---- canonical_input / canonical_output, expose_keys under a second name --------------------
def test_canonical_input_and_output_are_cin_and_cout() -> None:
    m = Model()
    m |= Linear(3)(input="x", output="h")
    m += Relu()(output="y")
    assert m.canonical_input is m.cin and m.cin.key == "x"
    assert m.canonical_output is m.cout and m.cout.key == "y"
    m.set_cout("h")
    assert m.canonical_output.key == "h"


def test_expose_keys_gives_a_named_output_a_second_name() -> None:
    """``tm.expose_keys(predictions=model.cout)`` as in the reference's CNN example: the model's
    output stays readable as ``output`` and is also ``predictions``."""
    b = ml.NumpyBackend(dtype=ml.float64)
    net = Model()
    net |= Linear(2)(input="input", output=IOKey("output"))
    tm = TrainModel(net)
    tm.expose_keys(predictions=net.cout)
    tm.add_loss(SquaredError(), input=net.cout, target="target", reduce_steps=[Mean()])
    pm = ml.compile(tm, b, shapes={"input": [3, 4]})
    x, t = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 2))
    w, bias = RNG.normal(size=(2, 4)), RNG.normal(size=(2,))
    out = pm.evaluate({"linear.weight": w, "linear.bias": bias}, {"input": x, "target": t})
    np.testing.assert_allclose(out["predictions"], x @ w.T + bias, rtol=1e-12)
    np.testing.assert_array_equal(out["predictions"], out["output"])
    np.testing.assert_allclose(out["final_cost"], np.mean((x @ w.T + bias - t) ** 2), rtol=1e-12)
    other = Model()
    other |= Linear(2)(input="input", output=IOKey("output"))
    other |= Relu()(input="output", output="r")
    with pytest.raises(TerminalError, match="already taken"):
        other.expose_keys(input=other.r)


# ---- compile(use_short_namings=...) --------------------------------------------------------
def named_mlp() -> Model:
    block = Model(name="block")
    block |= Linear(4, name="fc")(input="input")
    block += Relu()
    block += Linear(3)(output=IOKey("output"))
    top = Model(name="top")
    top |= block(input="input")
    top += Linear(2)
    top += Linear(2)(output=IOKey("output"))
    return top


def test_use_short_namings_gives_the_reference_key_names() -> None:
    b = ml.NumpyBackend(dtype=ml.float64)
    dotted = ml.compile(named_mlp(), b, shapes={"input": [5, 6]})
    long = ml.compile(named_mlp(), b, shapes={"input": [5, 6]}, use_short_namings=False)
    short = ml.compile(named_mlp(), b, shapes={"input": [5, 6]}, use_short_namings=True)
    assert sorted(dotted.param_keys) == [
        "block.fc.bias", "block.fc.weight", "block.linear.bias", "block.linear.weight",
        "linear.bias", "linear.weight", "linear_1.bias", "linear_1.weight"]
    # the path joined by "_"; unnamed submodels numbered where their parent has several
    assert sorted(long.param_keys) == [
        "block_fc_bias", "block_fc_weight", "block_linear_bias", "block_linear_weight",
        "linear_0_bias", "linear_0_weight", "linear_1_bias", "linear_1_weight"]
    assert sorted(short.param_keys) == [f"{t}_{i}" for t in ("bias", "weight")
                                        for i in range(4)]
    assert long.shapes["block_fc_weight"] == [4, 6] and short.shapes["weight_0"] == [4, 6]
    params = dotted.randomize_params(seed=3)
    x = RNG.normal(size=(5, 6))
    want = dotted.evaluate(params, {"input": x})["output"]
    ref = x
    for layer, act in (("block.fc", True), ("block.linear", False), ("linear", False),
                       ("linear_1", False)):
        ref = ref @ params[f"{layer}.weight"].T + params[f"{layer}.bias"]
        ref = np.maximum(ref, 0) if act else ref
    np.testing.assert_allclose(want, ref, rtol=1e-12)
    to_long = {k: k.replace(".", "_").replace("linear_bias", "linear_0_bias")
               .replace("linear_weight", "linear_0_weight") for k in params}
    to_long = {k: v.replace("block_linear_0", "block_linear") for k, v in to_long.items()}
    got = long.evaluate({to_long[k]: v for k, v in params.items()}, {"input": x})["output"]
    np.testing.assert_array_equal(got, want)
    order = ["block.fc", "block.linear", "linear", "linear_1"]
    to_short = {f"{layer}.{t}": f"{t}_{i}" for i, layer in enumerate(order)
                for t in ("weight", "bias")}
    got = short.evaluate({to_short[k]: v for k, v in params.items()}, {"input": x})["output"]
    np.testing.assert_array_equal(got, want)


def test_use_short_namings_names_in_compile_arguments() -> None:
    """``constant_keys``, ``shapes``, ``trainable_keys`` and ``discard_keys`` take the names
    chosen by ``use_short_namings``."""
    b = ml.NumpyBackend(dtype=ml.float64)
    w = RNG.normal(size=(4, 6))
    pm = ml.compile(named_mlp(), b, use_short_namings=False,
                    shapes={"block_fc_weight": [4, 6]},
                    constant_keys={"block_fc_weight": w})
    assert "block_fc_weight" not in pm.param_keys and "block_fc_bias" in pm.param_keys
    params = pm.randomize_params(seed=1)
    x = RNG.normal(size=(2, 6))
    h = np.maximum(x @ w.T + params["block_fc_bias"], 0)
    h = h @ params["block_linear_weight"].T + params["block_linear_bias"]
    h = h @ params["linear_0_weight"].T + params["linear_0_bias"]
    h = h @ params["linear_1_weight"].T + params["linear_1_bias"]
    np.testing.assert_allclose(pm.evaluate(params, {"input": x})["output"], h, rtol=1e-12)


# ---- the reference's size-free RNNCell and ManyToOne over it --------------------------------
def torch_many_to_one(p: dict[str, np.ndarray], xs: list[np.ndarray], h0: np.ndarray
                      ) -> tuple[list[Any], Any, dict[str, Any]]:
    """The reference's equations, written in PyTorch float64 (autograd for the gradients)."""
    import torch

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    h = torch.tensor(h0)
    outs, compls = [], []
    for x in xs:
        n = x.shape[0]
        compls.append(h[n:])
        h = torch.tanh(h[:n] @ tp["w_hh"].T + torch.tensor(x) @ tp["w_ih"].T + tp["bias_h"])
        outs.append(h @ tp["w_ho"].T + tp["bias_o"])
    concat = torch.cat([h, compls[-1], *compls[-2:0:-1]], dim=0)
    return outs, concat, tp


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_reference_rnn_cell_many_to_one_on_variable_length_batches(backend: tuple[str, str]
                                                                   ) -> None:
    from mithril.models import ManyToOne, RNNCell

    b = make(*backend)
    lengths = [5, 4, 2, 1]  # rows still running at each step (sorted by length)
    d_in, d_hid, d_out = 2, 5, 3
    xs = [RNG.normal(size=(n, 1, d_in)) for n in lengths]
    h0 = RNG.normal(size=(5, 1, d_hid))
    p = {"w_ih": RNG.normal(size=(d_hid, d_in)), "w_hh": RNG.normal(size=(d_hid, d_hid)) * 0.5,
         "w_ho": RNG.normal(size=(d_out, d_hid)), "bias_h": RNG.normal(size=(d_hid,)),
         "bias_o": RNG.normal(size=(d_out,))}
    model = ManyToOne(RNNCell(), len(lengths))
    shapes = {f"input{t}": list(x.shape) for t, x in enumerate(xs)}
    shapes |= {"initial_hidden": list(h0.shape), "w_ho": [d_out, d_hid]}
    pm = ml.compile(model, b, shapes=shapes)
    assert sorted(pm.param_keys) == sorted(p)
    assert pm.output_keys == [f"output{t}" for t in range(4)] + ["hidden_concat"] or set(
        pm.output_keys) == {f"output{t}" for t in range(4)} | {"hidden_concat"}
    data = {f"input{t}": b.array(x) for t, x in enumerate(xs)} | {"initial_hidden": b.array(h0)}
    params = {k: b.array(v) for k, v in p.items()}
    og = {"output3": b.array(np.ones((1, 1, d_out)))}
    out, grads = pm.evaluate(params, data, output_gradients=og)
    want, concat, tp = torch_many_to_one(p, xs, h0)
    for t in range(4):
        np.testing.assert_allclose(np.asarray(out[f"output{t}"]), want[t].detach().numpy(),
                                   **tol(backend[1]))
    np.testing.assert_allclose(np.asarray(out["hidden_concat"]), concat.detach().numpy(),
                               **tol(backend[1]))
    assert np.asarray(out["hidden_concat"]).shape == (5, 1, d_hid)
    want[3].sum().backward()
    for k in p:
        np.testing.assert_allclose(np.asarray(grads[k]), tp[k].grad.numpy(), **tol(backend[1]))


def test_rnn_cell_serves_both_apis() -> None:
    from mithril.models import RNNCell, recurrent

    ref = RNNCell()
    assert ref.input_terminals() == ["input", "prev_hidden", "w_ih", "w_hh", "w_ho", "bias_h",
                                     "bias_o"]
    assert ref.output_terminals() == ["hidden", "hidden_compl", "output"]
    assert ref.cin.key == "input" and ref.cout.key == "output"
    guide = RNNCell(3, 4)
    assert isinstance(guide, recurrent.RNNCell)
    assert isinstance(RNNCell(input_size=3, hidden_size=4, bias=False), recurrent.RNNCell)
    # the reference's cell alone, against NumPy float64
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(ref, b, shapes={"input": [2, 1, 3], "prev_hidden": [3, 1, 4],
                                    "w_ho": [2, 4]})
    assert pm.shapes["w_ih"] == [4, 3] and pm.shapes["bias_o"] == [2]
    assert "input" in pm.data_keys and "prev_hidden" in pm.data_keys
    params = pm.randomize_params(seed=2)
    x, h = RNG.normal(size=(2, 1, 3)), RNG.normal(size=(3, 1, 4))
    out = pm.evaluate(params, {"input": x, "prev_hidden": h})
    hid = np.tanh(h[:2] @ params["w_hh"].T + x @ params["w_ih"].T + params["bias_h"])
    np.testing.assert_allclose(out["hidden"], hid, rtol=1e-12)
    np.testing.assert_allclose(out["output"], hid @ params["w_ho"].T + params["bias_o"],
                               rtol=1e-12)
    np.testing.assert_array_equal(out["hidden_compl"], h[2:])


# ---- parameter shapes taken from the arrays given to evaluate --------------------------------
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_shapes_at_evaluate_compiles_for_the_given_arrays(backend: tuple[str, str]) -> None:
    b = make(*backend)
    m = Model()
    m |= Linear(4)(input="input")
    m += Relu()
    m += Linear(2)(output=IOKey("output"))
    with pytest.raises(ml.CompileError, match="shapes_at_evaluate=True"):
        ml.compile(m, b)
    pm = ml.compile(m, b, shapes_at_evaluate=True, use_short_namings=False)
    with pytest.raises(ml.CompileError, match="linear_0_weight"):
        pm.randomize_params()
    for n_in, batch in ((3, 5), (6, 2), (3, 5)):
        p = {"linear_0_weight": RNG.normal(size=(4, n_in)), "linear_0_bias": RNG.normal(size=4),
             "linear_1_weight": RNG.normal(size=(2, 4)), "linear_1_bias": RNG.normal(size=2)}
        x = RNG.normal(size=(batch, n_in))
        out, grads = pm.evaluate({k: b.array(v) for k, v in p.items()}, {"input": b.array(x)},
                                 output_gradients={"output": b.array(np.ones((batch, 2)))})
        h = np.maximum(x @ p["linear_0_weight"].T + p["linear_0_bias"], 0)
        np.testing.assert_allclose(np.asarray(out["output"]),
                                   h @ p["linear_1_weight"].T + p["linear_1_bias"],
                                   **tol(backend[1]))
        np.testing.assert_allclose(np.asarray(grads["linear_1_weight"]),
                                   np.ones((batch, 2)).T @ h, **tol(backend[1]))
        assert pm.shapes["linear_0_weight"] == [4, n_in]
    assert len(pm._compiled) == 2  # one compiled model per set of shapes, reused
    assert sorted(pm.randomize_params()) == sorted(p)


# ---- mithril.backends.with_autograd ----------------------------------------------------------
def test_reference_backend_module_paths() -> None:
    from mithril.backends.with_autograd.jax_backend import JaxBackend
    from mithril.backends.with_autograd.torch_backend import TorchBackend
    from mithril.backends.with_autograd.torch_backend.parallel import TorchParallel
    from mithril.backends.with_manualgrad.numpy_backend import NumpyBackend

    assert TorchBackend is ml.TorchBackend and JaxBackend is ml.JaxBackend
    assert NumpyBackend is ml.NumpyBackend
    assert TorchParallel._instance is None  # no process group is running
    with pytest.raises(ImportError):
        from mithril.backends.with_autograd.torch_backend import CBackend  # noqa: F401
    b = TorchBackend(dtype=ml.float64)
    x = b.array([1.0, -2.0])
    assert np.asarray(b.abs(x)).tolist() == [1.0, 2.0]


# ---- connection spellings of the reference's examples ----------------------------------------
def test_slices_and_tuples_of_connections_as_indices() -> None:
    """``p[:n]``, ``p[n:]``, ``x[..., 1:n]``, ``x[n - 1, :, 1:n]`` with ``n`` a connection (the
    reference's cells slice the previous state by the input's batch size)."""
    m = Model()
    x, p = IOKey("input"), IOKey("prev_hidden")
    n = x.shape()[0]  # the reference's older x.shape() is x.shape
    m |= Relu()(input=p[:n], output=IOKey("a", expose=True))
    m |= Relu()(input=p[n:], output=IOKey("b", expose=True))
    m |= Relu()(input=m.b[..., 1:n], output=IOKey("c"))
    m |= Relu()(input=m.a[n - 1, :, 1:n], output=IOKey("d"))
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(m, b, shapes={"input": [2, 1, 3], "prev_hidden": [3, 1, 4]})
    assert [pm.shapes[k] for k in "abcd"] == [[2, 1, 4], [1, 1, 4], [1, 1, 1], [1, 1]]
    h = RNG.normal(size=(3, 1, 4))
    out = pm.evaluate({}, {"input": np.zeros((2, 1, 3)), "prev_hidden": h})
    r = np.maximum(h, 0)
    np.testing.assert_array_equal(out["a"], r[:2])
    np.testing.assert_array_equal(out["b"], r[2:])
    np.testing.assert_array_equal(out["c"], r[2:][..., 1:2])
    np.testing.assert_array_equal(out["d"], r[:2][1, :, 1:2])


def test_set_differentiable_on_a_connection() -> None:
    """``model.input.set_differentiable(False)``: the input is data, not a parameter."""
    m = Model()
    m |= Linear(2)(input="x", output=IOKey("y"))
    b = ml.NumpyBackend(dtype=ml.float64)
    m.x.set_differentiable(True)
    assert "x" in ml.compile(m, b, shapes={"x": [3, 4]}).param_keys
    m.x.set_differentiable(False)
    pm = ml.compile(m, b, shapes={"x": [3, 4]})
    assert "x" in pm.data_keys and "x" not in pm.param_keys


def test_clamp_floor_and_set_shapes_on_connections() -> None:
    m = Model()
    x = IOKey("x")
    lo = x.shape[1] - 3  # a bound computed from a shape: 1
    m |= Relu()(input=x.floor().clamp(lo, 2.5), output=IOKey("y"))
    m.x.set_shapes([2, 4])
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(m, b)
    assert pm.shapes["x"] == [2, 4]
    v = RNG.normal(size=(2, 4)) * 4
    np.testing.assert_array_equal(pm.evaluate({}, {"x": v})["y"],
                                  np.maximum(np.clip(np.floor(v), 1, 2.5), 0))


def test_functional_calls_reading_the_same_iokey_build_one_model() -> None:
    """As the reference's IOKey (a connection once used): two functional calls that read only
    IOKeys, and expressions left on IOKeys, end up in one model (segformer's interpolation)."""
    from mithril.models import Arange

    x, n = IOKey("x"), IOKey("n")
    a = Arange()(stop=n)
    b = Arange()(stop=n + 1)
    total = a.sum() + b.sum()
    out = (x * 2.0) * total  # an expression on an IOKey not used yet, with a connection
    m = Model.create(output=out, total=total)
    pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [2]},
                    constant_keys={"n": 3})
    res = pm.evaluate({}, {"x": np.array([1.0, -0.5])})
    assert float(res["total"]) == 9.0  # (0 + 1 + 2) + (0 + 1 + 2 + 3)
    np.testing.assert_array_equal(res["output"], np.array([18.0, -9.0]))


def test_chaining_after_set_cout_moves_the_canonical_output() -> None:
    """Whisper's blocks: ``set_cout("attn_res")``, then ``+=`` LayerNorm, Linear, Relu: each
    chains onto the previous one (the canonical output moves past the choice); ``|=`` keeps a
    ``set_cout`` choice."""
    block = Model()
    block |= Relu()(input="input", output="r")
    block |= Relu()(input="r", output=IOKey("attn_res", expose=True))
    block.set_cout("attn_res")
    block += Linear(3, name="fc1")
    block += Sigmoid()
    assert block.cout is not block.attn_res
    block += Linear(2, name="fc2")(output=IOKey("output"))
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(block, b, shapes={"input": [4, 5]})
    p = pm.randomize_params(seed=5)
    x = RNG.normal(size=(4, 5))
    out = pm.evaluate(p, {"input": x})
    h = 1 / (1 + np.exp(-(np.maximum(x, 0) @ p["fc1.weight"].T + p["fc1.bias"])))
    np.testing.assert_allclose(out["output"], h @ p["fc2.weight"].T + p["fc2.bias"], rtol=1e-12)
    np.testing.assert_array_equal(out["attn_res"], np.maximum(x, 0))
    other = Model()
    other |= Relu()(input="input", output="r")
    other.set_cout("r")
    other |= Sigmoid()(input="r", output=IOKey("s"))  # |= keeps the choice
    assert other.cout is other.r


def test_split_dtype_and_deepcopy_of_a_model() -> None:
    """Flux's spellings: ``x.split(n, axis)[i]``, ``Cast(dtype=x.dtype())`` and
    ``deepcopy(block)`` added beside the original (separate parameters)."""
    from copy import deepcopy

    from mithril.models import Cast

    b = ml.NumpyBackend(dtype=ml.float64)
    m = Model()
    x = IOKey("x")
    m |= Relu()(input=x.split(3, axis=1)[1], output=IOKey("mid"))
    m |= Cast(dtype=ml.float32)(input=x, output="low")
    m |= Cast()(input=m.low, dtype=x.dtype(), output=IOKey("back"))
    pm = ml.compile(m, b, shapes={"x": [2, 6]})
    v = RNG.normal(size=(2, 6))
    out = pm.evaluate({}, {"x": v})
    np.testing.assert_array_equal(out["mid"], np.maximum(v[:, 2:4], 0))
    assert out["back"].dtype == np.float64
    np.testing.assert_array_equal(out["back"], v.astype(np.float32).astype(np.float64))

    mlp = Model(name="img_mlp")
    mlp |= Linear(4, name="0")(input="input")
    mlp += Relu()
    twin = deepcopy(mlp)
    twin.name = "txt_mlp"
    top = Model()
    top |= mlp(input="a", output=IOKey("ya"))
    top |= twin(input="b", output=IOKey("yb"))
    pm = ml.compile(top, b, shapes={"a": [2, 3], "b": [2, 3]})
    assert sorted(pm.param_keys) == ["img_mlp.0.bias", "img_mlp.0.weight", "txt_mlp.0.bias",
                                     "txt_mlp.0.weight"]
    p = pm.randomize_params(seed=4)
    a, c = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
    out = pm.evaluate(p, {"a": a, "b": c})
    np.testing.assert_allclose(out["ya"], np.maximum(a @ p["img_mlp.0.weight"].T
                                                     + p["img_mlp.0.bias"], 0), rtol=1e-12)
    np.testing.assert_allclose(out["yb"], np.maximum(c @ p["txt_mlp.0.weight"].T
                                                     + p["txt_mlp.0.bias"], 0), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_reference_lstm_cell_many_to_one_on_variable_length_batches(backend: tuple[str, str]
                                                                    ) -> None:
    import torch

    from mithril.models import LSTMCell, ManyToOne, recurrent

    assert isinstance(LSTMCell(3, 4), recurrent.LSTMCell)  # the guide's nn.LSTMCell
    assert LSTMCell().output_terminals() == ["hidden", "cell", "hidden_compl", "output"]
    b = make(*backend)
    lengths = [4, 3, 1]
    d_in, d_hid, d_out = 2, 3, 2
    xs = [RNG.normal(size=(n, 1, d_in)) for n in lengths]
    h0, c0 = RNG.normal(size=(4, 1, d_hid)), RNG.normal(size=(4, 1, d_hid))
    p = {f"w_{g}": RNG.normal(size=(d_hid, d_in + d_hid)) * 0.7 for g in "ifco"}
    p |= {f"bias_{g}": RNG.normal(size=(d_hid,)) for g in "ifco"}
    p |= {"w_out": RNG.normal(size=(d_out, d_hid)), "bias_out": RNG.normal(size=(d_out,))}
    pm = ml.compile(ManyToOne(LSTMCell(), 3), b, shapes={
        **{f"input{t}": list(x.shape) for t, x in enumerate(xs)},
        "initial_hidden": list(h0.shape), "initial_cell": list(c0.shape),
        "w_out": [d_out, d_hid]})
    assert sorted(pm.param_keys) == sorted(p)
    data = {f"input{t}": b.array(x) for t, x in enumerate(xs)}
    data |= {"initial_hidden": b.array(h0), "initial_cell": b.array(c0)}
    og = {"output2": b.array(np.ones((1, 1, d_out)))}
    out, grads = pm.evaluate({k: b.array(v) for k, v in p.items()}, data, output_gradients=og)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    h, c = torch.tensor(h0), torch.tensor(c0)
    outs, compls = [], []
    for x in xs:
        n = x.shape[0]
        compls.append(h[n:])
        z = torch.cat([torch.tensor(x), h[:n]], dim=-1)
        gate = {g: z @ tp[f"w_{g}"].T + tp[f"bias_{g}"] for g in "ifco"}
        c = c[:n] * torch.sigmoid(gate["f"]) + torch.sigmoid(gate["i"]) * torch.tanh(gate["c"])
        h = torch.tanh(c) * torch.sigmoid(gate["o"])
        outs.append(h @ tp["w_out"].T + tp["bias_out"])
    for t in range(3):
        np.testing.assert_allclose(np.asarray(out[f"output{t}"]), outs[t].detach().numpy(),
                                   **tol(backend[1]))
    concat = torch.cat([h, compls[-1], *compls[-2:0:-1]], dim=0)
    np.testing.assert_allclose(np.asarray(out["hidden_concat"]), concat.detach().numpy(),
                               **tol(backend[1]))
    outs[2].sum().backward()
    for k in p:
        np.testing.assert_allclose(np.asarray(grads[k]), tp[k].grad.numpy(), **tol(backend[1]))


@pytest.mark.parametrize("make", ["guide_rnn", "guide_lstm", "ref_rnn", "ref_lstm"])
def test_cells_round_trip_through_to_dict(make: str) -> None:
    import json

    from mithril.models import LSTMCell, ManyToOne, RNNCell

    cell = {"guide_rnn": lambda: RNNCell(2, 3), "guide_lstm": lambda: LSTMCell(2, 3),
            "ref_rnn": RNNCell, "ref_lstm": LSTMCell}[make]()
    inner = ManyToOne(cell, 2)
    model = Model()
    model |= inner(**{k: k for k in (*inner.input_terminals(), *inner.output_terminals())})
    again = Model.from_dict(json.loads(json.dumps(model.to_dict())))
    if make.startswith("ref"):
        shapes = {"input0": [2, 1, 2], "input1": [1, 1, 2], "initial_hidden": [2, 1, 3],
                  "w_out" if make == "ref_lstm" else "w_ho": [1, 3]}
        if make == "ref_lstm":
            shapes["initial_cell"] = [2, 1, 3]
    else:
        shapes = {"input0": [1, 2], "input1": [1, 2]}
    b = ml.NumpyBackend(dtype=ml.float64)
    p1, p2 = ml.compile(model, b, shapes=shapes), ml.compile(again, b, shapes=shapes)
    assert p1.code == p2.code
