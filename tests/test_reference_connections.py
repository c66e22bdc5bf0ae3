"""Connection semantics that code written for the reference Mithril relies on (issue 14), from
/work/shared/spec/reference-api-table.md: a child's connections stay usable once the child is
added, ``expose_keys``, tuples/lists of connections as terminal values, ``+=`` feeding the
canonical input still free, and wrong names raising at build time naming the candidates.
Numbers are compared with NumPy float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey, TerminalError
from mithril.models import (
    L2,
    Add,
    Buffer,
    Linear,
    Model,
    Multiply,
    Relu,
    Reshape,
    Sigmoid,
    SquaredError,
    TrainModel,
)

B = ml.NumpyBackend(dtype=ml.float64)
RNG = np.random.default_rng(0)


def run(model: Model, inputs: dict[str, np.ndarray], **compile_kw):
    pm = ml.compile(model, B, **compile_kw)
    params = pm.randomize_params(seed=1)
    out = pm.evaluate(params, {k: B.array(v) for k, v in inputs.items()})
    return pm, {k: np.asarray(v) for k, v in params.items()}, {
        k: np.asarray(v) for k, v in out.items()}


def linear(x: np.ndarray, params: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    return x @ params[f"{prefix}weight"].T + params[f"{prefix}bias"]


def downsample() -> Model:
    down = Model(name="downsample")
    down |= Linear(3)(input_size=4, input="input")
    down += Relu()(output="output")
    return down


def test_child_output_is_usable_after_the_child_is_added() -> None:
    # the reference's ResNet block: block |= downsample(...) then Add()(left=downsample.cout)
    down = downsample()
    block = Model()
    block |= down(input="input")
    block |= Linear(3)(input_size=4, input="input", output="side")
    block |= Add()(left=down.cout, right="side", output="output")
    x = RNG.standard_normal((5, 4))
    _, p, out = run(block, {"input": x})
    want = np.maximum(linear(x, p, "downsample.linear."), 0) + linear(x, p, "linear.")
    np.testing.assert_allclose(out["output"], want, rtol=1e-12, atol=1e-12)


def test_child_terminals_work_in_set_shapes_and_set_cout() -> None:
    down = downsample()
    block = Model(name="block")
    block |= down(input="x")
    block |= Relu()(input="x", output="side")
    block.set_shapes({down.input: [2, 4]})    # the child's input is block's "x"
    assert block.shapes["x"] == [2, 4]
    block.set_cout(down.cout)                 # the child's output is block's canonical output
    outer = Model()
    outer |= block(x="input")
    outer += Linear(2)(input_size=3, output="output")   # chains onto down's output
    x = RNG.standard_normal((2, 4))
    _, p, out = run(outer, {"input": x})
    want = linear(np.maximum(linear(x, p, "block.downsample.linear."), 0), p, "linear.")
    np.testing.assert_allclose(out["output"], want, rtol=1e-12, atol=1e-12)


def test_child_terminals_in_algebra() -> None:
    down = Model(name="down")
    down |= Linear(4)(input_size=4, input="input")
    down += Relu()(output="output")
    block = Model()
    block |= down(input="x")
    y = down.cout * 2.0 + down.input          # built in block from the child's terminals
    block |= Relu()(input=y, output="output")
    block.set_cin("x")
    x = RNG.standard_normal((2, 4))
    _, p, out = run(block, {"x": x})
    want = np.maximum(np.maximum(linear(x, p, "down.linear."), 0) * 2.0 + x, 0)
    np.testing.assert_allclose(out["output"], want, rtol=1e-12, atol=1e-12)
    assert block.cin is block.x


def test_grandchild_and_internal_connections_are_lifted() -> None:
    inner = Model(name="inner")
    inner |= Linear(4)(input_size=4, input="input", output="h")   # h is consumed inside
    inner |= Relu()(input="h", output="output")
    mid = Model(name="mid")
    mid |= inner(input="input")
    mid += Relu()(output="output")
    top = Model()
    top |= mid(input="input")
    # a grandchild's internal value: exposed through inner and mid, used in top
    top |= Multiply()(left=inner.h, right=mid.output, output="output")
    x = RNG.standard_normal((3, 4))
    _, p, out = run(top, {"input": x})
    h = linear(x, p, "mid.inner.linear.")
    np.testing.assert_allclose(out["output"], h * np.maximum(np.maximum(h, 0), 0),
                               rtol=1e-12, atol=1e-12)


def test_connections_of_an_unrelated_model_still_raise() -> None:
    a, b = Model(), Model()
    a |= Relu()(input="x")
    b |= Relu()(input="y")
    with pytest.raises(TerminalError, match="belongs to"):
        a |= Relu()(input=b.y)
    with pytest.raises(TerminalError, match="different models"):
        a.x + b.y


def test_expose_keys_makes_consumed_values_outputs() -> None:
    m = Model()
    m |= Linear(3)(input_size=4, input="input", output="h")
    m += Relu()(output="output")
    m.expose_keys("h")
    m2 = Model()
    m2 |= Linear(3)(input_size=4, input="input")
    lin_out = m2.cout
    m2 += Relu()(output="output")
    m2.expose_keys(hidden=lin_out)            # exposed under a new name
    x = RNG.standard_normal((5, 4))
    for model, key in ((m, "h"), (m2, "hidden")):
        assert key in model.output_terminals()
        _, p, out = run(model, {"input": x})
        h = linear(x, p, "linear.")
        np.testing.assert_allclose(out[key], h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["output"], np.maximum(h, 0), rtol=1e-12, atol=1e-12)


def test_expose_keys_with_a_wrong_name_raises_naming_the_candidates() -> None:
    m = Model()
    m |= Linear(3)(input_size=4, input="input", output="h")
    m += Relu()(output="output")
    with pytest.raises(TerminalError, match=r"no connection 'x'; candidates: input.*h.*output"):
        m.expose_keys("x")
    assert "x" not in m.interface()             # nothing created
    assert m.output_terminals() == ["output"]   # nothing exposed either


def test_add_loss_with_a_wrong_name_raises_at_build_time() -> None:
    net = Model()
    net |= Linear(2)(input_size=3, input="input", output="output")
    tm = TrainModel(net)
    with pytest.raises(TerminalError, match=r"no connection 'output4'; candidates:.*output"):
        tm.add_loss(SquaredError(), input="output4", target="target")
    assert "output4" not in tm.interface()
    tm.add_loss(SquaredError(), input="output", target="target")
    x, t = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
    _, p, out = run(tm, {"input": x, "target": t})
    np.testing.assert_allclose(out["final_cost"], np.mean((linear(x, p, "linear.") - t) ** 2),
                               rtol=1e-12)


def test_add_regularization_with_a_wrong_name_raises_at_build_time() -> None:
    net = Model()
    net |= Linear(2)(input_size=3, input="input", output="output")
    tm = TrainModel(net)
    tm.add_loss(SquaredError(), input="output", target="target")
    with pytest.raises(TerminalError, match=r"no connection 'weight0'; candidates:.*linear.weight"):
        tm.add_regularization(L2(), 0.5, input="weight0")
    assert "weight0" not in tm.interface()
    tm.add_regularization(L2(), 0.5, input="linear.weight")
    x, t = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
    _, p, out = run(tm, {"input": x, "target": t})
    loss = np.mean((linear(x, p, "linear.") - t) ** 2)
    reg = 0.5 * 0.5 * np.sum(p["linear.weight"] ** 2) / 12   # scaled by the loss's size 6 x 2
    np.testing.assert_allclose(out["final_cost"], loss + reg, rtol=1e-12)


def test_tuples_of_connections_as_terminal_values() -> None:
    m = Model()
    m |= Relu()(input="input", output="r")
    s = m.r.shape
    m |= Reshape()(input=m.r, shape=(s[0], s[1], -1), output="output")   # a tuple, in connect
    x = RNG.standard_normal((2, 3, 4, 5))
    _, _, out = run(m, {"input": x})
    np.testing.assert_array_equal(out["output"], np.maximum(x, 0).reshape(2, 3, 20))
    m2 = Model()
    m2 |= Relu()(input="input", output="r")
    s2 = m2.r.shape
    m2 |= Reshape()(input=m2.r, shape=[s2[0], -1], output="output")        # a list
    _, _, out = run(m2, {"input": x})
    np.testing.assert_array_equal(out["output"], np.maximum(x, 0).reshape(2, 60))


def test_chaining_feeds_the_canonical_input_still_free() -> None:
    m = Model()
    m |= Relu()(input="input")
    m += Add()(left="bias_in")            # left given: += feeds right
    m += Multiply()(right=IOKey("scale"))  # right given: left is the first free one
    assert set(m.input_terminals()) == {"input", "bias_in", "scale"}
    x, b, s = (RNG.standard_normal((4, 3)) for _ in range(3))
    _, _, out = run(m, {"input": x, "bias_in": b, "scale": s})
    np.testing.assert_allclose(out["output"], (b + np.maximum(x, 0)) * s, rtol=1e-12)


def test_iokey_is_usable_as_a_connection_before_it_is_attached() -> None:
    x = IOKey("input", shape=[2, 3, 4])
    s = x.shape                                   # the shape connection, not the template
    y = (x.reshape((s[0], -1)) * 2.0 + 1.0).cast(ml.float64).exp()
    z = x[:, 0].T - IOKey("other") * IOKey("other")   # one name, one connection
    m = Model()
    m |= Buffer()(input=y, output="y")
    m |= Buffer()(input=z, output="z")
    n_children = len(m.children)
    m |= Buffer()(input=y, output="y_again")     # one expression is built once per model
    assert len(m.children) == n_children + 1
    assert sorted(m.input_terminals()) == ["input", "other"]
    a, o = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((4, 2))
    _, _, out = run(m, {"input": a, "other": o})
    np.testing.assert_allclose(out["y"], np.exp(a.reshape(2, -1) * 2.0 + 1.0), rtol=1e-12)
    np.testing.assert_array_equal(out["y_again"], out["y"])
    np.testing.assert_allclose(out["z"], a[:, 0].T - o * o, rtol=1e-12)


def test_functional_style_builds_a_model_from_calls() -> None:
    inp = IOKey("input")
    h = Linear(4)(input=inp)                       # the call stands for Linear's output
    z = Add()(left=Relu()(input=h), right=h)
    m = Model.create(output=z, hidden=h, name="functional")
    assert m.name == "functional" and m.output_terminals() == ["output", "hidden"]  # keyword order
    x = RNG.standard_normal((5, 3))
    _, p, out = run(m, {"input": x}, shapes={"input": [5, 3]})
    lin = linear(x, p, "linear.")
    np.testing.assert_allclose(out["hidden"], lin, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["output"], np.maximum(lin, 0) + lin, rtol=1e-12, atol=1e-12)


def test_functional_calls_on_connections_of_a_model_and_several_outputs() -> None:
    two = Model(name="two")
    two |= Relu()(input="input", output="a")
    two |= Sigmoid()(input="input", output="b")
    m = Model()
    m |= Buffer()(input="x", output="r")
    lin = Linear(3)(input=m.r)                     # added to m, where m.r lives
    a, b = two(input=m.r)                          # both outputs, in order
    m |= Add()(left=lin, right=a - b, output="output")
    x = RNG.standard_normal((4, 3))
    _, p, out = run(m, {"x": x}, shapes={"x": [4, 3]})
    want = linear(x, p, "linear.") + np.maximum(x, 0) - 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(out["output"], want, rtol=1e-12, atol=1e-12)


def test_set_cin_with_several_inputs_feeds_the_first_free_and_survives_to_dict() -> None:
    def pair() -> Model:
        p = Model(name="pair")
        p |= Relu()(input="a", output="ra")
        p |= Multiply()(left="ra", right="b", output="output")
        p.set_cin("a", "b")                       # two canonical inputs, like Add's
        return p

    again = Model.from_dict(pair().to_dict())
    assert again.canonical_inputs() == ["a", "b"]
    for block in (pair(), again):
        m = Model()
        m |= Relu()(input="input")
        m += block(a="other")                    # a given: += feeds b
        assert sorted(m.input_terminals()) == ["input", "other"]
        x, o = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
        _, _, out = run(m, {"input": x, "other": o})
        np.testing.assert_allclose(out["output"], np.maximum(o, 0) * np.maximum(x, 0),
                                   rtol=1e-12)


def test_a_terminal_fixed_by_a_constructor_is_named_as_such() -> None:
    from mithril.models import LeakyRelu
    m = Model()
    m |= LeakyRelu()(input="input", output="output")
    with pytest.raises(TerminalError, match=r"no terminal 'slope'.*'slope' of LeakyRelu "
                                            r"'model.leakyrelu' is fixed to 0.01"):
        ml.compile(m, B, constant_keys={"slope": 0.2}, shapes={"input": [2]})
    with pytest.raises(TerminalError, match=r"no terminal 'alpha'; terminals: input, output$"):
        ml.compile(m, B, constant_keys={"alpha": 0.2}, shapes={"input": [2]})
