"""Composed models over several calls, against PyTorch: state across steps, reuse between calls.

- Training: a Conv2d-BatchNorm2d-Relu-Flatten-Linear model (affine parameters and running
  statistics random, not at their defaults) trains three Adam steps on every backend in
  float64, keeping its own BatchNorm state; after each step its loss, parameters and running
  statistics equal ``torch.nn`` + ``torch.optim.Adam``'s. Then an inference model takes the
  trained state and answers for two batch sizes as ``module.eval()`` does, and the training
  model, called again, goes on from where it was.
- Graph passes: two operations that differ only in a constant stay two operations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.models import BatchNorm2d, Buffer, Conv2d, Flatten, Linear, Model, Relu
from mithril.optim import Adam

BACKENDS = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}
#: Mithril key -> torch.nn.Sequential name
TORCH_NAMES = {"conv2d.weight": "0.weight",
               "batchnorm2d.weight": "1.weight", "batchnorm2d.bias": "1.bias",
               "batchnorm2d.running_mean": "1.running_mean",
               "batchnorm2d.running_var": "1.running_var",
               "linear.weight": "4.weight", "linear.bias": "4.bias"}


def small_net() -> Model:
    model = Model()
    # no convolution bias: BatchNorm cancels it, its gradient is rounding noise that Adam's
    # g / sqrt(v) would blow up to full steps
    model |= Conv2d(in_channels=2, out_channels=3, kernel_size=3, padding=1, bias=False)
    model += BatchNorm2d(num_features=3, momentum=0.3)
    model += Relu()
    model += Flatten()
    model += Linear(4)(input_size=3 * 5 * 5)
    return model


def torch_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3, momentum=0.3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(75, 4)).double()


def start_values() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shapes = {"conv2d.weight": (3, 2, 3, 3), "batchnorm2d.weight": (3,),
              "batchnorm2d.bias": (3,), "linear.weight": (4, 75), "linear.bias": (4,)}
    params = {k: 0.4 * rng.standard_normal(s) for k, s in shapes.items()}
    params["batchnorm2d.weight"] += 1.0  # around 1, not at it
    state = {"batchnorm2d.running_mean": rng.standard_normal(3),
             "batchnorm2d.running_var": rng.uniform(0.5, 2.0, 3)}
    return params, state


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_three_adam_steps_with_batchnorm_state_match_torch(backend_name: str) -> None:
    backend = BACKENDS[backend_name](dtype=ml.float64)
    b = backend
    train = ml.compile(small_net(), backend, shapes={"input": ["N", 2, 5, 5]}, jit=False)
    infer = ml.compile(small_net(), backend, shapes={"input": ["N", 2, 5, 5]}, inference=True,
                       jit=False)
    params0, state0 = start_values()
    assert set(train.param_keys) == set(params0) and set(train.state_keys) == set(state0)
    net = torch_net()
    with torch.no_grad():
        named = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        for k, v in {**params0, **state0}.items():
            named[TORCH_NAMES[k]].copy_(torch.from_numpy(v))
    torch_opt = torch.optim.Adam(net.parameters(), lr=0.05)
    optimizer = Adam(learning_rate=0.05)
    params = {k: b.array(v) for k, v in params0.items()}
    opt_state = optimizer.init(params)
    train.state = {k: b.array(v) for k, v in state0.items()}
    rng = np.random.default_rng(1)
    for step in range(3):
        x = rng.standard_normal((6, 2, 5, 5)) * (1 + step) + step  # statistics that move
        g = rng.standard_normal((6, 4))  # loss <g, output>: one training call per step
        outs, grads = train.evaluate(params, {"input": b.array(x)},
                                     output_gradients={"output": b.array(g)})
        params, opt_state = optimizer.update(params, grads, opt_state)
        net.train()
        torch_opt.zero_grad()
        t_out = net(torch.from_numpy(x))
        (t_out * torch.from_numpy(g)).sum().backward()
        torch_opt.step()
        np.testing.assert_allclose(b.to_numpy(outs["output"]), t_out.detach().numpy(),
                                   rtol=1e-9, atol=1e-10, err_msg=f"step {step} output")
        named = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        for k in params0:
            np.testing.assert_allclose(b.to_numpy(params[k]),
                                       named[TORCH_NAMES[k]].detach().numpy(), rtol=1e-8,
                                       atol=1e-10, err_msg=f"step {step} parameter {k}")
        for k in state0:
            np.testing.assert_allclose(b.to_numpy(train.state[k]), named[TORCH_NAMES[k]].numpy(),
                                       rtol=1e-9, atol=1e-10, err_msg=f"step {step} state {k}")
    # inference with the trained state, reused for two batch sizes; state left alone
    infer.state = train.state
    net.eval()
    for n in (3, 7):
        x = rng.standard_normal((n, 2, 5, 5))
        out = infer.evaluate(params, {"input": b.array(x)})["output"]
        np.testing.assert_allclose(b.to_numpy(out), net(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-9, atol=1e-10, err_msg=f"inference batch {n}")
    for k in state0:
        np.testing.assert_allclose(b.to_numpy(infer.state[k]), named[TORCH_NAMES[k]].numpy(),
                                   rtol=1e-12, atol=0, err_msg=f"inference changed {k}")
    # the training model, called again, goes on from its kept state
    net.train()
    x = rng.standard_normal((4, 2, 5, 5))
    out = train.evaluate(params, {"input": b.array(x)})["output"]
    np.testing.assert_allclose(b.to_numpy(out), net(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10, err_msg="training call after inference")
    named = dict(net.named_buffers())
    for k in state0:
        np.testing.assert_allclose(b.to_numpy(train.state[k]), named[TORCH_NAMES[k]].numpy(),
                                   rtol=1e-9, atol=1e-10, err_msg=f"state {k} after a fourth call")


def test_operations_differing_only_in_a_constant_stay_apart() -> None:
    """Common-subexpression elimination merges equal computations, never ``x * 2`` with
    ``x * 3`` (nor ``x + 1`` with ``x + 2``)."""
    model = Model()
    model |= Buffer()(input="input", output="x")
    x = model.x
    model |= Buffer()(input=(x * 2.0) + (x * 3.0) + (x + 1.0) * (x + 2.0),
                      output=ml.IOKey("output"))
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend, shapes={"input": [3, 4]}, trainable_keys={"input"})
    v = np.random.default_rng(0).standard_normal((3, 4))
    g = np.random.default_rng(1).standard_normal((3, 4))
    outs, grads = pm.evaluate({"input": v}, {}, output_gradients={"output": g})
    np.testing.assert_allclose(outs["output"], 5 * v + (v + 1) * (v + 2), rtol=1e-12)
    np.testing.assert_allclose(grads["input"], g * (5 + 2 * v + 3), rtol=1e-12)
