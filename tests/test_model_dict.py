"""Model.to_dict / Model.from_dict: round trips, and malformed or hostile documents."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril import ModelFileError
from mithril.framework.ops import CATALOGUE
from mithril.models import (
    GRU,
    LSTM,
    AvgPool2d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Embedding,
    Flatten,
    IOKey,
    LayerNorm,
    Linear,
    MaxPool2d,
    Model,
    Operator,
    Relu,
    Softmax,
)
from tests.catalogue_cases import CASES
from tests.guide_models import (
    create_conv_net,
    create_residual_block,
    create_sequential,
    create_unet,
)
from tests.guide_snippets import blocks, for_backend
from tests.test_logical_guide import causal_self_attention

BACKEND = ml.NumpyBackend(dtype=ml.float64)


def roundtrip(model: Any) -> Any:
    return Model.from_dict(json.loads(json.dumps(model.to_dict())))


def assert_same(model: Any, shapes: dict[str, list[int]], int_inputs: dict | None = None):
    again = roundtrip(model)
    p1 = ml.compile(model, BACKEND, shapes=shapes)
    p2 = ml.compile(again, BACKEND, shapes=shapes)
    assert p1.param_keys == p2.param_keys and p1.state_keys == p2.state_keys
    assert p1.output_keys == p2.output_keys
    params = p1.randomize_params(seed=3)
    rng = np.random.default_rng(0)
    data = {k: rng.standard_normal(s) for k, s in shapes.items() if k in p1.data_keys}
    data.update(int_inputs or {})
    o1, o2 = p1.evaluate(params, data), p2.evaluate(params, data)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    return again


GUIDE = {
    "convnet": (create_conv_net, {"input": [2, 3, 32, 32]}),
    "sequential": (create_sequential, {"input": [2, 3, 32, 32]}),
    "resnet_same": (lambda: create_residual_block(8, 8), {"input": [2, 8, 6, 6]}),
    "resnet_down": (lambda: create_residual_block(8, 16), {"input": [2, 8, 6, 6]}),
    "unet": (create_unet, {"input": [1, 3, 8, 8]}),
    "attention": (lambda: causal_self_attention(16, 4), {"input": [2, 5, 16]}),
}


@pytest.mark.parametrize("name", list(GUIDE))
def test_guide_models_round_trip_to_identical_outputs(name):
    make, shapes = GUIDE[name]
    assert_same(make(), shapes)


def _single(layer: Any) -> Model:
    m = Model()
    m |= layer(input="input", output=IOKey("output"))
    return m


LAYERS = {
    "linear": (lambda: Linear(5), {"input": [3, 4]}),
    "linear_nobias": (lambda: Linear(5, use_bias=False), {"input": [3, 4]}),
    "conv2d": (lambda: Conv2d(3, 4, 3, stride=2, padding="valid", groups=1),
               {"input": [2, 3, 9, 9]}),
    "conv2d_same": (lambda: Conv2d(4, 4, 2, padding="same", groups=2), {"input": [1, 4, 5, 5]}),
    "conv1d": (lambda: Conv1d(2, 3, 3, dilation=2), {"input": [2, 2, 9]}),
    "batchnorm": (lambda: BatchNorm2d(3, momentum=0.2, affine=False), {"input": [4, 3, 2, 2]}),
    "maxpool": (lambda: MaxPool2d(3, stride=2, padding=1), {"input": [1, 2, 7, 7]}),
    "avgpool": (lambda: AvgPool2d(2), {"input": [1, 2, 6, 6]}),
    "flatten": (lambda: Flatten(0, 1), {"input": [2, 3, 4]}),
    "layernorm": (lambda: LayerNorm(4, eps=1e-3), {"input": [2, 4]}),
    "softmax": (lambda: Softmax(axis=0), {"input": [3, 2]}),
    "lstm": (lambda: LSTM(3, 4, num_layers=2, batch_first=True, seq_len=5),
             {"input": [2, 5, 3]}),
    "gru": (lambda: GRU(3, 4, bidirectional=True, seq_len=4), {"input": [4, 2, 3]}),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_round_trip(name):
    make, shapes = LAYERS[name]
    assert_same(_single(make()), shapes)


def test_embedding_round_trip():
    m = _single(Embedding(10, 3))
    assert_same(m, {"input": [2, 4]}, {"input": np.arange(8).reshape(2, 4) % 10})


@pytest.mark.parametrize("op_name", sorted(n for n in CASES if n not in ("cast",)))
def test_every_walked_primitive_round_trips(op_name):
    scalars, tensors = CASES[op_name](np.random.default_rng(0))[0]
    scalars = dict(scalars)
    n = scalars.pop("n", None)
    prim = Operator(CATALOGUE[op_name], n_inputs=n, **scalars)
    m = Model()
    m |= prim(**{k: IOKey(k) for k in tensors}, **{t: IOKey(t) for t in prim.output_names})
    again = roundtrip(m)
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    p1 = ml.compile(m, BACKEND, shapes=shapes, data_keys=set(tensors))
    p2 = ml.compile(again, BACKEND, shapes=shapes, data_keys=set(tensors))
    o1, o2 = p1.evaluate({}, tensors), p2.evaluate({}, tensors)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])


def test_names_terminals_and_flags_survive():
    m = Model(name="net")
    m |= Linear(4, name="proj")(input=IOKey("x", shape=["N", 3]),
                                output=IOKey("h", expose=True))
    m |= Relu()(input="h", output="y")
    again = roundtrip(m)
    assert again.name == "net"
    assert list(again.interface()) == list(m.interface())
    assert again.shapes == m.shapes
    assert ml.compile(again, BACKEND).output_keys == ["h", "y"]


def test_guide_save_and_load_snippet_runs(tmp_path, monkeypatch):
    """The guide's "Mithril Save/Load" block, as written (pickle is the guide's choice)."""
    monkeypatch.chdir(tmp_path)
    code = dict(blocks())
    ns: dict[str, Any] = {}
    exec(for_backend(code["Mithril Style"], "NumpyBackend"), ns)
    exec(code["Mithril Save/Load"], ns)
    loaded = ns["compiled_model"]
    out = loaded.evaluate(ns["params"], ns["inputs"])
    original = ml.compile(ns["model"], ns["backend"], shapes={"input": [32, 3, 32, 32]})
    expected = original.evaluate(ns["params"], ns["inputs"])
    np.testing.assert_array_equal(out["output"], expected["output"])


# ---- malformed and hostile documents ----
def _doc() -> dict[str, Any]:
    return create_conv_net().to_dict()


def _mutations() -> dict[str, Any]:
    cases: dict[str, Any] = {
        "not a dict": ["format"],
        "wrong format": {**_doc(), "format": "pickle"},
        "future version": {**_doc(), "version": 99},
        "no model": {"format": "mithril.model", "version": 1},
    }
    d = _doc()
    d["model"]["children"][0]["model"]["class"] = "os.system"
    cases["unknown class"] = d
    d = _doc()
    d["model"]["children"][0]["model"]["class"] = "__import__"
    cases["import attempt"] = d
    d = _doc()
    d["model"]["children"][2]["model"] = {"kind": "primitive", "op": "exec", "values": {}}
    cases["unknown primitive"] = d
    d = _doc()
    d["model"]["children"][1]["terminals"]["input"] = 10_000
    cases["bad connection index"] = d
    d = _doc()
    d["model"]["children"][0]["model"]["kwargs"]["kernel_size"] = {"eval": "1+1"}
    cases["unknown value tag"] = d
    d = _doc()
    d["model"]["children"][0]["model"]["kwargs"]["out_channels"] = "sixteen"
    cases["wrong argument type"] = d
    d = _doc()
    d["model"]["connections"][0]["shape"] = [1, 2, 3, 4, 5]
    cases["contradicting shape"] = d
    d = _doc()
    d["model"]["children"][0]["model"]["kind"] = "python"
    cases["unknown node kind"] = d
    return cases


@pytest.mark.parametrize("name,doc", list(_mutations().items()))
def test_malformed_documents_raise_model_file_error(name, doc):
    with pytest.raises(ModelFileError):
        Model.from_dict(copy.deepcopy(doc))


def test_train_model_round_trips_with_its_losses():
    from mithril.models import CrossEntropy, TrainModel

    tm = TrainModel(Linear(3)(input_size=4))
    tm.add_loss(CrossEntropy(), input="output", target="target")
    again = roundtrip(tm)
    shapes = {"input": [5, 4]}
    p1, p2 = ml.compile(tm, BACKEND, shapes=shapes), ml.compile(again, BACKEND, shapes=shapes)
    params = p1.randomize_params(seed=0)
    data = {"input": np.ones((5, 4)), "target": np.arange(5) % 3}
    np.testing.assert_array_equal(p1.evaluate(params, data)["final_cost"],
                                  p2.evaluate(params, data)["final_cost"])


def test_sequence_length_given_at_call_time_round_trips():
    m = Model()
    m |= LSTM(3, 4)(input="input", output=IOKey("output"), seq_len=5)
    assert_same(m, {"input": [5, 2, 3]})
