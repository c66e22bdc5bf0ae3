"""Every model definition of the guide builds, with the shapes a PyTorch user expects."""

import re

import pytest

from mithril import IOKey
from mithril.models import Add, Gelu, LayerNorm, Linear, Model, Relu, Softmax
from tests.guide_models import (
    create_conv_net,
    create_double_conv,
    create_residual_block,
    create_sequential,
    create_unet,
)


def _row_shape(summary: str, model: str, terminal: str) -> str:
    """The shape printed for ``terminal`` of submodel ``model`` in a summary table."""
    current = None
    for line in summary.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if not line.startswith(" ") and line and not line.startswith("-"):
            current = cells[0] if line.split()[0] not in ("in", "out") else current
        if line.startswith("  ") and cells and not cells[0].startswith(("in ", "out ")):
            current = cells[0]
            cells = cells[1:]
        if current == model and cells and cells[0].startswith(terminal):
            return cells[1]
    raise AssertionError(f"no row for {model} {terminal}")


def test_convnet_shapes_match_pytorch():
    model = create_conv_net()
    text = model.summary(shapes={"input": [32, 3, 32, 32]}, print_out=False)
    assert _row_shape(text, "flatten", "out output") == "[32, 2048]"
    assert _row_shape(text, "maxpool2d_1", "out output") == "[32, 32, 8, 8]"
    assert _row_shape(text, "linear", "in weight") == "[10, 2048]"
    assert "trainable parameters: 25,674" in text  # as torch's ConvNet().parameters()
    # summary(shapes=...) does not change the model
    assert model.shapes["input"][1:] == [3, "u", "u"] or model.shapes["input"][0] != 32


def test_convnet_set_shapes_gives_output_shape():
    model = create_conv_net()
    model.set_shapes(input=[32, 3, 32, 32])
    assert model.shapes["output"] == [32, 10]
    assert list(model.interface())[:3] == ["input", "conv2d.weight", "conv2d.bias"]


def test_sequential_style_flatten_is_1152():
    model = create_sequential()
    model.set_shapes(input=[8, 3, 32, 32])
    text = model.summary(print_out=False)
    assert _row_shape(text, "flatten", "out output") == "[8, 1152]"
    assert model.shapes["output"] == [8, 10]


@pytest.mark.parametrize("cin,cout", [(16, 16), (16, 32)])
def test_residual_block_both_channel_cases(cin, cout):
    block = create_residual_block(cin, cout)
    block.set_shapes(input=["N", cin, 12, 12])
    assert block.shapes["output"] == ["N", cout, 12, 12]
    names = set(block.interface())
    assert {"input", "output"} <= names
    assert ("conv2d_2.weight" in names) == (cin != cout)  # the 1x1 downsample
    assert block.shapes.get("conv2d_2.weight", [cout, cin, 1, 1]) == [cout, cin, 1, 1]


def test_double_conv_and_unet_start():
    unet = create_unet()
    unet.set_shapes(input=[2, 3, 64, 64])
    assert unet.shapes["down2"] == [2, 128, 64, 64]
    assert "model.conv2d.weight" in unet.interface()
    dc = create_double_conv(3, 64)
    assert dc.shapes["conv2d_1.weight"] == [64, 64, 3, 3]


def test_reference_api_composition():
    m = Model(name="mlp")
    m |= Linear(32).connect(input="input")
    m += Relu()
    m += Linear(16).connect(output=IOKey("output"))
    block = Model()
    block |= m.connect(input="input", output="h")
    block |= Add().connect("input", "h", "out")
    assert block.cin is block.input
    assert block.cout is block.h or block.cout is block.out
    assert set(block.interface()) >= {"input", "out", "mlp.linear.weight"}
    block.set_shapes(input=[4, 16])
    assert block.shapes["out"] == [4, 16]
    assert block.shapes["mlp.linear.weight"] == [32, 16]


def test_chain_names_first_input_and_last_output():
    m = Model()
    m |= Linear(4)
    m += Relu()
    m += Linear(2)
    assert m.input_terminals()[0] == "input"
    assert m.output_terminals() == ["output"]


def causal_self_attention(d_model: int, n_head: int) -> Model:
    """A GPT-style attention block written with the reference API's algebra."""
    block = Model(name="attn")
    block |= LayerNorm(d_model, name="ln")(input="input", output="x")
    block |= Linear(3 * d_model, name="c_attn")(input="x", output="qkv")
    shape = block.input.shape
    b, t, c = shape[0], shape[1], shape[2]
    qkv = block.qkv
    heads = []
    for i in range(3):
        part = qkv[:, :, i * d_model:(i + 1) * d_model]
        heads.append(part.reshape((b, t, n_head, c // n_head)).transpose((0, 2, 1, 3)))
    q, k, v = heads
    att = (q @ k.transpose((0, 1, 3, 2))) * (1.0 / (d_model // n_head) ** 0.5)
    block |= Softmax(axis=-1)(input=att, output="att")
    y = (block.att @ v).transpose((0, 2, 1, 3)).reshape((b, t, c))
    block |= Linear(d_model, name="c_proj")(input=y, output="proj")
    block |= Gelu()(input="proj", output="act")
    block |= Add()(left="input", right="act", output=IOKey("output"))
    return block


def test_causal_attention_block_builds_symbolically():
    block = causal_self_attention(16, 4)
    block.set_shapes(input=["B", "T", 16])
    assert block.shapes["output"] == ["B", "T", 16]
    assert block.shapes["c_attn.weight"] == [48, 16]
    assert block.shapes["att"] == ["B", 4, "T", "T"]
