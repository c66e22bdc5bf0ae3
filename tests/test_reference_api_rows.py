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
    SquaredError,
    TrainModel,
)

BACKENDS = [("numpy", "float64"), ("torch", "float64"), ("jax", "float64"),
            ("mlx", "float32")]
IDS = [f"{b}-{d}" for b, d in BACKENDS]
RNG = np.random.default_rng(7)


def make(name: str, dtype: str) -> Any:
    cls = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
           "mlx": ml.MlxBackend}[name]
    return cls(dtype=getattr(ml, dtype))


def tol(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-5,
                                                                      "atol": 1e-6}


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
