"""The catalogue of bad input (docs/errors.md): each entry raises its exception, names what is
wrong, and is a ``ml.MithrilError`` (never a raw framework or Python traceback).

Every test checks the exception type and message with ``pytest.raises(Type, match=...)`` and
that the exception is a ``MithrilError``. A bug found here is marked ``xfail(strict=True)`` with
the bug as its reason until it is fixed (none is open).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mithril as ml
from mithril import (
    CompileError,
    InputError,
    IOKey,
    MithrilError,
    ModelFileError,
    ModelReuseError,
    ParamsFileError,
    ShapeMismatchError,
    TerminalError,
    TypeMismatchError,
)
from mithril.models import (
    MLP,
    Add,
    BatchNorm2d,
    Buffer,
    Concat,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    LayerNorm,
    Linear,
    LogSoftmax,
    MatrixMultiply,
    MaxPool2d,
    Mean,
    Model,
    Relu,
    Reshape,
    Softmax,
)
from tests.backend_names import BACKENDS, backend_of
from tests.guide_models import create_conv_net
from tests.test_logical_errors import _features_2048  # a [8, 2048] feature extractor


def raises(exc: type[BaseException], match: str, fn: Callable[[], Any]) -> BaseException:
    """``fn()`` raises ``exc`` whose message matches ``match``, and it is a MithrilError."""
    with pytest.raises(exc, match=match) as info:
        fn()
    assert isinstance(info.value, MithrilError), \
        f"{type(info.value).__name__} is not a ml.MithrilError: {info.value}"
    return info.value


def linear_model() -> Model:
    """``y = Linear(3)(x)`` with ``x`` of shape ``[N, 4]``."""
    m = Model()
    m |= Linear(3)(input="x", output="y")
    return m


def compiled_linear(name: str) -> tuple[Any, Any, dict[str, Any], Any]:
    b = backend_of(name)
    pm = ml.compile(linear_model(), b, shapes={"x": ["N", 4]}, jit=False)
    return b, pm, pm.randomize_params(), b.ones(2, 4)


OTHER_ARRAYS: dict[str, Callable[[], Any]] = {
    "numpy": lambda: np.ones((2, 4)),
    "torch": lambda: torch.ones(2, 4, dtype=torch.float64),
    "jax": lambda: ml.JaxBackend(dtype=ml.float64).ones(2, 4),
    "mlx": lambda: ml.MlxBackend(dtype=ml.float64).ones(2, 4),
}


# ==============================================================================================
# Building: shapes, terminals, reuse, empty models
# ==============================================================================================
def _add_mismatch() -> None:
    m = Model()
    m |= Add()(left=IOKey("a", shape=[3, 4]), right=IOKey("b", shape=[3, 5]), output="c")


def _concat_mismatch() -> None:
    m = Model()
    m |= Concat(n=2, dim=1)(input1=IOKey("a", shape=[2, 3]), input2=IOKey("b", shape=[3, 3]),
                            output="c")


def _batchnorm_after_conv() -> None:
    m = Model()
    m |= Conv2d(3, 16, kernel_size=3)
    m += BatchNorm2d(8)


def _matmul_mismatch() -> None:
    m = Model()
    m |= MatrixMultiply()(left=IOKey("a", shape=[2, 3]), right=IOKey("b", shape=[4, 5]),
                          output="c")


def _iokey_contradicts_layer() -> None:
    m = Model()
    m |= Linear(3)(input=IOKey("x", shape=[2, 5]), input_size=4)


def _set_shapes_rank() -> None:
    m = Model()
    m |= BatchNorm2d(3)
    m.set_shapes(input=[2, 3])


def _reshape_size() -> None:
    m = Model()
    m |= Reshape(shape=(5, 5))(input=IOKey("x", shape=[2, 3]), output="y")


def _mean_axis() -> None:
    m = Model()
    m |= Mean(axis=5)(input=IOKey("x", shape=[2, 3]), output="y")


BUILD_SHAPES = [
    pytest.param(lambda: _features_2048().__iadd__(Linear(10)(input_size=100)),
                 r"net: adding Linear 'linear'.*terminal 'input'.*100.*\[8, 2048\]",
                 id="linear-input-size"),
    pytest.param(_add_mismatch, r"dimensions \[4, 5\] cannot be broadcast", id="add-broadcast"),
    pytest.param(_concat_mismatch, r"concat.*dimension 2 does not match 3", id="concat"),
    pytest.param(_batchnorm_after_conv, r"adding BatchNorm2d.*16.*8|8.*16", id="batchnorm-c"),
    pytest.param(_matmul_mismatch, r"'right'.*\[4, 5\]|3.*4", id="matmul-inner"),
    pytest.param(_iokey_contradicts_layer, r"\[2, 5\]", id="iokey-shape"),
    pytest.param(_set_shapes_rank, r"'input'.*\[2, 3\]", id="set-shapes-rank"),
    pytest.param(_reshape_size, r"cannot reshape \[2, 3\] \(6 elements\) into \(5, 5\)",
                 id="reshape"),
    pytest.param(_mean_axis, r"axis 5 is out of range for rank 2", id="mean-axis"),
]


@pytest.mark.parametrize("build,match", BUILD_SHAPES)
def test_shape_mismatch_while_building(build: Callable[[], Any], match: str) -> None:
    raises(ShapeMismatchError, match, build)


def test_failed_add_leaves_the_model_unchanged() -> None:
    m = _features_2048()
    before = (list(m.interface()), m.shapes, len(m.children))
    raises(ShapeMismatchError, "input", lambda: m.__iadd__(Linear(10)(input_size=100)))
    assert (list(m.interface()), m.shapes, len(m.children)) == before


@pytest.mark.parametrize("layer,shape,match", [
    pytest.param(lambda: Conv2d(3, 4, kernel_size=9), [2, 3, 4, 4],
                 r"window of size 9 .* does not fit an input of 4", id="conv-kernel"),
    pytest.param(lambda: MaxPool2d(9), [2, 3, 4, 4], r"window of size 9", id="pool-kernel"),
    pytest.param(lambda: MaxPool2d(2, padding=2), [2, 3, 4, 4],
                 r"padding \(2, 2\) should be at most half of kernel size 2", id="pool-padding"),
    pytest.param(lambda: Linear(3)(input_size=4), [2, 5], r"\[2, 5\]", id="compile-shapes"),
    pytest.param(lambda: Softmax(dim=5), [2, 3], r"axis 5 .*rank 2", id="softmax-axis"),
    pytest.param(lambda: LogSoftmax(dim=-3), [2, 3], r"axis -3 .*rank 2",
                 id="log-softmax-axis"),
])
def test_shape_mismatch_while_compiling(layer: Callable[[], Any], shape: list[int],
                                        match: str) -> None:
    """Found when the layer is made (constants contradict) or compiled with the shapes."""
    def run() -> None:
        m = Model()
        m |= layer()
        ml.compile(m, ml.NumpyBackend(), shapes={"input": shape})
    raises(ShapeMismatchError, match, run)


def test_unknown_terminal_lists_the_terminals() -> None:
    m = Model()
    raises(TerminalError, r"no terminal 'inp'.*input, weight, bias, output",
           lambda: m.__ior__(Linear(3)(inp="x")))


def test_terminal_given_twice_and_too_many_positional() -> None:
    m = Model()
    raises(TerminalError, r"3 terminals", lambda: m.__ior__(Add().connect("a", "b", "c", "d")))
    raises(TerminalError, r"'left' of Add given twice",
           lambda: m.__ior__(Add().connect("a", left="b")))


def test_two_producers_and_constant_outputs() -> None:
    m = Model()
    m |= Relu()(input="a", output="b")
    raises(TerminalError, r"'b' is already the output", lambda: m.__ior__(
        Relu()(input="c", output="b")))
    raises(TerminalError, r"output 'output' of Relu cannot be set to the constant",
           lambda: m.__ior__(Relu()(input="a", output=3.0)))


def test_connections_of_another_model() -> None:
    a, b = Model(), Model()
    a |= Relu()(input="x")
    b |= Relu()(input="y")
    raises(TerminalError, r"different models", lambda: a.x + b.y)
    raises(TerminalError, r"belongs to", lambda: a.__ior__(Relu()(input=b.y)))


def test_model_reused() -> None:
    lin = Linear(3)
    m = Model()
    m |= lin
    raises(ModelReuseError, r"already part of", lambda: m.__ior__(lin))
    raises(ModelReuseError, r"already part of", lambda: Model().__ior__(lin))
    raises(ModelReuseError, r"cannot add model .* to itself", lambda: m.__ior__(m))
    inner = Model()
    inner |= Relu()
    outer = Model()
    outer |= inner
    raises(ModelReuseError, r"already part of another model", lambda: inner.__iadd__(Relu()))
    relu = Relu()
    Model().__ior__(relu)
    raises(CompileError, r"relu is part of another model; compile that model instead",
           lambda: ml.compile(relu, ml.NumpyBackend()))


def test_duplicate_child_names() -> None:
    m = Model()
    m |= Linear(2, name="l")(input="x", output="y")
    raises(TerminalError, r"already has a submodel named 'l'",
           lambda: m.__ior__(Linear(2, name="l")(input="y", output="z")))


def test_empty_models() -> None:
    raises(TerminalError, r"cannot add empty model", lambda: Model().__ior__(Model()))
    raises(TerminalError, r"cannot add empty model", lambda: Model().__iadd__(Model()))
    raises(CompileError, r"model model is empty", lambda: ml.compile(Model(),
                                                                     ml.NumpyBackend()))


def test_element_types_contradict() -> None:
    m = Model()
    raises(TypeMismatchError, r"'weight'.*float.*int",
           lambda: m.__ior__(Linear(3)(weight=IOKey("w", type=int))))


# ==============================================================================================
# Compiling
# ==============================================================================================
@pytest.mark.parametrize("layer,key", [
    (lambda: Linear(3), "linear.weight"),
    (lambda: Conv2d(out_channels=4, kernel_size=3), "conv2d.weight"),
    (lambda: LayerNorm(), "layernorm.weight"),
    (lambda: Embedding(), "embedding.weight"),
])
def test_undeterminable_parameter_shapes(layer: Callable[[], Any], key: str) -> None:
    m = Model()
    m |= layer()
    raises(CompileError, rf"cannot determine the shape of parameter '{re.escape(key)}'.*"
           r"shapes=", lambda: ml.compile(m, ml.NumpyBackend()))


def test_trainable_input_with_a_symbolic_dim() -> None:
    """A trainable input is a parameter: its whole shape must be known."""
    raises(CompileError, r"cannot determine the shape of parameter 'x' \(so far \['N', 4\]\)",
           lambda: ml.compile(linear_model(), ml.NumpyBackend(), shapes={"x": ["N", 4]},
                              trainable_keys={"x"}))


def test_undeterminable_state_shape() -> None:
    m = Model()
    m |= BatchNorm2d(affine=False)
    raises(CompileError, r"cannot determine the shape of state 'batchnorm2d.running_mean'",
           lambda: ml.compile(m, ml.NumpyBackend()))


def test_cycles() -> None:
    m = Model()
    m |= Add()(left="a", right="b", output="c")
    m |= Relu()(input="c", output="b")
    m |= Buffer()(input="c", output=IOKey("out"))
    raises(CompileError, r"cycle through: add at add, relu at relu.*cannot depend on itself",
           lambda: ml.compile(m, ml.NumpyBackend(), shapes={"a": [2]}))
    inner = Model()
    inner |= Relu()(input="input", output="output")
    outer = Model()
    outer |= inner(input="h", output="h")
    outer |= Relu()(input="h", output=IOKey("out"))
    raises(CompileError, r"cycle", lambda: ml.compile(outer, ml.NumpyBackend(),
                                                      shapes={"h": [2]}))


def test_closed_cycle_without_outputs() -> None:
    m = Model()
    m |= Relu()(input="a", output="a")
    raises(CompileError, r"cycle through: relu at relu", lambda: ml.compile(m, ml.NumpyBackend()))


def test_disconnected_parts_compile_and_discarded_parts_need_no_input() -> None:
    """Not an error: independent parts are independent outputs; discarding one part's output
    makes its input optional."""
    m = Model()
    m |= Relu()(input="a", output="b")
    m |= Relu()(input="c", output="d")
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(m, b, shapes={"a": [2], "c": [3]})
    assert pm.output_keys == ["b", "d"] and pm.data_keys == {"a", "c"}
    pm = ml.compile(m, b, shapes={"a": [2], "c": [3]}, discard_keys={"d"})
    assert pm.data_keys == {"a"}
    assert set(pm.evaluate({}, {"a": np.ones(2)})) == {"b"}


@pytest.mark.parametrize("option,match", [
    ({"data_keys": {"nope"}}, r"'nope' is not an input of the model; inputs: x"),
    ({"trainable_keys": {"nope"}}, r"'nope' is not an input of the model"),
    ({"discard_keys": {"nope"}}, r"discard key 'nope' is not an output of the model; outputs: y"),
    ({"outputs": ["nope"]}, r"output 'nope' is not a connection of the model"),
    ({"trainable_keys": {"x"}, "data_keys": {"x"}},
     r"\['x'\] are listed both as data_keys and trainable_keys"),
])
def test_compile_options_naming_nothing(option: dict[str, Any], match: str) -> None:
    raises(CompileError, match, lambda: ml.compile(linear_model(), ml.NumpyBackend(),
                                                   shapes={"x": [2, 4]}, **option))


@pytest.mark.parametrize("option", [{"shapes": {"nope": [2, 4]}},
                                    {"constant_keys": {"nope": np.ones(3)}}])
def test_compile_keys_naming_no_terminal(option: dict[str, Any]) -> None:
    raises(TerminalError, r"no terminal 'nope'; terminals: x, linear.weight",
           lambda: ml.compile(linear_model(), ml.NumpyBackend(), **option))


def test_constant_of_wrong_shape() -> None:
    raises(ShapeMismatchError, r"constant 'x' has shape \[3, 3\].*\[2, 4\]", lambda: ml.compile(
        linear_model(), ml.NumpyBackend(), shapes={"x": [2, 4]},
        constant_keys={"x": np.ones((3, 3))}))


# ==============================================================================================
# Evaluating: keys, shapes, dtypes, state, output gradients (every backend)
# ==============================================================================================
@pytest.mark.parametrize("name", BACKENDS)
def test_missing_unknown_and_extra_keys(name: str) -> None:
    _, pm, p, x = compiled_linear(name)
    raises(InputError, r"inputs: missing \['x'\]; expected \['x'\]", lambda: pm.evaluate(p, {}))
    raises(InputError, r"inputs: unknown \['z'\]", lambda: pm.evaluate(p, {"x": x, "z": x}))
    bad = dict(p)
    del bad["linear.bias"]
    raises(InputError, r"params: missing \['linear.bias'\].*randomize_params",
           lambda: pm.evaluate(bad, {"x": x}))
    raises(InputError, r"params: unknown \['extra'\]",
           lambda: pm.evaluate({**p, "extra": x}, {"x": x}))
    raises(InputError, r"output_gradients has unknown keys \['z'\]; outputs are \['y'\]",
           lambda: pm.evaluate(p, {"x": x}, output_gradients={"z": x}))
    raises(InputError, r"state: unknown \['s'\]", lambda: pm.evaluate(p, {"x": x},
                                                                       state={"s": x}))
    raises(InputError, r"needs a 'final_cost' output",
           lambda: pm.evaluate(p, {"x": x}, output_gradients=True))


@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_shapes_at_evaluate(name: str) -> None:
    b, pm, p, x = compiled_linear(name)
    raises(ShapeMismatchError, r"input 'x' has shape \[2, 5\].*\[N, 4\] \(axis 1 must be 4\)",
           lambda: pm.evaluate(p, {"x": b.ones(2, 5)}))
    raises(ShapeMismatchError, r"input 'x' has shape \[4\]", lambda: pm.evaluate(
        p, {"x": b.ones(4)}))
    raises(ShapeMismatchError, r"parameter 'linear.bias' has shape \[4\].*\[3\]",
           lambda: pm.evaluate({**p, "linear.bias": b.ones(4)}, {"x": x}))


@pytest.mark.parametrize("name", BACKENDS)
def test_symbol_bound_twice(name: str) -> None:
    b = backend_of(name)
    m = Model()
    m |= Linear(3)(input="a", output="h")
    m |= Linear(3)(input="c", output="g")
    m |= Add()(left="h", right="g", output="out")
    pm = ml.compile(m, b, shapes={"a": ["N", 4], "c": ["N", 4]}, jit=False)
    raises(ShapeMismatchError, r"input 'c' has N = 3 at axis 0, but input 'a' has N = 2",
           lambda: pm.evaluate(pm.randomize_params(), {"a": b.ones(2, 4), "c": b.ones(3, 4)}))


@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_dtypes_at_evaluate(name: str) -> None:
    b, pm, p, x = compiled_linear(name)
    raises(TypeMismatchError, r"parameter 'linear.bias' is .*float32.*ml.float64",
           lambda: pm.evaluate({**p, "linear.bias": b.ones(3, dtype=ml.float32)}, {"x": x}))
    raises(TypeMismatchError, r"parameter 'linear.bias' is .*int64.*ml.float64",
           lambda: pm.evaluate({**p, "linear.bias": b.ones(3, dtype=ml.int64)}, {"x": x}))
    raises(TypeMismatchError, r"input 'x' is a builtins list",
           lambda: pm.evaluate(p, {"x": [[1.0] * 4] * 2}))
    raises(TypeMismatchError, r"input 'x' is a builtins NoneType",
           lambda: pm.evaluate(p, {"x": None}))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_data_input_of_another_precision(name: str, dtype: str) -> None:
    b, pm, p, _ = compiled_linear(name)
    raises(TypeMismatchError, rf"input 'x' is .*{dtype}.*compiled for .*ml.float64",
           lambda: pm.evaluate(p, {"x": b.ones(2, 4, dtype=getattr(ml, dtype))}))


def _framework_pairs(what: str) -> list[Any]:
    """(backend, other framework) pairs; JaxBackend takes NumPy arrays (as jax.numpy does)."""
    return [pytest.param(name, other, id=f"{name}-given-{other}-{what}")
            for name in BACKENDS for other in BACKENDS
            if other != name and not (name == "jax" and other == "numpy")]


@pytest.mark.parametrize("name,other", _framework_pairs("param"))
def test_parameter_of_another_framework(name: str, other: str) -> None:
    b, pm, p, x = compiled_linear(name)
    raises(TypeMismatchError, r"parameter 'linear.weight' is a .*compiled for "
           rf"{name} arrays", lambda: pm.evaluate(
               {**p, "linear.weight": b.to_numpy(p["linear.weight"]) if other == "numpy"
                else backend_of(other).array(b.to_numpy(p["linear.weight"]))}, {"x": x}))


@pytest.mark.parametrize("name,other", _framework_pairs("input"))
def test_data_input_of_another_framework(name: str, other: str) -> None:
    _, pm, p, _ = compiled_linear(name)
    raises(TypeMismatchError, r"input 'x' is a .*compiled for", lambda: pm.evaluate(
        p, {"x": OTHER_ARRAYS[other]()}))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["int64", "bool_"])
def test_integer_data_for_a_float_input(name: str, dtype: str) -> None:
    b, pm, p, _ = compiled_linear(name)
    raises(TypeMismatchError, r"input 'x' is .*(int64|bool)",
           lambda: pm.evaluate(p, {"x": b.ones(2, 4, dtype=getattr(ml, dtype))}))


@pytest.mark.parametrize("name", BACKENDS)
def test_which_inputs_are_float_inputs(name: str) -> None:
    """A float input meets the parameters, also through layers that keep ints (Flatten);
    inputs that meet none (labels compared with predictions) and int-only inputs (Embedding
    indices) take ints."""
    b = backend_of(name)
    m = Model()
    m |= Flatten()(input="x", output="h")
    m |= Linear(3)(input="h", output="y")
    pm = ml.compile(m, b, shapes={"x": [2, 2, 2]}, jit=False)
    raises(TypeMismatchError, r"input 'x' is .*int64.*meets the model's parameters",
           lambda: pm.evaluate(pm.randomize_params(), {"x": b.ones(2, 2, 2, dtype=ml.int64)}))
    m = Model()
    m |= Embedding(10, 4)(input="i", output="e")
    m |= Add()(left="e", right="a", output="s")
    m |= Relu()(input="s", output=IOKey("r"))
    pm = ml.compile(m, b, shapes={"i": [3], "a": [3, 4]}, jit=False)
    ints = b.array(np.array([1, 2, 3]))
    out = pm.evaluate(pm.randomize_params(), {"i": ints, "a": b.ones(3, 4)})
    assert b.to_numpy(out["r"]).shape == (3, 4)
    m = Model()
    m |= Add()(left="p", right="t", output="s")  # no parameters: ints are fine
    pm = ml.compile(m, b, shapes={"p": [3], "t": [3]}, jit=False)
    out = pm.evaluate({}, {"p": b.ones(3), "t": ints})
    np.testing.assert_allclose(b.to_numpy(out["s"]), [2.0, 3.0, 4.0])


@pytest.mark.parametrize("name", BACKENDS)
def test_output_gradient_of_wrong_shape(name: str) -> None:
    b, pm, p, x = compiled_linear(name)
    for wrong in (b.ones(5, 7), b.ones(3)):
        raises(ShapeMismatchError, r"output gradient of 'y' has shape .*\[2, 3\]",
               lambda wrong=wrong: pm.evaluate(p, {"x": x}, output_gradients={"y": wrong}))


def test_output_gradient_of_another_framework() -> None:
    _, pm, p, x = compiled_linear("torch")
    raises(TypeMismatchError, r"output gradient of 'y'", lambda: pm.evaluate(
        p, {"x": x}, output_gradients={"y": np.ones((2, 3))}))


def _bn_compiled(name: str) -> tuple[Any, Any, dict[str, Any], Any]:
    b = backend_of(name)
    m = Model()
    m |= BatchNorm2d(3)
    pm = ml.compile(m, b, shapes={"input": [2, 3, 4, 4]}, jit=False)
    return b, pm, pm.randomize_params(), b.randn(2, 3, 4, 4)


@pytest.mark.parametrize("name", BACKENDS)
def test_state_keys(name: str) -> None:
    _, pm, p, x = _bn_compiled(name)
    raises(InputError, r"state: missing \['batchnorm2d.running_mean', "
           r"'batchnorm2d.running_var'\]", lambda: pm.evaluate(p, {"input": x}, state={}))


@pytest.mark.parametrize("name", BACKENDS)
def test_state_of_wrong_shape(name: str) -> None:
    b, pm, p, x = _bn_compiled(name)
    state = {**pm.initial_state_dict, "batchnorm2d.running_mean": b.zeros(5)}
    raises(ShapeMismatchError, r"'batchnorm2d.running_mean' has shape \[5\].*\[3\]",
           lambda: pm.evaluate(p, {"input": x}, state=state))

    def assign() -> None:
        pm.state = state
    raises(ShapeMismatchError, r"'batchnorm2d.running_mean'", assign)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("transform", ["jit", "vmap"])
def test_state_inside_jax_transformations(transform: str, jit: bool) -> None:
    """Without state=, traced new state is never stored on the model: InputError, and
    compiled.state (and later calls) are as before; with state= the function is pure."""
    import jax

    b = backend_of("jax")
    m = Model()
    m |= BatchNorm2d(3)
    pm = ml.compile(m, b, shapes={"input": [2, 3, 4, 4]}, jit=jit)
    p, x = pm.randomize_params(), b.randn(2, 3, 4, 4)
    before = {k: b.to_numpy(v) for k, v in pm.state.items()}
    if transform == "jit":
        def implicit() -> Any:
            return jax.jit(lambda p: pm.evaluate(p, {"input": x})["output"])(p)
    else:  # (under jax.grad the statistics are concrete: stop_gradient; storing them is fine)
        def implicit() -> Any:
            return jax.vmap(lambda x: pm.evaluate(p, {"input": x})["output"])(x[None])
    with jax.enable_x64(True):  # a float64 model in the user's own transformation
        raises(InputError, r"without state= was called inside a JAX transformation.*"
               r"'batchnorm2d.running_mean'.*compiled.state is left unchanged.*state=state",
               implicit)
    assert all(type(v) is type(b.zeros(1)) for v in pm.state.values())
    assert {k: b.to_numpy(v).tolist() for k, v in pm.state.items()} == \
        {k: v.tolist() for k, v in before.items()}
    # explicit state inside jax.jit: the state an eager call outside computes
    with jax.enable_x64(True):
        out, new_state = jax.jit(lambda p, s: pm.evaluate(p, {"input": x}, state=s))(p,
                                                                                   pm.state)
    eager_out = pm.evaluate(p, {"input": x})  # outside any transformation: stores state
    np.testing.assert_allclose(b.to_numpy(out["output"]), b.to_numpy(eager_out["output"]),
                               rtol=1e-12, atol=1e-12)
    for k, v in new_state.items():
        np.testing.assert_allclose(b.to_numpy(v), b.to_numpy(pm.state[k]), rtol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_rng_of_wrong_type(name: str) -> None:
    b = backend_of(name)
    m = Model()
    m |= Dropout(0.5)
    pm = ml.compile(m, b, shapes={"input": [4]})
    raises(TypeMismatchError, rf"rng is a builtins int; {name} random layers take ",
           lambda: pm.evaluate({}, {"input": b.ones(4)}, rng=3))


@pytest.mark.parametrize("name", BACKENDS)
def test_state_and_output_gradients_of_another_dtype_or_framework(name: str) -> None:
    b, pm, p, x = _bn_compiled(name)
    key = "batchnorm2d.running_var"
    f32 = {**pm.initial_state_dict, key: b.ones(3, dtype=ml.float32)}
    raises(TypeMismatchError, rf"state '{key}' is .*float32.*ml.float64",
           lambda: pm.evaluate(p, {"input": x}, state=f32))
    other = {**pm.initial_state_dict,
             key: torch.ones(3, dtype=torch.float64) if name != "torch" else np.ones(3)}
    raises(TypeMismatchError, rf"state '{key}' is a .*compiled for {name} arrays",
           lambda: pm.evaluate(p, {"input": x}, state=other))
    raises(TypeMismatchError, r"output gradient of 'output' is .*float32.*ml.float64",
           lambda: pm.evaluate(p, {"input": x}, output_gradients={
               "output": b.ones(2, 3, 4, 4, dtype=ml.float32)}))


@pytest.mark.parametrize("name", BACKENDS)
def test_gradients_of_an_inference_model(name: str) -> None:
    b, _, p, x = _bn_compiled(name)
    m = Model()
    m |= BatchNorm2d(3)
    pi = ml.compile(m, b, shapes={"input": [2, 3, 4, 4]}, inference=True, jit=False)
    raises(CompileError, r"compiled with inference=True and has no gradient code",
           lambda: pi.evaluate(p, {"input": x}, output_gradients={"output": x}))


# ---- wrong argument types and values: ml.ArgumentTypeError / ml.ArgumentError ---------------
def _evaluate_with(**kw: Any) -> Callable[[], Any]:
    def run() -> Any:
        _, pm, p, x = compiled_linear("numpy")
        args = {"params": p, "inputs": {"x": x}, **kw}
        return pm.evaluate(**args)
    return run


ARGUMENTS = [
    ("compile-backend", lambda: ml.compile(linear_model(), "numpy"), TypeError,
     r"backend must be a Mithril backend"),
    ("compile-model", lambda: ml.compile("model", ml.NumpyBackend()), TypeError,
     r"compile needs a model"),
    ("shapes-template", lambda: ml.compile(linear_model(), ml.NumpyBackend(),
                                           shapes={"x": "abc"}), TypeError,
     r"a shape must be a list or tuple"),
    ("shapes-negative", lambda: ml.compile(linear_model(), ml.NumpyBackend(),
                                           shapes={"x": [-2, 4]}), ValueError,
     r"negative dimension -2"),
    ("shapes-float", lambda: ml.compile(linear_model(), ml.NumpyBackend(),
                                        shapes={"x": [2.5, 4]}), ValueError,
     r"invalid dimension 2.5"),
    ("backend-dtype", lambda: ml.NumpyBackend(dtype=ml.int32), TypeError,
     r"a backend's dtype is its float precision"),
    ("backend-dtype-name", lambda: ml.NumpyBackend(dtype="float65"), TypeError,
     r"unknown dtype 'float65'"),
    ("backend-device", lambda: ml.NumpyBackend(device="quantum"), ValueError,
     r"unknown device 'quantum'"),
    ("set-seed", lambda: ml.NumpyBackend().set_seed("a"), TypeError, r"seed must be an int"),
    ("iokey-name", lambda: IOKey(3), TypeError, r"IOKey name must be a string"),
    ("model-name", lambda: Model(name=3), TypeError, r"model name must be a string"),
    ("conv-kernel", lambda: Conv2d(3, 4), ValueError, r"Conv2d needs kernel_size"),
    ("dropout-p", lambda: Dropout(1.5), ValueError, r"p must be a probability in \[0, 1\)"),
    ("batchnorm-momentum", lambda: BatchNorm2d(3, momentum=2), ValueError,
     r"momentum must be a float in \[0, 1\]"),
    ("groupnorm-groups", lambda: GroupNorm(3, 4), ValueError,
     r"num_channels=4 is not divisible by num_groups=3"),
    ("maxpool-indices", lambda: MaxPool2d(2, return_indices=True), ValueError,
     r"return_indices is not supported"),
    ("maxpool-ceil-padding", lambda: MaxPool2d(2, padding=2, ceil_mode=True), ValueError,
     r"should be at most half of kernel size"),
    ("mlp-empty", lambda: MLP([], []), ValueError, r"MLP needs at least one layer"),
    ("mlp-templates-key", lambda: MLP([Relu()], [2], input_name_templates={"w": "a"}),
     ValueError, r"input_name_templates takes the keys 'weight' and 'bias'.*'w': 'a'"),
    ("mlp-templates-type", lambda: MLP([Relu()], [2], input_name_templates="w"), TypeError,
     r"input_name_templates must be a dict.*got 'w'"),
    ("mlp-templates-clash", lambda: MLP([Relu()], [2], input_name_templates={"bias": "weight"}),
     ValueError, r"same names"),
    ("mlp-unknown-param", lambda: MLP([Relu()], [2], weight1=np.ones((2, 2))), ValueError,
     r"MLP has no parameter 'weight1'; its parameters: bias0, weight0"),
    ("mlp-positional-param", lambda: MLP([Relu()], [2])("x", "y", "w"), ValueError,
     r"at most 2 positional terminals \(input, output\).*bias0, weight0"),
    ("state-type", _evaluate_with(state=[1]), TypeError, r"state must be a dict"),
    ("output-gradients-type", _evaluate_with(output_gradients=[1]), TypeError,
     r"output_gradients must be a dict"),
]


@pytest.mark.parametrize("case,fn,exc,match", [pytest.param(*a, id=a[0]) for a in ARGUMENTS])
def test_wrong_arguments_raise_mithril_errors(case: str, fn: Callable[[], Any],
                                              exc: type[BaseException], match: str) -> None:
    """The exception keeps its built-in class (``except TypeError`` works) and is a
    MithrilError, like ``TypeMismatchError`` (a ``TypeError``) and ``CompileError``:
    ``ml.ArgumentTypeError`` / ``ml.ArgumentError`` (``TypeMismatchError`` for evaluate's
    arguments)."""
    err = raises(exc, match, fn)
    assert isinstance(err, ml.ArgumentTypeError | TypeMismatchError if exc is TypeError
                      else ml.ArgumentError)


@pytest.mark.parametrize("what", ["params", "inputs"])
def test_params_and_inputs_must_be_dicts(what: str) -> None:
    _, pm, p, x = compiled_linear("numpy")
    args = {"params": p, "inputs": {"x": x}}
    args[what] = [x]
    raises(TypeMismatchError, rf"{what} must be a dict", lambda: pm.evaluate(**args))


def test_unavailable_device() -> None:
    raises(ml.BackendUnavailableError, r"cannot use device 'cuda' on this machine",
           lambda: ml.NumpyBackend(device="cuda"))


@pytest.mark.parametrize("name", ["numpy", "mlx"])
def test_device_mesh_on_a_backend_without_parallelism(name: str) -> None:
    """NumPy and MLX take device_mesh= (like JAX and PyTorch) and refuse it alike, at
    construction and on the creators."""
    cls = {"numpy": ml.NumpyBackend, "mlx": ml.MlxBackend}[name]
    message = (rf"device_mesh=\(2,\): parallelism needs JAX or PyTorch: {cls.__name__} has no "
               r"device meshes.*ml.JaxBackend\(device_mesh=...\)")
    raises(ml.BackendUnavailableError, message, lambda: cls(device_mesh=(2,)))
    raises(ml.BackendUnavailableError, message, lambda: cls().ones(2, 2, device_mesh=(2,)))
    assert cls(device_mesh=None).device_mesh is None


# ==============================================================================================
# Hostile terminal names (every backend, JAX and MLX jitted)
# ==============================================================================================
HOSTILE = ["x; import os", "__import__('os').system('echo hacked')", "a'b\"c", "def", "1x",
           "x\ny = 1", "", "\x00", "a" * 3000, "é", "x y", "$", "linear", "relu", "add",
           "forward", "params", "data", "state", "rng", "constants", "split_rng",
           "zeros_like", "dtype_float64", "__builtins__", "cache", "output_gradients",
           "backward", "tuple", "return", "None", "state/x", "input.weight"]


@pytest.mark.parametrize("name", BACKENDS)
def test_hostile_terminal_names_compute_correctly(name: str) -> None:
    """Any string is a valid terminal name: it never changes what the code computes."""
    b = backend_of(name)
    rng = np.random.default_rng(0)
    for term in HOSTILE:
        m = Model()
        m |= Linear(3)(input=term, output=IOKey(term + "!", expose=True),
                       weight=IOKey(term + "w"), bias=term + "b")
        m += Relu()(output=IOKey(term + "?"))
        pm = ml.compile(m, b, shapes={term: [2, 4]}, jit=name in ("jax", "mlx"))
        w, bias, x = (rng.standard_normal(s) for s in ((3, 4), (3,), (2, 4)))
        out, grads = pm.evaluate({term + "w": b.array(w), term + "b": b.array(bias)},
                                 {term: b.array(x)}, output_gradients={term + "?": b.ones(2, 3)})
        ref = x @ w.T + bias
        np.testing.assert_allclose(b.to_numpy(out[term + "!"]), ref, rtol=1e-12,
                                   err_msg=repr(term))
        np.testing.assert_allclose(b.to_numpy(out[term + "?"]), np.maximum(ref, 0), rtol=1e-12)
        np.testing.assert_allclose(b.to_numpy(grads[term + "b"]), (ref > 0).sum(0))


# ==============================================================================================
# NaN and Inf: Mithril does not inspect values; they propagate as in PyTorch
# ==============================================================================================
_NAN_INPUT = np.array([[np.nan, 1.0, -2.0, np.inf], [-np.inf, 0.5, 3.0, -1.0]])
_F = torch.nn.functional
NAN_LAYERS: dict[str, tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (Relu, torch.relu),
    "softmax": (lambda: Softmax(dim=-1), lambda t: torch.softmax(t, -1)),
    "log_softmax": (lambda: LogSoftmax(dim=-1), lambda t: torch.log_softmax(t, -1)),
    "mean": (lambda: Mean(axis=-1), lambda t: t.mean(-1)),
    "layer_norm": (lambda: LayerNorm(4, elementwise_affine=False),
                   lambda t: _F.layer_norm(t, (4,))),
    "linear": (lambda: Linear(2, use_bias=False), None),
    "maxpool": (lambda: MaxPool2d(2), lambda t: _F.max_pool2d(t, 2)),
}


def _nan_cases() -> list[Any]:
    cases = []
    for name in BACKENDS:
        for layer in NAN_LAYERS:
            cases.append(pytest.param(name, layer, id=f"{name}-{layer}"))
    return cases


@pytest.mark.parametrize("name,layer", _nan_cases())
def test_nan_and_inf_propagate_like_pytorch(name: str, layer: str) -> None:
    """No error and no silent repair: NaN / +-Inf positions equal PyTorch's."""
    make, ref_fn = NAN_LAYERS[layer]
    b = backend_of(name)
    x = _NAN_INPUT.reshape(1, 1, 2, 4) if layer == "maxpool" else _NAN_INPUT
    m = Model()
    m |= make()(input="input", output="output")
    pm = ml.compile(m, b, shapes={"input": list(x.shape)}, jit=False)
    params = {k: b.array(np.full(b.to_numpy(v).shape, 0.5)) for k, v in
              pm.randomize_params().items()}
    got = b.to_numpy(pm.evaluate(params, {"input": b.array(x)})["output"])
    t = torch.from_numpy(x)
    want = (t @ torch.full((4, 2), 0.5, dtype=torch.float64)).numpy() if ref_fn is None \
        else ref_fn(t).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12)


# ==============================================================================================
# Corrupt model documents (Model.from_dict)
# ==============================================================================================
def _doc() -> dict[str, Any]:
    return create_conv_net().to_dict()


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        node: Any = d
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return edit


CHILD = ("model", "children", 0, "model")
DOCUMENTS = [
    ("none", None, r"a model document is a dict, got NoneType"),
    ("children-not-list", _set(("model", "children"), 5), r"'connections' and 'children' lists"),
    ("child-not-dict", _set(("model", "children", 0), 5), r"children\[0\]: must be a dict"),
    ("negative-index", _set(("model", "children", 1, "terminals", "input"), -1),
     r"connection index -1 out of range"),
    ("float-index", _set(("model", "children", 1, "terminals", "input"), 1.0),
     r"connection index 1.0 out of range"),
    ("terminals-not-dict", _set(("model", "children", 1, "terminals"), [1]),
     r"needs a 'terminals' dict"),
    ("connection-not-dict", _set(("model", "connections", 0), 3),
     r"connections\[0\]: must be a dict"),
    ("class-not-str", _set((*CHILD, "class"), 3), r"unknown model class 3"),
    ("kwargs-not-dict", _set((*CHILD, "kwargs"), [1]), r"bad arguments"),
    ("unknown-kwarg", _set((*CHILD, "kwargs", "evil"), 1),
     r"cannot build Conv2d: .*unexpected keyword argument 'evil'"),
    ("cin-out-of-range", _set(("model", "cin"), 999), r"cin refers to an unused connection"),
    ("malformed-dim", _set(("model", "connections", 0, "shape"), [{"a": 1}]),
     r"malformed dimension"),
    ("bad-key", _set(("model", "connections", 0, "key"), 5), r"bad key"),
    ("float-tag", _set((*CHILD, "kwargs", "padding"), {"float": "__import__('os')"}),
     r"unknown value tag 'float'"),
    ("array-dtype", _set((*CHILD, "kwargs", "padding"),
                         {"array": {"dtype": "object", "shape": [1], "data": [1]}}),
     r"malformed array"),
    ("array-size", _set((*CHILD, "kwargs", "padding"),
                        {"array": {"dtype": "float64", "shape": [3], "data": [1]}}),
     r"array data does not fit its shape \[3\]"),
    ("version", _set(("version",), "1"), r"version '1' is not supported"),
]


@pytest.mark.parametrize("edit,match", [pytest.param(e, m, id=i) for i, e, m in DOCUMENTS])
def test_corrupt_model_documents(edit: Any, match: str) -> None:
    doc = None if edit is None else _doc()
    if edit is not None:
        edit(doc)
    raises(ModelFileError, match, lambda: Model.from_dict(doc))


def test_deeply_nested_model_document() -> None:
    node: dict[str, Any] = {"kind": "primitive", "op": "relu", "name": None, "n_inputs": None,
                            "values": {}}
    for _ in range(3000):
        node = {"kind": "composite", "name": None, "connections": [],
                "children": [{"model": node, "terminals": {}}], "cin": None, "cout": None}
    raises(ModelFileError, r"nest more than 100 levels deep", lambda: Model.from_dict(
        {"format": "mithril.model", "version": 1, "model": node}))


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """Replace one random node of a JSON tree by a random JSON value, or delete a key."""
    if isinstance(doc, dict) and doc and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc, key=str)))
        if data.draw(st.integers(0, 3)) == 0:
            del doc[key]
        else:
            doc[key] = _mutate(doc[key], data)
        return doc
    if isinstance(doc, list) and doc and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(doc) - 1))
        doc[i] = _mutate(doc[i], data)
        return doc
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(),
                     st.text(max_size=5), st.sampled_from(["relu", "Linear", "composite",
                                                           "primitive", "layer", "input"]))
    return data.draw(st.one_of(leaf, st.lists(leaf, max_size=3),
                               st.dictionaries(st.text(max_size=4), leaf, max_size=2)))


@settings(deadline=None, max_examples=150, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_model_documents_load_or_raise_model_file_error(data: st.DataObject) -> None:
    """Random edits of a valid document: it loads, or raises ModelFileError; nothing else."""
    doc = json.loads(json.dumps(_doc()))
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(doc, data)
    with contextlib.suppress(ModelFileError):
        Model.from_dict(copy.deepcopy(doc))


# ==============================================================================================
# Corrupt parameter files (ml.load_params)
# ==============================================================================================
@pytest.fixture
def params_file(tmp_path: Any) -> Any:
    path = tmp_path / "p.safetensors"
    pm = ml.compile(create_conv_net(), ml.NumpyBackend())
    ml.save_params(path, pm.randomize_params(), pm.initial_state_dict, metadata={"k": "v"})
    return path


def _rewrite_header(path: Any, edit: Callable[[dict[str, Any]], None]) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])


HEADERS = [
    ("unknown-dtype", lambda h: h["conv2d.weight"].__setitem__("dtype", "Q99"),
     r"entry 'conv2d.weight' has unknown dtype 'Q99'"),
    ("negative-shape", lambda h: h["conv2d.weight"].__setitem__("shape", [-1, 3]),
     r"entry 'conv2d.weight' has an invalid shape \[-1, 3\]"),
    ("huge-shape", lambda h: h["conv2d.weight"].__setitem__("shape", [10**12, 10**12]),
     r"entry 'conv2d.weight' \(F32, shape \[1000000000000, 1000000000000\]\) needs"),
    ("reversed-offsets", lambda h: h["conv2d.weight"].__setitem__("data_offsets", [8, 4]),
     r"invalid data offsets \[8, 4\]"),
    ("entry-not-dict", lambda h: h.__setitem__("conv2d.weight", 5), r"is malformed: 5"),
    ("metadata-not-strings", lambda h: h.__setitem__("__metadata__", {"a": 1}),
     r"'__metadata__' is not a map of strings"),
    ("keys-not-json", lambda h: h["__metadata__"].__setitem__("mithril.keys", "[1,2"),
     r"corrupted metadata 'mithril.keys'"),
]


@pytest.mark.parametrize("edit,match", [pytest.param(e, m, id=i) for i, e, m in HEADERS])
def test_corrupt_parameter_file_headers(params_file: Any, edit: Any, match: str) -> None:
    _rewrite_header(params_file, edit)
    raises(ParamsFileError, re.escape(str(params_file)) + ".*" + match,
           lambda: ml.load_params(params_file, verify=False))
    raises(ParamsFileError, re.escape(str(params_file)),
           lambda: ml.load_params(params_file))


def test_parameter_file_paths(tmp_path: Any) -> None:
    raises(ParamsFileError, r"is a directory", lambda: ml.load_params(tmp_path))
    raises(ParamsFileError, r"does not exist", lambda: ml.load_params(tmp_path / "nope"))


@pytest.mark.parametrize("path", [None, 3])
def test_parameter_file_path_of_wrong_type(path: Any) -> None:
    raises(ml.ArgumentTypeError, r"load_params: path must be a str or os.PathLike",
           lambda: ml.load_params(path))
    raises(ml.ArgumentTypeError, r"save_params: path must be",
           lambda: ml.save_params(path, {"w": np.zeros(2)}))
    raises(ml.ArgumentTypeError, r"read_metadata: path must be",
           lambda: ml.read_metadata(path))


@settings(deadline=None, max_examples=150, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_parameter_files_raise_params_file_error(params_file: Any,
                                                         data: st.DataObject) -> None:
    """Random truncations and byte edits: ParamsFileError (or MithrilError), never another
    exception, and never values that differ from what was saved."""
    original = params_file.read_bytes()
    good, _ = ml.load_params(params_file)
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[:data.draw(st.integers(0, len(damaged)))]
    path = params_file.with_name("damaged.safetensors")
    path.write_bytes(bytes(damaged))
    try:
        params, _ = ml.load_params(path)
    except MithrilError:
        return
    finally:
        if os.path.exists(path):
            os.remove(path)
    for k, v in good.items():  # loaded: the edits did not change any value
        np.testing.assert_array_equal(params[k], v)
