"""Models under the reference Mithril's names (``reference-api-table.md``: Divide, FloorDivide,
Power, ShiftLeft, ShiftRight, PermuteTensor, Split, ScaledDotProduct, Embedding, MLP) on every
backend: terminal names and order, defaults, and numbers against NumPy float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.models import (
    Divide,
    FloorDivide,
    IOKey,
    Model,
    PermuteTensor,
    Power,
    ScaledDotProduct,
    ShiftLeft,
    ShiftRight,
    Split,
    primitives,
)
from tests.backend_names import backend_of as make
from tests.backend_names import ids_of, tolerances

BACKENDS = [("numpy", "float64"), ("torch", "float64"), ("jax", "float32"),
            ("mlx", "float32")]
IDS = ids_of(BACKENDS)

tol = tolerances((1e-12, 1e-12), (1e-5, 1e-6))


def run(model: Any, b: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    pm = ml.compile(model, b, shapes={k: list(v.shape) for k, v in data.items()},
                    data_keys=set(data), jit=False)
    return b.to_numpy(pm.evaluate({}, {k: b.array(v) for k, v in data.items()})["output"])


A = np.array([[3.0, -4.5, 7.0], [0.5, 9.0, -2.0]])
B = np.array([[2.0, 1.5, -3.0], [4.0, 2.0, 0.5]])


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_renamed_binary_primitives(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    cases = [(Divide(), {"numerator": A, "denominator": B}, A / B),
             (FloorDivide(), {"numerator": A, "denominator": B}, np.floor_divide(A, B)),
             (Power(), {"base": np.abs(A), "exponent": B}, np.abs(A) ** B)]
    for model, data, want in cases:
        np.testing.assert_allclose(run(model, b, data), want, err_msg=type(model).__name__,
                                   **tol(dtype))
    ints, shifts = np.array([1, 6, 32]), np.array([3, 1, 2])
    got = run(ShiftLeft(), b, {"input": ints, "shift": shifts})
    np.testing.assert_array_equal(got, ints << shifts)
    np.testing.assert_array_equal(run(ShiftRight(), b, {"input": ints, "shift": shifts}),
                                  ints >> shifts)
    x = np.arange(24.0).reshape(3, 2, 4)  # the reference's PermuteTensor is input[indices]
    np.testing.assert_array_equal(run(PermuteTensor(indices=(2, 0, 1)), b, {"input": x}),
                                  x[[2, 0, 1]])


def test_reference_terminal_order_and_canonical_terminals() -> None:
    expected = {Divide: ["numerator", "denominator", "output"],
                FloorDivide: ["numerator", "denominator", "output"],
                Power: ["base", "exponent", "output"],
                ShiftLeft: ["input", "shift", "output"],
                PermuteTensor: ["input", "indices", "output"]}
    for cls, names in expected.items():
        m = cls()
        assert [*m.input_terminals(), *m.output_terminals()] == names, cls.__name__
        assert m.cin.key == names[0] and m.cout.key == "output"
    # positional connect follows that order
    parent = Model()
    parent |= Divide().connect("a", "b", IOKey("c"))
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(parent, b, shapes={"a": [2], "b": [2]})
    assert pm.evaluate({}, {"a": np.array([1.0, 9.0]), "b": np.array([4.0, 3.0])})[
        "c"].tolist() == [0.25, 3.0]
    with pytest.raises(ml.ArgumentError, match="left"):
        Divide(left=1.0)
    with pytest.raises(ml.ArgumentError, match="robust=True"):
        Power(threshold=0.1)  # the cut-off only exists in the robust form


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("sections,axis", [(3, 1), (2, 0), (4, -1)])
def test_split_is_a_number_of_sections(backend: tuple[str, str], sections: int,
                                       axis: int) -> None:
    b = make(*backend)
    x = np.arange(48.0).reshape(4, 12) if axis != 0 else np.arange(24.0).reshape(4, 6)
    out = run(Split(sections, axis=axis), b, {"input": x})
    want = np.split(x, sections, axis=axis)  # NumPy: equal sections
    assert out.shape[0] == sections
    for i, part in enumerate(want):
        np.testing.assert_array_equal(out[i], part)
    # indexing the output connection gives one section, as the reference's list output
    m = Model()
    split = Split(sections, axis=axis)
    m |= split(input="input", output="parts")
    m |= primitives.Buffer()(input=m.parts[1], output=IOKey("second"))
    pm = ml.compile(m, b, shapes={"input": list(x.shape)}, jit=False)
    np.testing.assert_array_equal(b.to_numpy(pm.evaluate({}, {"input": b.array(x)})["second"]),
                                  want[1])


def test_split_needs_a_positive_number_of_sections() -> None:
    with pytest.raises(ml.ArgumentError, match="number of sections"):
        Split(0)
    assert primitives.Split is not Split  # the catalogue's torch.split stays available


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        n, m = s.shape[-2:]
        s = np.where(np.tril(np.ones((n, m), dtype=bool)), s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_scaled_dot_product_is_causal_by_default(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 3)) for _ in range(3))
    data = {"query": q, "key": k, "value": v}
    model = ScaledDotProduct()
    assert set(model.input_terminals()) >= {"query", "key", "value"}
    np.testing.assert_allclose(run(model, b, data), _attention(q, k, v, True), **tol(dtype))
    np.testing.assert_allclose(run(ScaledDotProduct(is_causal=False), b, data),
                               _attention(q, k, v, False), **tol(dtype))
    mask = np.where(rng.random((4, 4)) > 0.5, 0.0, -1e9) + np.diag(np.zeros(4))
    masked = ScaledDotProduct(is_causal=False, use_attn_mask=True)
    got = run(masked, b, {**data, "attn_mask": mask})
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(3) + mask
    e = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (e / e.sum(-1, keepdims=True)) @ v, **tol(dtype))
    with pytest.raises(ml.ArgumentError, match="dropout"):
        ScaledDotProduct(dropout_p=0.1)


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_embedding_takes_the_reference_dim(backend: tuple[str, str]) -> None:
    from mithril.models import Embedding

    b, dtype = make(*backend), backend[1]
    table = np.random.default_rng(1).standard_normal((5, 3))
    ids = np.array([[4, 0, 2]])
    for model in (Embedding(num_embeddings=5, dim=3), Embedding(5, 3),
                  Embedding(num_embeddings=5, embedding_dim=3)):
        pm = ml.compile(model, b, shapes={"input": [1, 3]}, data_keys={"input"}, jit=False)
        assert pm.shapes["weight"] == [5, 3]
        out = pm.evaluate({"weight": b.array(table)}, {"input": b.array(ids)})["output"]
        np.testing.assert_allclose(b.to_numpy(out), table[ids], **tol(dtype))
    with pytest.raises(ml.ArgumentError, match="give one"):
        Embedding(5, embedding_dim=3, dim=4)


# ---- MLP: the reference's parameter names weight{i} / bias{i} ------------------------------
def _mlp_numpy(x: np.ndarray, params: list[tuple[np.ndarray, np.ndarray | None]],
               acts: list[str], g: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """Forward and backward of ``act_i(h @ W_i.T + b_i)`` in float64, written out by hand:
    (output, [(dW_i, db_i)], d input)."""
    hs, zs, h = [x], [], x
    for (w, bias), act in zip(params, acts, strict=True):
        z = h @ w.T + (0.0 if bias is None else bias)
        h = {"relu": np.maximum(z, 0.0), "tanh": np.tanh(z), "sigmoid": 1 / (1 + np.exp(-z)),
             "none": z}[act]
        zs.append(z)
        hs.append(h)
    out, up, grads = h, g, []
    for i in reversed(range(len(params))):
        z, y = zs[i], hs[i + 1]
        dz = {"relu": up * (z > 0), "tanh": up * (1 - y ** 2), "sigmoid": up * y * (1 - y),
              "none": up}[acts[i]]
        w, bias = params[i]
        grads.insert(0, (dz.T @ hs[i], None if bias is None else dz.sum(0)))
        up = dz @ w
    return out, grads, up


def _act(name: str) -> Any:
    from mithril.models import Buffer, Relu, Sigmoid, Tanh

    return {"relu": Relu, "tanh": Tanh, "sigmoid": Sigmoid, "none": Buffer}[name]()


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("templates", [None, {"weight": "w", "bias": "b"}, {"bias": "beta_"}],
                         ids=["default", "w-b", "bias-only"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
def test_mlp_reference_names_forward_and_gradients(backend: tuple[str, str], templates: Any,
                                                   use_bias: bool) -> None:
    from mithril.models import MLP

    b, dtype = make(*backend), backend[1]
    acts, dims = ["tanh", "relu", "sigmoid", "none"], [5, 4, 3, 2]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 3))
    sizes = [3, *dims]
    params = [(rng.standard_normal((sizes[i + 1], sizes[i])),
               rng.standard_normal(sizes[i + 1]) if use_bias else None) for i in range(4)]
    g = rng.standard_normal((6, 2))
    want, want_grads, want_dx = _mlp_numpy(x, params, acts, g)

    wp = (templates or {}).get("weight", "weight")
    bp = (templates or {}).get("bias", "bias")
    names = [n for i in range(4) for n in (f"{wp}{i}", f"{bp}{i}")[:2 if use_bias else 1]]
    model = MLP([_act(a) for a in acts], dims, templates, use_bias=use_bias)
    # the reference's terminal order: input, weight0, bias0, weight1, ..., output
    assert list(model.interface()) == ["input", *names, "output"]
    pm = ml.compile(model, b, shapes={"input": [6, 3]}, jit=False)
    assert set(pm.trainable_keys) == set(names)
    for i, (w, _) in enumerate(params):
        assert pm.shapes[f"{wp}{i}"] == list(w.shape)  # [out, in], as nn.Linear
    feed = {}
    for i, (w, bias) in enumerate(params):
        feed[f"{wp}{i}"] = b.array(w)
        if bias is not None:
            feed[f"{bp}{i}"] = b.array(bias)
    outs, grads = pm.evaluate(feed, {"input": b.array(x)},
                              output_gradients={"output": b.array(g)})
    np.testing.assert_allclose(b.to_numpy(outs["output"]), want, **tol(dtype))
    assert set(grads) == set(names)
    for i, (dw, db) in enumerate(want_grads):
        np.testing.assert_allclose(b.to_numpy(grads[f"{wp}{i}"]), dw, err_msg=f"{wp}{i}",
                                   **tol(dtype))
        if db is not None:
            np.testing.assert_allclose(b.to_numpy(grads[f"{bp}{i}"]), db, err_msg=f"{bp}{i}",
                                       **tol(dtype))
    # the input's gradient as well, when the input is trainable
    pm_x = ml.compile(MLP([_act(a) for a in acts], dims, templates, use_bias=use_bias), b,
                      shapes={"input": [6, 3]}, trainable_keys={"input"}, jit=False)
    _, grads_x = pm_x.evaluate({**feed, "input": b.array(x)},
                               output_gradients={"output": b.array(g)})
    np.testing.assert_allclose(b.to_numpy(grads_x["input"]), want_dx, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_mlp_weights_given_by_keyword(backend: tuple[str, str]) -> None:
    """``MLP(..., weight0=array)`` makes a constant; ``mlp(input=..., weight1="shared")``
    connects a parameter of the parent (here one matrix used twice)."""
    from mithril.models import MLP, Linear

    b, dtype = make(*backend), backend[1]
    rng = np.random.default_rng(3)
    # scaled so that tanh stays off its flat tails (float32's 1 - y**2 there is noise)
    x = 0.5 * rng.standard_normal((2, 4))
    w0, b0, w1, b1 = (0.5 * rng.standard_normal(s) for s in ((4, 4), 4, (4, 4), 4))
    g = rng.standard_normal((2, 4))

    # constants in the constructor: weight0 and input are not inputs of the compiled model
    model = MLP([_act("relu"), _act("none")], [4, 4], input=x, weight0=w0)
    pm = ml.compile(model, b, jit=False)
    assert set(pm.trainable_keys) == {"bias0", "weight1", "bias1"}
    outs, grads = pm.evaluate({"bias0": b.array(b0), "weight1": b.array(w1),
                               "bias1": b.array(b1)}, output_gradients={"output": b.array(g)})
    want, want_grads, _ = _mlp_numpy(x, [(w0, b0), (w1, b1)], ["relu", "none"], g)
    np.testing.assert_allclose(b.to_numpy(outs["output"]), want, **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(grads["weight1"]), want_grads[1][0], **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(grads["bias0"]), want_grads[0][1], **tol(dtype))

    # connected by keyword in a parent: a Linear and the MLP's weight1 share "shared_w";
    # positionally (input, output) as the reference's connect
    outer = Model()
    outer |= Linear(4)(input="x", weight="shared_w", bias="lb", output="h")
    outer |= MLP([_act("tanh"), _act("none")], [4, 4])(outer.h, IOKey("output"),
                                                       weight1="shared_w")
    pm = ml.compile(outer, b, shapes={"x": [2, 4]}, data_keys={"x"}, jit=False)
    assert set(pm.trainable_keys) == {"shared_w", "lb", "mlp.weight0", "mlp.bias0",
                                      "mlp.bias1"}
    lb = rng.standard_normal(4)
    feed = {"shared_w": b.array(w1), "lb": b.array(lb), "mlp.weight0": b.array(w0),
            "mlp.bias0": b.array(b0), "mlp.bias1": b.array(b1)}
    outs, grads = pm.evaluate(feed, {"x": b.array(x)}, output_gradients={"output": b.array(g)})
    h = x @ w1.T + lb
    want, want_grads, dh = _mlp_numpy(h, [(w0, b0), (w1, b1)], ["tanh", "none"], g)
    np.testing.assert_allclose(b.to_numpy(outs["output"]), want, **tol(dtype))
    # the shared matrix collects the gradients of both of its uses
    np.testing.assert_allclose(b.to_numpy(grads["shared_w"]), want_grads[1][0] + dh.T @ x,
                               **tol(dtype))
    np.testing.assert_allclose(b.to_numpy(grads["mlp.weight0"]), want_grads[0][0], **tol(dtype))


def test_mlp_guide_arguments_and_activation_forms() -> None:
    """``input_size=`` fixes the first layer's input; ``None`` and ``Buffer()`` both mean no
    activation; the templates keep the layer index as the suffix."""
    from mithril.models import MLP

    b = make("numpy", "float64")
    pm = ml.compile(MLP([_act("relu"), None], [3, 2], input_size=5), b, jit=False)
    assert pm.shapes["weight0"] == [3, 5] and pm.shapes["weight1"] == [2, 3]
    rng = np.random.default_rng(0)
    x, w0, w1 = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(
        (2, 3))
    outs = []
    for last in (None, _act("none")):
        m = MLP([_act("relu"), last], [3, 2], input_name_templates={"weight": "W"},
                use_bias=False)
        assert list(m.interface()) == ["input", "W0", "W1", "output"]
        pm = ml.compile(m, b, shapes={"input": [4, 5]}, data_keys={"input"}, jit=False)
        outs.append(pm.evaluate({"W0": b.array(w0), "W1": b.array(w1)},
                                {"input": b.array(x)})["output"])
    np.testing.assert_allclose(outs[0], np.maximum(x @ w0.T, 0) @ w1.T, rtol=1e-12)
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=0)
