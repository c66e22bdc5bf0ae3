"""Models under the reference Mithril's names (``reference-api-table.md``: Divide, FloorDivide,
Power, ShiftLeft, ShiftRight, PermuteTensor, Split, ScaledDotProduct) on every backend: terminal
names and order, defaults, and numbers against NumPy float64."""

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

BACKENDS = [("numpy", "float64"), ("torch", "float64"), ("jax", "float32"),
            ("mlx", "float32")]
IDS = [f"{b}-{d}" for b, d in BACKENDS]


def tol(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-5,
                                                                      "atol": 1e-6}


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
