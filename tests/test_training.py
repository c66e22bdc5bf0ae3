"""Training: loss models, TrainModel, backend loss helpers and the guide's training loop."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.models import (
    L1,
    L2,
    AbsoluteError,
    Accuracy,
    BinaryCrossEntropy,
    CrossEntropy,
    HingeLoss,
    KLDivergence,
    Linear,
    Mean,
    Model,
    QuadHingeLoss,
    QuantileLoss,
    Relu,
    SquaredError,
    TrainModel,
)
from tests.guide_snippets import blocks, for_backend

BACKENDS = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
            "mlx": "MlxBackend"}
RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 4)) * 3
P = np.exp(X) / np.exp(X).sum(1, keepdims=True)
IDX = RNG.integers(0, 4, 6)
T01 = (RNG.random((6, 4)) > 0.5).astype(float)
PM1 = np.where(RNG.random((6, 4)) > 0.5, 1.0, -1.0)
Y = RNG.standard_normal((6, 4))


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a)


# (loss model factory, input, target, elementwise torch reference)
LOSSES: dict[str, tuple[Any, np.ndarray, np.ndarray, Any]] = {
    "squared": (SquaredError, X, Y, lambda x, y: F.mse_loss(x, y, reduction="none")),
    "absolute": (AbsoluteError, X, Y, lambda x, y: F.l1_loss(x, y, reduction="none")),
    "ce_logits": (CrossEntropy, X, IDX, lambda x, y: F.cross_entropy(x, y, reduction="none")),
    "ce_soft": (lambda: CrossEntropy(categorical=False), X, P,
                lambda x, y: F.cross_entropy(x, y, reduction="none")),
    "ce_probs": (lambda: CrossEntropy(input_type="probs"), P, IDX,
                 lambda x, y: F.nll_loss(torch.log(x), y, reduction="none")),
    "ce_log_probs": (lambda: CrossEntropy(input_type="log_probs"), np.log(P), IDX,
                     lambda x, y: F.nll_loss(x, y, reduction="none")),
    "bce_logits": (BinaryCrossEntropy, X, T01,
                   lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none")),
    "bce_probs": (lambda: BinaryCrossEntropy(input_type="probs"), P, T01,
                  lambda x, y: F.binary_cross_entropy(x, y, reduction="none")),
    "hinge": (HingeLoss, X, PM1, lambda x, y: torch.relu(1 - x * y)),
    "quad_hinge": (QuadHingeLoss, X, PM1, lambda x, y: torch.relu(1 - x * y) ** 2),
    "quantile": (lambda: QuantileLoss(0.3), X, Y,
                 lambda x, y: torch.maximum(0.3 * (y - x), (0.3 - 1) * (y - x))),
    "kl": (lambda: KLDivergence(input_type="log_probs"), np.log(P), P,
           lambda x, y: F.kl_div(x, y, reduction="none")),
}


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_loss_models_match_torch_with_gradients(backend_name, loss_name):
    make, x, y, reference = LOSSES[loss_name]
    tm = TrainModel(Linear(4)(input_size=4))
    tm.add_loss(make(), input="output", target="target", reduce_steps=[Mean()])
    backend = getattr(ml, BACKENDS[backend_name])(dtype=ml.float64)
    pm = ml.compile(tm, backend, shapes={"input": [6, 4]}, jit=False)
    w = np.eye(4)
    b = np.zeros(4)
    params = {"weight": backend.array(w), "bias": backend.array(b)}
    out, grads = pm.evaluate(params, {"input": backend.array(x), "target": backend.array(y)},
                             output_gradients=True)
    wt = torch.tensor(w, requires_grad=True)
    xt = t(x) @ wt.T + t(b)
    yt = t(y) if y.dtype != np.int64 else torch.tensor(y)
    ref = reference(xt, yt).mean()
    ref.backward()
    np.testing.assert_allclose(backend.to_numpy(out["final_cost"]), ref.item(), rtol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(grads["weight"]), wt.grad.numpy(), rtol=1e-8,
                               atol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    backend = ml.NumpyBackend(dtype=ml.float64)
    tm = TrainModel(Linear(3)(input_size=3))
    tm.add_loss(CrossEntropy(), input="output", target="target")
    pm = ml.compile(tm, backend, shapes={"input": [2, 3]})
    params = {"weight": np.eye(3), "bias": np.zeros(3)}
    x = np.array([[1000.0, -1000.0, 0.0], [-800.0, 900.0, 5.0]])
    out = pm.evaluate(params, {"input": x, "target": np.array([1, 1])})
    ref = F.cross_entropy(t(x), torch.tensor([1, 1])).item()
    assert np.isfinite(out["final_cost"]) and np.isclose(out["final_cost"], ref)


def test_regularization_by_pattern_and_metrics():
    m = Model()
    m |= Linear(5)(input_size=3)
    m += Relu()
    m += Linear(2)
    tm = TrainModel(m)
    tm.add_loss(CrossEntropy(), input="output", target="target", key_name="ce")
    tm.add_regularization(L2(), coef=0.01, input=re.compile(r"weight$"))
    tm.add_regularization(L1(), coef=0.001, input="linear.bias")
    tm.add_metric(Accuracy(), input="output", target="target", key_name="accuracy")
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(tm, backend, shapes={"input": [8, 3]})
    params = pm.randomize_params()
    x = RNG.standard_normal((8, 3))
    y = RNG.integers(0, 2, 8)
    out, grads = pm.evaluate(params, {"input": x, "target": y}, output_gradients=True)
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    logits = torch.relu(t(x) @ pt["linear.weight"].T + pt["linear.bias"]) @ \
        pt["linear_1.weight"].T + pt["linear_1.bias"]
    ce = F.cross_entropy(logits, torch.tensor(y))
    # each regularization term is divided by the 8 samples the loss averages (the reference's
    # scaling: docs/training.md)
    cost = ce + (0.01 * 0.5 * (pt["linear.weight"] ** 2).sum() + 0.01 * 0.5 * (
        pt["linear_1.weight"] ** 2).sum() + 0.001 * pt["linear.bias"].abs().sum()) / 8
    cost.backward()
    np.testing.assert_allclose(out["final_cost"], cost.item(), rtol=1e-10)
    np.testing.assert_allclose(out["ce"], ce.item(), rtol=1e-10)
    acc = (logits.argmax(1).numpy() == y).mean()
    np.testing.assert_allclose(out["accuracy"], acc)
    for k in params:
        np.testing.assert_allclose(grads[k], pt[k].grad.numpy(), rtol=1e-8, atol=1e-12)


def _blobs(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.5]])
    y = rng.integers(0, 3, n)
    return centers[y] + rng.standard_normal((n, 2)) * 0.5, y


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_train_model_regression_reaches_stated_loss(backend_name):
    """Linear regression with noise 0.1: the mean squared error reaches below 0.02."""
    backend = getattr(ml, BACKENDS[backend_name])()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.standard_normal((128, 1))
         ).astype(np.float32)
    tm = TrainModel(Linear(1)(input_size=3))
    tm.add_loss(SquaredError(), input="output", target="target")
    pm = ml.compile(tm, backend)
    params = pm.randomize_params()
    opt = ml.Adam(learning_rate=0.05)
    state = opt.init(params)
    data = {"input": backend.array(x), "target": backend.array(y)}
    for _ in range(300):
        _, grads = pm.evaluate(params, data, output_gradients=True)
        params, state = opt.update(params, grads, state)
    assert float(backend.to_numpy(pm.evaluate(params, data)["final_cost"])) < 0.02


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_train_model_classification_reaches_stated_loss(backend_name):
    """A small MLP on three Gaussian blobs: cross-entropy below 0.1, accuracy above 95%."""
    backend = getattr(ml, BACKENDS[backend_name])()
    x, y = _blobs()
    m = Model()
    m |= Linear(16)(input_size=2)
    m += Relu()
    m += Linear(3)
    tm = TrainModel(m)
    tm.add_loss(CrossEntropy(), input="output", target="target")
    tm.add_metric(Accuracy(), input="output", target="target", key_name="accuracy")
    pm = ml.compile(tm, backend)
    backend.set_seed(0)
    params = pm.randomize_params()
    opt = ml.Adam(learning_rate=0.03)
    state = opt.init(params)
    data = {"input": backend.array(x.astype(np.float32)), "target": backend.array(y)}
    for _ in range(200):
        _, grads = pm.evaluate(params, data, output_gradients=True)
        params, state = opt.update(params, grads, state)
    out = pm.evaluate(params, data)
    assert float(backend.to_numpy(out["final_cost"])) < 0.1
    assert float(backend.to_numpy(out["accuracy"])) > 0.95


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_backend_loss_helpers_match_torch(backend_name):
    backend = getattr(ml, BACKENDS[backend_name])(dtype=ml.float64)
    logits = RNG.standard_normal((5, 3)) * 50  # large logits stay finite
    idx = RNG.integers(0, 3, 5)
    onehot = np.eye(3)[idx]
    lt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(lt, torch.tensor(idx))
    ref.backward()
    for target in (idx, onehot):
        b_logits, b_target = backend.array(logits), backend.array(target)
        np.testing.assert_allclose(backend.to_numpy(backend.cross_entropy(b_logits, b_target)),
                                   ref.item(), rtol=1e-10)
        np.testing.assert_allclose(
            backend.to_numpy(backend.cross_entropy_grad(b_logits, b_target)),
            lt.grad.numpy(), rtol=1e-8, atol=1e-14)
    p = 1 / (1 + np.exp(-logits / 50))
    tgt = (RNG.random((5, 3)) > 0.5).astype(float)
    checks = [
        (backend.mse, backend.mse_grad, logits, F.mse_loss),
        (backend.binary_cross_entropy, backend.binary_cross_entropy_grad, p,
         F.binary_cross_entropy),
        (backend.binary_cross_entropy_with_logits, backend.binary_cross_entropy_with_logits_grad,
         logits, F.binary_cross_entropy_with_logits),
    ]
    for fn, grad_fn, inp, torch_fn in checks:
        it = torch.tensor(inp, requires_grad=True)
        r = torch_fn(it, torch.tensor(tgt))
        r.backward()
        got = backend.to_numpy(fn(backend.array(inp), backend.array(tgt)))
        np.testing.assert_allclose(got, r.item(), rtol=1e-9)
        np.testing.assert_allclose(backend.to_numpy(grad_fn(backend.array(inp),
                                                            backend.array(tgt))),
                                   it.grad.numpy(), rtol=1e-7, atol=1e-12)


def _loader(n_batches: int = 3, batch: int = 32):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
             rng.integers(0, 10, batch)) for _ in range(n_batches)]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_guide_training_snippet_runs_unchanged(backend_name):
    """The guide's "Mithril Training" block, as written (with "cpu"), on every backend."""
    code = dict(blocks())
    ns: dict[str, Any] = {}
    exec(for_backend(code["Mithril Style"], BACKENDS[backend_name]), ns)  # create_conv_net
    ns["train_loader"] = _loader()
    snippet = for_backend(code["Mithril Training"], BACKENDS[backend_name])
    snippet = snippet.replace("range(10)", "range(2)")  # two epochs keep the test short
    exec(snippet, ns)
    first = ns["params"]
    assert set(first) == set(ns["compiled_model"].param_keys)
    loss = float(ns["backend"].to_numpy(ns["loss"]))
    assert np.isfinite(loss)
