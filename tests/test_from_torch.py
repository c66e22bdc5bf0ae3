"""ml.from_torch: torchvision and HF transformers models (random weights from configs, never
downloaded) converted, compiled on every backend in both modes, and compared with the module
itself; a converted ResNet-18 trains like torch.optim.Adam."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.interop import UnsupportedTorchOpsError, load_torch_state_dict
from tests.backend_names import BACKENDS, backend_of
from tests.torch_zoo import torchvision_models, transformers_module

FLOAT64 = ["numpy", "torch", "jax"]  # MLX computes in float32 on the CPU


def _resnet18() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    net = torchvision_models().resnet18(num_classes=10)
    _randomise_batchnorms(net)
    return net, {"x": torch.randn(4, 3, 64, 64)}  # batch statistics of 4 x 2 x 2 in layer4


def _shufflenet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    net = torchvision_models().shufflenet_v2_x0_5(num_classes=10)
    _randomise_batchnorms(net)
    return net, {"x": torch.randn(2, 3, 32, 32)}


def _mobilenet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    net = torchvision_models().mobilenet_v3_small(num_classes=10, dropout=0.0)
    _randomise_batchnorms(net)
    return net, {"x": torch.randn(2, 3, 32, 32)}


def _token_ids(vocab: int = 60) -> torch.Tensor:
    return torch.randint(1, vocab, (2, 7), generator=torch.Generator().manual_seed(3))


def _bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = transformers_module()
    config = tf.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=48,
                           max_position_embeddings=16, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    return tf.BertModel(config), {"input_ids": _token_ids()}


def _gpt2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = transformers_module()
    config = tf.GPT2Config(vocab_size=60, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                           bos_token_id=0, eos_token_id=0)
    return tf.GPT2LMHeadModel(config), {"input_ids": _token_ids()}


def _vit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = transformers_module()
    config = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                          num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tf.ViTModel(config, add_pooling_layer=True), {
        "pixel_values": torch.randn(2, 3, 16, 16)}


class TinyUNet(nn.Module):
    """A small encoder-decoder with the layers segmentation models use: ceil-mode max and
    average pooling, a transposed convolution, nearest and bilinear resizing, skip joins."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.down = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.up = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.dec2 = nn.Conv2d(32, 8, 3, padding=1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)                                   # 15 x 13
        e2 = self.enc2(self.pool(e1))                       # 8 x 7 (ceil)
        u = self.up(self.down(e2))                          # 5 x 4 -> 10 x 8
        u = nn.functional.interpolate(u, size=e2.shape[-2:], mode="bilinear")
        d = torch.relu(self.dec2(torch.cat([u, e2], 1)))   # 8 x 7
        d = nn.functional.interpolate(self.upsample(d), size=e1.shape[-2:], mode="bilinear",
                                      align_corners=True)  # 16 x 14 -> 15 x 13
        return self.head(torch.cat([d, e1], 1))


def _unet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    net = TinyUNet()
    _randomise_batchnorms(net)
    return net, {"x": torch.randn(2, 3, 15, 13)}


def _lraspp() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """torchvision's LR-ASPP segmentation model (bilinear upsampling of its head)."""
    torchvision_models()
    from torchvision.models import segmentation

    net = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                 num_classes=3)
    _randomise_batchnorms(net)
    return net, {"input": torch.randn(2, 3, 32, 28)}


def _bert_mask() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """BERT with an attention mask (padding at the ends of both sequences)."""
    net, inputs = _bert()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = mask[1, 3:] = 0
    return net, {**inputs, "attention_mask": mask}


def _randomise_batchnorms(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))


CASES: dict[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]] = {
    "resnet18": _resnet18, "shufflenet_v2": _shufflenet, "mobilenet_v3_small": _mobilenet,
    "bert": _bert, "gpt2": _gpt2, "vit": _vit, "unet": _unet, "lraspp": _lraspp,
    "bert_mask": _bert_mask}
OUTPUTS = {"resnet18": ["output"], "shufflenet_v2": ["output"],
           "mobilenet_v3_small": ["output"], "bert": ["last_hidden_state", "pooler_output"],
           "gpt2": ["logits"], "vit": ["last_hidden_state", "pooler_output"],
           "unet": ["output"], "lraspp": ["out"],
           "bert_mask": ["last_hidden_state", "pooler_output"]}
_CACHE: dict[tuple[str, str], Any] = {}


# Convolutional models whose converted graph holds no floating-point constant: the float32
# conversion serves the float64 tests too (with the double module's weights), one torch.export
# each. A constant rounded to float32 would show in the float64 comparison (relative 1e-10).
ONE_CONVERSION = {"shufflenet_v2", "mobilenet_v3_small", "unet", "lraspp"}


def _double(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}


def _converted(case: str, dtype: str) -> tuple[nn.Module, dict[str, torch.Tensor], Any]:
    """The module, its example inputs and ``ml.from_torch``'s result, once per case and dtype
    (module scope: the cache lives as long as the test module)."""
    key = (case, dtype)
    if key not in _CACHE:
        if dtype == "float64" and case in ONE_CONVERSION:
            net, inputs, (model, params, state) = _converted(case, "float32")
            wide = {k: v.astype(np.float64) for k, v in {**params, **state}.items()}
            _CACHE[key] = (copy.deepcopy(net).double(), _double(inputs),
                           (model, {k: wide[k] for k in params}, {k: wide[k] for k in state}))
            return _CACHE[key]
        torch.manual_seed(0)
        net, inputs = CASES[case]()
        if dtype == "float64":
            net = net.double()
            inputs = _double(inputs)
        _CACHE[key] = (net, inputs, ml.from_torch(net, inputs))
    return _CACHE[key]


def _reference(net: nn.Module, inputs: dict[str, torch.Tensor], training: bool
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The module's outputs, and its new BatchNorm statistics, on a copy of the module."""
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    net.train(training)
    try:
        with torch.no_grad():
            result = net(**inputs)
        if isinstance(result, torch.Tensor):
            outs = {"output": result}
        else:
            outs = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
        stats = {k: v.clone() for k, v in net.state_dict().items()}
    finally:
        net.load_state_dict(saved)
        net.eval()
    return ({k: v.numpy() for k, v in outs.items()},
            {k: v.numpy() for k, v in stats.items()})


def _check(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    return err


def _compare(case: str, backend_name: str, dtype: str, training: bool) -> None:
    net, inputs, (model, params, state) = _converted(case, dtype)
    assert sorted(model.output_terminals()) == sorted(OUTPUTS[case])
    backend = backend_of(backend_name, dtype)
    pm = ml.compile(model, backend, inference=not training)
    feed = {k: backend.array(v.numpy()) for k, v in inputs.items()}
    p = {k: backend.array(v) for k, v in params.items()}
    s = {k: backend.array(v) for k, v in state.items()}
    if s:
        outs, new_state = pm.evaluate(p, feed, state=s)
    else:
        outs, new_state = pm.evaluate(p, feed), {}
    expected, stats = _reference(net, inputs, training)
    tol = 1e-5 if dtype == "float32" else 1e-10
    for name, want in expected.items():
        _check(backend.to_numpy(outs[name]), want, tol, f"{case} {name}")
    for name, value in new_state.items():  # training: the running statistics moved alike
        _check(backend.to_numpy(value), stats[name], tol, f"{case} {name}")
    if training and state:
        assert any(not np.array_equal(backend.to_numpy(new_state[k]), state[k]) for k in state)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_float32_inference_equals_the_module(case, backend_name):
    _compare(case, backend_name, "float32", training=False)


# ShuffleNet's and MobileNet's last BatchNorms see a few pixels of a small batch: in training
# mode torch's own float32 result is ~1e-4 (relative) away from its float64 one, so those two
# are compared in training mode in float64, where agreement is exact
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", ["resnet18", "bert", "gpt2", "vit", "unet", "bert_mask"])
def test_float32_training_equals_the_module(case, backend_name):
    _compare(case, backend_name, "float32", training=True)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("backend_name", FLOAT64)
@pytest.mark.parametrize("case", ["resnet18", "bert", "gpt2"])
def test_float64_equals_the_module(case, backend_name, training):
    _compare(case, backend_name, "float64", training)


@pytest.mark.parametrize("case", ["shufflenet_v2", "mobilenet_v3_small", "vit", "unet",
                                  "lraspp", "bert_mask"])
def test_float64_training_more_models(case):
    _compare(case, "torch", "float64", training=True)


def test_attention_mask_is_an_input():
    """The converted BERT reads its attention mask at run time: another mask gives the
    module's output for that mask."""
    net, inputs, (model, params, _) = _converted("bert_mask", "float32")
    assert "attention_mask" in model.input_terminals()
    other = inputs["attention_mask"].clone()
    other[1] = 1
    other[1, 1] = 0
    backend = ml.NumpyBackend()
    pm = ml.compile(model, backend, inference=True)
    got = pm.evaluate(params, {"input_ids": inputs["input_ids"].numpy(),
                               "attention_mask": other.numpy()})["last_hidden_state"]
    expected, _ = _reference(net, {**inputs, "attention_mask": other}, training=False)
    _check(got, expected["last_hidden_state"], 1e-5, "bert with another mask")
    before, _ = _reference(net, inputs, training=False)
    assert np.abs(before["last_hidden_state"] - expected["last_hidden_state"]).max() > 1e-3


class RawConvolutions(nn.Module):
    """``aten.convolution`` itself (what decomposed graphs hold), transposed and not."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.conv = nn.Conv1d(6, 3, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up
        h = torch.ops.aten.convolution(x, up.weight, up.bias, [2, 2], [1, 1], [1, 1], True,
                                       [1, 1], 2)
        h = h.flatten(2)
        c = self.conv
        return torch.ops.aten.convolution(h, c.weight, None, [1], [2], [2], False, [0], 1)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_aten_convolution_converts(backend_name):
    torch.manual_seed(0)
    net = RawConvolutions().double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    model, params, _ = ml.from_torch(net, x)
    backend = backend_of(backend_name)
    got = ml.compile(model, backend, inference=True).evaluate(
        {k: backend.array(v) for k, v in params.items()}, {"x": backend.array(x.numpy())})
    with torch.no_grad():
        want = net(x).numpy()
    _check(backend.to_numpy(got["output"]), want, 1e-10, "aten.convolution")


class Signals(nn.Module):
    """The 1-D layers and the remaining pooling options: ConvTranspose1d, MaxPool1d(ceil_mode),
    linear and nearest resizing, AvgPool2d(divisor_override)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(3, 4, 3, stride=2)
        self.pool = nn.MaxPool1d(3, 2, 1, ceil_mode=True)
        self.avg = nn.AvgPool2d(2, divisor_override=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.up(x))
        h = nn.functional.interpolate(h, scale_factor=1.5, mode="linear", align_corners=True)
        h = nn.functional.interpolate(h, size=17, mode="nearest")
        return self.avg(h.reshape(h.shape[0], 2, 2, 17))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_one_dimensional_layers_convert(backend_name):
    torch.manual_seed(0)
    net = Signals().double()
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    model, params, _ = ml.from_torch(net, x)
    backend = backend_of(backend_name)
    got = ml.compile(model, backend, inference=True).evaluate(
        {k: backend.array(v) for k, v in params.items()}, {"x": backend.array(x.numpy())})
    with torch.no_grad():
        want = net(x).numpy()
    _check(backend.to_numpy(got["output"]), want, 1e-10, "1-d layers")


def test_keys_follow_the_state_dict():
    net, _, (model, params, state) = _converted("resnet18", "float32")
    sd = net.state_dict()
    assert set(params) == {k for k, _ in net.named_parameters()}
    assert set(state) == {k for k in sd if k.endswith(("running_mean", "running_var"))}
    assert "layer2.0.downsample.1.weight" in params and "layer1.0.bn2.running_var" in state
    for k, v in {**params, **state}.items():
        np.testing.assert_array_equal(v, sd[k].numpy(), err_msg=k)
        assert not np.shares_memory(v, sd[k].numpy())
    assert sorted(model.input_terminals()) == sorted(["x", *params, *state])
    # the converted model's own keys load the module's state_dict by name
    pm = ml.compile(model, ml.NumpyBackend(), inference=True)
    _, _, report = load_torch_state_dict(pm, net)
    assert report.ok and {how for *_, how in report.matched} == {"name"}


def test_gpt2_tied_weights_are_one_parameter():
    net, _, (_, params, _) = _converted("gpt2", "float32")
    assert net.lm_head.weight is net.transformer.wte.weight
    tied = {"lm_head.weight", "transformer.wte.weight"} & set(params)
    assert len(tied) == 1, sorted(params)


def test_dropout_keeps_both_modes():
    """Dropout is active in training and the identity in inference, as in the module."""
    tf = transformers_module()
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=48,
                           max_position_embeddings=16, hidden_dropout_prob=0.3,
                           attention_probs_dropout_prob=0.3)
    net = tf.BertModel(config).eval()
    ids = _token_ids()
    model, params, _ = ml.from_torch(net, {"input_ids": ids})
    assert net.training is False  # the module's mode is restored
    backend = ml.NumpyBackend()
    infer = ml.compile(model, backend, inference=True)
    with torch.no_grad():
        expected = net(input_ids=ids).last_hidden_state.numpy()
    got = infer.evaluate(params, {"input_ids": ids.numpy()})["last_hidden_state"]
    _check(got, expected, 1e-5, "inference")
    train = ml.compile(model, backend)
    backend.set_seed(0)
    a = train.evaluate(params, {"input_ids": ids.numpy()})["last_hidden_state"]
    b = train.evaluate(params, {"input_ids": ids.numpy()})["last_hidden_state"]
    assert np.abs(a - b).max() > 1e-2 and np.abs(a - expected).max() > 1e-2


def test_unsupported_operations_are_listed_together():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.cumsum(self.fc(x), dim=1)
            h = torch.erf(h)
            return torch.relu(h).sort(dim=1).values

    with pytest.raises(UnsupportedTorchOpsError) as err:
        ml.from_torch(Odd(), torch.randn(2, 4))
    text = str(err.value)
    assert [op for op, *_ in err.value.unsupported] == ["aten.cumsum", "aten.erf", "aten.sort"]
    assert "test_from_torch.py" in text and "torch.cumsum(self.fc(x), dim=1)" in text
    assert isinstance(err.value, ml.CompileError)


def test_random_values_are_not_frozen_into_constants():
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand(x.shape[1])

    with pytest.raises(UnsupportedTorchOpsError, match=r"aten.rand: random values"):
        ml.from_torch(Noisy(), torch.randn(2, 3))


def test_bad_arguments():
    with pytest.raises(ml.TypeMismatchError, match="torch.nn.Module"):
        ml.from_torch(lambda x: x, torch.randn(2))
    with pytest.raises(ml.ArgumentTypeError, match="example_inputs"):
        ml.from_torch(nn.Linear(2, 2), 3)


def test_resnet18_trains_like_torch_adam():
    """Three Adam steps on the converted ResNet-18 give torch.optim.Adam's losses."""
    torch.manual_seed(0)
    net, _ = _resnet18()
    net = net.double()
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(3, 4, 3, 32, 32, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 10, (3, 4), generator=g)
    model, params, state = ml.from_torch(net, xs[0])
    backend = ml.TorchBackend(dtype=ml.float64)
    pm = ml.compile(model, backend)
    params = {k: backend.array(v) for k, v in params.items()}
    state = {k: backend.array(v) for k, v in state.items()}
    optimizer = ml.Adam(lr=1e-3)
    opt_state = optimizer.init(params)
    losses = []
    for x, y in zip(xs, ys, strict=True):
        logits = backend.to_numpy(pm.evaluate(params, {"x": x}, state=state)[0]["output"])
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        onehot = np.eye(10)[y.numpy()]
        losses.append(float(-(logp * onehot).sum(axis=1).mean()))
        grad_out = (np.exp(logp) - onehot) / len(y)
        _, grads, state = pm.evaluate(params, {"x": x},
                                      output_gradients={"output": backend.array(grad_out)},
                                      state=state)
        params, opt_state = optimizer.update(params, grads, opt_state)
    net.train()
    torch_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    torch_losses = []
    for x, y in zip(xs, ys, strict=True):
        loss = nn.functional.cross_entropy(net(x), y)
        torch_opt.zero_grad()
        loss.backward()
        torch_opt.step()
        torch_losses.append(loss.item())
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-9)
    assert losses[0] != losses[-1]
    for k, v in params.items():
        # Adam moves each weight by about lr per step; the two agree to 1e-5 of a step
        np.testing.assert_allclose(backend.to_numpy(v), net.state_dict()[k].numpy(), rtol=0,
                                   atol=1e-8, err_msg=k)
