"""ONNX export (``ml.export_onnx``) checked with ``onnx.checker`` and onnxruntime.

Every primitive of the catalogue (the cases of the cross-backend walk), every layer of the
library (the cases of the torch parity suite, plus the recurrent layers; ``Scan``, the generic
loop, in ``test_onnx_scan.py``), the zoo models (the guide's ConvNet, ResNet-18, a tiny GPT-2,
an LSTM classifier) are exported and run in onnxruntime; outputs must equal the NumPy
backend's (float32, inference behaviour) within a relative 1e-5, at the exported batch size
and at another one (the batch is a named dynamic axis). Random models from
``tests/model_generator.py`` are in ``test_onnx_random_models.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import mithril as ml
from mithril import IOKey
from mithril.export import OnnxExportError
from mithril.framework.ops import tensor_ops
from mithril.models import (
    GRU,
    LSTM,
    RNN,
    Cholesky,
    Eigvalsh,
    GRUCell,
    Linear,
    LSTMCell,
    Model,
    Relu,
    RNNCell,
    zoo,
)
from mithril.models.gpt import gpt2
from tests import test_catalogue_backends as walk
from tests import test_layers_parity as parity
from tests.catalogue_cases import NOT_WALKED
from tests.onnx_harness import assert_close, roundtrip, session

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: catalogue primitives with no ONNX form (the export raises OnnxExportError naming them)
NO_ONNX = {"cholesky", "eigvalsh"}


def _example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_onnx_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


# ---------------------------------------------------------------------------------------------
# the catalogue
# ---------------------------------------------------------------------------------------------
def test_every_primitive_has_a_mapping_or_a_reason():
    from mithril.export.mapping import UNSUPPORTED, table

    names = {op.name for op in tensor_ops()}
    mapped = set(table())
    assert names - mapped - set(UNSUPPORTED) == set(), "primitives without an ONNX mapping"
    assert set(UNSUPPORTED) & names >= NO_ONNX
    # the primitive each Scan layer builds for itself (not in the catalogue): ONNX's Scan,
    # checked with onnxruntime in test_onnx_scan.py
    assert "scan" in mapped


@pytest.mark.parametrize("op_name,case", walk.CASE_LIST)
def test_primitive_roundtrip(op_name: str, case: Any, tmp_path: Path) -> None:
    scalars, tensors = case
    tensors32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v
                 for k, v in tensors.items()}

    def make() -> Model:
        return walk.build(op_name, scalars, tensors, ml.float32)[0]

    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if op_name in NO_ONNX:
        with pytest.raises(OnnxExportError, match=op_name):
            ml.export_onnx(make(), {}, tmp_path / "m.onnx", shapes=shapes)
        return
    # the export decides roles as compile does by default: float tensors a primitive
    # differentiates are parameters (initialisers), the rest are graph inputs
    pm = ml.compile(make(), ml.NumpyBackend(), shapes=shapes, inference=True, jit=False)
    p = {k: tensors32[k] for k in pm.param_keys}
    state = {k: tensors32[k] for k in pm.state_keys}
    data = [k for k in tensors if k not in p and k not in state]
    want = pm.evaluate(p, {k: tensors32[k] for k in data}, state=state)
    want = want[0] if isinstance(want, tuple) else want
    path = ml.export_onnx(make(), p, tmp_path / "m.onnx", shapes=shapes, state=state)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {k: tensors32[k] for k in data}), strict=True))
    assert set(names) == {k for k, w in want.items() if w is not None}  # None: left out
    for k in names:
        assert_close(got[k], np.asarray(want[k]), f"{op_name} output {k!r}")


def test_not_walked_primitives_are_mapped():
    """Those the walk skips (random, Python-valued) still have a mapping or a reason."""
    from mithril.export.mapping import UNSUPPORTED, table

    assert set(NOT_WALKED) <= set(table()) | set(UNSUPPORTED)


# ---------------------------------------------------------------------------------------------
# the layer library
# ---------------------------------------------------------------------------------------------
#: layers whose configuration fixes the batch size (exported at that size only)
FIXED_BATCH = {"reshape", "flatten_all", "mha_seq_first", "transpose"}


def _batched(shapes: dict[str, tuple[int, ...]], symbolic: bool) -> dict[str, list[Any]]:
    return {k: ["N" if symbolic and i == 0 else d for i, d in enumerate(s)]
            for k, s in shapes.items()}


def _drawer(inputs: dict[str, tuple[int, ...]], int_input: int | None, scale: float = 1.0,
            batched: bool = True):
    def draw(n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(n)
        out = {}
        for k, s in inputs.items():
            shape = (n, *s[1:]) if batched else s
            out[k] = rng.integers(0, int_input, shape) if int_input else \
                (rng.standard_normal(shape) * scale).astype(np.float32)
        return out
    return draw


@pytest.mark.parametrize("name", list(parity.CASES))
def test_layer_roundtrip(name: str, tmp_path: Path) -> None:
    case = parity.CASES[name]
    batch = next(iter(case.inputs.values()))[0]
    symbolic = name not in FIXED_BATCH
    roundtrip(lambda: parity.build(case), _batched(case.inputs, symbolic),
              _drawer(case.inputs, case.int_input, case.scale, symbolic),
              [batch, batch + 3] if symbolic else [batch], str(tmp_path))


@pytest.mark.parametrize("name", [n for n in parity.CASES if n.startswith(("mha", "groupnorm"))])
def test_layer_roundtrip_opset_23(name: str, tmp_path: Path) -> None:
    """Attention and group norm through ONNX's own operators (opsets 23 and 21)."""
    case = parity.CASES[name]
    batch = next(iter(case.inputs.values()))[0]
    symbolic = name not in FIXED_BATCH
    roundtrip(lambda: parity.build(case), _batched(case.inputs, symbolic),
              _drawer(case.inputs, case.int_input, case.scale, symbolic),
              [batch, batch + 3] if symbolic else [batch], str(tmp_path), opset=23)


RECURRENT = {
    "rnn": lambda: RNN(3, 4, batch_first=True, seq_len=5),
    "lstm": lambda: LSTM(3, 4, batch_first=True, seq_len=5),
    "lstm_2_layers": lambda: LSTM(3, 4, num_layers=2, batch_first=True, seq_len=5),
    "gru": lambda: GRU(3, 4, batch_first=True, seq_len=5),
}


@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_roundtrip(name: str, tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= RECURRENT[name]()(input="input", output="output")
        return m

    roundtrip(make, {"input": ["N", 5, 3]}, _drawer({"input": (2, 5, 3)}, None), [2, 4],
              str(tmp_path))


@pytest.mark.parametrize("cell", [RNNCell, LSTMCell, GRUCell])
def test_cell_roundtrip(cell: Any, tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= cell(3, 4)(input="input", output="output")
        return m

    pm = ml.compile(make(), ml.NumpyBackend(), shapes={"input": ["N", 3]}, inference=True)
    extra = {k: (2, 3) if k == "input" else (2, 4) for k in pm.data_keys}
    roundtrip(make, _batched(extra, True), _drawer(extra, None), [2, 5], str(tmp_path))


# ---------------------------------------------------------------------------------------------
# the zoo
# ---------------------------------------------------------------------------------------------
def test_conv_net_roundtrip(tmp_path: Path) -> None:
    roundtrip(zoo.conv_net, {"input": ["N", 3, 32, 32]},
              _drawer({"input": (2, 3, 32, 32)}, None), [4, 1], str(tmp_path))


def test_resnet18_roundtrip(tmp_path: Path) -> None:
    resnet = _example("resnet18_digits").resnet18
    roundtrip(lambda: resnet(width=8, in_channels=1), {"input": ["N", 1, 16, 16]},
              _drawer({"input": (2, 1, 16, 16)}, None), [3, 2], str(tmp_path))


def _gpt() -> Model:
    return gpt2(vocab_size=13, context_length=8, n_layer=2, n_head=2, d_model=8)


def _gpt_draw(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {"input": rng.integers(0, 13, (n, 6)), "positions": np.arange(6)}


@pytest.mark.parametrize("opset", [17, 20, 23])
def test_gpt2_roundtrip(opset: int, tmp_path: Path) -> None:
    """Opset 20 exports GELU as ``Gelu``, opset 17 as its tanh formula; opset 23 attention as
    ``Attention``."""
    path, _ = roundtrip(_gpt, {"input": ["B", "T"], "positions": ["T"]}, _gpt_draw, [2, 3],
                        str(tmp_path), opset=opset)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ("Gelu" in ops) == (opset >= 20)
    assert ("Attention" in ops) == (opset >= 23)
    assert "LayerNormalization" in ops


def test_gpt2_other_sequence_length(tmp_path: Path) -> None:
    """T is a dynamic axis too: the same file runs a shorter sequence."""
    pm = ml.compile(_gpt(), ml.NumpyBackend(), shapes={"input": ["B", "T"],
                                                        "positions": ["T"]}, inference=True)
    params = pm.randomize_params(seed=3)
    path = ml.export_onnx(_gpt(), params, tmp_path / "gpt.onnx",
                          shapes={"input": ["B", "T"], "positions": ["T"]})
    data = {"input": np.array([[1, 2, 3]]), "positions": np.arange(3)}
    got = session(str(path)).run(None, data)[0]
    assert_close(got, np.asarray(pm.evaluate(params, data)["output"]), "gpt2 T=3")


def _lstm_classifier() -> Model:
    """The LSTM classifier: an LSTM over the sequence, its last state into Linear + Softmax."""
    model = Model()
    model |= LSTM(input_size=3, hidden_size=6, batch_first=True, seq_len=7)(
        input="input", output="states")
    model |= Linear(4)(input=model.states[:, -1, :], output="logits")
    model |= ml.models.Softmax(dim=-1)(input="logits", output=IOKey("output"))
    return model


def test_lstm_classifier_roundtrip(tmp_path: Path) -> None:
    roundtrip(_lstm_classifier, {"input": ["N", 7, 3]}, _drawer({"input": (2, 7, 3)}, None),
              [2, 5], str(tmp_path))


def test_dynamic_axes_are_named(tmp_path: Path) -> None:
    path = ml.export_onnx(zoo.conv_net(), _conv_params(), tmp_path / "c.onnx",
                          shapes={"input": ["batch", 3, 32, 32]}, state=_conv_state())
    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    out = graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == "batch" and out[1].dim_value == 10


def _conv_params() -> dict[str, Any]:
    pm = ml.compile(zoo.conv_net(), ml.NumpyBackend(), shapes={"input": ["N", 3, 32, 32]})
    return pm.randomize_params(seed=0)


def _conv_state() -> dict[str, Any]:
    pm = ml.compile(zoo.conv_net(), ml.NumpyBackend(), shapes={"input": ["N", 3, 32, 32]})
    return pm.initial_state_dict


# ---------------------------------------------------------------------------------------------
# names, arrays of other backends, errors, atomic writing
# ---------------------------------------------------------------------------------------------
HOSTILE_IN = "x\"in'put.ü 名"
HOSTILE_OUT = "out\"put's.ÿ→"
HOSTILE_LAYER = "la\"yer's.ñ"


def _hostile() -> Model:
    m = Model()
    m |= Linear(3, name=HOSTILE_LAYER)(input=IOKey(HOSTILE_IN, shape=["N", 2]), output="h.1")
    m |= Relu()(input="h.1", output=IOKey(HOSTILE_OUT))
    return m


def test_hostile_names_survive(tmp_path: Path) -> None:
    path, params = roundtrip(_hostile, {HOSTILE_IN: ["N", 2]},
                             lambda n: {HOSTILE_IN: np.linspace(-1, 1, 2 * n, dtype=np.float32)
                                        .reshape(n, 2)}, [2, 3], str(tmp_path))
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == [HOSTILE_IN]
    assert [o.name for o in graph.output] == [HOSTILE_OUT]
    keys = {t.name for t in graph.initializer}
    assert set(params) <= keys
    assert {f"{HOSTILE_LAYER}.weight", f"{HOSTILE_LAYER}.bias"} == set(params)
    for k, v in params.items():
        init = next(t for t in graph.initializer if t.name == k)
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), v)


def _hostile_bn() -> Model:
    from mithril.models import BatchNorm2d, Conv2d

    m = Model()
    m |= Conv2d(1, 2, 3, padding=1, name="c'o\"nv.1")(input=IOKey("im.g", shape=["N", 1, 4, 4]),
                                                       output="c")
    m |= BatchNorm2d(2, name="b\"n.ü")(input="c", output=IOKey("öut"))
    return m


def test_hostile_state_keys_survive(tmp_path: Path) -> None:
    """State arrays (running statistics) are initialisers under their keys, verbatim."""
    path, params = roundtrip(_hostile_bn, {"im.g": ["N", 1, 4, 4]},
                             _drawer({"im.g": (2, 1, 4, 4)}, None), [2, 3], str(tmp_path))
    pm = ml.compile(_hostile_bn(), ml.NumpyBackend(), shapes={"im.g": ["N", 1, 4, 4]})
    keys = {t.name for t in onnx.load(path).graph.initializer}
    assert {'b"n.ü.running_mean', 'b"n.ü.running_var'} == set(pm.state_keys)
    assert set(pm.state_keys) | set(params) <= keys


def test_params_from_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pm = ml.compile(_hostile(), ml.TorchBackend(), shapes={HOSTILE_IN: ["N", 2]})
    params = pm.randomize_params(seed=1)
    assert all(isinstance(v, torch.Tensor) for v in params.values())
    path = ml.export_onnx(_hostile(), params, tmp_path / "t.onnx", shapes={HOSTILE_IN: ["N", 2]})
    x = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    got = session(str(path)).run(None, {HOSTILE_IN: x})[0]
    want = pm.evaluate(params, {HOSTILE_IN: torch.from_numpy(x)})[HOSTILE_OUT]
    assert_close(got, want.detach().numpy(), "torch params")


@pytest.mark.parametrize("backend_name", ["JaxBackend", "MlxBackend"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_params_from_jax_and_mlx(backend_name: str, dtype: str, tmp_path: Path) -> None:
    """Arrays of any backend; bfloat16 ones are exported as float32."""
    backend = getattr(ml, backend_name)(dtype=getattr(ml, dtype))
    pm = ml.compile(_hostile(), backend, shapes={HOSTILE_IN: ["N", 2]}, jit=False)
    params = pm.randomize_params(seed=1)
    path = ml.export_onnx(_hostile(), params, tmp_path / "j.onnx", shapes={HOSTILE_IN: ["N", 2]})
    x = np.array([[0.5, -1.0], [2.0, 0.25], [1.0, 1.0]], np.float32)
    got = session(str(path)).run(None, {HOSTILE_IN: x})[0]
    assert got.dtype == np.float32
    exact = {k: np.asarray(backend.to_numpy(v), np.float32) for k, v in params.items()}
    reference = ml.compile(_hostile(), ml.NumpyBackend(), shapes={HOSTILE_IN: ["N", 2]})
    assert_close(got, np.asarray(reference.evaluate(exact, {HOSTILE_IN: x})[HOSTILE_OUT]),
                 f"{backend_name} {dtype} params")


def test_unsupported_primitives_are_named_in_one_error(tmp_path: Path) -> None:
    m = Model()
    m |= Cholesky()(input="a", output="l")
    m |= Eigvalsh()(input="b", output="e")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(OnnxExportError) as info:
        ml.export_onnx(m, {}, target, shapes={"a": [3, 3], "b": [3, 3]})
    assert "cholesky" in str(info.value) and "eigvalsh" in str(info.value)
    assert isinstance(info.value, ml.MithrilError)
    assert target.read_bytes() == b"previous"  # nothing written
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left


def test_bad_arguments(tmp_path: Path) -> None:
    params = _conv_params()
    state = _conv_state()
    shapes = {"input": ["N", 3, 32, 32]}
    with pytest.raises(ml.InputError, match="missing"):
        ml.export_onnx(zoo.conv_net(), {k: v for k, v in list(params.items())[1:]},
                       tmp_path / "a.onnx", shapes=shapes, state=state)
    with pytest.raises(ml.InputError, match="running statistics"):
        ml.export_onnx(zoo.conv_net(), params, tmp_path / "a.onnx", shapes=shapes)
    bad = dict(params, **{"linear.bias": np.zeros(3, np.float32)})
    with pytest.raises(ml.ShapeMismatchError, match="linear.bias"):
        ml.export_onnx(zoo.conv_net(), bad, tmp_path / "a.onnx", shapes=shapes, state=state)
    with pytest.raises(ml.ArgumentError, match="opset"):
        ml.export_onnx(zoo.conv_net(), params, tmp_path / "a.onnx", shapes=shapes,
                       state=state, opset=13)
    assert not (tmp_path / "a.onnx").exists()


def test_export_leaves_the_model_unchanged(tmp_path: Path) -> None:
    model = zoo.conv_net()
    ml.export_onnx(model, _conv_params(), tmp_path / "c.onnx",
                   shapes={"input": [5, 3, 32, 32]}, state=_conv_state())
    pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 3, 32, 32]})
    assert pm.shapes["output"] == [2, 10]


def test_example_runs(tmp_path: Path) -> None:
    from tests.test_examples import run_example

    result = run_example("onnx_export.py", "--backend", "numpy", "--small", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "onnxruntime agrees" in result.stdout, result.stdout
