"""Tuples and lists of tensors as terminal values (issue 14, the reference's Segformer).

``ToTuple(n)(*tensors)`` / ``ToList`` of tensor connections, an input holding a tuple of
tensors (``IOKey(value=(Tensor(), Tensor()))``, arrays given at ``evaluate``), indexed with a
constant (``h[i]`` is that element: its shape, its gradient). Values and gradients are
compared with PyTorch autograd in float64 (MLX: float32), on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mithril as ml
from mithril import IOKey
from mithril.models import Buffer, Linear, Model, ToList, ToTuple
from mithril.types import Tensor
from tests.backend_names import BACKENDS, backend_of


def make(name: str) -> object:
    return backend_of(name, "float32" if name == "mlx" else "float64")


def tol(name: str) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if name == "mlx" else {"rtol": 1e-12, "atol": 1e-12}


def numpy_of(b: object, v: object) -> np.ndarray:
    return np.asarray(b.to_numpy(v), dtype=np.float64)  # type: ignore[attr-defined]


SHAPES = {"a": [2, 3], "b": [4], "c": [1]}


def three_tensor_model(seq: type = ToTuple) -> Model:
    """y0 = h0 * h0, y1 = tanh(h1) * 3, y2 = exp(h2) + sum(h0) with h = (a, b, c)."""
    m = Model()
    m |= seq(n=3)(input1=IOKey("a", shape=SHAPES["a"]), input2=IOKey("b", shape=SHAPES["b"]),
                  input3=IOKey("c", shape=SHAPES["c"]), output="h")
    m |= Buffer()(input=m.h[0] * m.h[0], output=IOKey("y0"))
    m |= Buffer()(input=m.h[1].tanh() * 3.0, output=IOKey("y1"))
    m |= Buffer()(input=m.h[2].exp() + m.h[0].sum(), output=IOKey("y2"))
    return m


def torch_reference(p: dict[str, np.ndarray], g: dict[str, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    outs = {"y0": t["a"] * t["a"], "y1": torch.tanh(t["b"]) * 3.0,
            "y2": torch.exp(t["c"]) + t["a"].sum()}
    torch.autograd.backward([outs[k] for k in outs], [torch.tensor(g[k]) for k in outs])
    return ({k: v.detach().numpy() for k, v in outs.items()},
            {k: v.grad.numpy() for k, v in t.items()})  # type: ignore[union-attr]


def sample(rng_seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(rng_seed)
    p = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    out_shapes = {"y0": [2, 3], "y1": [4], "y2": [1]}
    g = {k: rng.standard_normal(s) for k, s in out_shapes.items()}
    return p, g


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("seq", [ToTuple, ToList], ids=["tuple", "list"])
def test_three_tensors_of_different_shapes_values_and_gradients(name: str, seq: type) -> None:
    b = make(name)
    m = three_tensor_model(seq)
    pm = ml.compile(m, b, trainable_keys={"a", "b", "c"}, jit=False)
    assert {k: pm.shapes[k] for k in ("y0", "y1", "y2")} == {"y0": [2, 3], "y1": [4],
                                                               "y2": [1]}
    p, g = sample()
    want_out, want_grads = torch_reference(p, g)
    out, grads = pm.evaluate({k: b.array(v) for k, v in p.items()},  # type: ignore[attr-defined]
                             output_gradients={k: b.array(v)  # type: ignore[attr-defined]
                                               for k, v in g.items()})
    for k, v in want_out.items():
        np.testing.assert_allclose(numpy_of(b, out[k]), v, **tol(name))
    for k, v in want_grads.items():
        np.testing.assert_allclose(numpy_of(b, grads[k]), v, **tol(name))


@pytest.mark.parametrize("name", BACKENDS)
def test_unused_element_gets_zero_gradient_and_slices_index_too(name: str) -> None:
    b = make(name)
    m = Model()
    m |= ToTuple(n=3)(input1=IOKey("a", shape=[3]), input2=IOKey("b", shape=[2]),
                      input3=IOKey("c", shape=[3]), output="h")
    m |= Buffer()(input=m.h[1:][1] * m.h[-3], output=IOKey("y"))  # c * a; b unused
    pm = ml.compile(m, b, trainable_keys={"a", "b", "c"}, jit=False)
    a, bb, c, g = np.array([1.0, 2, 3]), np.array([4.0, 5]), np.array([6.0, 7, 8]), np.ones(3)
    out, grads = pm.evaluate({"a": b.array(a), "b": b.array(bb),  # type: ignore[attr-defined]
                              "c": b.array(c)}, output_gradients={"y": b.array(g)})
    np.testing.assert_allclose(numpy_of(b, out["y"]), a * c, **tol(name))
    np.testing.assert_allclose(numpy_of(b, grads["a"]), c, **tol(name))
    np.testing.assert_allclose(numpy_of(b, grads["c"]), a, **tol(name))
    np.testing.assert_array_equal(numpy_of(b, grads["b"]), np.zeros(2))


def test_nested_tuple_gradients_numpy() -> None:
    m = Model()
    m |= ToTuple(n=2)(input1=IOKey("a", shape=[2]), input2=IOKey("b", shape=[3]), output="h")
    m |= ToTuple(n=2)(input1=m.h, input2=IOKey("c", shape=[1]), output="hh")
    m |= Buffer()(input=m.hh[0][1] * 2.0 + m.hh[1], output=IOKey("y"))
    m |= Buffer()(input=m.hh[0][0] * m.h[0], output=IOKey("z"))
    pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), trainable_keys={"a", "b", "c"},
                    jit=False)
    a, b, c = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0]), np.array([6.0])
    out, grads = pm.evaluate({"a": a, "b": b, "c": c},
                             output_gradients={"y": np.ones(3), "z": np.ones(2)})
    np.testing.assert_array_equal(out["y"], 2 * b + c)
    np.testing.assert_array_equal(out["z"], a * a)
    np.testing.assert_array_equal(grads["a"], 2 * a)
    np.testing.assert_array_equal(grads["b"], [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(grads["c"], [3.0])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_tuple_input_given_at_evaluate(name: str, jit: bool) -> None:
    """``pair`` holds two tensors given as a tuple of arrays; ``w`` is a parameter."""
    b = make(name)
    m = Model()
    pair = IOKey("pair", value=(Tensor(shape=[2, None]), Tensor(shape=[3])))
    m |= Buffer()(input=pair[0] * IOKey("w", shape=[2, 3]) + pair[1].sum(), output=IOKey("y"))
    pm = ml.compile(m, b, shapes={"w": [2, 3]}, trainable_keys={"w"}, jit=jit)
    assert set(pm.param_keys) == {"w"} and "pair" in pm.input_keys
    assert pm.shapes["y"] == [2, 3]  # the first element [2, None] broadcast with w [2, 3]
    rng = np.random.default_rng(1)
    x0, x1, w, g = (rng.standard_normal(s) for s in ([2, 3], [3], [2, 3], [2, 3]))
    out, grads = pm.evaluate({"w": b.array(w)},  # type: ignore[attr-defined]
                             {"pair": (b.array(x0), b.array(x1))},  # type: ignore[attr-defined]
                             output_gradients={"y": b.array(g)})  # type: ignore[attr-defined]
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.tensor(x0) * tw + torch.tensor(x1).sum()
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(numpy_of(b, out["y"]), ty.detach().numpy(), **tol(name))
    np.testing.assert_allclose(numpy_of(b, grads["w"]), tw.grad.numpy(),  # type: ignore[union-attr]
                               **tol(name))


def test_shapes_flow_through_elements_both_ways() -> None:
    # an element's shape reaches what reads it: the Linear gets its input size from h[1]
    m = Model()
    m |= ToTuple(n=2)(input1=IOKey("a", shape=[5, 7]), input2=IOKey("b", shape=[2, 6]),
                      output="h")
    m |= Linear(4)(input=m.h[1], output=IOKey("y"))
    assert m.shapes["linear.weight"] == [4, 6] and m.shapes["y"] == [2, 4]
    # and a shape set on an element reaches the tensor it is (set_shapes on h[0])
    m2 = Model()
    m2 |= ToTuple(n=2)(input1="a", input2="b", output="h")
    h0 = m2.h[0]
    h0.set_shapes([3, "N"])
    m2 |= Linear(4)(input=h0, output=IOKey("y"))
    m2.h[1].set_shapes([9])
    assert m2.shapes["a"] == [3, "N"] and m2.shapes["b"] == [9]
    pm = ml.compile(m2, ml.NumpyBackend(dtype=ml.float64), shapes={"a": [3, 5]}, jit=False)
    assert pm.shapes["linear.weight"] == [4, 5]


def test_tuple_input_of_a_child_with_set_shapes_on_its_elements() -> None:
    """The Segformer decode head's pattern: a child reads a tuple input, shapes given on its
    elements; the parent feeds it a ToTuple of tensors."""
    child = Model()
    hs = IOKey("input", value=(Tensor(), Tensor()))
    e0, e1 = hs[0], hs[1]
    e0.set_shapes([2, "N"])
    e1.set_shapes([5])
    child |= Linear(4)(input=e0, output="o0")
    child |= Buffer()(input=e1 * 2.0, output=IOKey("o1"))
    parent = Model()
    parent |= ToTuple(n=2)(input1="x", input2="z", output="t")
    parent |= child(input=parent.t, o0=IOKey("y0"), o1=IOKey("y1"))
    assert parent.shapes["z"] == [5] and parent.shapes["x"] == [2, "N"]
    b = ml.TorchBackend(dtype=ml.float64)
    pm = ml.compile(parent, b, shapes={"x": [2, 3]}, jit=False)
    params = pm.randomize_params()
    x, z = np.arange(6.0).reshape(2, 3), np.arange(5.0)
    out = pm.evaluate(params, {"x": b.array(x), "z": b.array(z)})
    w, bias = (b.to_numpy(params[k]) for k in ("model.linear.weight", "model.linear.bias"))
    np.testing.assert_allclose(b.to_numpy(out["y0"]), x @ w.T + bias, rtol=1e-12)
    np.testing.assert_array_equal(b.to_numpy(out["y1"]), 2 * z)


def test_a_tuple_output_of_a_functional_model() -> None:
    """``Model.create(output=h, hidden_states=ToTuple(n)(...))`` (the Segformer encoder)."""
    x = IOKey("input", shape=[2, 3])
    a = Linear(3)(input=x)
    b = Linear(4)(input=a)
    enc = Model.create(output=b, hidden_states=ToTuple(n=2)(a, b), name="encoder")
    assert enc.output_terminals() == ["output", "hidden_states"]
    top = Model()
    top |= enc(input="x", hidden_states="hs", output="last")
    top |= Buffer()(input=top.hs[0], output=IOKey("first"))
    assert top.shapes["first"] == [2, 3]
    pm = ml.compile(top, ml.NumpyBackend(dtype=ml.float64), jit=False)
    params = pm.randomize_params()
    xv = np.ones((2, 3))
    out = pm.evaluate(params, {"x": xv})
    w0, b0 = params["encoder.linear.weight"], params["encoder.linear.bias"]
    np.testing.assert_allclose(out["first"], xv @ w0.T + b0, rtol=1e-12)


def test_wrong_index_raises_at_build_time_naming_the_terminal() -> None:
    m = Model()
    m |= ToTuple(n=3)(input1=IOKey("a", shape=[2]), input2="b", input3="c", output="h")
    with pytest.raises(ml.ShapeMismatchError, match=r"'h' is a tuple of 3 .*index 3 is out "
                                                   r"of range"):
        m.h[3]
    with pytest.raises(ml.ShapeMismatchError, match=r"'h' is a tuple of 3 .*not 'x'"):
        m.h["x"]
    with pytest.raises(ml.ShapeMismatchError, match=r"IOKey 'pair' is a tuple of 2 .*index -3"):
        IOKey("pair", value=(Tensor(), Tensor()))[-3]
    # the primitive itself, not through the connection algebra: the same check, at build time
    with pytest.raises(ml.ShapeMismatchError, match="index 4 is out of range for a tuple of 3"):
        m |= ml.models.Indexer()(input="h", index=4, output="bad")
    assert "bad" not in m.shapes  # the failed addition left the model as it was


def test_tuple_lengths_must_match() -> None:
    child = Model()
    child |= Buffer()(input=IOKey("input", value=(Tensor(), Tensor()))[0], output="o")
    parent = Model()
    parent |= ToTuple(n=3)(input1="x", input2="y", input3="z", output="t")
    with pytest.raises(ml.TypeMismatchError, match="a tuple of 2 cannot be a tuple of 3"):
        parent |= child(input=parent.t)


def test_tuples_of_python_values_are_still_constants() -> None:
    """A ToTuple of numbers still folds into a constant (a shape, say), and an open element
    of a tuple is a Python value, not a tensor."""
    m = Model()
    m |= ToTuple(n=2)(input1=2, input2="k", output=IOKey("t"))
    pm = ml.compile(m, ml.NumpyBackend(), jit=False)
    assert pm.evaluate({}, {"k": 5})["t"] == (2, 5)
    m2 = Model()
    m2 |= Buffer()(input=IOKey("x", shape=[2, 6]), output="xb")
    m2 |= ml.models.Reshape()(input=m2.xb, shape=(m2.xb.shape[0], 3, -1), output=IOKey("y"))
    assert m2.shapes["y"] == [2, 3, 2]


def test_to_dict_keeps_a_tuple_input() -> None:
    child = Model()
    pair = IOKey("pair", value=(Tensor(), Tensor(), 3))
    child |= Buffer()(input=pair[1] * pair[2] + pair[0], output=IOKey("y"))
    child |= ToTuple(n=2)(input1=pair[0], input2=IOKey("z", shape=[2]), output=IOKey("t"))
    back = Model.from_dict(child.to_dict())
    pair_meta = back.pair.meta.root()
    assert pair_meta.items is not None and len(pair_meta.items) == 3
    b = ml.NumpyBackend(dtype=ml.float64)
    pms = [ml.compile(mm, b, jit=False) for mm in (child, back)]
    data = {"pair": (np.array([1.0, 2.0]), np.array([3.0, 4.0]), 3), "z": np.zeros(2)}
    outs = [pm.evaluate({}, data) for pm in pms]
    np.testing.assert_array_equal(outs[0]["y"], [10.0, 14.0])
    np.testing.assert_array_equal(outs[1]["y"], [10.0, 14.0])
    assert isinstance(outs[1]["t"], tuple) and len(outs[1]["t"]) == 2


@pytest.mark.parametrize("name", BACKENDS)
def test_a_tuple_output_gradient_is_refused_not_ignored(name: str) -> None:
    """Autograd backends would silently drop a gradient given for a tuple output."""
    b = make(name)
    m = Model()
    m |= ToTuple(n=2)(input1=IOKey("a", shape=[2]), input2=IOKey("c", shape=[3]),
                      output=IOKey("h"))
    pm = ml.compile(m, b, trainable_keys={"a", "c"}, jit=False)
    params = {"a": b.array(np.ones(2)), "c": b.array(np.ones(3))}  # type: ignore[attr-defined]
    out = pm.evaluate(params)
    assert isinstance(out["h"], tuple) and [tuple(v.shape) for v in out["h"]] == [(2,), (3,)]
    with pytest.raises(ml.InputError, match=r"output gradient of 'h' is a tuple.*h\[0\]"):
        pm.evaluate(params, output_gradients={"h": (b.array(np.ones(2)),  # type: ignore
                                                    b.array(np.ones(3)))})  # type: ignore


def test_onnx_exports_the_elements_and_refuses_the_tuple_itself(tmp_path: object) -> None:
    ort = pytest.importorskip("onnxruntime")
    import os

    m = Model()
    m |= ToTuple(n=2)(input1=IOKey("a", shape=[2, 3]), input2=IOKey("b", shape=[2, 5]),
                      output="h")
    m |= Linear(4)(input=m.h[1], output=IOKey("y"))
    b = ml.NumpyBackend(dtype=ml.float32)
    pm = ml.compile(m, b, jit=False)
    params = pm.randomize_params()
    path = ml.export_onnx(m, params, os.path.join(str(tmp_path), "t.onnx"))
    a, bb = np.ones((2, 3), np.float32), np.arange(10, dtype=np.float32).reshape(2, 5)
    sess = ort.InferenceSession(path)
    feed = {i.name: {"a": a, "b": bb}[i.name] for i in sess.get_inputs()}
    got = sess.run(None, feed)[0]
    np.testing.assert_allclose(got, pm.evaluate(params, {"a": a, "b": bb})["y"], rtol=1e-6)
    out = Model()
    out |= ToTuple(n=2)(input1=IOKey("a", shape=[2]), input2=IOKey("b", shape=[3]),
                        output=IOKey("h"))
    with pytest.raises(ml.OnnxExportError, match="output 'h' is a tuple of tensors"):
        ml.export_onnx(out, {}, os.path.join(str(tmp_path), "u.onnx"))
    inp = Model()
    inp |= Buffer()(input=IOKey("pair", value=(Tensor(), Tensor()))[0] * 2.0,
                    output=IOKey("y"))
    with pytest.raises(ml.OnnxExportError, match="input 'pair' is a tuple of tensors"):
        ml.export_onnx(inp, {}, os.path.join(str(tmp_path), "v.onnx"))
