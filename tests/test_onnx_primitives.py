"""ONNX export of the primitives the catalogue walk does not run (runtime scalars and
tuples, boolean and integer operators, random creators, Python-valued results), and of the
mappings whose form depends on the opset, at opset 17.

Outputs are compared with the NumPy backend (inference behaviour, float32); integer and
boolean results must be equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import mithril as ml
from mithril.export import OnnxExportError
from mithril.models import (
    Add,
    Cast,
    Dropout,
    Dtype,
    Indexer,
    Item,
    Linear,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    LogicalXOr,
    Model,
    Multiply,
    RandInt,
    Randn,
    Reshape,
    ShiftLeft,
    ShiftRight,
    Size,
    Slice,
    TensorToList,
    ToList,
    ToTensor,
)
from tests import test_catalogue_backends as walk
from tests.onnx_harness import assert_close, roundtrip, session


def _export_and_run(make: Any, shapes: dict[str, Any], data: dict[str, np.ndarray],
                    folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    pm = ml.compile(make(), ml.NumpyBackend(), shapes=shapes, inference=True, jit=False)
    params = pm.randomize_params(seed=0)
    path = ml.export_onnx(make(), params, folder / "m.onnx", shapes=shapes)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = session(str(path))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, data), strict=True))
    want = pm.evaluate(params, data)
    return got, {k: np.asarray(v) for k, v in want.items()}


def _runtime_slice() -> Model:
    """``x[: n // 2] * n`` with ``n = x.shape[0]`` known only at run time."""
    m = Model()
    m |= Size(dim=0)(input="input", output="n")
    m |= Slice()(start=0, stop=m.n // 2, step=None, output="s")
    m |= Indexer()(input="input", index="s", output="half")
    m |= ToTensor()(input=m.n, output="nt")
    m |= Multiply()(left="half", right="nt", output="output")
    return m


def test_runtime_size_slice_and_to_tensor(tmp_path: Path) -> None:
    roundtrip(_runtime_slice, {"input": ["N", 3]},
              lambda n: {"input": np.arange(3 * n, dtype=np.float32).reshape(n, 3)}, [4, 7],
              str(tmp_path))


def _item_and_list() -> Model:
    """``reshape(x * item(scale), [N, -1])`` with the shape built by ``ToList``."""
    m = Model()
    m |= Item()(input="scale", output="k")
    m |= Multiply()(left="input", right="k", output="scaled")
    m |= Size(dim=0)(input="input", output="n")
    m |= ToList(n=2)(input1="n", input2=-1, output="shape")
    m |= Reshape()(input="scaled", shape="shape", output="output")
    return m


def test_item_and_to_list(tmp_path: Path) -> None:
    roundtrip(_item_and_list, {"input": ["N", 2, 3], "scale": [1]},
              lambda n: {"input": np.linspace(-1, 1, 6 * n, dtype=np.float32).reshape(n, 2, 3),
                         "scale": np.array([2.5], np.float32)}, [2, 5], str(tmp_path))


@pytest.mark.parametrize("op", [LogicalAnd, LogicalOr, LogicalXOr])
def test_logical_binary(op: Any, tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= op()(left="a", right="b", output="output")
        return m

    rng = np.random.default_rng(0)
    data = {"a": rng.random((3, 4)) > 0.5, "b": rng.random((1, 4)) > 0.5}
    got, want = _export_and_run(make, {"a": [3, 4], "b": [1, 4]}, data, tmp_path)
    np.testing.assert_array_equal(got["output"], want["output"])


def test_logical_not(tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= LogicalNot()(input="a", output="output")
        return m

    data = {"a": np.array([[True, False, True]])}
    got, want = _export_and_run(make, {"a": [1, 3]}, data, tmp_path)
    np.testing.assert_array_equal(got["output"], want["output"])


@pytest.mark.parametrize("op", [ShiftLeft, ShiftRight])
def test_shifts(op: Any, tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= op()(input=ml.IOKey("a", type=int), shift=ml.IOKey("b", type=int),
                  output="output")
        return m

    rng = np.random.default_rng(1)
    data = {"a": rng.integers(-50, 50, (3, 4)), "b": rng.integers(0, 5, (3, 4))}
    got, want = _export_and_run(make, {"a": [3, 4], "b": [3, 4]}, data, tmp_path)
    assert got["output"].dtype == np.int64
    np.testing.assert_array_equal(got["output"], want["output"])


def test_dropout_is_identity(tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= Linear(4)(input="input", output="h")
        m |= Dropout(0.5)(input="h", output="output")
        return m

    path, _ = roundtrip(make, {"input": ["N", 3]},
                        lambda n: {"input": np.ones((n, 3), np.float32)}, [2, 3],
                        str(tmp_path))
    assert "Dropout" not in {n.op_type for n in onnx.load(path).graph.node}


def test_dtype_of_feeds_cast(tmp_path: Path) -> None:
    def make() -> Model:
        m = Model()
        m |= Dtype()(input="x", output="dt")
        m |= Cast()(input=ml.IOKey("ids", type=int), dtype="dt", output="idsf")
        m |= Add()(left="x", right="idsf", output="output")
        return m

    data = {"x": np.full((2, 3), 0.5, np.float32), "ids": np.arange(6).reshape(2, 3)}
    got, want = _export_and_run(make, {"x": [2, 3], "ids": [2, 3]}, data, tmp_path)
    assert got["output"].dtype == np.float32
    assert_close(got["output"], want["output"], "cast to dtype_of")


def test_random_creators(tmp_path: Path) -> None:
    """``randn`` / ``randint`` draw from ONNX's generator: other numbers than a backend's,
    so shape, type and distribution are checked."""
    def make() -> Model:
        m = Model()
        m |= Randn(shape=(200, 50))(output="normal")
        m |= RandInt((200, 50), -3, 4)(output="ints")
        return m

    pm = ml.compile(make(), ml.NumpyBackend(), inference=True)
    path = ml.export_onnx(make(), {}, tmp_path / "r.onnx")
    sess = session(str(path))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {}), strict=True))
    assert set(got) == set(pm.output_keys)
    normal, ints = got["normal"], got["ints"]
    assert normal.shape == (200, 50) and normal.dtype == np.float32
    assert abs(normal.mean()) < 0.05 and abs(normal.std() - 1) < 0.05
    assert ints.shape == (200, 50) and ints.dtype == np.int64
    assert ints.min() == -3 and ints.max() == 3


def test_tensor_to_list_is_unsupported(tmp_path: Path) -> None:
    m = Model()
    m |= TensorToList()(input="x", output="output")
    with pytest.raises(OnnxExportError, match="tensor_to_list"):
        ml.export_onnx(m, {}, tmp_path / "m.onnx", shapes={"x": [2]})


#: the mappings written differently before opset 18 (reductions) or 20 (Gelu), or from
#: opset 21 (GroupNormalization) and 23 (Attention)
OPSET_DEPENDENT = {"gelu", "sum", "mean", "max", "min", "prod", "variance", "layer_norm",
                   "group_norm", "scaled_dot_product"}


@pytest.mark.parametrize("opset", [17, 23])
@pytest.mark.parametrize("op_name,case", [p for p in walk.CASE_LIST
                                          if p.values[0] in OPSET_DEPENDENT])
def test_other_opsets(op_name: str, case: Any, opset: int, tmp_path: Path) -> None:
    scalars, tensors = case
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    shapes = {k: list(v.shape) for k, v in tensors.items()}

    def make() -> Model:
        return walk.build(op_name, scalars, tensors, ml.float32)[0]

    pm = ml.compile(make(), ml.NumpyBackend(), shapes=shapes, inference=True, jit=False)
    params = {k: tensors[k] for k in pm.param_keys}
    data = {k: v for k, v in tensors.items() if k not in params}
    path = ml.export_onnx(make(), params, tmp_path / "m.onnx", shapes=shapes, opset=opset)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == opset
    onnx.checker.check_model(model, full_check=True)
    got = session(str(path)).run(None, data)[0]
    assert_close(got, np.asarray(pm.evaluate(params, data)["output"]),
                 f"{op_name} opset {opset}")
    ops = {n.op_type for n in model.graph.node}
    own = {"group_norm": "GroupNormalization", "scaled_dot_product": "Attention"}
    if op_name in own:
        assert (own[op_name] in ops) == (opset >= 23), ops
