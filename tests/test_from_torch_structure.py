"""ml.from_torch keeps the module's structure: one submodel per submodule call, named as in
the module (``layer1`` holding ``0`` holding ``conv1``), parameter keys unchanged, modules
called twice as one submodel per call sharing their parameters, the operations of ``forward``
itself in the top model; the nested model still computes what the module computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
from mithril.framework.logical.model import Model, Operator
from tests.torch_zoo import torchvision_models, transformers_module


def submodels(model: Model) -> list[str]:
    """The names of a model's submodels (not its primitives), in the order they were added."""
    return [c.name for c in model.children if isinstance(c, Model)]


def primitives(model: Model) -> list[str]:
    """The catalogue names of the primitives added to the model itself."""
    return [c.op.name for c in model.children if isinstance(c, Operator)]


def sub(model: Model, *names: str) -> Model:
    """The submodel reached by following ``names``."""
    for name in names:
        found = [c for c in model.children if isinstance(c, Model) and c.name == name]
        assert len(found) == 1, (name, submodels(model))
        model = found[0]
    return model


def relative_error(got: Any, want: Any) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def evaluate(model: Model, params: dict[str, np.ndarray], state: dict[str, np.ndarray],
             inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    wide = any(v.dtype == np.float64 for v in params.values())
    pm = ml.compile(model, ml.NumpyBackend(dtype=ml.float64 if wide else ml.float32),
                    inference=True)
    feed = {k: v.numpy() for k, v in inputs.items()}
    if state:
        return pm.evaluate(params, feed, state=state)[0]
    return pm.evaluate(params, feed)


@pytest.fixture(scope="module")
def resnet18() -> tuple[nn.Module, dict[str, torch.Tensor], Any]:
    torch.manual_seed(0)
    net = torchvision_models().resnet18(num_classes=10).eval()
    inputs = {"x": torch.randn(2, 3, 32, 32)}
    return net, inputs, ml.from_torch(net, inputs)


def test_resnet18_submodels_follow_the_module(resnet18):
    net, inputs, (model, params, state) = resnet18
    assert submodels(model) == [name for name, _ in net.named_children()]
    assert submodels(model) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                "layer3", "layer4", "avgpool", "fc"]
    assert primitives(model) == ["reshape", "buffer"]  # forward's flatten, the output
    assert submodels(sub(model, "layer1")) == ["0", "1"]
    # BasicBlock calls its one ReLU twice: one submodel per call
    assert submodels(sub(model, "layer1", "0")) == ["conv1", "bn1", "relu", "conv2", "bn2",
                                                    "relu_1"]
    assert submodels(sub(model, "layer2", "0")) == ["conv1", "bn1", "relu", "conv2", "bn2",
                                                    "downsample", "relu_1"]
    assert submodels(sub(model, "layer2", "0", "downsample")) == ["0", "1"]
    conv = sub(model, "layer1", "0", "conv1")
    assert conv.path == "model.layer1.0.conv1"
    assert primitives(conv) == ["conv2d"] and submodels(conv) == []
    assert conv.input_terminals() == ["input", "weight"]  # the module's own names
    assert conv.output_terminals() == ["output"]
    block = sub(model, "layer1", "0")
    assert block.bindings[id(conv)]["weight"].key == "conv1.weight"
    bn = sub(model, "layer1", "0", "bn1")
    assert sorted(bn.input_terminals()) == ["bias", "input", "running_mean", "running_var",
                                            "weight"]
    # the compiled model's keys are still exactly the state_dict's
    assert set(params) == {k for k, _ in net.named_parameters()}
    assert set(state) == {k for k in net.state_dict() if k.endswith(("_mean", "_var"))}
    assert sorted(model.input_terminals()) == sorted(["x", *params, *state])
    with torch.no_grad():
        want = net(**inputs).numpy()
    assert relative_error(evaluate(model, params, state, inputs)["output"], want) < 1e-5


def test_summary_lists_the_submodules(resnet18):
    _, _, (model, _, _) = resnet18
    text = model.summary(depth=3, print_out=False)
    labels = [line.split()[0] for line in text.splitlines()[2:-1] if line[:1] != " " or
              line[2:3] != " "]
    for path in ("layer1", "layer1.0", "layer1.0.conv1", "layer1.0.relu_1",
                 "layer2.0.downsample"):
        assert path in labels, path
    assert labels.index("layer1.0.conv1") < labels.index("layer1.0.bn1") < \
        labels.index("layer1.1") < labels.index("layer2")


def test_bert_submodels_follow_the_module():
    tf = transformers_module()
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=48,
                           max_position_embeddings=16, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    net = tf.BertModel(config).eval()
    inputs = {"input_ids": torch.randint(1, 60, (2, 7), generator=torch.Generator()
                                         .manual_seed(3))}
    model, params, _ = ml.from_torch(net, inputs)
    assert submodels(model) == ["embeddings", "encoder", "pooler"]
    assert submodels(sub(model, "embeddings")) == [
        "word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm"]
    # encoder.layer is a ModuleList (never called): its items are the encoder's submodels
    assert submodels(sub(model, "encoder")) == ["layer.0", "layer.1"]
    layer = sub(model, "encoder", "layer.0")
    assert submodels(layer) == ["attention", "intermediate", "output"]
    assert submodels(sub(layer, "attention")) == ["self", "output"]
    assert submodels(sub(layer, "attention", "self")) == ["query", "key", "value"]
    query = sub(layer, "attention", "self", "query")
    assert query.path == "model.encoder.layer.0.attention.self.query"
    assert primitives(query) == ["linear"]
    assert set(params) == {k for k, _ in net.named_parameters()}
    with torch.no_grad():
        want = net(**inputs)
    got = evaluate(model, params, {}, inputs)
    for name in ("last_hidden_state", "pooler_output"):
        assert relative_error(got[name], getattr(want, name).numpy()) < 1e-5, name


def test_gpt2_tied_head_reads_the_embedding():
    tf = transformers_module()
    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=60, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                           bos_token_id=0, eos_token_id=0)
    net = tf.GPT2LMHeadModel(config).eval()
    ids = torch.randint(1, 60, (2, 7), generator=torch.Generator().manual_seed(3))
    model, params, _ = ml.from_torch(net, {"input_ids": ids})
    assert submodels(model) == ["transformer", "lm_head"]
    assert submodels(sub(model, "transformer"))[:3] == ["wte", "wpe", "h.0"]
    assert submodels(sub(model, "transformer", "h.0")) == ["ln_1", "attn", "ln_2", "mlp"]
    # the head and the token embedding share one parameter, as in the module (torch.export
    # names it after its last user: lm_head.weight)
    head, transformer = sub(model, "lm_head"), sub(model, "transformer")
    assert head.input_terminals() == ["input", "weight"]
    tied = model.bindings[id(head)]["weight"]
    assert tied.key in params and tied is model.named[tied.key]
    assert len({"lm_head.weight", "transformer.wte.weight"} & set(params)) == 1
    wte = sub(transformer, "wte")
    # inside the transformer it has the name the transformer has for it
    assert wte.input_terminals() == ["input", "weight"]
    assert transformer.bindings[id(wte)]["weight"].key == "wte.weight"
    assert model.bindings[id(transformer)]["wte.weight"] is tied
    with torch.no_grad():
        want = net(input_ids=ids).logits.numpy()
    got = evaluate(model, params, {}, {"input_ids": ids})["logits"]
    assert relative_error(got, want) < 1e-5


class Reused(nn.Module):
    """One Linear called three times, one ReLU twice, operations in forward itself."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(4, 3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(self.act(self.fc(x)))) * self.fc(x * 2)
        return torch.sigmoid(self.head(h + x))


def test_a_module_called_twice_is_one_submodel_per_call_sharing_parameters():
    torch.manual_seed(0)
    net = Reused().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    model, params, _ = ml.from_torch(net, x)
    assert submodels(model) == ["fc", "act", "fc_1", "act_1", "fc_2", "head"]
    assert primitives(model) == ["multiply", "multiply", "add", "sigmoid", "buffer"]
    assert submodels(sub(model, "head")) == ["0", "1"]
    assert sorted(params) == ["fc.bias", "fc.weight", "head.0.bias", "head.0.weight"]
    weights = {id(model.bindings[id(sub(model, name))]["weight"])
               for name in ("fc", "fc_1", "fc_2")}
    assert weights == {id(model.named["fc.weight"])}  # one parameter, read by every call
    # outputs and the shared weight's gradient (the sum over the three calls) are torch's
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(model, backend)
    grad_out = np.random.default_rng(0).standard_normal((5, 3))
    out, grads = pm.evaluate(params, {"x": x.numpy()}, output_gradients={"output": grad_out})
    xt = x.clone().requires_grad_(True)
    y = net(xt)
    y.backward(torch.from_numpy(grad_out))
    assert relative_error(out["output"], y.detach().numpy()) < 1e-12
    for name, p in net.named_parameters():
        assert relative_error(grads[name], p.grad.numpy()) < 1e-10, name


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.fc(x)
        return h.relu(), h.tanh(), h.sigmoid()


class Crossing(nn.Module):
    """Values that cross calls: a tuple returned by a submodule (one item unused), a value
    of a submodule's submodule read by forward, a submodule that computes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.skip = nn.Identity()
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, _ = self.pair(x)
        return self.out(a * b + self.skip(x)), a


def test_values_crossing_submodel_boundaries():
    torch.manual_seed(0)
    net = Crossing().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    model, params, _ = ml.from_torch(net, x)
    assert submodels(model) == ["pair", "out"]  # Identity computes nothing: no submodel
    pair = sub(model, "pair")
    assert submodels(pair) == ["fc"]
    assert pair.input_terminals() == ["input", "fc.weight", "fc.bias"]
    assert len(pair.output_terminals()) == 2  # the relu and the tanh; the sigmoid is unused
    got = evaluate(model, params, {}, {"x": x})
    with torch.no_grad():
        want = net(x)
    assert relative_error(got["output0"], want[0].numpy()) < 1e-12
    assert relative_error(got["output1"], want[1].numpy()) < 1e-12


def test_an_unsupported_operation_names_its_submodule():
    class Inner(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, 1)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), Inner())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erf(self.block(x))

    with pytest.raises(ml.CompileError) as err:
        ml.from_torch(Outer(), torch.randn(2, 4))
    text = str(err.value)
    assert "aten.cumsum: no Mithril counterpart\n    in block.1 (Inner)\n" in text
    assert "aten.erf: no Mithril counterpart\n    at " in text  # forward's own: no module
