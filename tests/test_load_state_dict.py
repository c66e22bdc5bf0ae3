"""load_torch_state_dict: names before shapes, copies, transforms, trainable inputs.

The regression model is a ResNet-18 written by hand in Mithril with torchvision's key names;
its reference is ``torchvision.models.resnet18`` with every BatchNorm's affine parameters and
running statistics randomised, so that pairing two BatchNorms of equal shape the wrong way
round (``bn2`` / ``downsample.1``) changes the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.interop import load_torch_state_dict
from mithril.models import (
    AdaptiveAvgPool2d,
    Add,
    BatchNorm2d,
    Conv2d,
    Flatten,
    IOKey,
    Linear,
    MaxPool2d,
    Model,
    Relu,
)
from tests.backend_names import BACKENDS, backend_of
from tests.torch_zoo import torchvision_models


def _block(inp: int, out: int, stride: int, name: str) -> Model:
    """torchvision's BasicBlock; the shortcut is built first, so Mithril's order of layers
    (downsample before conv2 / bn2) differs from torch's registration order."""
    b = Model(name=name)
    identity = "input"
    if stride != 1 or inp != out:
        ds = Model(name="downsample")
        ds |= Conv2d(inp, out, 1, stride=stride, bias=False, name="0")(input="input",
                                                                       output="d0")
        ds |= BatchNorm2d(out, name="1")(input="d0", output=IOKey("output"))
        b |= ds(input="input", output="identity")
        identity = "identity"
    b |= Conv2d(inp, out, 3, stride=stride, padding=1, bias=False, name="conv1")(
        input="input", output="c1")
    b |= BatchNorm2d(out, name="bn1")(input="c1", output="b1")
    b |= Relu()(input="b1", output="r1")
    b |= Conv2d(out, out, 3, padding=1, bias=False, name="conv2")(input="r1", output="c2")
    b |= BatchNorm2d(out, name="bn2")(input="c2", output="b2")
    b |= Add()(left="b2", right=identity, output="sum")
    b |= Relu()(input="sum", output=IOKey("output"))
    return b


def mithril_resnet18(num_classes: int = 10) -> Model:
    """ResNet-18 by hand, with torchvision's parameter keys (``layer2.0.downsample.1.weight``)."""
    m = Model()
    m |= Conv2d(3, 64, 7, stride=2, padding=3, bias=False, name="conv1")(input="input",
                                                                         output="c1")
    m |= BatchNorm2d(64, name="bn1")(input="c1", output="b1")
    m |= Relu()(input="b1", output="r1")
    m |= MaxPool2d(3, stride=2, padding=1)(input="r1", output="x")
    current, width = "x", 64
    for i, (out, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        layer = Model(name=f"layer{i}")
        layer |= _block(width, out, stride, "0")(input="input", output="h")
        layer |= _block(out, out, 1, "1")(input="h", output=IOKey("output"))
        m |= layer(input=current, output=f"l{i}")
        current, width = f"l{i}", out
    m |= AdaptiveAvgPool2d(1)(input=current, output="pooled")
    m |= Flatten()(input="pooled", output="flat")
    m |= Linear(num_classes, name="fc")(input="flat", output=IOKey("output"))
    return m


def randomised_resnet18(seed: int = 0) -> nn.Module:
    """torchvision's resnet18 (10 classes) with random BatchNorm affine params and statistics."""
    torch.manual_seed(seed)
    net = torchvision_models().resnet18(num_classes=10)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.3 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def resnet_pair() -> tuple[Model, nn.Module, np.ndarray, np.ndarray]:
    net = randomised_resnet18().double()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    return mithril_resnet18(), net, x, expected


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_resnet18_loads_by_name_on_every_backend(resnet_pair, backend_name):
    model, net, x, expected = resnet_pair
    dtype = "float32" if backend_name == "mlx" else "float64"
    backend = backend_of(backend_name, dtype)
    pm = ml.compile(model, backend, inference=True, shapes={"input": list(x.shape)})
    params, state, report = load_torch_state_dict(pm, net.state_dict())
    assert report.ok, str(report)
    assert {how for *_, how in report.matched} == {"name"}
    assert len(report.matched) == len(net.state_dict()) - len(report.ignored) == 102
    out, _ = pm.evaluate(params, {"input": backend.array(x)}, state=state)
    got = backend.to_numpy(out["output"])
    scale = np.abs(expected).max()
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=tol)
    # edits to the torch module afterwards (in place, and BatchNorm's own updates) do not leak
    frozen = {k: backend.to_numpy(v).copy() for k, v in {**params, **state}.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-3.0)
        for b in net.buffers():
            if b.is_floating_point():
                b.add_(5.0)
    try:
        for k, v in {**params, **state}.items():
            np.testing.assert_array_equal(backend.to_numpy(v), frozen[k], err_msg=k)
    finally:
        with torch.no_grad():
            for p in net.parameters():
                p.div_(-3.0)
            for b in net.buffers():
                if b.is_floating_point():
                    b.sub_(5.0)


def test_order_pairing_of_the_swapped_batchnorms_would_change_outputs(resnet_pair):
    """The test above can fail: bn2 and downsample.1 differ, so swapping them shows."""
    model, net, x, expected = resnet_pair
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend, inference=True, shapes={"input": list(x.shape)})
    params, state, _ = load_torch_state_dict(pm, net.state_dict())
    swapped = dict(state)
    for leaf in ("running_mean", "running_var"):
        a, b = f"layer2.0.bn2.{leaf}", f"layer2.0.downsample.1.{leaf}"
        swapped[a], swapped[b] = state[b], state[a]
    out, _ = pm.evaluate(params, {"input": x}, state=swapped)
    assert np.abs(out["output"] - expected).max() > 1e-3 * np.abs(expected).max()


def test_same_shaped_layers_without_names_are_ambiguous():
    """Two differently valued Linear(4, 4) under auto names: order would be a guess."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model = Model()
    model |= Linear(4)(input_size=4)
    model += Linear(4)
    pm = ml.compile(model, ml.NumpyBackend())
    with pytest.raises(ml.InputError, match=r"ambiguous.*\n  linear <- 0\n  linear_1 <- 2"):
        load_torch_state_dict(pm, net)
    _, _, report = load_torch_state_dict(pm, net, strict=False)
    assert not report.ok and report.ambiguous == [("linear", "0"), ("linear_1", "2")]
    params, _, report = load_torch_state_dict(pm, net, mapping={"linear": "2", "linear_1": "0"})
    assert report.ok
    np.testing.assert_array_equal(params["linear.weight"], net[2].weight.detach().numpy())
    # equal values make the order irrelevant: then it is not ambiguous
    with torch.no_grad():
        net[2].weight.copy_(net[0].weight)
        net[2].bias.copy_(net[0].bias)
    _, _, report = load_torch_state_dict(pm, net)
    assert report.ok and {how for *_, how in report.matched} == {"layer-equal"}


def test_suffix_names_pair_one_to_one():
    torch.manual_seed(0)
    wrapped = nn.Module()
    wrapped.module = nn.Sequential()
    wrapped.module.add_module("fc", nn.Linear(3, 5))  # DataParallel-style prefix: module.fc.*
    model = Model()
    model |= Linear(5, name="fc")(input_size=3)
    pm = ml.compile(model, ml.NumpyBackend())
    _, _, report = load_torch_state_dict(pm, wrapped)
    assert report.ok and [(m, t, how) for m, t, _, how in report.matched] == [
        ("fc.weight", "module.fc.weight", "suffix"), ("fc.bias", "module.fc.bias", "suffix")]
    # equal names with different shapes are a mismatch, never re-paired by shape
    other = {"fc.weight": torch.zeros(3, 5), "fc.bias": torch.zeros(5)}
    with pytest.raises(ml.ShapeMismatchError, match=r"fc.weight \[5, 3\] <- fc.weight \[3, 5\]"):
        load_torch_state_dict(pm, other)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_loaded_arrays_are_copies(backend_name):
    backend = backend_of(backend_name, "float32")
    torch.manual_seed(0)
    fc = nn.Linear(3, 2)
    pm = ml.compile(Linear(2, input_size=3), backend)
    params, _, _ = load_torch_state_dict(pm, fc.state_dict())
    before = backend.to_numpy(params["weight"]).copy()
    with torch.no_grad():
        fc.weight.add_(1.0)
    np.testing.assert_array_equal(backend.to_numpy(params["weight"]), before)
    if backend_name == "torch":
        assert params["weight"].data_ptr() != fc.weight.data_ptr()
    else:
        assert not np.shares_memory(np.asarray(params["weight"]), fc.weight.detach().numpy())


def test_trainable_input_with_strict_loading():
    """A model that trains its input loads strictly; a real miss still raises."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = Model()
    model |= Linear(4)(input="input")
    model += Relu()
    model += Linear(2)
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend, shapes={"input": [5, 3]}, trainable_keys={"input"})
    assert "input" in pm.param_keys
    params, _, report = load_torch_state_dict(pm, net)
    assert report.ok and report.trainable_inputs == ["input"] and "input" not in params
    x = np.random.default_rng(1).standard_normal((5, 3))
    out = pm.evaluate({**params, "input": x}, {})["output"]
    with torch.no_grad():
        np.testing.assert_allclose(out, net.double()(torch.from_numpy(x)).numpy(), rtol=1e-12)
    sd = net.state_dict()
    del sd["2.bias"]
    with pytest.raises(ml.InputError, match=r"not in the file:\n  linear_1.bias \[2\]"):
        load_torch_state_dict(pm, sd)
    # an entry the file has for the trainable input itself is loaded by name
    params, _, report = load_torch_state_dict(pm, {**net.state_dict(), "input": torch.ones(5, 3)})
    assert report.ok and ("input", "input", (5, 3), "name") in report.matched


def test_not_in_the_file_versus_not_a_parameter():
    torch.manual_seed(0)
    fc = nn.Linear(3, 2)
    pm = ml.compile(Linear(2, input_size=3), ml.NumpyBackend(), data_keys={"bias"})
    assert pm.param_keys == ["weight"] and "bias" in pm.data_keys
    with pytest.raises(ml.InputError, match=r"data inputs of the compiled model:\n  bias \[2\]"):
        load_torch_state_dict(pm, fc)
    _, _, report = load_torch_state_dict(pm, fc, strict=False)
    assert report.not_parameters == [("bias", (2,))] and report.unexpected == []
    pm2 = ml.compile(Linear(2, input_size=3), ml.NumpyBackend())
    _, _, report = load_torch_state_dict(pm2, {"weight": fc.weight}, strict=False)
    assert report.missing == [("bias", (2,))] and report.not_parameters == []


def test_transforms_for_gpt2_conv1d():
    """HF GPT-2's Conv1D stores its weight (in, out): a transform loads it into Linear."""
    conv1d = pytest.importorskip("tests.torch_zoo").transformers_module().pytorch_utils.Conv1D
    torch.manual_seed(0)
    net = nn.Module()
    net.c_attn = conv1d(12, 4)  # nf=12 outputs, nx=4 inputs
    model = Model()
    model |= Linear(12, name="c_attn")(input_size=4, output=IOKey("output"))
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend)
    with pytest.raises(ml.ShapeMismatchError, match=r"c_attn.weight \[12, 4\] <- c_attn.weight"):
        load_torch_state_dict(pm, net)
    params, _, report = load_torch_state_dict(pm, net, transforms={"*c_attn.weight": np.transpose})
    assert report.ok and report.transformed == ["c_attn.weight"]
    x = np.random.default_rng(0).standard_normal((3, 4))
    with torch.no_grad():
        expected = net.c_attn.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pm.evaluate(params, {"input": x})["output"], expected,
                               rtol=1e-12)
    with pytest.raises(ml.InputError, match="'nope.*' matches no entry"):
        load_torch_state_dict(pm, net, transforms={"*c_attn.weight": np.transpose,
                                                   "nope.*": np.transpose})
