"""The reference Mithril's numerics conventions (``reference-api.md``: robust variants, losses,
regularization scaling) and its list-valued ``Concat``, on every backend against NumPy float64
formulas written from the reference's documented definitions (``reference_numerics``)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.models import (
    L2,
    Absolute,
    AbsoluteError,
    BinaryCrossEntropy,
    Concat,
    CrossEntropy,
    IOKey,
    KLDivergence,
    LeakyRelu,
    Linear,
    Log,
    Mean,
    Model,
    Power,
    Sqrt,
    SquaredError,
    StableReciprocal,
    Sum,
    TrainModel,
)
from tests.backend_names import WIDEST, ids_of, tolerances
from tests.backend_names import backend_of as make

BACKENDS = WIDEST
IDS = ids_of(BACKENDS)
TINY = {"float64": np.finfo(np.float64).tiny, "float32": float(np.finfo(np.float32).tiny)}

tol = tolerances((1e-12, 1e-12), (2e-5, 1e-6))


def value_and_grads(model: Any, b: Any, params: dict[str, np.ndarray],
                    data: dict[str, np.ndarray] | None = None,
                    out: str = "output") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``model``'s output at ``params`` and the gradient of its sum w.r.t. each param."""
    data = data or {}
    shapes = {k: list(v.shape) for k, v in {**params, **data}.items()}
    pm = ml.compile(model, b, shapes=shapes, trainable_keys=set(params),
                    data_keys=set(data), jit=False)
    outputs, grads = pm.evaluate({k: b.array(v) for k, v in params.items()},
                                 {k: b.array(v) for k, v in data.items()},
                                 output_gradients={out: b.ones(*pm.shapes[out])})
    return (b.to_numpy(outputs[out]).astype(np.float64),
            {k: b.to_numpy(v).astype(np.float64) for k, v in grads.items()})


# ---- NumPy float64 references written from the reference's definitions ----
def r_sqrt(x: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(x)
    small = a < c
    value = np.where(small, a / np.sqrt(c), np.sqrt(np.where(small, 1.0, a)))
    grad = np.sign(x) * np.where(small, 1 / np.sqrt(c), 0.5 / np.sqrt(np.where(small, 1.0, a)))
    return value, grad


def r_log(x: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(x)
    small = a < c
    value = np.where(small, np.log(c) + a / c - 1.0, np.log(np.where(small, 1.0, a)))
    s = np.where(x < 0, -1.0, 1.0)  # +1/c at exactly 0
    grad = s * np.where(small, 1 / c, 1 / np.where(small, 1.0, a))
    return value, grad


def r_reciprocal(x: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    small = np.abs(x) < c
    s = np.where(x < 0, -1.0, 1.0)
    safe = np.where(small, 1.0, x)
    return (np.where(small, 2 * s / c - x / c**2, 1 / safe),
            np.where(small, -1 / c**2, -1 / safe**2))


def r_power(b: np.ndarray, e: np.ndarray, c: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.abs(b)
    with np.errstate(divide="ignore"):
        limit = np.where(a == 0, 1.0, 1 - np.log(c) / np.log(np.where(a == 0, 0.5, a)))
    cond = (a < c) & (e < limit)
    safe = np.where(cond | (a == 0), 1.0, a)
    value = np.where(cond, a / c, np.where(a == 0, 0.0 ** e, safe ** e))
    gb = np.sign(b) * np.where(cond, 1 / c, e * safe ** (e - 1))
    ge = np.where(cond | (a == 0), 0.0, safe ** e * np.log(safe))
    return value, gb, ge


X = np.array([-3.0, -0.2, 0.0, 0.05, 0.3, 2.5])


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("kind", ["sqrt", "log", "reciprocal"])
def test_robust_unary_values_and_gradients_with_a_cutoff(backend: tuple[str, str],
                                                         kind: str) -> None:
    """Both branches (|x| below and above threshold 0.25), negatives and exactly 0."""
    b, dtype = make(*backend), backend[1]
    model, ref = {"sqrt": (Sqrt(robust=True, threshold=0.25), r_sqrt),
                  "log": (Log(robust=True, threshold=0.25), r_log),
                  "reciprocal": (StableReciprocal(threshold=0.25), r_reciprocal)}[kind]
    value, grads = value_and_grads(model, b, {"input": X})
    want, want_grad = ref(X, 0.25)
    np.testing.assert_allclose(value, want, **tol(dtype))
    np.testing.assert_allclose(grads["input"], want_grad, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_robust_power_both_regions_and_zero_base(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    base = np.array([-0.01, 0.01, 0.0, 0.0, -2.0, 1.5, 0.05])
    exponent = np.array([0.5, 3.0, 0.5, 2.0, 2.0, -0.5, 0.2])
    value, grads = value_and_grads(Power(robust=True, threshold=0.1), b,
                                   {"base": base, "exponent": exponent})
    want, want_gb, want_ge = r_power(base, exponent, 0.1)
    assert (want[:1] == 0.1).all()  # the linear part is reached (|b| / c)
    np.testing.assert_allclose(value, want, **tol(dtype))
    np.testing.assert_allclose(grads["base"], want_gb, **tol(dtype))
    np.testing.assert_allclose(grads["exponent"], want_ge, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_default_cutoff_is_the_precisions_smallest_normal(backend: tuple[str, str]) -> None:
    """Without ``threshold``: ``Constant.MIN_POSITIVE_NORMAL`` of the backend's dtype, so the
    robust log of 0 is ``log(tiny) - 1`` (finite) with gradient ``1 / tiny``; the stable
    reciprocal's cut-off is the reference's ``STABLE_RECIPROCAL_THRESHOLD``."""
    b, dtype = make(*backend), backend[1]
    tiny = TINY[dtype]
    x = np.array([0.0, 0.5, -4.0])
    value, grads = value_and_grads(Log(robust=True), b, {"input": x})
    np.testing.assert_allclose(value, [np.log(tiny) - 1, np.log(0.5), np.log(4.0)],
                               **tol(dtype))
    np.testing.assert_allclose(grads["input"], [1 / tiny, 2.0, -0.25], **tol(dtype))
    value, grads = value_and_grads(Sqrt(robust=True), b, {"input": x})
    np.testing.assert_allclose(value, [0.0, np.sqrt(0.5), 2.0], **tol(dtype))
    np.testing.assert_allclose(grads["input"], [0.0, 0.5 / np.sqrt(0.5), -0.25], **tol(dtype))
    stable = {"float64": 1.4916681462400413e-153, "float32": 1.0842021951e-19}[dtype]
    value, _ = value_and_grads(StableReciprocal(), b, {"input": np.array([0.0, 2.0])})
    np.testing.assert_allclose(value, [2 / np.float64(stable), 0.5], **tol(dtype))


def test_threshold_only_with_robust_and_a_terminal_threshold() -> None:
    with pytest.raises(ml.ArgumentError, match="robust=True"):
        Sqrt(threshold=0.1)
    with pytest.raises(ml.ArgumentError, match="robust=True"):
        CrossEntropy(threshold=0.1)
    assert type(Sqrt()).__name__ == "Sqrt" and type(Log(robust=True)).__name__ == "RobustLog"
    # threshold=ml.TBD: an input terminal, given with the data
    m = Log(robust=True, threshold=ml.TBD)
    b = make("numpy", "float64")
    pm = ml.compile(m, b, shapes={"input": [2]})
    assert "threshold" in pm.input_keys and "threshold" not in pm.shapes.get("params", {})
    out = pm.evaluate({}, {"input": np.array([0.0, 2.0]), "threshold": np.array(0.5)})
    np.testing.assert_allclose(out["output"], [np.log(0.5) - 1, np.log(2.0)], rtol=1e-14)


# ---- losses ----
P = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5], [0.1, 0.6, 0.3]])
CLASSES = np.array([0, 2, 2, 1])


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_cross_entropy_robust_probs_and_class_weights(backend: tuple[str, str]) -> None:
    """``input_type="probs", robust=True``: ``-w[t] * robust_log(p[t])``, finite where the
    picked probability is 0 (row 2); weights a list and ``True`` (balanced from the batch)."""
    b, dtype = make(*backend), backend[1]
    tiny = TINY[dtype]
    picked = P[np.arange(4), CLASSES]
    log_value, log_grad = r_log(picked, tiny)
    counts = np.bincount(CLASSES, minlength=3).astype(float)
    for weights, w in [([1.0, 2.0, 0.5], np.array([1.0, 2.0, 0.5])),
                       (True, counts.sum() / (3 * counts))]:
        model = Model()
        model |= CrossEntropy("probs", weights, robust=True)(
            input="input", target=IOKey("target"), output="output")
        value, grads = value_and_grads(model, b, {"input": P}, {"target": CLASSES})
        rows = w[CLASSES]
        np.testing.assert_allclose(value, -rows * log_value, **tol(dtype))
        want = np.zeros_like(P)
        want[np.arange(4), CLASSES] = -rows * log_grad
        np.testing.assert_allclose(grads["input"], want, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_cross_entropy_weights_match_torch(backend: tuple[str, str]) -> None:
    """Logits with class weights and soft targets with class weights: torch's per-sample
    ``weight=`` losses (no normalisation), values and gradients."""
    b, dtype = make(*backend), backend[1]
    logits = np.log(P + 0.05) * 1.7
    w = [0.3, 1.0, 2.0]
    model = Model()
    model |= CrossEntropy(weights=w)(input="input", target=IOKey("target"), output="output")
    value, grads = value_and_grads(model, b, {"input": logits}, {"target": CLASSES})
    x = torch.tensor(logits, requires_grad=True)
    want = F.cross_entropy(x, torch.tensor(CLASSES), weight=torch.tensor(w, dtype=torch.float64),
                           reduction="none")
    want.sum().backward()
    np.testing.assert_allclose(value, want.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grads["input"], x.grad.numpy(), **tol(dtype))
    soft = np.full((4, 3), 1 / 3)
    model = Model()
    model |= CrossEntropy(weights=w, categorical=False)(input="input", target="target",
                                                        output="output")
    value, _ = value_and_grads(model, b, {"input": logits}, {"target": soft})
    want = F.cross_entropy(torch.tensor(logits), torch.tensor(soft),
                           weight=torch.tensor(w, dtype=torch.float64), reduction="none")
    np.testing.assert_allclose(value, want.numpy(), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_binary_cross_entropy_pos_weight_and_robust(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    x = np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 40.0])
    t = np.array([1.0, 0.0, 1.0, 0.3, 0.0, 1.0])
    # logits with pos_weight: torch's BCEWithLogits(pos_weight=2.5)
    model = Model()
    model |= BinaryCrossEntropy(pos_weight=2.5)(input="input", target="target", output="output")
    value, grads = value_and_grads(model, b, {"input": x}, {"target": t})
    xt = torch.tensor(x, requires_grad=True)
    want = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), reduction="none",
                                              pos_weight=torch.tensor(2.5, dtype=torch.float64))
    want.sum().backward()
    np.testing.assert_allclose(value, want.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grads["input"], xt.grad.numpy(), **tol(dtype))
    # probabilities, robust, pos_weight=True: -w t rlog(p) - (1 - t) rlog(1 - p), finite at
    # p = 0 and 1, w = (1 - mean t) / mean t
    p = np.array([0.0, 1.0, 0.3, 0.9, 1.0, 0.0])
    model = Model()
    model |= BinaryCrossEntropy("probs", True, robust=True, threshold=1e-3)(
        input="input", target="target", output="output")
    value, grads = value_and_grads(model, b, {"input": p}, {"target": t})
    w = (1 - t.mean()) / t.mean()
    lp, glp = r_log(p, 1e-3)
    l1p, gl1p = r_log(1 - p, 1e-3)
    np.testing.assert_allclose(value, -w * t * lp - (1 - t) * l1p, **tol(dtype))
    np.testing.assert_allclose(grads["input"], -w * t * glp + (1 - t) * gl1p, **tol(dtype))
    assert np.isfinite(grads["input"]).all()


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_kl_divergence_reference_and_pytorch_forms(backend: tuple[str, str]) -> None:
    """The reference's form takes probabilities (robust logs: finite with zeros); the
    PyTorch form (``input_type="log_probs"``) is ``F.kl_div``."""
    b, dtype = make(*backend), backend[1]
    q = P[:, ::-1].copy()
    model = Model()
    model |= KLDivergence(threshold=1e-6)(input="input", target="target", output="output")
    value, grads = value_and_grads(model, b, {"input": P}, {"target": q})
    lq, _ = r_log(q, 1e-6)
    lp, glp = r_log(P, 1e-6)
    np.testing.assert_allclose(value, q * (lq - lp), **tol(dtype))
    np.testing.assert_allclose(grads["input"], -q * glp, **tol(dtype))
    logp = np.log(np.array([[0.2, 0.8], [0.5, 0.5]]))
    model = Model()
    model |= KLDivergence(input_type="log_probs")(input="input", target="target",
                                                  output="output")
    target = np.array([[0.0, 1.0], [0.4, 0.6]])
    value, _ = value_and_grads(model, b, {"input": logp}, {"target": target})
    want = F.kl_div(torch.tensor(logp), torch.tensor(target), reduction="none").numpy()
    np.testing.assert_allclose(value, want, **tol(dtype))


# ---- regularization scaling ----
def _linear_tm(batch_losses: list[tuple[Any, list[Any] | None]]) -> TrainModel:
    tm = TrainModel(Linear(2)(input_size=3))
    for i, (loss, steps) in enumerate(batch_losses):
        tm.add_loss(loss, input="output", target=f"target{i}", reduce_steps=steps)
    tm.add_regularization(L2(), coef=0.1, input=re.compile(r"weight$"))
    return tm


RNG = np.random.default_rng(3)
W = RNG.standard_normal((2, 3))
BIAS = RNG.standard_normal(2)
XB = RNG.standard_normal((6, 3))
TB = RNG.standard_normal((6, 2))


def _costs(tm: TrainModel, n_targets: int, b: Any) -> tuple[float, np.ndarray]:
    pm = ml.compile(tm, b, shapes={"input": [6, 3]}, jit=False)
    data = {"input": b.array(XB), **{f"target{i}": b.array(TB) for i in range(n_targets)}}
    out, grads = pm.evaluate({"weight": b.array(W), "bias": b.array(BIAS)}, data,
                             output_gradients=True)
    return float(b.to_numpy(out["final_cost"])), b.to_numpy(grads["weight"])


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_regularization_divided_by_the_averaged_loss_size(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    pred = XB @ W.T + BIAS
    se = (pred - TB) ** 2
    reg = 0.1 * 0.5 * (W ** 2).sum()
    rt = {"rtol": 1e-12} if dtype == "float64" else {"rtol": 1e-5}
    # one loss, Mean over all 12 elements: reg / 12
    cost, gw = _costs(_linear_tm([(SquaredError(), [Mean()])]), 1, b)
    np.testing.assert_allclose(cost, se.mean() + reg / 12, **rt)
    want_gw = (2 * (pred - TB) / 12).T @ XB + 0.1 * W / 12
    np.testing.assert_allclose(gw, want_gw, **rt, atol=1e-6 if dtype == "float32" else 0)
    # Mean over axis 1 (2 elements), then Sum: reg / 2
    cost, _ = _costs(_linear_tm([(SquaredError(), [Mean(axis=1), Sum()])]), 1, b)
    np.testing.assert_allclose(cost, se.mean(axis=1).sum() + reg / 2, **rt)
    # no averaging step: unscaled
    cost, _ = _costs(_linear_tm([(SquaredError(), [Sum()])]), 1, b)
    np.testing.assert_allclose(cost, se.sum() + reg, **rt)
    # two losses averaging 12 and 2 elements: the geometric mean sqrt(24)
    cost, _ = _costs(_linear_tm([(SquaredError(), [Mean()]),
                                 (SquaredError(), [Mean(axis=1), Sum()])]), 2, b)
    np.testing.assert_allclose(cost, se.mean() + se.mean(axis=1).sum() + reg / np.sqrt(24),
                               **rt)


def test_regularization_of_a_value_that_feeds_no_loss_is_unscaled() -> None:
    """The spec's example: 0.25 unscaled becomes 0.0833 when the loss averages 3 values; a
    regularized input that no loss depends on stays unscaled."""
    b = make("numpy", "float64")
    m = Model()
    m |= Linear(1)(input="input", weight="w", bias="bias", output="output")
    m |= Mean()(input="free", output="free_mean")
    tm = TrainModel(m)
    tm.add_loss(SquaredError(), input="output", target="target", reduce_steps=[Mean()])
    tm.add_regularization(L2(), coef=1.0, input="w")
    tm.add_regularization(L2(), coef=1.0, input="free")
    pm = ml.compile(tm, b, shapes={"input": [3, 1], "free": [2]}, jit=False)
    out = pm.evaluate({"w": np.array([[np.sqrt(0.5)]]), "bias": np.zeros(1)},
                      {"input": np.zeros((3, 1)), "target": np.zeros((3, 1)),
                       "free": np.array([1.0, 0.0])})
    # 0.25 / 3 for w (feeds the loss averaged over 3 values) + 0.5 for free (feeds none)
    np.testing.assert_allclose(out["final_cost"], 0.25 / 3 + 0.5, rtol=1e-14)


# ---- Concat with one list-valued input ----
@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_concat_takes_a_list_of_connections(backend: tuple[str, str]) -> None:
    b, dtype = make(*backend), backend[1]
    m = Model()
    m |= Linear(2)(input="x", weight="w", bias="bias", output="h")
    m |= Concat(axis=1)(input=[m.h, "y", m.h], output="out")
    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 1))
    w, bias = RNG.standard_normal((2, 4)), RNG.standard_normal(2)
    value, grads = value_and_grads(m, b, {"w": w, "bias": bias}, {"x": x, "y": y}, out="out")
    h = x @ w.T + bias
    np.testing.assert_allclose(value, np.concatenate([h, y, h], axis=1), **tol(dtype))
    # d sum(out) / dw: h appears twice
    np.testing.assert_allclose(grads["w"], 2 * np.ones((3, 2)).T @ x, **tol(dtype))
    m2 = Model()
    m2 |= Concat().connect(["a", "b"], 0, "c")  # positional: input, axis, output
    pm = ml.compile(m2, b, shapes={"a": [1, 2], "b": [3, 2]})
    assert list(pm.shapes["c"]) == [4, 2]


def test_concat_serves_both_apis_and_errors() -> None:
    from mithril.models import layers

    assert isinstance(Concat(n=3, dim=1), layers.Concat)  # the guide's torch.cat form
    assert isinstance(Concat(2, 1), layers.Concat)
    b = make("numpy", "float64")
    m = Model()
    m |= Concat()(input1="a", input2="b", input3="c", output="y")  # guide terminals, bare
    pm = ml.compile(m, b, shapes={"a": [1, 2], "b": [2, 2], "c": [1, 2]})
    assert list(pm.shapes["y"]) == [4, 2]
    with pytest.raises(ml.ArgumentError, match="list"):
        Concat()(input="a")
    c = Concat(input=["a", "b"])
    with pytest.raises(ml.ArgumentError, match="joins 2 inputs"):
        c(input=["a", "b", "c"])
    with pytest.raises(ml.ArgumentError, match="either"):
        Concat(["a"], n=2)


@pytest.mark.parametrize("loss,input_shape,target_shape", [
    (SquaredError, [4, 3], [4, 3]),
    (lambda: BinaryCrossEntropy(pos_weight=2.0), [5], [5]),
    (KLDivergence, [2, 3, 2], [2, 3, 2]),
    (CrossEntropy, [4, 3], [4]),
    (lambda: CrossEntropy(categorical=False), [4, 3], [4, 3]),
])
def test_losses_infer_target_shape_from_input_and_back(loss: Any, input_shape: list[int],
                                                       target_shape: list[int]) -> None:
    b = make("numpy", "float64")
    m = Model()
    m |= loss()(input="x", target="t", output="o")
    assert list(ml.compile(m, b, shapes={"x": input_shape}).shapes["t"]) == target_shape
    if len(input_shape) == len(target_shape):  # the class axis cannot come from the target
        m = Model()
        m |= loss()(input="x", target="t", output="o")
        assert list(ml.compile(m, b, shapes={"t": target_shape}).shapes["x"]) == input_shape


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_gradients_at_kinks_follow_the_reference(backend: tuple[str, str]) -> None:
    """``reference-api.md``: at exactly 0 the reference's NumPy conventions on every backend:
    ``abs`` and ``AbsoluteError`` have gradient ``sign(0) = 0``, ``LeakyRelu`` its slope."""
    b, dtype = make(*backend), backend[1]
    x = np.array([-1.5, 0.0, 2.0])
    for model, want in [(Absolute(), [-1.0, 0.0, 1.0]), (LeakyRelu(0.2), [0.2, 0.2, 1.0])]:
        m = Model()
        m |= model(input="input", output="output")
        _, grads = value_and_grads(m, b, {"input": x})
        np.testing.assert_allclose(grads["input"], want, **tol(dtype))
    m = Model()
    m |= AbsoluteError()(input="input", target="target", output="output")
    _, grads = value_and_grads(m, b, {"input": x}, {"target": np.array([0.0, 0.0, 3.0])})
    np.testing.assert_allclose(grads["input"], [-1.0, 0.0, -1.0], **tol(dtype))
