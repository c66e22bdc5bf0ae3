"""The guide's training loop (issue 16): two ``evaluate`` calls per step update the state once
and give PyTorch's running statistics; the gradient call reuses the forward pass exactly when
that is safe (same arrays, not edited in place, same state and rng)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from tests.backend_names import BACKENDS, backend_of
from tests.guide_models import create_conv_net
from tests.torch_reference import CONVNET_NAMES, TorchConvNet, load_into

BATCH = 8
STEPS = 3
BN_STATS = {"batchnorm2d": "bn1", "batchnorm2d_1": "bn2"}


def _batches(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, 3, 32, 32)), rng.integers(0, 10, BATCH))
            for _ in range(STEPS)]


def _torch_reference(params: dict[str, np.ndarray], batches: list) -> nn.Module:
    torch.manual_seed(0)
    net = TorchConvNet().double()
    load_into(net, params, CONVNET_NAMES, np.asarray)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    net.train()
    for x, y in batches:
        outputs = net(torch.from_numpy(x))
        loss = criterion(outputs, torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


def _guide_loop(backend, compiled_model, params, batches):
    """The guide's loop, as written in the guide (one step per batch)."""
    optimizer = ml.Adam(learning_rate=0.001)
    optimizer_state = optimizer.init(params)
    for inputs_batch, targets_batch in batches:
        inputs = {"input": backend.array(inputs_batch)}
        targets = backend.array(targets_batch)

        outputs = compiled_model.evaluate(params, inputs)
        logits = outputs["output"]

        loss = backend.cross_entropy(logits, targets)  # noqa: F841  (the guide computes it)

        loss_grad = backend.cross_entropy_grad(logits, targets)
        output_gradients = {"output": loss_grad}
        _, gradients = compiled_model.evaluate(params, inputs, output_gradients)

        params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
    return params


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_guide_loop_running_stats_match_torch(backend_name):
    backend = backend_of(backend_name, "float64")
    compiled_model = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]})
    params = compiled_model.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    batches = _batches()
    params = _guide_loop(backend, compiled_model, params, batches)
    net = _torch_reference(start, batches)
    buffers = dict(net.named_buffers())
    for ours, theirs in BN_STATS.items():
        for stat in ("running_mean", "running_var"):
            got = backend.to_numpy(compiled_model.state[f"{ours}.{stat}"])
            want = buffers[f"{theirs}.{stat}"].numpy()
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6,
                                       err_msg=f"{backend_name} {ours}.{stat}")
    assert int(buffers["bn1.num_batches_tracked"]) == STEPS
    torch_params = dict(net.named_parameters())
    for key, tname in CONVNET_NAMES.items():
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   torch_params[tname].detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=f"{backend_name} {key}")


# ---- when the gradient call reuses the forward pass ------------------------------------------
def _edit_in_place(backend_name: str, array):
    """Add 1 to ``array`` in place (JAX arrays cannot be edited in place)."""
    if backend_name == "torch":
        with torch.no_grad():
            array.add_(1.0)
    elif backend_name == "numpy":
        array += 1.0
    elif backend_name == "mlx":
        array[0] = array[0] + 1.0
    else:
        pytest.skip("JAX arrays are immutable")


def _spy(compiled) -> list[int]:
    """Count the gradient calls that reuse the forward call's pass (``Recorder.pull``)."""
    calls = [0]
    recorder = compiled._recorder
    inner = recorder.pull

    def counted(*args):
        calls[0] += 1
        return inner(*args)

    recorder.pull = counted
    return calls


def _close(backend, a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(backend.to_numpy(a[k]), backend.to_numpy(b[k]), rtol=1e-12,
                                   atol=1e-12, err_msg=k)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("edit", ["none", "new_dicts_same_arrays", "equal_new_arrays",
                                  "param_in_place", "input_in_place", "state_assigned",
                                  "other_rng"])
def test_gradient_call_reuses_forward_only_when_safe(backend_name, edit):
    backend = backend_of(backend_name, "float64")
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [4, 3, 32, 32]})
    rng = np.random.default_rng(1)
    params = pm.randomize_params(seed=0)
    x = rng.standard_normal((4, 3, 32, 32))
    inputs = {"input": backend.array(x)}
    og = {"output": backend.array(rng.standard_normal((4, 10)))}
    state0 = pm.state
    pm.evaluate(params, inputs)
    state1 = pm.state
    reuse = edit in ("none", "new_dicts_same_arrays")
    kw = {}
    if edit == "new_dicts_same_arrays":
        params, inputs = dict(params), dict(inputs)
    elif edit == "equal_new_arrays":
        old = inputs["input"]
        inputs = {"input": backend.array(x.copy())}
        assert inputs["input"] is not old
    elif edit == "param_in_place":
        _edit_in_place(backend_name, params["linear.bias"])
    elif edit == "input_in_place":
        _edit_in_place(backend_name, inputs["input"])
    elif edit == "state_assigned":
        pm.state = dict(state1)
    elif edit == "other_rng":
        kw["rng"] = {"numpy": lambda: np.random.default_rng(0),
                     "torch": lambda: torch.Generator().manual_seed(0),
                     "jax": lambda: __import__("jax").random.key(0),
                     "mlx": lambda: __import__("mlx.core").core.random.key(0)}[backend_name]()
    calls = _spy(pm)
    _, grads = pm.evaluate(params, inputs, og, **kw)
    # the reference: the functional form with the state this gradient is of
    _, want_grads, want_state = pm.evaluate(params, inputs, og, state=state0 if reuse else state1)
    _close(backend, grads, want_grads)
    _close(backend, pm.state, want_state)
    assert calls[0] == (1 if reuse else 0)
    if reuse:
        _close(backend, pm.state, state1)  # updated once, by the forward call


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_explicit_state_reuses_and_returns_the_forward_state(backend_name):
    backend = backend_of(backend_name, "float64")
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [2, 3, 32, 32]})
    params = pm.randomize_params(seed=0)
    inputs = {"input": backend.array(np.random.default_rng(2).standard_normal((2, 3, 32, 32)))}
    og = {"output": backend.ones(2, 10)}
    state0 = pm.initial_state_dict
    outs, state1 = pm.evaluate(params, inputs, state=state0)
    outs2, grads, state2 = pm.evaluate(params, inputs, og, state=state0)
    _close(backend, state1, state2)
    _close(backend, outs, outs2)
    fresh = ml.compile(create_conv_net(), backend, shapes={"input": [2, 3, 32, 32]})
    _, want, want_state = fresh.evaluate(params, inputs, og, state=state0)
    _close(backend, grads, want)
    _close(backend, state2, want_state)


def test_no_forward_kept_while_tracing_in_users_jax_jit():
    import jax

    backend = ml.JaxBackend(dtype=ml.float64)
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [2, 3, 32, 32]})
    params = pm.randomize_params(seed=0)
    x = backend.array(np.random.default_rng(2).standard_normal((2, 3, 32, 32)))

    @jax.jit
    def forward(p, x, s):
        return pm.evaluate(p, {"input": x}, state=s)

    with jax.enable_x64(True):  # a float64 model in the user's own jax.jit (docs/backends/jax.md)
        outs, _ = forward(params, x, pm.initial_state_dict)
    assert pm._last is None
    np.testing.assert_allclose(
        np.asarray(outs["output"]),
        np.asarray(pm.evaluate(params, {"input": x}, state=pm.initial_state_dict)[0]["output"]))


def test_jax_pullback_keeps_costly_values_only(monkeypatch):
    """The JAX forward call keeps the results of convolutions, products and reductions and
    recomputes the element-wise work between them in the gradient call (pullback.py): far
    fewer bytes kept than every intermediate, the same gradients."""
    import jax

    from mithril.framework.physical.pullback import JaxRecorder

    backend = ml.JaxBackend(dtype=ml.float64)
    x = backend.array(np.random.default_rng(4).standard_normal((4, 3, 32, 32)))
    found = {}
    for remat in (JaxRecorder.remat, False):  # the default, then every intermediate kept
        monkeypatch.setattr(JaxRecorder, "remat", remat)
        pm = ml.compile(create_conv_net(), backend, shapes={"input": [4, 3, 32, 32]})
        params = pm.randomize_params(seed=1)
        logits = pm.evaluate(params, {"input": x})["output"]
        kept = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(pm._last.token))
        _, grads = pm.evaluate(params, {"input": x}, {"output": backend.ones_like(logits)})
        found[remat] = kept, grads, pm.state
    assert found[True][0] * 2 < found[False][0], (found[True][0], found[False][0])
    _close(backend, found[True][1], found[False][1])
    _close(backend, found[True][2], found[False][2])


# ---- the fused training step ---------------------------------------------------------------
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_fused_step_equals_guide_loop_and_torch(backend_name):
    from mithril.framework.physical.fused import train_step

    backend = backend_of(backend_name, "float64")
    compiled_model = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]})
    params = compiled_model.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    batches = _batches()
    optimizer = ml.Adam(learning_rate=0.001)
    step = train_step(compiled_model, optimizer)
    opt_state, state = optimizer.init(params), compiled_model.initial_state_dict
    losses = []
    for x, y in batches:
        params, opt_state, state, loss = step(params, opt_state, state,
                                              {"input": backend.array(x)}, backend.array(y))
        losses.append(float(backend.to_numpy(loss)))
    net = _torch_reference(start, batches)
    buffers = dict(net.named_buffers())
    for ours, theirs in BN_STATS.items():
        for stat in ("running_mean", "running_var"):
            np.testing.assert_allclose(backend.to_numpy(state[f"{ours}.{stat}"]),
                                       buffers[f"{theirs}.{stat}"].numpy(), rtol=0, atol=1e-6)
    torch_params = dict(net.named_parameters())
    for key, tname in CONVNET_NAMES.items():
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   torch_params[tname].detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=f"{backend_name} {key}")
    # the unfused loop from the same start gives the same parameters (up to the rounding of
    # fused float64 arithmetic in one jax.jit)
    loop_model = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]})
    unfused = _guide_loop(backend, loop_model, {k: backend.array(v) for k, v in start.items()},
                          batches)
    for key in params:
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   backend.to_numpy(unfused[key]), rtol=0, atol=1e-10)
    assert len(losses) == STEPS and all(np.isfinite(losses))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_fused_step_with_train_model(backend_name):
    from mithril.framework.physical.fused import train_step
    from mithril.models import CrossEntropy, Mean, TrainModel

    backend = backend_of(backend_name, "float64")
    tm = TrainModel(create_conv_net())
    tm.add_loss(CrossEntropy(), input="output", target="target", reduce_steps=[Mean()])
    pm = ml.compile(tm, backend, shapes={"input": [BATCH, 3, 32, 32], "target": [BATCH]})
    params = pm.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    optimizer = ml.Adam(learning_rate=0.001)
    step = train_step(pm, optimizer, loss=None)
    opt_state, state = optimizer.init(params), pm.initial_state_dict
    batches = _batches()
    for x, y in batches:
        params, opt_state, state, _ = step(
            params, opt_state, state, {"input": backend.array(x), "target": backend.array(y)})
    net = _torch_reference(start, batches)
    torch_params = dict(net.named_parameters())
    for key, tname in CONVNET_NAMES.items():
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   torch_params[tname].detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=f"{backend_name} {key}")


# ---- the fused step as a compile option (ml.compile(..., train=ml.TrainStep(...))) ----------
def _torch_losses(params: dict[str, np.ndarray], batches: list) -> list[float]:
    """torch.nn + torch.optim.Adam's loss at each step (float64), from the same start."""
    torch.manual_seed(0)
    net = TorchConvNet().double()
    load_into(net, params, CONVNET_NAMES, np.asarray)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
    losses = []
    for x, y in batches:
        loss = nn.CrossEntropyLoss()(net(torch.from_numpy(x)), torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _check_against_torch(backend, backend_name, params, state, losses, start, batches):
    net = _torch_reference(start, batches)
    buffers = dict(net.named_buffers())
    for ours, theirs in BN_STATS.items():
        for stat in ("running_mean", "running_var"):
            np.testing.assert_allclose(backend.to_numpy(state[f"{ours}.{stat}"]),
                                       buffers[f"{theirs}.{stat}"].numpy(), rtol=0, atol=1e-6,
                                       err_msg=f"{backend_name} {ours}.{stat}")
    torch_params = dict(net.named_parameters())
    for key, tname in CONVNET_NAMES.items():
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   torch_params[tname].detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=f"{backend_name} {key}")
    np.testing.assert_allclose(losses, _torch_losses(start, batches), rtol=1e-10, atol=0)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_train_option_equals_unfused_loop_and_torch(backend_name):
    backend = backend_of(backend_name, "float64")
    optimizer = ml.Adam(learning_rate=0.001)
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]},
                    train=ml.TrainStep(optimizer, loss="cross_entropy"))
    params = pm.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    kept = {k: backend.to_numpy(v) for k, v in pm.state.items()}
    opt_state, state = optimizer.init(params), pm.initial_state_dict
    batches = _batches()
    losses = []
    for x, y in batches:
        params, opt_state, state, loss = pm.train_step(
            params, opt_state, state, {"input": backend.array(x), "target": backend.array(y)})
        losses.append(float(backend.to_numpy(loss)))
    assert int(backend.to_numpy(opt_state["step"])) == STEPS
    _check_against_torch(backend, backend_name, params, state, losses, start, batches)
    # pure: the compiled model's own state is untouched
    for k, v in pm.state.items():
        np.testing.assert_array_equal(backend.to_numpy(v), kept[k])
    # the unfused guide loop from the same start
    loop_model = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]})
    unfused = _guide_loop(backend, loop_model, {k: backend.array(v) for k, v in start.items()},
                          batches)
    for key in params:
        np.testing.assert_allclose(backend.to_numpy(params[key]),
                                   backend.to_numpy(unfused[key]), rtol=0, atol=1e-10)
    for key, value in loop_model.state.items():  # (JAX: rounding of one fused jax.jit)
        np.testing.assert_allclose(backend.to_numpy(state[key]), backend.to_numpy(value),
                                   rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_train_option_with_train_model(backend_name):
    from mithril.models import CrossEntropy, Mean, TrainModel

    backend = backend_of(backend_name, "float64")
    tm = TrainModel(create_conv_net())
    tm.add_loss(CrossEntropy(), input="output", target="target", reduce_steps=[Mean()])
    optimizer = ml.Adam(learning_rate=0.001)
    pm = ml.compile(tm, backend, shapes={"input": [BATCH, 3, 32, 32], "target": [BATCH]},
                    train=ml.TrainStep(optimizer, loss=None))
    params = pm.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    opt_state, state = optimizer.init(params), pm.initial_state_dict
    batches = _batches()
    losses = []
    for x, y in batches:
        params, opt_state, state, loss = pm.train_step(
            params, opt_state, state, {"input": backend.array(x), "target": backend.array(y)})
        losses.append(float(backend.to_numpy(loss)))
    _check_against_torch(backend, backend_name, params, state, losses, start, batches)


def test_compile_train_option_with_torch_compile():
    backend = ml.TorchBackend(dtype=ml.float64)
    optimizer = ml.Adam(learning_rate=0.001)
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [BATCH, 3, 32, 32]},
                    train=ml.TrainStep(optimizer, torch_compile={"backend": "aot_eager"}))
    params = pm.randomize_params(seed=3)
    start = {k: backend.to_numpy(v) for k, v in params.items()}
    opt_state, state = optimizer.init(params), pm.initial_state_dict
    batches = _batches()
    losses = []
    torch._dynamo.reset()
    for x, y in batches:
        params, opt_state, state, loss = pm.train_step(
            params, opt_state, state, {"input": backend.array(x), "target": backend.array(y)})
        losses.append(float(loss))
    _check_against_torch(backend, "torch.compile", params, state, losses, start, batches)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile


def test_compile_train_option_errors():
    backend = ml.NumpyBackend(dtype=ml.float64)
    optimizer = ml.SGD(learning_rate=0.1)
    with pytest.raises(ml.ArgumentError, match="TrainStep"):
        ml.compile(create_conv_net(), backend, train=optimizer)
    with pytest.raises(ml.ArgumentError, match="unknown loss"):
        ml.compile(create_conv_net(), backend, train=ml.TrainStep(optimizer, loss="hinge"))
    with pytest.raises(ml.ArgumentError, match="names an input"):
        ml.compile(create_conv_net(), backend, train=ml.TrainStep(optimizer, target="input"))
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [2, 3, 32, 32]},
                    train=ml.TrainStep(optimizer))
    params = pm.randomize_params(seed=0)
    with pytest.raises(ml.InputError, match="'target'"):
        pm.train_step(params, optimizer.init(params), pm.state, {"input": np.ones((2, 3, 32, 32))})
