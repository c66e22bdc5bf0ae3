"""ONNX export of ``Scan`` (issue 18): the generic loop as ONNX's ``Scan`` operator.

Each model is exported once with a symbolic batch (``N``) and a symbolic length (``T``);
``onnx.checker`` must accept the file, and onnxruntime's outputs must equal the NumPy
backend's (float32, relative 1e-5) at two lengths and two batch sizes, from the one file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import mithril as ml
from mithril import IOKey
from mithril.models import Add, Linear, Model, Relu, Scan, Tanh
from tests.onnx_harness import assert_close, session
from tests.test_scan import F, H, elman_body, two_carry_body

LENGTHS, BATCHES = (5, 11), (2, 7)


def elman(axis: int) -> Model:
    model = Model()
    model |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"], ys=["h_next"], axis=axis)(
        h="h0", x="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("states"))
    return model


def two_carry(axis: int) -> Model:
    """Two carries (given in the order ``c``, ``h``: not the body's), a per-step output that
    is no carry and one that is, and a layer after the loop."""
    model = Model()
    model |= Scan(two_carry_body(), carry={"c": "c_next", "h": "h_next"}, xs=["x"],
                  ys=["y", "h_next"], axis=axis)(
        h="h0", c="c0", x="seq", h_next=IOKey("h_n"), c_next=IOKey("c_n"), y=IOKey("ys"),
        h_next_seq=IOKey("hs"))
    model |= Linear(2)(input="h_n", output=IOKey("head"))
    return model


def nested() -> Model:
    """A Scan whose body holds a Scan (an inner loop over a feature chunk axis)."""
    inner = Model()
    inner |= Linear(H)(input=IOKey("x", shape=["N", F]), output="a")
    inner |= Add()(left=IOKey("h", shape=["N", H]), right="a", output="s")
    inner |= Relu()(input="s", output=IOKey("h_next"))
    outer_body = Model()
    outer_body |= Scan(inner, carry={"h": "h_next"}, xs=["x"], ys=[], axis=1)(
        h=IOKey("h", shape=["N", H]), x=IOKey("chunks", shape=["N", 2, F]), h_next="u")
    outer_body |= Tanh()(input="u", output=IOKey("h_next"))
    model = Model()
    model |= Scan(outer_body, carry={"h": "h_next"}, xs=["chunks"], ys=["h_next"])(
        h="h0", chunks="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("states"))
    return model


def _shapes(axis: int, extra: tuple[int, ...] = ()) -> dict[str, list[Any]]:
    seq = ["T", "N", *extra, F] if axis == 0 else ["N", "T", *extra, F]
    return {"h0": ["N", H], "c0": ["N", H], "seq": seq}


def _feed(keys: list[str], axis: int, length: int, batch: int,
          extra: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 * length + batch)
    seq = (length, batch, *extra, F) if axis == 0 else (batch, length, *extra, F)
    shapes = {"h0": (batch, H), "c0": (batch, H), "seq": seq}
    return {k: rng.standard_normal(shapes[k]).astype(np.float32) for k in keys}


CASES: dict[str, tuple[Callable[[], Model], int, tuple[int, ...]]] = {
    "elman": (lambda: elman(0), 0, ()),
    "elman_batch_first": (lambda: elman(1), 1, ()),
    "two_carry": (lambda: two_carry(0), 0, ()),
    "two_carry_batch_first": (lambda: two_carry(1), 1, ()),
    "nested": (nested, 0, (2,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scan_roundtrip(name: str, tmp_path: Path) -> None:
    make, axis, extra = CASES[name]
    backend = ml.NumpyBackend()
    terminals = set(make().input_terminals())
    shapes = {k: v for k, v in _shapes(axis, extra).items() if k in terminals}
    pm = ml.compile(make(), backend, shapes=shapes, inference=True, jit=False)
    assert sorted(pm.data_keys) == sorted(shapes)
    params = {k: np.asarray(v, np.float32) for k, v in pm.randomize_params(seed=3).items()}
    path = ml.export_onnx(make(), params, tmp_path / "scan.onnx", shapes=shapes)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node].count("Scan") == 1  # never unrolled
    # the batch and the length are named dynamic axes of the file
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input}
    assert dims == shapes
    # the body's parameters are stored once, as outer initialisers under their keys
    assert sorted(t.name for t in proto.graph.initializer if t.name in params) == sorted(params)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    assert sorted(names) == sorted(pm.output_keys)
    for length in LENGTHS:
        for batch in BATCHES:
            feed = _feed(list(shapes), axis, length, batch, extra)
            want = pm.evaluate(params, feed)
            got = dict(zip(names, sess.run(None, feed), strict=True))
            for k in names:
                assert_close(got[k], backend.to_numpy(want[k]),
                             f"{name} output {k!r} at length {length}, batch {batch}")


def test_scan_against_numpy_loop(tmp_path: Path) -> None:
    """The exported Elman RNN against the hand-written loop of docs/layers.md."""
    shapes = {"h0": ["N", H], "seq": ["T", "N", F]}
    pm = ml.compile(elman(0), ml.NumpyBackend(), shapes=shapes, inference=True, jit=False)
    p = {k: np.asarray(v, np.float32) for k, v in pm.randomize_params(seed=0).items()}
    path = ml.export_onnx(elman(0), p, tmp_path / "elman.onnx", shapes=shapes)
    feed = _feed(["h0", "seq"], 0, 6, 3)
    h, states = feed["h0"].astype(np.float64), []
    for t in range(6):
        h = np.tanh(feed["seq"][t] @ p["scan.linear.weight"].T + p["scan.linear.bias"]
                    + h @ p["scan.linear_1.weight"].T)
        states.append(h)
    got = dict(zip([o.name for o in session(path).get_outputs()],
                   session(path).run(None, feed), strict=True))
    assert_close(got["h_last"], h, "h_last")
    assert_close(got["states"], np.stack(states), "states")
