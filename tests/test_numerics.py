"""Numerical safety on every backend, against PyTorch (float64) as the reference.

- softmax, log-softmax, sigmoid, the ``CrossEntropy`` / ``BinaryCrossEntropy`` loss models and
  the backend loss helpers (``backend.cross_entropy`` and friends) stay finite for logits up to
  |x| = 1e4 wherever PyTorch is finite, and their values and gradients equal PyTorch's;
- ``BinaryCrossEntropy`` equals PyTorch also at a logit of 0, at probabilities of 0 and 1
  (PyTorch's (p - t) / max(p (1 - p), 1e-12) gradient) and with soft targets (gradients with
  respect to the targets too);
- activations keep NaN and +-inf where PyTorch does, with PyTorch's gradients at 0 and at
  clamp bounds;
- the guide's ConvNet evaluates (forward, gradients, inference) in float16 and bfloat16 where
  the framework supports them, close to float32, and so do the activations, losses and loss
  helpers above for logits up to 1e4; NumPy has no bfloat16 and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.models import (
    Absolute,
    BinaryCrossEntropy,
    Clamp,
    CrossEntropy,
    LeakyRelu,
    LogSoftmax,
    Model,
    Relu,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from tests.backend_names import BACKENDS, backend_of
from tests.guide_models import create_conv_net

F = torch.nn.functional
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}

#: rows with huge, tied, nearly tied and moderate logits (|x| <= 1e4)
LOGITS = np.array([[1e4, -1e4, 0.0, 5.0],
                   [-1e4, -1e4, -1e4, -1e4 + 1],
                   [1e4, 1e4, -1e4, 3.0],
                   [0.5, -0.5, 100.0, -100.0],
                   [-1e4, 1e4, 9999.0, -3.0]])
CLASSES_OF_ROWS = np.array([1, 0, 2, 3, 2])
BINARY_LOGITS = np.array([1e4, -1e4, 0.0, 30.0, -30.0, 88.0, -88.0, 700.0, -750.0, -1e4, 1e4])
BINARY_TARGETS = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])



def close(got: Any, want: np.ndarray, dtype: str, scale: float, what: str) -> None:
    """Equal to the float64 reference up to a few ulps of ``scale`` (the size of the logits
    that enter the computation: log-sum-exp of 1e4 has an ulp of 1e-3 in float32)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    finite = np.isfinite(want)
    assert np.all(np.isfinite(got[finite])), f"{what}: not finite where PyTorch is: {got}"
    tol = 8 * EPS[dtype] * max(scale, 1.0)
    np.testing.assert_allclose(got, want, rtol=8 * EPS[dtype], atol=tol, err_msg=what)


def _compiled(name: str, dtype: str, model: Model, shapes: dict[str, list[int]],
              trainable: set[str]) -> Any:
    return ml.compile(model, backend_of(name, dtype), shapes=shapes, trainable_keys=trainable,
                      jit=False)


def _run(pm: Any, params: dict[str, np.ndarray], data: dict[str, np.ndarray],
         grads: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    b = pm.backend
    out, g = pm.evaluate({k: b.array(v) for k, v in params.items()},
                         {k: b.array(v) for k, v in data.items()},
                         output_gradients={k: b.array(v) for k, v in grads.items()})
    return ({k: b.to_numpy(v) for k, v in out.items()}, {k: b.to_numpy(v) for k, v in g.items()})


def _torch_value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray,
                          grad_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = fn(t)
    out.backward(torch.from_numpy(grad_out))
    assert t.grad is not None
    return out.detach().numpy(), t.grad.numpy()


ACTIVATIONS: dict[str, tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor],
                             np.ndarray]] = {
    "softmax": (lambda: Softmax(dim=-1), lambda t: torch.softmax(t, -1), LOGITS),
    "log_softmax": (lambda: LogSoftmax(dim=-1), lambda t: torch.log_softmax(t, -1), LOGITS),
    "softmax_axis0": (lambda: Softmax(dim=0), lambda t: torch.softmax(t, 0), LOGITS),
    "sigmoid": (Sigmoid, torch.sigmoid, BINARY_LOGITS),
}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", list(ACTIVATIONS))
def test_softmax_log_softmax_sigmoid_large_logits(name: str, dtype: str, layer: str) -> None:
    make, ref_fn, x = ACTIVATIONS[layer]
    m = Model()
    m |= make()(input="input", output="output")
    pm = _compiled(name, dtype, m, {"input": list(x.shape)}, {"input"})
    g = np.random.default_rng(0).standard_normal(x.shape)
    out, grads = _run(pm, {"input": x}, {}, {"output": g})
    want, want_grad = _torch_value_and_grad(ref_fn, x, g)
    scale = 1e4 if layer == "log_softmax" else 1.0
    close(out["output"], want, dtype, scale, f"{layer} values")
    close(grads["input"], want_grad, dtype, 1.0, f"{layer} gradient")


#: NaN, +-inf, zeros and the clamp bounds (-1, 0, 1, 2) in rows with and without NaN / +inf
SPECIAL = np.array([[np.nan, 1.0, -2.0, np.inf, 0.0],
                    [-np.inf, 0.5, 3.0, -1.0, 0.0],
                    [np.inf, 1.0, -1.0, 0.0, 2.0],
                    [1.0, -np.inf, -np.inf, 30.0, -30.0]])
SPECIAL_LAYERS: dict[str, tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (Relu, torch.relu),
    "leaky_relu": (lambda: LeakyRelu(0.1), lambda t: F.leaky_relu(t, 0.1)),
    "clamp": (lambda: Clamp(min=-1.0, max=2.0), lambda t: torch.clamp(t, -1.0, 2.0)),
    "clamp_min": (lambda: Clamp(min=0.0), lambda t: torch.clamp(t, min=0.0)),
    "clamp_max": (lambda: Clamp(max=1.0), lambda t: torch.clamp(t, max=1.0)),
    "absolute": (Absolute, torch.abs),
    "softplus": (Softplus, F.softplus),
    "sigmoid": (Sigmoid, torch.sigmoid),
    "tanh": (Tanh, torch.tanh),
    "silu": (SiLU, F.silu),
    "softmax": (lambda: Softmax(dim=-1), lambda t: torch.softmax(t, -1)),
    "log_softmax": (lambda: LogSoftmax(dim=-1), lambda t: torch.log_softmax(t, -1)),
}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", list(SPECIAL_LAYERS))
def test_activations_at_nan_inf_zero_and_bounds_like_pytorch(name: str, dtype: str,
                                                             layer: str) -> None:
    """NaN stays NaN (no maximum / minimum that drops it: MLX relu did), a row holding +inf
    gives what PyTorch gives (NaN for log-softmax), and the gradients at 0 and at clamp bounds
    follow PyTorch's conventions (relu and |x|: 0 at 0; clamp: 1 at the bounds). Gradients at
    NaN inputs themselves are conventions and not compared."""
    make, ref_fn = SPECIAL_LAYERS[layer]
    m = Model()
    m |= make()(input="input", output="output")
    pm = _compiled(name, dtype, m, {"input": list(SPECIAL.shape)}, {"input"})
    g = np.arange(1.0, 1.0 + SPECIAL.size).reshape(SPECIAL.shape) / 10
    out, grads = _run(pm, {"input": SPECIAL}, {}, {"output": g})
    t = torch.tensor(SPECIAL, dtype=getattr(torch, dtype), requires_grad=True)
    want = ref_fn(t)
    want.backward(torch.tensor(g, dtype=t.dtype))
    assert t.grad is not None
    value, want_value = out["output"].astype(np.float64), want.detach().double().numpy()
    for check in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(check(value), check(want_value), err_msg=layer)
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(value, want_value, rtol=rtol, atol=rtol, equal_nan=True)
    at = ~np.isnan(SPECIAL)
    np.testing.assert_allclose(grads["input"][at].astype(np.float64),
                               t.grad.double().numpy()[at], rtol=rtol, atol=rtol,
                               equal_nan=True, err_msg=f"{layer} gradient")


def _ce_reference(kind: str, x: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    target = torch.from_numpy(CLASSES_OF_ROWS)
    if kind == "logits":
        return lambda t: F.cross_entropy(t, target, reduction="none")
    if kind == "log_probs":
        return lambda t: F.nll_loss(t, target, reduction="none")
    return lambda t: F.nll_loss(torch.clamp(torch.log(t), min=-100.0), target, reduction="none")


def _ce_input(kind: str) -> np.ndarray:
    if kind == "logits":
        return LOGITS
    logp = torch.log_softmax(torch.from_numpy(LOGITS), -1).numpy()
    return logp if kind == "log_probs" else np.exp(logp)  # probabilities with exact zeros


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["logits", "log_probs", "probs"])
def test_cross_entropy_model_large_logits(name: str, dtype: str, kind: str) -> None:
    """``CrossEntropy(input_type=...)`` with class indices, values and gradients."""
    x = _ce_input(kind)
    m = Model()
    m |= CrossEntropy(input_type=kind)(input="input", target="target", output="output")
    pm = _compiled(name, dtype, m, {"input": list(x.shape), "target": [len(x)]}, {"input"})
    g = np.linspace(0.5, 1.5, len(x))
    out, grads = _run(pm, {"input": x}, {"target": CLASSES_OF_ROWS}, {"output": g})
    want, want_grad = _torch_value_and_grad(_ce_reference(kind, x), x, g)
    close(out["output"], want, dtype, 1e4, f"CrossEntropy({kind}) values")
    if kind != "probs":  # d/dp of a clamped log at p = 0 is a convention; values suffice
        close(grads["input"], want_grad, dtype, 1.0, f"CrossEntropy({kind}) gradient")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_model_with_probability_targets(name: str, dtype: str) -> None:
    target = np.full(LOGITS.shape, 0.25)
    m = Model()
    m |= CrossEntropy(categorical=False)(input="input", target="target", output="output")
    pm = _compiled(name, dtype, m, {"input": list(LOGITS.shape), "target": list(target.shape)},
                   {"input"})
    g = np.ones(len(LOGITS))
    out, grads = _run(pm, {"input": LOGITS}, {"target": target}, {"output": g})
    want, want_grad = _torch_value_and_grad(
        lambda t: F.cross_entropy(t, torch.from_numpy(target), reduction="none"), LOGITS, g)
    close(out["output"], want, dtype, 1e4, "soft-target cross-entropy")
    close(grads["input"], want_grad, dtype, 1.0, "soft-target cross-entropy gradient")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_binary_cross_entropy_model_large_logits(name: str, dtype: str, kind: str) -> None:
    x = BINARY_LOGITS if kind == "logits" else 1 / (1 + np.exp(-np.clip(BINARY_LOGITS, -700,
                                                                        700)))
    m = Model()
    m |= BinaryCrossEntropy(input_type=kind)(input="input", target="target", output="output")
    pm = _compiled(name, dtype, m, {"input": [len(x)], "target": [len(x)]}, {"input"})
    g = np.ones(len(x))
    out, grads = _run(pm, {"input": x}, {"target": BINARY_TARGETS}, {"output": g})
    t = torch.from_numpy(BINARY_TARGETS)
    if kind == "logits":
        ref = lambda z: F.binary_cross_entropy_with_logits(z, t, reduction="none")  # noqa: E731
    else:
        ref = lambda z: F.binary_cross_entropy(z, t, reduction="none")  # noqa: E731
    want, want_grad = _torch_value_and_grad(ref, x, g)
    if dtype == "float32" and kind == "probs":
        # probabilities within 1e-8 of 0 or 1 round to it in float32: compare with PyTorch
        # computing in float32 (the clamp at -100 keeps both finite)
        p32 = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        out32 = F.binary_cross_entropy(p32, t.float(), reduction="none")
        out32.backward(torch.ones_like(out32))
        assert p32.grad is not None
        want, want_grad = out32.detach().double().numpy(), p32.grad.double().numpy()
    close(out["output"], want, dtype, 1e4, f"BinaryCrossEntropy({kind}) values")
    # with probabilities, PyTorch's (p - t) / max(p (1 - p), 1e-12): 1e12 at p = 0 or 1
    close(grads["input"], want_grad, dtype, 1.0, f"BinaryCrossEntropy({kind}) gradient")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_probs_gradient_at_zero_and_one(name: str, dtype: str) -> None:
    x, t = np.array([0.0, 1.0, 1.0, 0.0, 0.25]), np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    m = Model()
    m |= BinaryCrossEntropy(input_type="probs")(input="input", target="target", output="output")
    pm = _compiled(name, dtype, m, {"input": [5], "target": [5]}, {"input"})
    g = np.ones(5)
    _, grads = _run(pm, {"input": x}, {"target": t}, {"output": g})
    _, want = _torch_value_and_grad(
        lambda z: F.binary_cross_entropy(z, torch.from_numpy(t), reduction="none"), x, g)
    assert np.all(np.isfinite(grads["input"])), grads["input"]
    np.testing.assert_allclose(grads["input"], want, rtol=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_binary_cross_entropy_gradient_at_zero(name: str) -> None:
    x, t = np.zeros(3), np.array([1.0, 0.0, 0.5])
    m = Model()
    m |= BinaryCrossEntropy()(input="input", target="target", output="output")
    pm = _compiled(name, "float64", m, {"input": [3], "target": [3]}, {"input"})
    _, grads = _run(pm, {"input": x}, {"target": t}, {"output": np.ones(3)})
    np.testing.assert_allclose(grads["input"], 0.5 - t, rtol=1e-12)


#: logits around 0, softplus's linear part (|x| > 20) and beyond; soft and hard targets
BCE_SOFT_LOGITS = np.array([0.0, -0.0, 1e-8, -1e-8, 0.7, -2.5, 15.0, -15.0, 20.5, -20.5, 25.0,
                            -25.0, 40.0, -40.0, 1e4, -1e4])
BCE_SOFT_TARGETS = np.array([0.3, 1.0, 0.0, 1.0, 0.9, 0.25, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5,
                             0.5, 0.2, 0.8])


def _bce_with_target_gradient(name: str, dtype: str, kind: str, x: np.ndarray, t: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value and gradients (input, target) of ``BinaryCrossEntropy(kind)`` on ``name``."""
    m = Model()
    m |= BinaryCrossEntropy(input_type=kind)(input="input", target="target", output="output")
    pm = _compiled(name, dtype, m, {"input": [len(x)], "target": [len(x)]}, {"input", "target"})
    out, grads = _run(pm, {"input": x, "target": t}, {}, {"output": np.ones(len(x))})
    return out["output"], grads["input"], grads["target"]


def _torch_bce(kind: str, x: np.ndarray, t: np.ndarray, dtype: torch.dtype
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    tt = torch.tensor(t, dtype=dtype, requires_grad=True)
    fn = F.binary_cross_entropy_with_logits if kind == "logits" else F.binary_cross_entropy
    out = fn(xt, tt, reduction="none")
    out.backward(torch.ones_like(out))
    assert xt.grad is not None and tt.grad is not None
    return (out.detach().double().numpy(), xt.grad.double().numpy(),
            tt.grad.double().numpy())


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_logits_soft_targets_like_pytorch(name: str, dtype: str) -> None:
    """Values accurate where softplus is linear (|x| > 20): no cancellation, no threshold;
    gradients sigmoid(x) - t (input) and -x (target), as ``nn.BCEWithLogitsLoss``."""
    # the inputs as the backend holds them, then computed in float64
    x = BCE_SOFT_LOGITS.astype(dtype).astype(np.float64)
    t = BCE_SOFT_TARGETS.astype(dtype).astype(np.float64)
    value, gx, gt = _bce_with_target_gradient(name, dtype, "logits", x, t)
    _, want_gx, want_gt = _torch_bce("logits", x, t, torch.float64)
    # relative to the value itself: log(1 + e^-20.5) = 1.3e-9 is not lost next to 20.5 (the
    # reference is the cancellation-free form; PyTorch's own loses ~1e-16 absolute at x = -25)
    want = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(value, want, rtol=16 * EPS[dtype], atol=0)
    close(gx, want_gx, dtype, 1.0, "BinaryCrossEntropy gradient w.r.t. the logits")
    close(gt, want_gt, dtype, 1e4, "BinaryCrossEntropy gradient w.r.t. the targets")


#: probabilities at, next to and away from 0 and 1, with hard and soft targets
BCE_PROBS = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 1e-13, 1.0 - 1e-9, 0.3, 0.25, 0.5, 1e-5,
                      0.99999, 0.0, 1.0])
BCE_PROB_TARGETS = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.7, 0.0, 1.0, 0.5, 0.5, 0.5,
                             0.5])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_probs_like_pytorch(name: str, dtype: str) -> None:
    """``BinaryCrossEntropy("probs")`` equals ``nn.BCELoss`` in the same dtype: values (log(1 -
    p) as log1p(-p), so p = 1e-13 is not lost), gradients w.r.t. the probabilities ((p - t) /
    max(p (1 - p), 1e-12)) and w.r.t. the targets (clamped logs)."""
    x, t = BCE_PROBS, BCE_PROB_TARGETS
    value, gx, gt = _bce_with_target_gradient(name, dtype, "probs", x, t)
    want, want_gx, want_gt = _torch_bce("probs", x, t, getattr(torch, dtype))
    # PyTorch's gradient w.r.t. t is log(1 - p) - log(p) unclamped (+-inf at p = 0 or 1);
    # Mithril's is the derivative of the value it computes, with the logs clamped at -100
    infinite = ~np.isfinite(want_gt)
    held = x.astype(dtype)  # 1 - 1e-9 is 1 in float32
    assert np.all(infinite == ((held == 0) | (held == 1)))
    want_gt[infinite] = np.sign(want_gt[infinite]) * 100.0
    for got, ref, what in ((value, want, "values"), (gx, want_gx, "gradient w.r.t. p"),
                           (gt, want_gt, "gradient w.r.t. t")):
        assert np.all(np.isfinite(got)), (what, got)
        np.testing.assert_allclose(got, ref, rtol=8 * EPS[dtype], atol=1e-300, err_msg=what)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_loss_helpers_large_logits(name: str, dtype: str) -> None:
    b = backend_of(name, dtype)
    logits, targets = b.array(LOGITS), b.array(CLASSES_OF_ROWS)
    t = torch.tensor(LOGITS, requires_grad=True)
    ce = F.cross_entropy(t, torch.from_numpy(CLASSES_OF_ROWS))
    ce.backward()
    assert t.grad is not None
    close(b.to_numpy(b.cross_entropy(logits, targets)), ce.detach().numpy(), dtype, 1e4,
          "backend.cross_entropy")
    close(b.to_numpy(b.cross_entropy_grad(logits, targets)), t.grad.numpy(), dtype, 1.0,
          "backend.cross_entropy_grad")
    soft = np.full(LOGITS.shape, 0.25)
    close(b.to_numpy(b.cross_entropy(logits, b.array(soft))),
          F.cross_entropy(torch.from_numpy(LOGITS), torch.from_numpy(soft)).numpy(), dtype, 1e4,
          "backend.cross_entropy with probabilities")
    z = torch.tensor(BINARY_LOGITS, requires_grad=True)
    bce = F.binary_cross_entropy_with_logits(z, torch.from_numpy(BINARY_TARGETS))
    bce.backward()
    assert z.grad is not None
    x, y = b.array(BINARY_LOGITS), b.array(BINARY_TARGETS)
    close(b.to_numpy(b.binary_cross_entropy_with_logits(x, y)), bce.detach().numpy(), dtype,
          1e4, "backend.binary_cross_entropy_with_logits")
    close(b.to_numpy(b.binary_cross_entropy_with_logits_grad(x, y)), z.grad.numpy(), dtype, 1.0,
          "backend.binary_cross_entropy_with_logits_grad")
    probs = np.array([0.0, 1.0, 1e-30, 0.25, 0.5])
    targets01 = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    want = F.binary_cross_entropy(torch.tensor(probs, dtype=tdtype),
                                  torch.tensor(targets01, dtype=tdtype)).double().numpy()
    close(b.to_numpy(b.binary_cross_entropy(b.array(probs), b.array(targets01))), want, dtype,
          100.0, "backend.binary_cross_entropy at p = 0 and 1")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_binary_cross_entropy_grad_at_zero_and_one(name: str, dtype: str) -> None:
    b = backend_of(name, dtype)
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    for probs, targets in ((np.array([0.0, 1.0, 1e-30, 0.25, 0.5]),
                            np.array([1.0, 0.0, 1.0, 0.0, 1.0])),
                           (BCE_PROBS, BCE_PROB_TARGETS)):
        p = torch.tensor(probs, dtype=tdtype, requires_grad=True)
        loss = F.binary_cross_entropy(p, torch.tensor(targets, dtype=tdtype))
        loss.backward()
        assert p.grad is not None
        grad = b.to_numpy(b.binary_cross_entropy_grad(b.array(probs), b.array(targets)))
        assert np.all(np.isfinite(grad)), grad
        # PyTorch's (p - t) / max(p (1 - p), 1e-12) / n: -+1e12 / n at p = 0 and 1
        np.testing.assert_allclose(grad, p.grad.double().numpy(), rtol=8 * EPS[dtype])
        value = b.to_numpy(b.binary_cross_entropy(b.array(probs), b.array(targets)))
        np.testing.assert_allclose(value, loss.detach().double().numpy(), rtol=8 * EPS[dtype])


# ==============================================================================================
# float16 / bfloat16: the guide's ConvNet
# ==============================================================================================
#: how far half precision may be from float32, relative to the largest float32 value: outputs
#: and the gradients of the last layers, and (loose) the gradients that flow back through the
#: batch statistics of BatchNorm, which lose precision in float16 / bfloat16 on every framework
#: (PyTorch's own half-precision ConvNet is as far: about 0.1 and 0.2 of the largest value).
#: Conv biases before BatchNorm have a zero gradient in exact arithmetic: only finite.
HALF_TOLERANCE = {"float16": 2e-2, "bfloat16": 5e-2}
THROUGH_BATCHNORM = {"float16": 0.15, "bfloat16": 0.3}
LAST_LAYERS = ("linear.weight", "linear.bias", "batchnorm2d_1.weight")
EARLY_LAYERS = ("conv2d.weight", "batchnorm2d.weight", "batchnorm2d.bias", "conv2d_1.weight",
                "batchnorm2d_1.bias")
BATCH = 2


@pytest.fixture(scope="module")
def convnet_float32() -> dict[str, Any]:
    """Parameters, an input and the float32 results (training and inference) on NumPy."""
    rng = np.random.default_rng(0)
    b = ml.NumpyBackend(dtype=ml.float32)
    pm = ml.compile(create_conv_net(), b, shapes={"input": [BATCH, 3, 32, 32]})
    params = {k: np.asarray(v, np.float64) for k, v in pm.randomize_params(seed=0).items()}
    x = rng.standard_normal((BATCH, 3, 32, 32))
    g = rng.standard_normal((BATCH, 10))
    out, grads = pm.evaluate({k: b.array(v) for k, v in params.items()}, {"input": b.array(x)},
                             output_gradients={"output": b.array(g)},
                             state=pm.initial_state_dict)[:2]
    pi = ml.compile(create_conv_net(), b, shapes={"input": [BATCH, 3, 32, 32]}, inference=True)
    inf = pi.evaluate({k: b.array(v) for k, v in params.items()}, {"input": b.array(x)})
    return {"params": params, "x": x, "g": g, "out": out["output"], "grads": grads,
            "inference": inf["output"]}


def _half_cases() -> list[Any]:
    cases = []
    for name in BACKENDS:
        for dtype in ("float16", "bfloat16"):
            if name == "numpy" and dtype == "bfloat16":
                continue  # no bfloat16 in NumPy: test_numpy_has_no_bfloat16
            cases.append(pytest.param(name, dtype, id=f"{name}-{dtype}"))
    return cases


def _near(got: Any, want: np.ndarray, dtype: str, what: str, tolerance: float) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got)), f"{what}: not finite in {dtype}"
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale,
                               err_msg=f"{what} in {dtype}")


@pytest.mark.parametrize("name,dtype", _half_cases())
def test_convnet_in_half_precision(name: str, dtype: str, convnet_float32: dict[str, Any]
                                   ) -> None:
    ref = convnet_float32
    b = backend_of(name, dtype)
    shapes = {"input": [BATCH, 3, 32, 32]}
    params = {k: b.array(v) for k, v in ref["params"].items()}
    pm = ml.compile(create_conv_net(), b, shapes=shapes)
    out, grads = pm.evaluate(params, {"input": b.array(ref["x"])},
                             output_gradients={"output": b.array(ref["g"])},
                             state=pm.initial_state_dict)[:2]
    native = b.native_dtype(getattr(ml, dtype))
    assert out["output"].dtype == native and grads["linear.weight"].dtype == native
    tol = HALF_TOLERANCE[dtype]
    _near(b.to_numpy(out["output"]), ref["out"], dtype, "training output", tol)
    assert set(grads) == set(ref["grads"])
    for k, v in grads.items():
        assert np.all(np.isfinite(b.to_numpy(v))), f"gradient of {k} is not finite in {dtype}"
    for k in LAST_LAYERS:
        _near(b.to_numpy(grads[k]), ref["grads"][k], dtype, f"gradient of {k}", tol)
    for k in EARLY_LAYERS:
        _near(b.to_numpy(grads[k]), ref["grads"][k], dtype, f"gradient of {k}",
              THROUGH_BATCHNORM[dtype])
    pi = ml.compile(create_conv_net(), b, shapes=shapes, inference=True)
    _near(b.to_numpy(pi.evaluate(params, {"input": b.array(ref["x"])})["output"]),
          ref["inference"], dtype, "inference output", tol)


HALF_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def _half_loss_cases() -> dict[str, tuple[Callable[[], Any], np.ndarray, np.ndarray | None,
                                         Callable[[torch.Tensor, Any], torch.Tensor]]]:
    probs = 1 / (1 + np.exp(-np.clip(BINARY_LOGITS, -700, 700)))
    return {
        "softmax": (lambda: Softmax(dim=-1), LOGITS, None, lambda z, _: torch.softmax(z, -1)),
        "log_softmax": (lambda: LogSoftmax(dim=-1), LOGITS, None,
                        lambda z, _: torch.log_softmax(z, -1)),
        "sigmoid": (Sigmoid, BINARY_LOGITS, None, lambda z, _: torch.sigmoid(z)),
        "cross_entropy": (CrossEntropy, LOGITS, CLASSES_OF_ROWS,
                          lambda z, c: F.cross_entropy(z, torch.from_numpy(c), reduction="none")),
        "bce_logits": (BinaryCrossEntropy, BINARY_LOGITS, BINARY_TARGETS,
                       lambda z, c: F.binary_cross_entropy_with_logits(
                           z, torch.from_numpy(c), reduction="none")),
        "bce_probs": (lambda: BinaryCrossEntropy("probs"), probs, BINARY_TARGETS,
                      lambda z, c: F.binary_cross_entropy(z, torch.from_numpy(c),
                                                          reduction="none")),
    }


@pytest.mark.parametrize("name,dtype", _half_cases())
@pytest.mark.parametrize("case", list(_half_loss_cases()))
def test_large_logits_in_half_precision(name: str, dtype: str, case: str) -> None:
    """Softmax, log-softmax, sigmoid and the losses stay finite in float16 / bfloat16 for
    logits up to |x| = 1e4 (values and gradients), within a couple of ulps of the dtype of
    PyTorch's float64 result on the same (rounded) inputs. BCE on probabilities: PyTorch's own
    float16 gradient is inf / NaN at p = 0 or 1 (1e-12 is 0 in float16); Mithril's is finite."""
    make, x, target, ref_fn = _half_loss_cases()[case]
    b = backend_of(name, dtype)
    m = Model()
    terminals = {"input": "input", "output": "output"}
    if target is not None:
        terminals["target"] = "target"
    m |= make()(**terminals)
    shapes = {"input": list(x.shape)}
    data = {}
    if target is not None:
        shapes["target"] = list(target.shape)
        data["target"] = b.array(target)
    pm = ml.compile(m, b, shapes=shapes, trainable_keys={"input"}, jit=False)
    g = np.ones(pm.shapes["output"])
    out, grads = pm.evaluate({"input": b.array(x)}, data,
                             output_gradients={"output": b.array(g)})[:2]
    value = np.asarray(b.to_numpy(out["output"]), np.float64)
    grad = np.asarray(b.to_numpy(grads["input"]), np.float64)
    assert out["output"].dtype == b.native_dtype(getattr(ml, dtype))
    assert np.all(np.isfinite(value)), value
    assert np.all(np.isfinite(grad)), grad
    held = torch.tensor(x).to(getattr(torch, dtype)).double().requires_grad_(True)
    want = ref_fn(held, target)
    want.backward(torch.from_numpy(g))
    assert held.grad is not None
    tol = 2 * HALF_EPS[dtype]
    want_value = want.detach().numpy()
    np.testing.assert_array_less(np.abs(value - want_value),
                                 tol * np.maximum(np.abs(want_value), 1.0) + 1e-30)
    if case == "bce_probs":
        return  # gradients of 1e12 at p = 0 or 1: beyond float16, checked finite above
    want_grad = held.grad.numpy()
    np.testing.assert_array_less(np.abs(grad - want_grad),
                                 tol * np.maximum(np.abs(want_grad), 1.0) + 1e-30)


@pytest.mark.parametrize("name,dtype", _half_cases())
def test_backend_loss_helpers_in_half_precision(name: str, dtype: str) -> None:
    """``backend.cross_entropy`` / ``binary_cross_entropy_with_logits`` and their gradients:
    finite in float16 / bfloat16 for logits up to 1e4, close to PyTorch (float64, on the same
    rounded inputs)."""
    b = backend_of(name, dtype)
    logits = torch.tensor(LOGITS).to(getattr(torch, dtype)).double().requires_grad_(True)
    ce = F.cross_entropy(logits, torch.from_numpy(CLASSES_OF_ROWS))
    ce.backward()
    z = torch.tensor(BINARY_LOGITS).to(getattr(torch, dtype)).double().requires_grad_(True)
    bce = F.binary_cross_entropy_with_logits(z, torch.from_numpy(BINARY_TARGETS))
    bce.backward()
    assert logits.grad is not None and z.grad is not None
    x, c = b.array(LOGITS), b.array(CLASSES_OF_ROWS)
    y, t = b.array(BINARY_LOGITS), b.array(BINARY_TARGETS)
    for got, want, what in (
            (b.cross_entropy(x, c), ce.detach().numpy(), "cross_entropy"),
            (b.cross_entropy_grad(x, c), logits.grad.numpy(), "cross_entropy_grad"),
            (b.binary_cross_entropy_with_logits(y, t), bce.detach().numpy(),
             "binary_cross_entropy_with_logits"),
            (b.binary_cross_entropy_with_logits_grad(y, t), z.grad.numpy(),
             "binary_cross_entropy_with_logits_grad")):
        value = np.asarray(b.to_numpy(got), np.float64)
        assert np.all(np.isfinite(value)), (what, value)
        np.testing.assert_array_less(np.abs(value - want),
                                     2 * HALF_EPS[dtype] * np.maximum(np.abs(want), 1.0),
                                     err_msg=what)


def test_numpy_has_no_bfloat16() -> None:
    with pytest.raises(TypeError, match=r"NumPy has no bfloat16 dtype, so the NumPy backend "
                                        r"cannot use ml.bfloat16; use ml.float16, ml.float32"):
        ml.NumpyBackend(dtype=ml.bfloat16)
