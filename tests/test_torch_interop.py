"""PyTorch interop (mithril.interop): compiled models as nn.Modules trained by PyTorch, and
torch.nn weights loaded into Mithril. References are hand-written torch.nn models."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.interop import TorchModule, attach, load_torch_state_dict
from mithril.models import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Model, Relu
from tests.guide_models import create_conv_net, create_residual_block
from tests.torch_reference import CONVNET_NAMES, TorchConvNet, load_into


class Wrapper(nn.Module):
    """An existing PyTorch model with a compiled Mithril model inside."""

    def __init__(self, body: TorchModule) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body({"input": x})["output"]


class ResidualBlock(nn.Module):
    """The guide's PyTorch ResNet block, verbatim."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(identity)
        out += identity
        return self.relu(out)


def _guide_model() -> Model:
    model = Model()
    model |= Conv2d(in_channels=3, out_channels=16, kernel_size=3, padding=1)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Flatten()
    model += Linear(dimension=10)(input_size=16 * 8 * 8)
    return model


def _loader(n: int = 32, batch: int = 8) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def _bn_model() -> Model:
    model = Model()
    model |= Conv2d(in_channels=2, out_channels=4, kernel_size=3)
    model += BatchNorm2d(num_features=4)
    return model


def _bn_reference(params: dict, to_numpy) -> nn.Sequential:
    ref = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)).double()
    load_into(ref, params, {"conv2d.weight": "0.weight", "conv2d.bias": "0.bias",
                            "batchnorm2d.weight": "1.weight", "batchnorm2d.bias": "1.bias"},
              to_numpy)
    return ref


# ---- the guide's "Leveraging PyTorch Within Mithril" ---------------------------------------------
def test_guide_training_loop_with_attach():
    model = _guide_model()
    torch_backend = ml.TorchBackend(device="cpu")
    torch_model = ml.compile(model, torch_backend)
    module = attach(torch_model)
    before = {k: v.clone() for k, v in module.mithril_params().items()}
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _epoch in range(8):
        total = 0.0
        for inputs, targets in _loader():
            inputs, targets = inputs.to("cpu"), targets.to("cpu")
            mithril_inputs = {"input": inputs}
            outputs = module(mithril_inputs)
            assert outputs["output"].requires_grad
            loss = criterion(outputs["output"], targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total)
    assert losses[-1] < 0.5 * losses[0]  # it learns the (memorisable) synthetic data
    after = module.mithril_params()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    # the parameters stay usable with the compiled model's own evaluate
    x = next(iter(_loader()))[0]
    np.testing.assert_allclose(torch_model.evaluate(after, {"input": x})["output"].numpy(),
                               module({"input": x})["output"].detach().numpy(), rtol=1e-6)


def test_guide_training_loop_verbatim():
    model = _guide_model()
    torch_backend = ml.TorchBackend(device="cpu")
    torch_model = ml.compile(model, torch_backend)
    optimizer = torch.optim.Adam(torch_model.torch_parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    for _epoch in range(2):
        for inputs, targets in _loader():
            inputs, targets = inputs.to("cpu"), targets.to("cpu")
            mithril_inputs = {"input": inputs}
            outputs = torch_model(mithril_inputs)
            loss = criterion(outputs["output"], targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert attach(torch_model) is attach(torch_model)


# ---- same loss curve as pure torch.nn -----------------------------------------------------------
def test_training_matches_pure_torch_convnet():
    backend = ml.TorchBackend(dtype=ml.float64)
    model = create_conv_net()
    params = ml.compile(model, backend).randomize_params(seed=1)
    net = Wrapper(TorchModule(ml.compile(model, backend), params, inference_model=model))
    ref = TorchConvNet().double()
    load_into(ref, params, CONVNET_NAMES, backend.to_numpy)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(12, 8, 3, 32, 32, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 10, (12, 8), generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    net.train()
    ref.train()
    curve, curve_ref = [], []
    for x, y in zip(xs, ys, strict=True):
        for m, o, c in ((net, opt, curve), (ref, opt_ref, curve_ref)):
            loss = criterion(m(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
            c.append(loss.item())
    np.testing.assert_allclose(curve, curve_ref, rtol=0, atol=1e-5)
    assert curve[0] != curve[-1]
    sd = net.state_dict()
    for mkey, tname in [*CONVNET_NAMES.items(),
                        ("batchnorm2d.running_mean", "bn1.running_mean"),
                        ("batchnorm2d_1.running_var", "bn2.running_var")]:
        torch.testing.assert_close(sd[f"body.{mkey}"], ref.state_dict()[tname], rtol=0,
                                   atol=1e-8)
    net.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(xs[0]), ref(xs[0]), rtol=0, atol=1e-8)


# ---- nn.Module behaviour ------------------------------------------------------------------------
def test_state_dict_round_trip():
    backend = ml.TorchBackend(dtype=ml.float64)
    model = create_conv_net()
    pm = ml.compile(model, backend)
    a = TorchModule(pm, pm.randomize_params(seed=1), inference_model=model)
    a({"input": torch.randn(4, 3, 32, 32, dtype=torch.float64)})  # move the running stats
    sd = a.state_dict()
    assert list(sd) == [
        "conv2d.weight", "conv2d.bias", "batchnorm2d.weight", "batchnorm2d.bias",
        "batchnorm2d.running_mean", "batchnorm2d.running_var", "conv2d_1.weight",
        "conv2d_1.bias", "batchnorm2d_1.weight", "batchnorm2d_1.bias",
        "batchnorm2d_1.running_mean", "batchnorm2d_1.running_var", "linear.weight",
        "linear.bias"]
    assert set(sd) == set(pm.param_keys) | set(pm.state_keys)
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    b = TorchModule(pm, pm.randomize_params(seed=2), inference_model=model)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for k, v in sd.items():
        assert torch.equal(b.state_dict()[k], v), k
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    a.eval()
    b.eval()
    assert torch.equal(a({"input": x})["output"], b({"input": x})["output"])
    # as a submodule: prefixed keys, and strict loading reports Mithril's names
    outer = Wrapper(b)
    assert "body.batchnorm2d_1.running_var" in outer.state_dict()
    broken = dict(sd)
    del broken["linear.bias"]
    with pytest.raises(RuntimeError, match="linear.bias"):
        b.load_state_dict(broken)


def test_train_and_eval_switch_batchnorm():
    backend = ml.TorchBackend(dtype=ml.float64)
    model = _bn_model()
    pm = ml.compile(model, backend)
    params = pm.randomize_params(seed=3)
    module = TorchModule(pm, params, inference_model=model)
    ref = _bn_reference(params, backend.to_numpy)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    assert module.training
    for _ in range(3):
        out = module({"input": x})["output"]
        torch.testing.assert_close(out, ref.train()(x), rtol=0, atol=1e-10)
    state = module.mithril_state()
    torch.testing.assert_close(state["batchnorm2d.running_mean"], ref[1].running_mean)
    torch.testing.assert_close(state["batchnorm2d.running_var"], ref[1].running_var)
    frozen = {k: v.clone() for k, v in state.items()}
    module.eval()
    ref.eval()
    out = module({"input": x})["output"]
    torch.testing.assert_close(out, ref(x), rtol=0, atol=1e-10)
    # inference: a sample's output does not depend on its batch; the state is unchanged
    torch.testing.assert_close(module({"input": x[:1]})["output"], out[:1], rtol=0, atol=1e-12)
    assert all(torch.equal(frozen[k], v) for k, v in module.mithril_state().items())
    module.train()
    single = module({"input": x[:2]})["output"]
    assert not torch.allclose(single, out[:2])  # batch statistics again


def test_inference_twin_given_compiled_and_checked():
    backend = ml.TorchBackend()
    model = _bn_model()
    twin = ml.compile(model, backend, inference=True)
    module = TorchModule(ml.compile(model, backend), inference_model=twin).eval()
    assert module({"input": torch.randn(1, 2, 5, 5)})["output"].shape == (1, 4, 3, 3)
    other = Model()
    other |= Conv2d(in_channels=2, out_channels=5, kernel_size=3)
    other += BatchNorm2d(num_features=5)
    with pytest.raises(ml.CompileError, match="parameters"):
        TorchModule(ml.compile(model, backend),
                    inference_model=ml.compile(other, backend, inference=True))
    with pytest.raises(ml.CompileError, match="inference=True"):
        TorchModule(ml.compile(model, backend), inference_model=ml.compile(model, backend))


def test_eval_without_twin():
    backend = ml.TorchBackend()
    module = TorchModule(ml.compile(_bn_model(), backend)).eval()
    with pytest.raises(ml.CompileError, match=r"batch_norm.*inference_model"):
        module({"input": torch.randn(1, 2, 5, 5)})
    # a model without mode-dependent layers needs no twin
    mlp = Model()
    mlp |= Linear(4)(input_size=3)
    mlp += Relu()
    plain = TorchModule(ml.compile(mlp, backend)).eval()
    x = torch.randn(2, 3)
    p = plain.mithril_params()
    torch.testing.assert_close(plain({"input": x})["output"],
                               torch.relu(x @ p["linear.weight"].T + p["linear.bias"]))


def test_to_device_and_dtype():
    module = TorchModule(ml.compile(_bn_model(), ml.TorchBackend()))
    module.to("cpu")
    assert module({"input": torch.randn(2, 2, 5, 5)})["output"].shape == (2, 4, 3, 3)
    module.to(torch.float64)
    with pytest.raises(ml.TypeMismatchError, match=r"torch.float64.*torch.float32"):
        module({"input": torch.randn(2, 2, 5, 5, dtype=torch.float64)})


def test_bad_inputs_and_params():
    backend = ml.TorchBackend()
    pm = ml.compile(_bn_model(), backend)
    module = TorchModule(pm)
    with pytest.raises(ml.TypeMismatchError, match="dict of inputs"):
        module(torch.randn(1, 2, 5, 5))
    with pytest.raises(ml.InputError, match="missing"):
        module({"x": torch.randn(1, 2, 5, 5)})
    with pytest.raises(ml.ShapeMismatchError, match="'input'"):
        module({"input": torch.randn(1, 3, 5, 5)})
    params = pm.randomize_params()
    with pytest.raises(ml.InputError, match="conv2d.bias"):
        TorchModule(pm, {k: v for k, v in params.items() if k != "conv2d.bias"})
    with pytest.raises(ml.ShapeMismatchError, match="conv2d.bias"):
        TorchModule(pm, dict(params, **{"conv2d.bias": torch.zeros(7)}))
    with pytest.raises(ml.TypeMismatchError, match="TorchBackend"):
        TorchModule(ml.compile(_bn_model(), ml.NumpyBackend()))


def test_names_clashing_with_module_attributes_round_trip():
    inner = Model(name="training")
    inner |= Linear(4)(input_size=3)
    inner += Relu()
    to = Model(name="to")
    to |= Linear(2)(input_size=4)
    model = Model()
    model |= inner
    model += to
    pm = ml.compile(model, ml.TorchBackend())
    module = TorchModule(pm)
    keys = ["training.linear.weight", "training.linear.bias", "to.linear.weight",
            "to.linear.bias"]
    assert list(module.state_dict()) == keys
    assert module.training is True and callable(module.to)
    other = TorchModule(pm, pm.randomize_params(seed=5))
    other.load_state_dict(module.state_dict())
    x = torch.randn(3, 3)
    assert torch.equal(other({"input": x})["output"], module({"input": x})["output"])
    assert list(Wrapper(other).state_dict()) == [f"body.{k}" for k in keys]
    Wrapper(other).load_state_dict(Wrapper(module).state_dict())


# ---- load_torch_state_dict -----------------------------------------------------------------------
def _trained_convnet() -> TorchConvNet:
    """A torch ConvNet with non-trivial running statistics."""
    torch.manual_seed(0)
    net = TorchConvNet().double().train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 32, 32, dtype=torch.float64))
    return net.eval()


def test_load_convnet_automatically_and_by_mapping():
    ref = _trained_convnet()
    backend = ml.TorchBackend(dtype=ml.float64)
    pm = ml.compile(create_conv_net(), backend, inference=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = ref(x)
    params, state, report = load_torch_state_dict(pm, ref.state_dict())
    assert report.ok and len(report.matched) == 14
    assert report.ignored == ["bn1.num_batches_tracked", "bn2.num_batches_tracked"]
    out, _ = pm.evaluate(params, {"input": x}, state=state)
    torch.testing.assert_close(out["output"], expected, rtol=0, atol=1e-12)
    # explicit: the test suite's own name table, layers for the state
    mapping = dict(CONVNET_NAMES, batchnorm2d="bn1", batchnorm2d_1="bn2")
    params2, state2, report2 = load_torch_state_dict(pm, ref, mapping=mapping)
    assert {how for *_, how in report2.matched} == {"mapping"}
    assert all(torch.equal(params[k], params2[k]) for k in params)
    assert all(torch.equal(state[k], state2[k]) for k in state)


@pytest.mark.parametrize("channels", [(3, 8), (8, 8)])
def test_load_residual_block(channels):
    torch.manual_seed(1)
    ref = ResidualBlock(*channels).double().eval()
    backend = ml.TorchBackend(dtype=ml.float64)
    pm = ml.compile(create_residual_block(*channels), backend, inference=True)
    if channels[0] == channels[1]:
        # two convolutions of equal shapes and different values, and no common names: which
        # is which cannot be read off the file, so order pairing is reported, not trusted
        with pytest.raises(ml.InputError, match=r"ambiguous.*\n  conv2d <- conv1"):
            load_torch_state_dict(pm, ref.state_dict())
        mapping = {"conv2d": "conv1", "conv2d_1": "conv2"}
        params, state, report = load_torch_state_dict(pm, ref.state_dict(), mapping=mapping)
    else:
        params, state, report = load_torch_state_dict(pm, ref.state_dict())
    assert report.ok, str(report)
    if channels[0] != channels[1]:
        assert ("conv2d_2.weight", "downsample.weight", (8, 3, 1, 1), "layer") in report.matched
    x = torch.randn(2, channels[0], 6, 6, dtype=torch.float64)
    out, _ = pm.evaluate(params, {"input": x}, state=state)
    with torch.no_grad():
        torch.testing.assert_close(out["output"], ref(x), rtol=0, atol=1e-12)


def test_load_mlp_in_float32_from_float64():
    torch.manual_seed(2)
    ref = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 3)).double()
    model = Model()
    model |= Linear(16)(input_size=5)
    model += Relu()
    model += Linear(16)
    model += Relu()
    model += Linear(3)
    pm = ml.compile(model, ml.NumpyBackend())
    params, state, report = load_torch_state_dict(pm, ref.state_dict())
    assert report.ok and state == {}
    assert [m for m, *_ in report.matched] == pm.param_keys
    assert ("linear.weight", "float64", "float32") in report.converted
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(pm.evaluate(params, {"input": x})["output"], expected,
                               rtol=1e-5, atol=1e-5)


def test_mismatches_are_reported():
    pm = ml.compile(create_conv_net(), ml.TorchBackend())

    class Wider(TorchConvNet):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32 * 8 * 8, 12)
            self.extra = nn.Linear(12, 2)

    with pytest.raises(ml.ShapeMismatchError) as err:
        load_torch_state_dict(pm, Wider().state_dict())
    text = str(err.value)
    assert "linear.weight [10, 2048] <- fc.weight [12, 2048]" in text
    assert "linear.bias [10] <- fc.bias [12]" in text
    assert "extra.weight [2, 12]" in text and "unexpected" in text
    params, state, report = load_torch_state_dict(pm, Wider().state_dict(), strict=False)
    assert not report.ok
    assert {k for k, *_ in report.shape_mismatches} == {"linear.weight", "linear.bias"}
    assert [k for k, _ in report.unexpected] == ["extra.weight", "extra.bias"]
    assert set(params) == set(pm.param_keys) - {"linear.weight", "linear.bias"}
    assert len(state) == 4

    sd = TorchConvNet().state_dict()
    del sd["bn2.running_var"]
    with pytest.raises(ml.InputError, match=r"missing.*\n  batchnorm2d_1.running_var \[32\]"):
        load_torch_state_dict(pm, sd)
    with pytest.raises(ml.InputError, match="no parameter, state or layer 'conv9'"):
        load_torch_state_dict(pm, TorchConvNet(), mapping={"conv9": "conv1"})
    with pytest.raises(ml.InputError, match="no entry 'conv1.w'"):
        load_torch_state_dict(pm, TorchConvNet(), mapping={"conv2d.weight": "conv1.w"})
