"""Scan (issue 15, point 1): a user's body model over an axis with a carry, on every backend,
against hand-written NumPy float64 loops (values) and finite differences (gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey
from mithril.errors import ShapeMismatchError
from mithril.models import Add, Linear, Model, Multiply, Scan, Sigmoid, Tanh

F, H, N = 3, 4, 2


def _backends() -> list[tuple[str, object]]:
    return [("numpy", ml.NumpyBackend(dtype=ml.float64)),
            ("torch", ml.TorchBackend(dtype=ml.float64)),
            ("jax", ml.JaxBackend(dtype=ml.float64)),
            ("mlx", ml.MlxBackend(dtype=ml.float64))]


BACKENDS = _backends()


def elman_body() -> Model:
    """h' = tanh(W_ih x + b + W_hh h)."""
    cell = Model()
    cell |= Linear(H)(input=IOKey("x", shape=["N", F]), output="a")
    cell |= Linear(H, use_bias=False)(input=IOKey("h", shape=["N", H]), output="b")
    cell |= Add()(left="a", right="b", output="s")
    cell |= Tanh()(input="s", output=IOKey("h_next"))
    return cell


def elman_ref(p: dict[str, np.ndarray], h0: np.ndarray, seq: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    h, ys = h0, []
    for t in range(seq.shape[0]):
        h = np.tanh(seq[t] @ p["w_ih"].T + p["b"] + h @ p["w_hh"].T)
        ys.append(h)
    return h, np.stack(ys)


def two_carry_body() -> Model:
    """c' = c + tanh(W x); h' = h * sigmoid(c' + U h); y = h' + c'."""
    cell = Model()
    cell |= Linear(H)(input=IOKey("x", shape=["N", F]), output="wx")
    cell |= Tanh()(input="wx", output="g")
    cell |= Add()(left=IOKey("c", shape=["N", H]), right="g", output=IOKey("c_next", expose=True))
    cell |= Linear(H, use_bias=False)(input=IOKey("h", shape=["N", H]), output="uh")
    cell |= Add()(left="c_next", right="uh", output="z")
    cell |= Sigmoid()(input="z", output="gate")
    cell |= Multiply()(left="h", right="gate", output=IOKey("h_next", expose=True))
    cell |= Add()(left="h_next", right="c_next", output=IOKey("y"))
    return cell


def two_carry_ref(p: dict[str, np.ndarray], h0: np.ndarray, c0: np.ndarray, seq: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, c, ys = h0, c0, []
    for t in range(seq.shape[0]):
        c = c + np.tanh(seq[t] @ p["w"].T + p["b"])
        h = h / (1 + np.exp(-(c + h @ p["u"].T)))
        ys.append(h + c)
    return h, c, np.stack(ys)


def _fd(fn, params: dict[str, np.ndarray], eps: float = 1e-6) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for i in np.ndindex(v.shape):
            plus = {**params, k: v.copy()}
            minus = {**params, k: v.copy()}
            plus[k][i] += eps
            minus[k][i] -= eps
            g[i] = (fn(plus) - fn(minus)) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize(("name", "backend"), BACKENDS, ids=[b[0] for b in BACKENDS])
def test_elman_scan_two_lengths_values_and_gradients(name: str, backend) -> None:
    model = Model()
    model |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"], ys=["h_next"])(
        h="h0", x="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("hs"))
    pm = ml.compile(model, backend)
    keys = {"w_ih": "scan.linear.weight", "b": "scan.linear.bias",
            "w_hh": "scan.linear_1.weight"}
    assert set(pm.randomize_params()) == set(keys.values())
    rng = np.random.default_rng(0)
    p = {"w_ih": rng.standard_normal((H, F)) * 0.5, "b": rng.standard_normal(H) * 0.5,
         "w_hh": rng.standard_normal((H, H)) * 0.5}
    params = {keys[k]: backend.array(v) for k, v in p.items()}
    for n_t in (3, 7):  # one compiled model, two lengths
        h0 = rng.standard_normal((N, H))
        seq = rng.standard_normal((n_t, N, F))
        g_last = rng.standard_normal((N, H))
        g_seq = rng.standard_normal((n_t, N, H))
        out, grads = pm.evaluate(params, {"h0": backend.array(h0), "seq": backend.array(seq)},
                                 output_gradients={"h_last": backend.array(g_last),
                                                   "hs": backend.array(g_seq)})
        ref_last, ref_seq = elman_ref(p, h0, seq)
        np.testing.assert_allclose(backend.to_numpy(out["h_last"]), ref_last, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(out["hs"]), ref_seq, rtol=1e-10,
                                   atol=1e-12)

        def loss(q: dict[str, np.ndarray]) -> float:
            last, hs = elman_ref(q, h0, seq)
            return float((last * g_last).sum() + (hs * g_seq).sum())

        fd = _fd(loss, p)
        for k, key in keys.items():
            np.testing.assert_allclose(backend.to_numpy(grads[key]), fd[k], rtol=1e-6,
                                       atol=1e-8, err_msg=f"{name} T={n_t} {key}")


@pytest.mark.parametrize(("name", "backend"), BACKENDS, ids=[b[0] for b in BACKENDS])
def test_two_carries_batch_axis_one(name: str, backend) -> None:
    """Two carries, a per-step output that is no carry, the loop over axis 1."""
    model = Model()
    model |= Scan(two_carry_body(), carry={"h": "h_next", "c": "c_next"}, xs=["x"], ys=["y"],
                  axis=1)(h="h0", c="c0", x="seq", h_next=IOKey("h_n"), c_next=IOKey("c_n"),
                          y=IOKey("ys"))
    pm = ml.compile(model, backend)
    keys = {"w": "scan.linear.weight", "b": "scan.linear.bias", "u": "scan.linear_1.weight"}
    rng = np.random.default_rng(1)
    p = {"w": rng.standard_normal((H, F)) * 0.5, "b": rng.standard_normal(H) * 0.5,
         "u": rng.standard_normal((H, H)) * 0.5}
    params = {keys[k]: backend.array(v) for k, v in p.items()}
    for n_t in (2, 5):
        h0, c0 = rng.standard_normal((N, H)), rng.standard_normal((N, H))
        seq = rng.standard_normal((N, n_t, F))  # batch first: the loop runs over axis 1
        gh, gc = rng.standard_normal((N, H)), rng.standard_normal((N, H))
        gy = rng.standard_normal((N, n_t, H))
        data = {"h0": backend.array(h0), "c0": backend.array(c0), "seq": backend.array(seq)}
        out, grads = pm.evaluate(params, data, output_gradients={
            "h_n": backend.array(gh), "c_n": backend.array(gc), "ys": backend.array(gy)})
        seq_t = seq.transpose(1, 0, 2)
        rh, rc, rys = two_carry_ref(p, h0, c0, seq_t)
        np.testing.assert_allclose(backend.to_numpy(out["h_n"]), rh, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(out["c_n"]), rc, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(out["ys"]), rys.transpose(1, 0, 2),
                                   rtol=1e-10, atol=1e-12)

        def loss(q: dict[str, np.ndarray]) -> float:
            a, b, c = two_carry_ref(q, h0, c0, seq_t)
            return float((a * gh).sum() + (b * gc).sum()
                         + (c.transpose(1, 0, 2) * gy).sum())

        fd = _fd(loss, p)
        for k, key in keys.items():
            np.testing.assert_allclose(backend.to_numpy(grads[key]), fd[k], rtol=1e-6,
                                       atol=1e-8, err_msg=f"{name} T={n_t} {key}")


@pytest.mark.parametrize(("name", "backend"), BACKENDS, ids=[b[0] for b in BACKENDS])
def test_carry_and_sequence_gradients(name: str, backend) -> None:
    """The initial carry's and the sequence's gradients (NumPy: its backward through the
    steps) against finite differences."""
    model = Model()
    model |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"])(
        h="h0", x="seq", h_next=IOKey("h_last"))
    pm = ml.compile(model, backend, trainable_keys={"h0", "seq"},
                    shapes={"h0": [N, H], "seq": [4, N, F]})
    rng = np.random.default_rng(2)
    p = {"w_ih": rng.standard_normal((H, F)) * 0.5, "b": rng.standard_normal(H) * 0.5,
         "w_hh": rng.standard_normal((H, H)) * 0.5, "h0": rng.standard_normal((N, H)),
         "seq": rng.standard_normal((4, N, F))}
    keys = {"w_ih": "scan.linear.weight", "b": "scan.linear.bias",
            "w_hh": "scan.linear_1.weight", "h0": "h0", "seq": "seq"}
    params = {keys[k]: backend.array(v) for k, v in p.items()}
    g = rng.standard_normal((N, H))
    _, grads = pm.evaluate(params, {}, output_gradients={"h_last": backend.array(g)})

    def loss(q: dict[str, np.ndarray]) -> float:
        return float((elman_ref(q, q["h0"], q["seq"])[0] * g).sum())

    fd = _fd(loss, p)
    for k in ("h0", "seq"):
        np.testing.assert_allclose(backend.to_numpy(grads[k]), fd[k], rtol=1e-6, atol=1e-8,
                                   err_msg=f"{name} {k}")


def test_carry_that_changes_shape_is_an_error() -> None:
    cell = Model()
    cell |= Linear(5)(input=IOKey("h", shape=["N", H]), output=IOKey("h_next", expose=True))
    cell |= Add()(left="h_next", right=IOKey("x", shape=["N", 5]), output=IOKey("y"))
    with pytest.raises(ShapeMismatchError, match=r"'h_next' has shape \['N', 5\].*'h'.*"
                                                 r"\['N', 4\]"):
        Scan(cell, carry={"h": "h_next"}, xs=["x"], ys=["y"])


def test_length_stays_symbolic_and_body_is_not_unrolled() -> None:
    """One compiled model, any length; the generated code has one scan call."""
    model = Model()
    model |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"])(
        h="h0", x="seq", h_next=IOKey("h_last"))
    pm = ml.compile(model, ml.NumpyBackend(dtype=ml.float64))
    assert pm.code.count("scan(") == 1
    assert "tanh" not in pm.code  # the body is not pasted into the outer code


def test_shapes_flow_through_the_body() -> None:
    """The loop's length and the batch reach the outputs before compiling; a carry given
    with the wrong shape raises at the connection."""
    model = Model()
    model |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"], ys=["h_next"])(
        h="h0", x="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("hs"))
    model.set_shapes({"seq": [9, "B", F]})
    shapes = model.shapes
    assert shapes["hs"] == [9, "B", H]
    assert shapes["h_last"] == ["B", H] and shapes["h0"] == ["B", H]
    assert shapes["scan.linear.weight"] == [H, F]
    bad = Model()
    with pytest.raises(ShapeMismatchError, match="'h'.*\\[2, 4\\].*\\[2, 5\\]"):
        bad |= Scan(elman_body(), carry={"h": "h_next"}, xs=["x"])(
            h=IOKey("h0", shape=[2, 5]), x="seq")


def test_to_dict_round_trip() -> None:
    """A model with a Scan is stored and read back (also where the body's id is unknown, as
    in another process) and gives the same numbers."""
    import json

    from mithril.framework.scan import BODIES

    model = Model()
    scan = Scan(elman_body(), carry={"h": "h_next"}, xs=["x"], ys=["h_next"])
    model |= scan(h="h0", x="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("hs"))
    doc = json.loads(json.dumps(model.to_dict()))
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend)
    params = pm.randomize_params(seed=3)
    rng = np.random.default_rng(3)
    data = {"h0": rng.standard_normal((N, H)), "seq": rng.standard_normal((5, N, F))}
    want = pm.evaluate(params, data)
    del BODIES[scan.spec.key]  # as in a fresh process
    loaded = ml.compile(Model.from_dict(doc), backend)
    got = loaded.evaluate(params, data)
    for key in ("h_last", "hs"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12)


def test_body_with_dropout_is_refused_when_the_layer_is_made() -> None:
    from mithril.errors import ArgumentError
    from mithril.models import Dropout

    cell = Model()
    cell |= Dropout(p=0.5)(input=IOKey("h", shape=["N", H]), output="d")
    cell |= Add()(left="d", right=IOKey("x", shape=["N", H]), output=IOKey("h_next"))
    with pytest.raises(ArgumentError, match="random primitive 'dropout'"):
        Scan(cell, carry={"h": "h_next"}, xs=["x"])


@pytest.mark.parametrize(("name", "backend"), BACKENDS, ids=[b[0] for b in BACKENDS])
def test_integer_per_step_input(name: str, backend) -> None:
    """Token ids as the per-step input (they stay integers): h' = tanh(E[id] + U h)."""
    from mithril.models import Embedding

    cell = Model()
    cell |= Embedding(10, H)(input=IOKey("tok", shape=["N"], type=int), output="e")
    cell |= Linear(H, use_bias=False)(input=IOKey("h", shape=["N", H]), output="uh")
    cell |= Add()(left="e", right="uh", output="s")
    cell |= Tanh()(input="s", output=IOKey("h_next"))
    model = Model()
    model |= Scan(cell, carry={"h": "h_next"}, xs=["tok"])(
        h="h0", tok="tokens", h_next=IOKey("h_last"))
    pm = ml.compile(model, backend)
    rng = np.random.default_rng(4)
    p = {"emb": rng.standard_normal((10, H)), "u": rng.standard_normal((H, H)) * 0.5}
    keys = {"emb": "scan.embedding.weight", "u": "scan.linear.weight"}
    params = {keys[k]: backend.array(v) for k, v in p.items()}
    tokens = rng.integers(0, 10, size=(6, N))
    h0 = rng.standard_normal((N, H))
    g = rng.standard_normal((N, H))
    out, grads = pm.evaluate(params, {"h0": backend.array(h0), "tokens": backend.array(tokens)},
                             output_gradients={"h_last": backend.array(g)})

    def ref(q: dict[str, np.ndarray]) -> np.ndarray:
        h = h0
        for t in range(tokens.shape[0]):
            h = np.tanh(q["emb"][tokens[t]] + h @ q["u"].T)
        return h

    np.testing.assert_allclose(backend.to_numpy(out["h_last"]), ref(p), rtol=1e-10, atol=1e-12)
    fd = _fd(lambda q: float((ref(q) * g).sum()), p)
    for k, key in keys.items():
        np.testing.assert_allclose(backend.to_numpy(grads[key]), fd[k], rtol=1e-6, atol=1e-8,
                                   err_msg=f"{name} {key}")
