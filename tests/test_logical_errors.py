"""Build-time errors: each names the model path, terminal and values, and changes nothing."""

import pytest

from mithril import IOKey, ModelReuseError, ShapeMismatchError, TerminalError, TypeMismatchError
from mithril.models import Add, Conv2d, Flatten, Linear, MaxPool2d, Model, Relu


def _features_2048() -> Model:
    m = Model(name="net")
    m |= Conv2d(in_channels=3, out_channels=32, kernel_size=3, padding=1)
    m += MaxPool2d(kernel_size=4)
    m += Flatten()
    m.set_shapes(input=[8, 3, 32, 32])
    return m


def test_linear_input_size_conflict_names_path_terminal_and_shapes():
    m = _features_2048()
    with pytest.raises(ShapeMismatchError) as err:
        m += Linear(dimension=10)(input_size=100)
    msg = str(err.value)
    assert msg.startswith("net: adding Linear 'linear'")
    assert "terminal 'input'" in msg
    assert "[(V, ...), 100]" in msg and "[8, 2048]" in msg


def test_failed_add_is_rolled_back_completely():
    m = _features_2048()
    before_iface = list(m.interface())
    before_shapes = m.shapes
    with pytest.raises(ShapeMismatchError):
        m += Linear(dimension=10)(input_size=100)
    assert list(m.interface()) == before_iface
    assert m.shapes == before_shapes
    assert len(m.children) == 3
    m += Linear(dimension=10)(input_size=2048)  # the model is still usable
    assert m.shapes["output"] == [8, 10]


def test_set_shapes_conflict_names_terminal_and_rolls_back():
    m = Model()
    m |= Relu()(input="a", output="b")
    with pytest.raises(ShapeMismatchError, match=r"'b'.*\[3, 4\].*\[3, 5\]"):
        m.set_shapes(a=[3, 4], b=[3, 5])
    assert m.shapes["a"] != [3, 4]


def test_model_instance_reuse_is_an_error():
    lin = Linear(3)
    m = Model()
    m |= lin
    with pytest.raises(ModelReuseError, match="already part of"):
        m |= lin
    other = Model()
    with pytest.raises(ModelReuseError):
        other |= lin


def test_changing_a_model_after_adding_it_is_an_error():
    inner = Model()
    inner |= Relu()
    outer = Model()
    outer |= inner
    with pytest.raises(ModelReuseError, match="already part of another model"):
        inner += Relu()


def test_unknown_terminal_lists_the_terminals():
    m = Model()
    with pytest.raises(TerminalError, match="no terminal 'inp'.*input, weight, bias, output"):
        m |= Linear(3)(inp="x")


def test_two_producers_for_one_connection():
    m = Model()
    m |= Relu()(input="a", output="b")
    with pytest.raises(TerminalError, match="'b' is already the output"):
        m |= Relu()(input="c", output="b")


def test_connections_of_different_models_do_not_mix():
    a = Model()
    a |= Relu()(input="x")
    b = Model()
    b |= Relu()(input="y")
    with pytest.raises(TerminalError, match="different models"):
        a.x + b.y
    with pytest.raises(TerminalError, match="belongs to"):
        a |= Relu()(input=b.y)


def test_type_conflict():
    m = Model()
    with pytest.raises(TypeMismatchError, match="'weight'.*float.*int"):
        m |= Linear(3)(weight=IOKey("w", type=int))


def test_adding_an_empty_model():
    with pytest.raises(TerminalError, match="empty model"):
        m = Model()
        m |= Model()


def test_positional_terminals_too_many():
    m = Model()
    with pytest.raises(TerminalError, match="3 terminals"):
        m |= Add().connect("a", "b", "c", "d")


def test_chain_with_unknown_rank_mismatch_in_residual():
    block = Model()
    block |= Linear(8)(input="input", output="h")
    with pytest.raises(ShapeMismatchError):
        block |= Add()(left="h", right=IOKey("input", shape=[2, 3]), output="out")
        block.set_shapes(input=[2, 3])
