"""Clear errors where users trip (issue 19): run-time shape clashes, readable symbols, the
canonical input/output rule, inputs created by name, and the smaller cases.

Each test is named by an entry of docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril.framework.shapes import INTERNAL_ID
from mithril.models import (
    LSTM,
    Add,
    Buffer,
    Embedding,
    IOKey,
    Linear,
    Model,
    Multiply,
    Relu,
    Sigmoid,
    ToList,
)
from tests.backend_names import BACKENDS, backend_of
from tests.guide_models import create_conv_net

RNG = np.random.default_rng(19)


def _np(backend: Any, x: Any) -> np.ndarray:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# 1. shapes that clash only at run time
# ----------------------------------------------------------------------------------------------
def _conv_net_fed_10x10(backend: Any) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The guide's ConvNet (its Linear expects 32x32 images) compiled without shapes=."""
    pm = ml.compile(create_conv_net(), backend)
    inputs = {"input": backend.array(RNG.standard_normal((2, 3, 10, 10)))}
    return pm, pm.randomize_params(), inputs, {"output": backend.ones(2, 10)}


def _add_of_2x4_and_3x4(backend: Any) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    pm = ml.compile(Add(), backend)
    inputs = {"left": backend.ones(2, 4), "right": backend.ones(3, 4)}
    return pm, {}, inputs, {"output": backend.ones(2, 4)}


def _linear_plus_y() -> Model:
    model = Model()
    model |= Linear(5)(input_size=3, input="x", output="h")
    model |= Add()(left="h", right="y", output="output")
    return model


def _linear_output_plus_mismatched_input(backend: Any
                                         ) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    pm = ml.compile(_linear_plus_y(), backend)
    inputs = {"x": backend.ones(2, 3), "y": backend.ones(2, 6)}
    return pm, pm.randomize_params(), inputs, {"output": backend.ones(2, 5)}


CLASHES: dict[str, tuple[Callable[..., Any], list[str]]] = {
    # what the message must name: the layers, and the shapes that clash
    "conv-net-10x10": (_conv_net_fed_10x10, [
        "layer 'model.flatten' (Flatten)", "'model.linear' (Linear)", "[2, 32, 2, 2]",
        "2048", "128", "input [2, 3, 10, 10]"]),
    "add-2x4-3x4": (_add_of_2x4_and_3x4, [
        "layer 'add' (Add)", "left: tensor [2, 4]", "right: tensor [3, 4]"]),
    "linear-plus-mismatched-input": (_linear_output_plus_mismatched_input, [
        "layer 'model.add' (Add)", "left: tensor [2, 5]", "right: tensor [2, 6]",
        "x [2, 3], y [2, 6]"]),
}


@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "gradients"])
@pytest.mark.parametrize("case", list(CLASHES))
@pytest.mark.parametrize("name", BACKENDS)
def test_runtime_shape_clash_names_the_layer(name: str, case: str, gradients: bool) -> None:
    backend = backend_of(name)
    make, expected = CLASHES[case]
    pm, params, inputs, grads = make(backend)
    logical = pm.logical_model
    shapes_before = logical.shapes
    with pytest.raises(ml.ShapeMismatchError) as info:
        if gradients:
            pm.evaluate(params, inputs, output_gradients=grads)
        else:
            pm.evaluate(params, inputs)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert not INTERNAL_ID.search(message), message
    cause = info.value.__cause__
    assert cause is not None and not isinstance(cause, ml.MithrilError)  # the framework's
    assert f"{name} raised {type(cause).__name__}" in message
    assert logical.shapes == shapes_before  # the diagnosis changed nothing


@pytest.mark.parametrize("name", BACKENDS)
def test_model_works_after_a_diagnosed_clash(name: str) -> None:
    """After a clash, the same compiled model computes right with fitting inputs."""
    backend = backend_of(name)
    pm = ml.compile(_linear_plus_y(), backend)
    params = pm.randomize_params()
    with pytest.raises(ml.ShapeMismatchError):
        pm.evaluate(params, {"x": backend.ones(2, 3), "y": backend.ones(2, 6)})
    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 5))
    out = pm.evaluate(params, {"x": backend.array(x), "y": backend.array(y)})["output"]
    w, b = _np(backend, params["linear.weight"]), _np(backend, params["linear.bias"])
    np.testing.assert_allclose(_np(backend, out), x @ w.T + b + y, rtol=1e-10, atol=1e-12)


def test_failure_that_is_not_a_shape_clash_is_the_frameworks_error() -> None:
    """An index out of range is not a shape clash: the framework's error goes through,
    with a note naming the generated line that raised it."""
    backend = backend_of("numpy")
    model = Model()
    model |= Embedding(4, 3)
    pm = ml.compile(model, backend)
    with pytest.raises(IndexError) as info:
        pm.evaluate(pm.randomize_params(), {"input": np.array([[1, 9]])})
    assert not isinstance(info.value, ml.MithrilError)
    notes = getattr(info.value, "__notes__", [])
    assert any("line" in n and "generated code" in n and "embedding" in n for n in notes), notes


# ----------------------------------------------------------------------------------------------
# 2. readable symbols
# ----------------------------------------------------------------------------------------------
def _raised(fn: Callable[[], Any]) -> str:
    with pytest.raises(ml.MithrilError) as info:
        fn()
    return str(info.value)


def test_unnamed_symbols_are_named_after_terminal_and_axis() -> None:
    built = Model()
    built |= Linear(4)(input=IOKey("x", shape=[None, 3]), output="h")
    message = _raised(lambda: built.__ior__(
        Add()(left="h", right=IOKey("z", shape=[None, 5]), output="o2")))
    assert "left: tensor [x.dim0, 4]; right: tensor [z.dim0, 5]" in message, message
    assert not INTERNAL_ID.search(message), message
    # compile: the undetermined weight is [4, <the last axis of x>]
    model = Model()
    model |= Linear(4)(input="x", output="h")
    model |= Add()(left="h", right="y", output="out")
    message = _raised(lambda: ml.compile(model, backend_of("numpy")))
    assert "[4, 'x.dim-1']" in message and not INTERNAL_ID.search(message), message
    # listings: model.shapes, summary, connection reprs
    assert model.shapes["linear.weight"] == [4, "x.dim-1"]
    summary = model.summary(print_out=False)
    assert "x.dim-1" in summary and not INTERNAL_ID.search(summary)
    assert "x.dim-1" in repr(model.x)


def test_user_symbol_names_are_kept() -> None:
    model = Model()
    model |= Linear(4)(input="x", output="h")
    model.set_shapes(x=["N", "H", 3])
    message = _raised(lambda: model.set_shapes(h=["M", 7, 5]))
    assert "[N, H, 4]" in message and not INTERNAL_ID.search(message), message


def test_compiled_shapes_and_evaluate_messages_use_derived_names() -> None:
    model = Model()
    model |= Linear(3)(input_size=2)
    backend = backend_of("numpy")
    pm = ml.compile(model, backend, shapes={"input": [None, None, 2]})
    assert pm.shapes["output"] == ["input.dim0", "input.dim1", 3]
    message = _raised(lambda: pm.evaluate(pm.randomize_params(), {"input": backend.ones(4, 2)}))
    assert "[input.dim0, input.dim1, 2]" in message, message


# ----------------------------------------------------------------------------------------------
# 3. the canonical input and output
# ----------------------------------------------------------------------------------------------
def test_canonical_input_is_the_terminal_named_input_not_a_weight() -> None:
    """A block whose first declared terminal is a weight: += feeds its ``input``."""
    block = Model()
    block |= Multiply()(left=IOKey("scale", shape=[1], type=float, differentiable=True),
                        right="input", output="output")
    assert block.cin is block.input and block.cout is block.output
    model = Model()
    model |= Linear(3)(input_size=2)
    model += block
    backend = backend_of("numpy")
    pm = ml.compile(model, backend, shapes={"input": [4, 2]})
    assert sorted(pm.param_keys) == ["linear.bias", "linear.weight", "model.scale"]
    params = pm.randomize_params()
    x = RNG.standard_normal((4, 2))
    out = pm.evaluate(params, {"input": backend.array(x)})["output"]
    w, b, s = (_np(backend, params[k]) for k in ("linear.weight", "linear.bias", "model.scale"))
    np.testing.assert_allclose(_np(backend, out), (x @ w.T + b) * s, rtol=1e-12)


def test_canonical_input_is_never_a_parameter() -> None:
    block = Model()
    block |= Multiply()(left=IOKey("w", shape=[1], type=float, differentiable=True),
                        right="x", output="y")
    assert block.cin is block.x and block.cout is block.y


def test_canonical_output_is_the_terminal_named_output() -> None:
    block = Model()
    block |= Relu()(input="input", output="output")
    block |= Sigmoid()(input="input", output="aux")  # added last, but not named output
    assert block.cout is block.output
    model = Model()
    model |= block(aux="aux")
    model += Linear(2)(input_size=3)
    backend = backend_of("numpy")
    pm = ml.compile(model, backend, shapes={"input": [5, 3]})
    params = pm.randomize_params()
    x = RNG.standard_normal((5, 3))
    out = pm.evaluate(params, {"input": backend.array(x)})
    w, b = _np(backend, params["linear.weight"]), _np(backend, params["linear.bias"])
    np.testing.assert_allclose(out["output"], np.maximum(x, 0) @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(out["aux"], 1 / (1 + np.exp(-x)), rtol=1e-12)


def test_set_cin_and_set_cout_win_and_survive_to_dict() -> None:
    block = Model()
    block |= Add()(left="input", right="other", output="output")
    block |= Relu()(input="other", output="r")
    block.set_cin("other")
    block.set_cout("r")
    assert block.cin is block.other and block.cout is block.r
    again = Model.from_dict(block.to_dict())
    assert again.cin is again.other and again.cout is again.r
    plain = Model()
    plain |= Multiply()(left=IOKey("w", shape=[1], type=float, differentiable=True),
                        right="input", output="output")
    plain2 = Model.from_dict(plain.to_dict())
    assert plain2.cin is plain2.input


# ----------------------------------------------------------------------------------------------
# 4. inputs created by name in the connection algebra
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["iokey", "string"])
def test_input_created_by_name_in_the_algebra(how: str) -> None:
    model = Model()
    model |= Linear(4)(input_size=3, input="input", output="h")
    mask = IOKey("mask_add", shape=[2, 4]) if how == "iokey" else "mask_add"
    model |= Relu()(input=model.h + mask, output="output")
    assert model.mask_add is model.interface()["mask_add"]  # usable by name from then on
    model |= Buffer()(input=model.mask_add * 2.0, output="doubled")
    backend = backend_of("numpy")
    pm = ml.compile(model, backend, shapes={"input": [2, 3], "mask_add": [2, 4]})
    params = pm.randomize_params()
    x, m = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 4))
    out = pm.evaluate(params, {"input": backend.array(x), "mask_add": backend.array(m)})
    w, b = params["linear.weight"], params["linear.bias"]
    np.testing.assert_allclose(out["output"], np.maximum(x @ w.T + b + m, 0), rtol=1e-12)
    np.testing.assert_allclose(out["doubled"], 2 * m, rtol=1e-12)


def test_missing_terminal_attribute_says_how_to_create_it() -> None:
    model = Model()
    model |= Linear(4)(input="input", output="h")
    with pytest.raises(ml.TerminalError) as info:
        _ = model.h + model.mask_add
    assert isinstance(info.value, AttributeError)  # hasattr / getattr(..., default) still work
    assert "IOKey('mask_add')" in str(info.value)
    assert not hasattr(model, "mask_add")


# ----------------------------------------------------------------------------------------------
# 5. the smaller cases
# ----------------------------------------------------------------------------------------------
def test_lstm_without_sequence_length_adds_and_keeps_t_symbolic() -> None:
    """Issue 15: a recurrent layer is a loop over a symbolic length, so it needs no seq_len."""
    model = Model()
    model |= LSTM(4, 8)
    assert model.children
    assert model.shapes["input"] == ["T", "N", 4]


@pytest.mark.parametrize("fails_first", [True, False], ids=["after-a-failure", "twice"])
def test_compiling_a_bare_primitive_leaves_it_free(fails_first: bool) -> None:
    add = Add()
    backend = backend_of("numpy")
    if fails_first:
        with pytest.raises(ml.ShapeMismatchError):
            ml.compile(add, backend, shapes={"left": [2, 3], "right": [4, 5]})
    else:
        ml.compile(add, backend)
    assert add.parent is None
    pm = ml.compile(add, backend, shapes={"left": [2, 3], "right": [2, 3]})
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    out = pm.evaluate({}, {"left": backend.array(a), "right": backend.array(b)})["output"]
    np.testing.assert_allclose(out, a + b, rtol=1e-15)
    model = Model()
    model |= add  # still free to be added to a model
    assert add.parent is model


def test_shape_on_a_list_valued_terminal() -> None:
    model = Model()
    with pytest.raises(ml.TypeMismatchError, match="scalar value .* has no shape"):
        model |= ToList(n=2)(output=IOKey("out", shape=[2, 3]))
    assert not model.children
    model |= ToList(n=2)(input1="a", input2="b", output="out")
    with pytest.raises(ml.TypeMismatchError, match="terminal 'out' is list .* has no shape"):
        model.set_shapes(out=[2])
    assert model.shapes["out"] is None
