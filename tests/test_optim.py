"""mithril.optim against torch.optim: optimizers, schedules and clipping on all four frameworks.

Reference: ``torch.optim`` / ``torch.optim.lr_scheduler`` / ``torch.nn.utils.clip_grad_norm_``
in float64. Each optimizer test trains a small least-squares problem for 20 steps; the
gradient is computed in closed form (NumPy) from the reference's current parameters and fed to
both sides, and the parameters must agree after every step.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import mlx.core as mx
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tsched

from mithril.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealing,
    LinearWarmup,
    RMSprop,
    StepLR,
    clip_by_global_norm,
)

STEPS = 20
FRAMEWORKS = ["numpy", "torch", "jax", "jax_jit", "mlx", "mlx_compile"]
ARRAY_FRAMEWORKS = ["numpy", "torch", "jax", "mlx"]


@pytest.fixture(autouse=True)
def _jax_x64():
    """JAX float64 for these tests only (other test modules keep JAX's default)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# ---- conversions ------------------------------------------------------------------------------
def to_framework(framework: str, x: np.ndarray) -> Any:
    """A copy of ``x`` as an array of ``framework`` with the same dtype."""
    x = np.array(x)
    if framework == "numpy":
        return x
    if framework == "torch":
        return torch.from_numpy(x)
    if framework.startswith("jax"):
        return jnp.asarray(x)
    return mx.array(x, dtype=mx.float64 if x.dtype == np.float64 else mx.float32)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any framework."""
    if isinstance(x, torch.Tensor):
        return x.detach().numpy().copy()
    return np.array(x)


def tree_to_numpy(tree: Any) -> Any:
    """Nested dicts of arrays -> the same dicts of NumPy copies."""
    if isinstance(tree, dict):
        return {k: tree_to_numpy(v) for k, v in tree.items()}
    return to_numpy(tree)


# ---- the problem --------------------------------------------------------------------------------
_rng = np.random.default_rng(0)
X = _rng.normal(size=(16, 4))
Y = _rng.normal(size=(16, 3)) + X @ _rng.normal(size=(4, 3))
INITIAL = {"weight": _rng.normal(size=(4, 3)), "bias": _rng.normal(size=(3,)),
           "offset": np.array(0.5)}


def least_squares_gradient(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gradient of ``0.5 * mean_i |x_i W + b + c - y_i|^2`` (``c`` a 0-d offset) in closed form."""
    residual = X @ params["weight"] + params["bias"] + params["offset"] - Y
    return {"weight": X.T @ residual / len(X), "bias": residual.mean(axis=0),
            "offset": residual.sum(axis=1).mean()}


# ---- optimizer cases ---------------------------------------------------------------------------
@dataclass
class Case:
    """Our optimizer and the equivalent torch.optim set-up."""

    id: str
    ours: Callable[[], Any]
    reference: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    max_norm: float | None = None


T = torch.optim
CASES = [
    Case("sgd-default", lambda: SGD(), lambda p: T.SGD(p)),
    Case("sgd", lambda: SGD(lr=0.1), lambda p: T.SGD(p, lr=0.1)),
    Case("sgd-momentum", lambda: SGD(0.05, momentum=0.9), lambda p: T.SGD(p, 0.05, 0.9)),
    Case("sgd-dampening", lambda: SGD(0.05, momentum=0.9, dampening=0.3),
         lambda p: T.SGD(p, 0.05, momentum=0.9, dampening=0.3)),
    Case("sgd-nesterov-wd", lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.05),
         lambda p: T.SGD(p, 0.05, momentum=0.9, nesterov=True, weight_decay=0.05)),
    Case("sgd-wd", lambda: SGD(0.1, weight_decay=0.1), lambda p: T.SGD(p, 0.1, weight_decay=0.1)),
    Case("adam-default", lambda: Adam(), lambda p: T.Adam(p)),
    Case("adam-betas", lambda: Adam(learning_rate=0.05, beta1=0.8, beta2=0.99, eps=1e-3),
         lambda p: T.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    Case("adam-amsgrad-wd", lambda: Adam(0.05, weight_decay=0.1, amsgrad=True),
         lambda p: T.Adam(p, lr=0.05, weight_decay=0.1, amsgrad=True)),
    Case("adam-torch-spelling", lambda: Adam(lr=0.05, betas=(0.8, 0.99), eps=1e-3),
         lambda p: T.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    Case("adamw-default", lambda: AdamW(), lambda p: T.AdamW(p)),
    Case("adamw", lambda: AdamW(lr=0.05, weight_decay=0.1),
         lambda p: T.AdamW(p, lr=0.05, weight_decay=0.1)),
    Case("adamw-amsgrad", lambda: AdamW(0.05, beta2=0.9, weight_decay=0.05, amsgrad=True),
         lambda p: T.AdamW(p, lr=0.05, betas=(0.9, 0.9), weight_decay=0.05, amsgrad=True)),
    Case("rmsprop-default", lambda: RMSprop(), lambda p: T.RMSprop(p)),
    Case("rmsprop-momentum", lambda: RMSprop(0.01, momentum=0.9),
         lambda p: T.RMSprop(p, lr=0.01, momentum=0.9)),
    Case("rmsprop-centered", lambda: RMSprop(0.01, alpha=0.9, centered=True),
         lambda p: T.RMSprop(p, lr=0.01, alpha=0.9, centered=True)),
    Case("rmsprop-all", lambda: RMSprop(0.01, 0.95, 1e-6, momentum=0.5, centered=True,
                                        weight_decay=0.1),
         lambda p: T.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-6, momentum=0.5, centered=True,
                             weight_decay=0.1)),
    Case("adagrad-default", lambda: Adagrad(), lambda p: T.Adagrad(p)),
    Case("adagrad-decay", lambda: Adagrad(0.1, lr_decay=0.05),
         lambda p: T.Adagrad(p, lr=0.1, lr_decay=0.05)),
    Case("adagrad-wd-init", lambda: Adagrad(0.1, eps=1e-6, weight_decay=0.1,
                                            initial_accumulator_value=0.5),
         lambda p: T.Adagrad(p, lr=0.1, eps=1e-6, weight_decay=0.1,
                             initial_accumulator_value=0.5)),
    # gradient clipping (clip_grad_norm_ before each torch step)
    Case("sgd-momentum-clip", lambda: SGD(0.1, momentum=0.9, max_grad_norm=0.5),
         lambda p: T.SGD(p, 0.1, momentum=0.9), max_norm=0.5),
    Case("adam-clip", lambda: Adam(0.05, max_grad_norm=0.3), lambda p: T.Adam(p, lr=0.05),
         max_norm=0.3),
    # schedules (scheduler.step() after each torch step)
    Case("adam-steplr", lambda: Adam(StepLR(0.05, step_size=5, gamma=0.5)),
         lambda p: T.Adam(p, lr=0.05), lambda o: tsched.StepLR(o, step_size=5, gamma=0.5)),
    Case("sgd-cosine", lambda: SGD(CosineAnnealing(0.1, 20, min_lr=0.01), momentum=0.9),
         lambda p: T.SGD(p, 0.1, momentum=0.9),
         lambda o: tsched.CosineAnnealingLR(o, T_max=20, eta_min=0.01)),
    Case("rmsprop-warmup", lambda: RMSprop(lr=LinearWarmup(0.01, 5)),
         lambda p: T.RMSprop(p, lr=0.01),
         lambda o: tsched.LinearLR(o, start_factor=1 / 5, total_iters=4)),
    Case("adamw-warmup-cosine-clip",
         lambda: AdamW(LinearWarmup(CosineAnnealing(0.05, 20), 5), max_grad_norm=0.4),
         lambda p: T.AdamW(p, lr=0.05),
         lambda o: tsched.ChainedScheduler([tsched.LinearLR(o, 1 / 5, total_iters=4),
                                            tsched.CosineAnnealingLR(o, T_max=20)]),
         max_norm=0.4),
    Case("adagrad-steplr", lambda: Adagrad(StepLR(0.1, 4, 0.5), lr_decay=0.01),
         lambda p: T.Adagrad(p, lr=0.1, lr_decay=0.01),
         lambda o: tsched.StepLR(o, step_size=4, gamma=0.5)),
]


class TorchReference:
    """torch.optim (plus scheduler and clipping) on float64 tensors."""

    def __init__(self, case: Case, initial: dict[str, np.ndarray]) -> None:
        self.params = {k: torch.tensor(v, requires_grad=True) for k, v in initial.items()}
        self.optimizer = case.reference(list(self.params.values()))
        self.scheduler = case.scheduler(self.optimizer) if case.scheduler else None
        self.max_norm = case.max_norm
        self.norms: list[float] = []

    def current(self) -> dict[str, np.ndarray]:
        return {k: to_numpy(v) for k, v in self.params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for key, p in self.params.items():
            p.grad = torch.tensor(grads[key])
        if self.max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.max_norm)
            self.norms.append(float(norm))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def state_of(self, key: str) -> dict[str, np.ndarray]:
        return {k: to_numpy(v) for k, v in self.optimizer.state[self.params[key]].items()}


def make_update(framework: str, optimizer: Any) -> tuple[Callable[..., Any], list[int]]:
    """``optimizer.update``, compiled for jax_jit / mlx_compile; the list counts JAX traces."""
    traces: list[int] = []
    if framework == "mlx_compile":
        return mx.compile(optimizer.update), traces
    if framework != "jax_jit":
        return optimizer.update, traces

    def traced(params, grads, state):
        traces.append(1)
        return optimizer.update(params, grads, state)

    return jax.jit(traced), traces


def run_against_torch(case: Case, framework: str, dtype: type = np.float64, rtol: float = 1e-5,
                      atol: float = 1e-12) -> tuple[TorchReference, dict[str, Any]]:
    """Train both sides for STEPS steps, comparing the parameters after every step."""
    initial = {k: v.astype(dtype) for k, v in INITIAL.items()}
    reference = TorchReference(case, initial)
    optimizer = case.ours()
    params = {k: to_framework(framework, v) for k, v in initial.items()}
    state = optimizer.init(params)
    update, traces = make_update(framework, optimizer)
    if framework.startswith("mlx"):
        atol = max(atol, 1e-7)  # MLX's float64 cos (CosineAnnealing) has float32 accuracy
    for step in range(STEPS):
        grads = {k: v.astype(dtype) for k, v in least_squares_gradient(reference.current()).items()}
        reference.step(grads)
        ours = {k: to_framework(framework, v) for k, v in grads.items()}
        ours["not_a_parameter"] = to_framework(framework, np.full(3, 100.0, dtype))  # ignored
        params, state = update(params, ours, state)
        assert all(type(params[k]) is type(ours[k]) for k in params)  # no NumPy scalars
        for key, expected in reference.current().items():
            np.testing.assert_allclose(to_numpy(params[key]), expected, rtol=rtol, atol=atol,
                                       err_msg=f"{key} after step {step + 1}")
    if framework == "jax_jit":
        assert len(traces) == 1, "the update was traced more than once"
    return reference, {"params": params, "state": state}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_optimizer_matches_torch_optim(case, framework):
    reference, result = run_against_torch(case, framework)
    state = result["state"]
    assert int(to_numpy(state["step"])) == STEPS
    for key in INITIAL:  # the buffers match torch's state of the same name
        torch_state = reference.state_of(key)
        slots = [name for name in state if name != "step"]
        assert all(name in torch_state for name in slots)
        for name in slots:
            np.testing.assert_allclose(to_numpy(state[name][key]), torch_state[name],
                                       rtol=1e-5, atol=1e-12, err_msg=f"{name}[{key}]")
    if case.max_norm is not None:
        assert max(reference.norms) > case.max_norm, "clipping was never active"


F32_CASES = [c for c in CASES if c.id in {"sgd-nesterov-wd", "adam-amsgrad-wd", "rmsprop-all",
                                          "adagrad-steplr", "adamw-warmup-cosine-clip"}]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", F32_CASES, ids=[c.id for c in F32_CASES])
def test_float32_keeps_dtype_and_matches_torch(case, framework):
    _, result = run_against_torch(case, framework, dtype=np.float32, rtol=1e-4, atol=1e-5)
    leaves = [*result["params"].values()]
    leaves += [v for name, slot in result["state"].items() if name != "step"
               for v in slot.values()]
    assert all(to_numpy(x).dtype == np.float32 for x in leaves)
    assert to_numpy(result["state"]["step"]).dtype == np.int32


# ---- purity ------------------------------------------------------------------------------------
PURITY_OPTIMIZERS = [
    lambda: SGD(0.1, momentum=0.9, dampening=0.1, weight_decay=0.1, max_grad_norm=0.1),
    lambda: Adam(0.1, amsgrad=True, weight_decay=0.1, max_grad_norm=0.1),
    lambda: AdamW(CosineAnnealing(0.1, 10)),
    lambda: RMSprop(0.1, momentum=0.9, centered=True, weight_decay=0.1),
    lambda: Adagrad(0.1, lr_decay=0.1, initial_accumulator_value=0.1),
]


def _all_arrays(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _all_arrays(v)]
    return [tree]


@pytest.mark.parametrize("framework", ARRAY_FRAMEWORKS)
@pytest.mark.parametrize("make", PURITY_OPTIMIZERS, ids=["sgd", "adam", "adamw", "rms", "ada"])
def test_update_does_not_modify_its_inputs(make, framework):
    optimizer = make()
    params = {k: to_framework(framework, v) for k, v in INITIAL.items()}
    grads = {k: to_framework(framework, v)
             for k, v in least_squares_gradient(INITIAL).items()}
    state = optimizer.init(params)
    params, state = optimizer.update(params, grads, state)  # non-trivial buffers
    inputs = {"params": params, "grads": grads, "state": state}
    before = tree_to_numpy(inputs)
    versions = [x._version for x in _all_arrays(inputs) if isinstance(x, torch.Tensor)]
    new_params, new_state = optimizer.update(params, grads, state)
    after = tree_to_numpy(inputs)
    for old, new in zip(_all_arrays(before), _all_arrays(after), strict=True):
        np.testing.assert_array_equal(old, new)
    assert versions == [x._version for x in _all_arrays(inputs) if isinstance(x, torch.Tensor)]
    assert new_params is not params and new_state is not state
    assert all(new_state[k] is not state[k] for k in state)
    old_ids = {id(x) for x in _all_arrays(inputs)}
    assert not old_ids & {id(x) for x in _all_arrays({**new_params, **new_state})}


@pytest.mark.parametrize("host_scalars", [True, False], ids=["host-scalars", "in-graph"])
@pytest.mark.parametrize("make", [lambda: Adam(0.1, weight_decay=0.1),
                                  lambda: AdamW(0.1, amsgrad=True)], ids=["adam", "adamw"])
def test_mlx_adam_step_number_from_any_state(make, host_scalars, monkeypatch):
    """MLX's compiled Adam takes its bias corrections from the step number, kept in Python for
    the state the last update returned (mithril/optim/compiled.py) and read from any other
    state: branching from an old state, a rebuilt state and the plain in-graph form (large
    parameters) all give the step's own update (NumPy float64 reference)."""
    from mithril.optim import compiled

    if not host_scalars:
        monkeypatch.setattr(compiled, "MLX_HOST_SCALARS_MAX", 0)
    grads = least_squares_gradient(INITIAL)
    reference = [INITIAL]
    optimizer = make()
    state = optimizer.init(INITIAL)
    for _ in range(4):
        params, state = optimizer.update(reference[-1], grads, state)
        reference.append(params)

    optimizer = make()
    mlx_grads = {k: to_framework("mlx", v.astype(np.float32)) for k, v in grads.items()}

    def check(params: Any, state: Any, step: int) -> None:
        assert int(state["step"].item()) == step
        for key, expected in reference[step].items():
            # float32 (the float32 tests' tolerance): a step off by one moves them by ~0.1
            np.testing.assert_allclose(to_numpy(params[key]), expected, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{key} after step {step}")

    p0 = {k: to_framework("mlx", v.astype(np.float32)) for k, v in INITIAL.items()}
    s0 = optimizer.init(p0)
    p1, s1 = optimizer.update(p0, mlx_grads, s0)
    check(p1, s1, 1)
    again, s1b = optimizer.update(p0, mlx_grads, s0)  # the old state once more
    check(again, s1b, 1)
    p2, s2 = optimizer.update(p1, mlx_grads, s1)  # not the last state returned
    check(p2, s2, 2)
    p3, s3 = optimizer.update(p2, mlx_grads, s2)  # the last state returned
    check(p3, s3, 3)
    rebuilt = {name: mx.array(3, dtype=mx.int32) if name == "step" else dict(value)
               for name, value in s3.items()}
    p4, s4 = optimizer.update(p3, mlx_grads, rebuilt)
    check(p4, s4, 4)
    traced = mx.compile(optimizer.update)  # the caller's own mx.compile: no value to read
    p4c, s4c = traced(p3, mlx_grads, rebuilt)
    check(p4c, s4c, 4)


def test_torch_parameters_that_require_grad_stay_leaves():
    optimizer = Adam(0.1)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in INITIAL.items()}
    grads = {k: torch.tensor(v) for k, v in least_squares_gradient(INITIAL).items()}
    new_params, _ = optimizer.update(params, grads, optimizer.init(params))
    for key, p in new_params.items():
        assert p.requires_grad and p.is_leaf and p.grad_fn is None
        assert p.data_ptr() != params[key].data_ptr()
        assert params[key].grad is None


def test_import_does_not_need_torch_jax_or_mlx():
    code = ("import sys, numpy as np\n"
            "import mithril.optim as o\n"
            "opt = o.Adam(o.LinearWarmup(o.CosineAnnealing(0.1, 10), 3), max_grad_norm=1.0)\n"
            "p = {'w': np.ones(3)}\n"
            "p, s = opt.update(p, {'w': np.ones(3)}, opt.init(p))\n"
            "print(sorted(m for m in ('torch', 'jax', 'mlx') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ---- schedules ---------------------------------------------------------------------------------
def torch_learning_rates(base: float, make: Callable[[Any], Any], n: int) -> list[float]:
    """The learning rate torch uses for updates 0..n-1 (scheduler stepped once per update)."""
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=base)
    scheduler = make(optimizer)
    rates = []
    for _ in range(n):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


SCHEDULES = [
    ("steplr", StepLR(0.1, step_size=3, gamma=0.5), 0.1,
     lambda o: tsched.StepLR(o, step_size=3, gamma=0.5), 30),
    ("steplr-default-gamma", StepLR(2.0, step_size=4), 2.0,
     lambda o: tsched.StepLR(o, step_size=4), 30),
    ("cosine", CosineAnnealing(0.1, total_steps=25, min_lr=0.001), 0.1,
     lambda o: tsched.CosineAnnealingLR(o, T_max=25, eta_min=0.001), 26),
    ("warmup", LinearWarmup(0.1, warmup_steps=6), 0.1,
     lambda o: tsched.LinearLR(o, start_factor=1 / 6, total_iters=5), 30),
    ("warmup-steplr", LinearWarmup(StepLR(0.1, 4, 0.5), warmup_steps=6), 0.1,
     lambda o: tsched.ChainedScheduler([tsched.LinearLR(o, 1 / 6, total_iters=5),
                                        tsched.StepLR(o, step_size=4, gamma=0.5)]), 30),
    ("warmup-cosine", LinearWarmup(CosineAnnealing(0.1, 20), warmup_steps=5), 0.1,
     lambda o: tsched.ChainedScheduler([tsched.LinearLR(o, 1 / 5, total_iters=4),
                                        tsched.CosineAnnealingLR(o, T_max=20)]), 21),
]


def _int_scalar(framework: str, k: int) -> Any:
    """``k`` as a 0-d int32 array of ``framework``."""
    if framework == "torch":
        return torch.tensor(k, dtype=torch.int32)
    if framework == "mlx":
        return mx.array(k, dtype=mx.int32)
    value = np.array(k, dtype=np.int32)
    return jnp.asarray(value) if framework == "jax" else value


def _schedule_values(schedule: Callable[[Any], Any], step_kind: str, n: int) -> list[float]:
    """``schedule(k)`` for k in 0..n-1, with steps given as ``step_kind``."""
    if step_kind == "int":
        values = [schedule(k) for k in range(n)]
        assert all(isinstance(v, float) for v in values)
        return values
    if step_kind == "jax_jit":
        jitted = jax.jit(schedule)
        return [float(jitted(jnp.asarray(float(k)))) for k in range(n)]
    framework, _, kind = step_kind.partition("-")
    if kind == "int32":
        return [float(to_numpy(schedule(_int_scalar(framework, k)))) for k in range(n)]
    return [float(to_numpy(schedule(to_framework(framework, np.array(float(k))))))
            for k in range(n)]


STEP_KINDS = ["int", "jax_jit", *[f"{f}-float64" for f in ARRAY_FRAMEWORKS],
              *[f"{f}-int32" for f in ARRAY_FRAMEWORKS]]


@pytest.mark.parametrize("step_kind", STEP_KINDS)
@pytest.mark.parametrize(("name", "schedule", "base", "make", "n"), SCHEDULES,
                         ids=[s[0] for s in SCHEDULES])
def test_schedule_matches_torch_lr_scheduler(name, schedule, base, make, n, step_kind):
    expected = torch_learning_rates(base, make, n)
    got = _schedule_values(schedule, step_kind, n)
    if step_kind.endswith("int32") and not step_kind.startswith("numpy"):
        rtol, atol = 1e-6, 1e-7  # integer steps compute in the default float dtype (float32)
    elif step_kind == "mlx-float64":
        rtol, atol = 2e-6, 1e-12  # MLX's float64 cos has float32 accuracy on CPU
    else:
        rtol, atol = 1e-9, 1e-15
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def test_cosine_stays_at_min_lr_after_total_steps():
    schedule = CosineAnnealing(0.5, total_steps=10, min_lr=0.05)
    assert [schedule(k) for k in (10, 11, 25, 1000)] == [pytest.approx(0.05)] * 4
    assert float(jax.jit(schedule)(jnp.asarray(40.0))) == pytest.approx(0.05)
    assert schedule(5) == pytest.approx(0.05 + 0.45 * (1 + math.cos(math.pi / 2)) / 2)


def test_warmup_zero_steps_is_the_inner_schedule():
    inner = StepLR(0.1, 2)
    schedule = LinearWarmup(inner, warmup_steps=0)
    assert [schedule(k) for k in range(6)] == [inner(k) for k in range(6)]


@pytest.mark.parametrize(("cls", "kwargs"), [
    (StepLR, {"base": 0.1, "step_size": 0}), (CosineAnnealing, {"base": 0.1, "total_steps": 0}),
    (LinearWarmup, {"base_or_schedule": 0.1, "warmup_steps": -1}),
    (StepLR, {"base": 0.1, "step_size": 1.5}),
])
def test_schedule_arguments_are_checked(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


# ---- clipping ----------------------------------------------------------------------------------
def _gradients(scale: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"a": scale * rng.normal(size=(3, 4)), "b": scale * rng.normal(size=(5,)),
            "c": scale * rng.normal(size=())}


def _torch_clipped(grads: dict[str, np.ndarray], max_norm: float) -> dict[str, np.ndarray]:
    tensors = {k: torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
               for k, v in grads.items()}
    for key, t in tensors.items():
        t.grad = torch.tensor(grads[key])
    torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm)
    return {k: to_numpy(t.grad) for k, t in tensors.items()}


@pytest.mark.parametrize("framework", [*ARRAY_FRAMEWORKS, "jax_jit"])
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_by_global_norm_matches_torch(max_norm, framework):
    grads = _gradients(1.0)  # global norm about 4
    expected = _torch_clipped(grads, max_norm)
    ours_in = {k: to_framework(framework, v) for k, v in grads.items()}
    clip = clip_by_global_norm
    if framework == "jax_jit":
        clip = jax.jit(clip_by_global_norm, static_argnums=1)
    got = clip(ours_in, max_norm)
    assert got is not ours_in and got.keys() == grads.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(to_numpy(got[key]), value, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(to_numpy(ours_in[key]), grads[key])  # inputs unchanged
    if max_norm == 100.0:  # under the limit: values unchanged, exactly
        for key, value in grads.items():
            np.testing.assert_array_equal(to_numpy(got[key]), value)


@pytest.mark.parametrize("framework", ARRAY_FRAMEWORKS)
def test_clip_zero_and_nonfinite_gradients_like_torch(framework):
    for grads in (_gradients(0.0), {**_gradients(1.0), "b": np.array([np.nan, 1.0])}):
        expected = _torch_clipped(grads, 1.0)
        got = clip_by_global_norm({k: to_framework(framework, v) for k, v in grads.items()}, 1.0)
        for key, value in expected.items():
            np.testing.assert_array_equal(to_numpy(got[key]), value)


def test_clip_empty_gradients():
    assert clip_by_global_norm({}, 1.0) == {}


# ---- arguments and errors ----------------------------------------------------------------------
INVALID = [
    (SGD, {"lr": -0.1}, T.SGD, {"lr": -0.1}),
    (SGD, {"momentum": -0.5}, T.SGD, {"momentum": -0.5}),
    (SGD, {"weight_decay": -1.0}, T.SGD, {"weight_decay": -1.0}),
    (SGD, {"nesterov": True}, T.SGD, {"nesterov": True}),
    (SGD, {"momentum": 0.9, "nesterov": True, "dampening": 0.1}, T.SGD,
     {"momentum": 0.9, "nesterov": True, "dampening": 0.1}),
    (Adam, {"beta1": 1.0}, T.Adam, {"betas": (1.0, 0.999)}),
    (Adam, {"beta2": -0.1}, T.Adam, {"betas": (0.9, -0.1)}),
    (Adam, {"eps": -1e-8}, T.Adam, {"eps": -1e-8}),
    (AdamW, {"weight_decay": -0.01}, T.AdamW, {"weight_decay": -0.01}),
    (RMSprop, {"alpha": -0.5}, T.RMSprop, {"alpha": -0.5}),
    (RMSprop, {"momentum": -0.5}, T.RMSprop, {"momentum": -0.5}),
    (Adagrad, {"lr_decay": -0.1}, T.Adagrad, {"lr_decay": -0.1}),
    (Adagrad, {"initial_accumulator_value": -1.0}, T.Adagrad,
     {"initial_accumulator_value": -1.0}),
]


@pytest.mark.parametrize(("ours", "kwargs", "theirs", "torch_kwargs"), INVALID)
def test_invalid_hyperparameters_rejected_like_torch(ours, kwargs, theirs, torch_kwargs):
    with pytest.raises(ValueError):
        theirs([torch.zeros(1, requires_grad=True)], **torch_kwargs)
    with pytest.raises(ValueError):
        ours(**kwargs)


def test_argument_errors():
    with pytest.raises(TypeError, match="not both"):
        Adam(learning_rate=0.1, lr=0.2)
    with pytest.raises(TypeError, match="not both"):
        AdamW(beta1=0.8, betas=(0.8, 0.9))
    with pytest.raises(TypeError, match="betas must be a pair"):
        Adam(betas=0.9)
    with pytest.raises(ValueError, match="beta2"):
        Adam(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="max_grad_norm"):
        SGD(0.1, max_grad_norm=0.0)
    params = {"w": np.ones(2), "b": np.ones(1)}
    adam = Adam()
    with pytest.raises(KeyError, match="'b'"):
        adam.update(params, {"w": np.ones(2)}, adam.init(params))
    with pytest.raises(ValueError, match="exp_avg"):
        adam.update(params, params, SGD(momentum=0.9).init(params))
    with pytest.raises(ValueError, match="parameters"):
        adam.update(params, params, adam.init({"w": np.ones(2)}))


def test_empty_params():
    optimizer = Adam(max_grad_norm=1.0)
    params, state = optimizer.update({}, {}, optimizer.init({}))
    assert params == {} and int(state["step"]) == 1
