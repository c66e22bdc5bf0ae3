"""What the reference Mithril's segformer, clip and t5 examples need (issue 14): the names
``mithril.framework`` and ``mithril.types`` give, NumPy's advanced indexing with tensor
connections (``x[:, :, rows[:, None], cols]``), and functional models begun on different
IOKeys joining one model. Numbers are compared with NumPy float64 and PyTorch on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.errors import ArgumentTypeError
from mithril.models import Arange, Buffer, Linear, Model, Relu
from tests.backend_names import BACKENDS, backend_of

RNG = np.random.default_rng(7)


def test_framework_and_types_names():
    from mithril.framework import Connection, IOKey, Tensor
    from mithril.types import Dtype

    assert (Connection, IOKey, Tensor) == (ml.Connection, ml.IOKey, ml.Tensor)
    assert Dtype.int64 is ml.int64 and Dtype.float32 is ml.float32
    assert Dtype.bool_ is ml.bool_ and Dtype.float64 is ml.float64
    with pytest.raises(AttributeError):
        import mithril.framework as fw
        fw.Nothing  # noqa: B018


@pytest.mark.parametrize("name", BACKENDS)
def test_cast_to_reference_dtype(name):
    from mithril.types import Dtype

    x = ml.IOKey("x", shape=[4])
    m = Model.create(output=x.floor().cast(Dtype.int64))
    b = backend_of(name)
    pm = ml.compile(m, b, shapes={"x": [4]}, jit=False)
    v = np.array([1.5, -0.5, 2.0, 3.9])
    out = np.asarray(pm.evaluate({}, {"x": b.array(v)})["output"])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.floor(v).astype(np.int64))


# (index builder on IOKeys, NumPy index on arrays, x shape, index tensors' values)
def _adjacent_last(x, i, j):
    return x[:, :, i[:, None], j]


def _split(x, i, j):
    return x[i, :, j]


def _adjacent_middle(x, i, j):
    return x[:, i, j, :]


CASES = [(_adjacent_last, [2, 3, 4, 5], [3, 0, 3], [4, 4, 1, 0]),   # B = (3, 4), at axis 2
         (_split, [4, 3, 5], [1, 3, 1, 0], [0, 4, 4, 2]),           # B = (4,) first (NumPy)
         (_adjacent_middle, [2, 4, 5, 3], [3, 1], [0, 4])]          # B = (2,), at axis 1


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=["adjacent_last", "split", "adjacent_middle"])
def test_advanced_indexing_matches_numpy(name, case):
    fn, shape, iv, jv = case
    x = ml.IOKey("x", shape=shape, differentiable=True)
    i = ml.IOKey("i", shape=[len(iv)]).cast(ml.int64)
    j = ml.IOKey("j", shape=[len(jv)]).cast(ml.int64)
    m = Model.create(output=fn(x, i, j))
    b = backend_of(name)
    pm = ml.compile(m, b, shapes={"x": shape}, data_keys={"i", "j"}, jit=False)
    xv = RNG.standard_normal(shape)
    ia, ja = np.array(iv), np.array(jv)
    expected = fn(xv, ia, ja)
    grad_out = RNG.standard_normal(expected.shape)
    out, grads = pm.evaluate({"x": b.array(xv)}, {"i": b.array(ia), "j": b.array(ja)},
                             output_gradients={"output": b.array(grad_out)})
    np.testing.assert_allclose(np.asarray(out["output"]), expected, rtol=1e-12, atol=1e-12)
    # the gradient adds back into every element picked (indices repeat): NumPy's add.at
    want = np.zeros(shape)
    np.add.at(want, _np_index(fn, ia, ja), grad_out)
    np.testing.assert_allclose(np.asarray(grads["x"]), want, rtol=1e-12, atol=1e-12)


def _np_index(fn, i, j):
    full = slice(None)
    return {_adjacent_last: (full, full, i[:, None], j), _split: (i, full, j),
            _adjacent_middle: (full, i, j, full)}[fn]


def test_advanced_indexing_rejects_other_items_and_unknown_ranks():
    x = ml.IOKey("x", shape=[3, 4])
    i = ml.IOKey("i", shape=[2]).cast(ml.int64)
    with pytest.raises(ArgumentTypeError, match="only full slices"):
        Model.create(output=x[1:, i])
    with pytest.raises(ArgumentTypeError, match="ranks"):
        Model.create(output=x[:, ml.IOKey("k").cast(ml.int64)])


def _bilinear(inp, size):
    """Bilinear resizing (half-pixel centres, PyTorch's ``align_corners=False``) written
    with the reference's spellings: ``Arange()(stop=...)``, ``clamp``, ``floor``,
    ``cast(Dtype.int64)``, a tuple-typed size IOKey and tensor-indexed gathers."""
    from mithril.types import Dtype

    h_in, w_in = inp.shape[2], inp.shape[3]
    h_out, w_out = size[0], size[1]
    ys = ((Arange()(stop=h_out) + 0.5) * (h_in / h_out) - 0.5).clamp(0, h_in - 1)
    xs = ((Arange()(stop=w_out) + 0.5) * (w_in / w_out) - 0.5).clamp(0, w_in - 1)
    top, left = ys.floor().cast(Dtype.int64), xs.floor().cast(Dtype.int64)
    bottom, right = (top + 1).clamp(0, h_in - 1), (left + 1).clamp(0, w_in - 1)
    fy = (ys - top.cast(Dtype.float32)).reshape((1, 1, h_out, 1))
    fx = (xs - left.cast(Dtype.float32)).reshape((1, 1, 1, w_out))
    return (inp[:, :, top[:, None], left] * (1.0 - fy) * (1.0 - fx)
            + inp[:, :, bottom[:, None], left] * fy * (1.0 - fx)
            + inp[:, :, top[:, None], right] * (1.0 - fy) * fx
            + inp[:, :, bottom[:, None], right] * fy * fx)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("sizes", [((5, 4), (8, 8)), ((6, 6), (3, 4))])
def test_bilinear_resize_matches_torch_interpolate(name, sizes):
    (h, w), out_size = sizes
    inp = ml.IOKey("input", type=ml.Tensor[float])
    size = ml.IOKey("size", type=tuple[int, ...])
    m = Model.create(output=_bilinear(inp, size))
    b = backend_of(name, ml.float32)
    pm = ml.compile(m, b, shapes={"input": [2, 3, h, w]}, constant_keys={"size": out_size},
                    jit=False)
    xv = RNG.standard_normal((2, 3, h, w)).astype(np.float32)
    out = np.asarray(pm.evaluate({}, {"input": b.array(xv)})["output"])
    ref = torch.nn.functional.interpolate(torch.tensor(xv, dtype=torch.float64), size=out_size,
                                          mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_functional_models_on_different_iokeys_join(name):
    # ``h`` begins its own functional model (it reads only the IOKey "h"); combining it with
    # a connection of the model reading "x" puts both in one model, "h" one input of it
    h = Buffer()(input=ml.IOKey("h"))
    y = Relu()(input=Linear(3, name="fc")(input=ml.IOKey("x", shape=[2, 4]))) * h
    m = Model.create(name="joined", output=y, h_out=h)
    assert m.output_terminals() == ["output", "h_out"]
    assert sorted(m.input_terminals()) == ["fc.bias", "fc.weight", "h", "x"]
    b = backend_of(name)
    pm = ml.compile(m, b, shapes={"h": [2, 3]}, jit=False)
    w, bias = RNG.standard_normal((3, 4)), RNG.standard_normal(3)
    xv, hv = RNG.standard_normal((2, 4)), RNG.standard_normal((2, 3))
    keys = sorted(pm.param_keys)
    params = dict(zip(keys, [b.array(bias), b.array(w)], strict=True))
    out = pm.evaluate(params, {"x": b.array(xv), "h": b.array(hv)})
    np.testing.assert_allclose(np.asarray(out["output"]), np.maximum(xv @ w.T + bias, 0) * hv,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(out["h_out"]), hv)


def test_create_keeps_the_order_of_its_outputs():
    # the model reading "w" is begun first, yet the outputs unpack in the order given
    w = Buffer()(input=ml.IOKey("w"))
    out = Relu()(input=ml.IOKey("input"))
    m = Model.create(output=out, width_out=w)
    assert m.output_terminals() == ["output", "width_out"]
    outer_in = ml.IOKey("input")
    first, second = m(input=outer_in, w=ml.IOKey("w"))
    top = Model.create(a=first, b=second)
    pm = ml.compile(top, ml.NumpyBackend(dtype=ml.float64), shapes={"input": [3], "w": [2]})
    res = pm.evaluate({}, {"input": np.array([-1.0, 2.0, -3.0]), "w": np.array([5.0, 6.0])})
    np.testing.assert_array_equal(res["a"], [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(res["b"], [5.0, 6.0])


def test_create_exposes_one_connection_under_two_names():
    h = Relu()(input=ml.IOKey("x"))
    m = Model.create(output=h, hidden_states=h)
    assert m.output_terminals() == ["output", "hidden_states"]
    pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [3]})
    out = pm.evaluate({}, {"x": np.array([-1.0, 0.5, 2.0])})
    np.testing.assert_array_equal(out["output"], [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(out["hidden_states"], [0.0, 0.5, 2.0])


@pytest.mark.parametrize("name", BACKENDS)
def test_convolution2d_takes_the_reference_positional_order(name):
    from mithril.models import Convolution2D

    # Convolution2D(kernel_size, out_channels, stride, padding, dilation, groups, use_bias)
    conv = Convolution2D(3, 4, 2, 1, 1, 2, False, name="proj")
    b = backend_of(name)
    pm = ml.compile(conv, b, shapes={"input": [2, 6, 7, 9]}, jit=False)
    assert sorted(pm.param_keys) == ["weight"] and pm.shapes["weight"] == [4, 3, 3, 3]
    xv, wv = RNG.standard_normal((2, 6, 7, 9)), RNG.standard_normal((4, 3, 3, 3))
    out = np.asarray(pm.evaluate({"weight": b.array(wv)}, {"input": b.array(xv)})["output"])
    ref = torch.nn.functional.conv2d(torch.tensor(xv), torch.tensor(wv), stride=2, padding=1,
                                     groups=2).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_convolution1d_takes_the_reference_positional_order(name):
    from mithril.models import Convolution1D

    conv = Convolution1D(3, 5, 2, 1)  # kernel 3, 5 channels, stride 2, padding 1, with bias
    b = backend_of(name)
    pm = ml.compile(conv, b, shapes={"input": [2, 4, 11]}, jit=False)
    xv, wv, bv = (RNG.standard_normal((2, 4, 11)), RNG.standard_normal((5, 4, 3)),
                  RNG.standard_normal(5))
    out = np.asarray(pm.evaluate({"weight": b.array(wv), "bias": b.array(bv)},
                                 {"input": b.array(xv)})["output"])
    ref = torch.nn.functional.conv1d(torch.tensor(xv), torch.tensor(wv), torch.tensor(bv),
                                     stride=2, padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_advanced_indexing_with_fewer_items_than_axes(name):
    # clip's ``ln_final[arange(N), argmax(text, -1)]`` on a rank-3 tensor: the last axis whole
    x = ml.IOKey("x", shape=[3, 5, 4], differentiable=True)
    rows = Arange()(stop=x.shape[0])
    cols = ml.IOKey("t", shape=[3, 5]).cast(ml.int64).argmax(axis=-1)
    m = Model.create(output=x.transpose((0, 1, 2))[rows, cols])
    b = backend_of(name)
    pm = ml.compile(m, b, data_keys={"t"}, jit=False)
    xv, tv = RNG.standard_normal((3, 5, 4)), RNG.integers(0, 9, (3, 5))
    out = np.asarray(pm.evaluate({"x": b.array(xv)}, {"t": b.array(tv)})["output"])
    np.testing.assert_allclose(out, xv[np.arange(3), tv.argmax(-1)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_where_takes_the_reference_terminals_and_the_guides(name):
    from mithril.models import Where

    b = backend_of(name)
    cv, av, bv = (np.array([True, False, True, False]), RNG.standard_normal(4),
                  RNG.standard_normal(4))
    for spec in (Where()(cond="c", input1="a", input2="b", output=ml.IOKey("out")),
                 Where()(condition="c", input1="a", input2="b", output=ml.IOKey("out")),
                 Where()("c", "a", "b", ml.IOKey("out"))):
        m = Model()
        m |= spec
        pm = ml.compile(m, b, shapes={"a": [4], "b": [4], "c": [4]}, jit=False)
        out = pm.evaluate({}, {"c": b.array(cv), "a": b.array(av), "b": b.array(bv)})["out"]
        np.testing.assert_array_equal(np.asarray(out), np.where(cv, av, bv))
    assert Where().cin.key == "input1"


@pytest.mark.parametrize("name", BACKENDS)
def test_cast_to_the_dtype_of_another_connection(name):
    # t5's ``scores.cast(scores.dtype())`` after a float32 softmax
    x = ml.IOKey("x", shape=[2, 3])
    ints = ml.IOKey("i", shape=[2, 3])
    m = Model.create(output=(x * 2.5).cast(ints.dtype()) + ints)
    b = backend_of(name)
    pm = ml.compile(m, b, jit=False)
    xv, iv = RNG.standard_normal((2, 3)), RNG.integers(-4, 4, (2, 3))
    out = np.asarray(pm.evaluate({}, {"x": b.array(xv), "i": b.array(iv)})["output"])
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out, np.trunc(xv * 2.5).astype(np.int64) + iv)


def test_a_named_iokey_output_stays_exposed_when_read_later():
    # t5's ``relative_position_bias(...)(..., output=IOKey("pos_bias"))`` read by every layer
    m = Model()
    m |= Relu()(input="input", output=ml.IOKey("pos_bias"))
    m |= Linear(2, name="fc")(input="pos_bias", output=ml.IOKey("output"))
    m |= Relu()(input="output", output="hidden")  # a plain name read nowhere: exposed as before
    assert m.output_terminals() == ["pos_bias", "output", "hidden"]
    b = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(m, b, shapes={"input": [3, 2]})
    xv = RNG.standard_normal((3, 2))
    params = {"fc.weight": RNG.standard_normal((2, 2)), "fc.bias": RNG.standard_normal(2)}
    out = pm.evaluate(params, {"input": xv})
    np.testing.assert_allclose(out["pos_bias"], np.maximum(xv, 0), rtol=1e-12)
    np.testing.assert_allclose(out["output"], np.maximum(xv, 0) @ params["fc.weight"].T
                               + params["fc.bias"], rtol=1e-12)


def test_set_shapes_on_an_expression_before_it_is_built():
    # segformer's ``hidden_states[i].set_shapes([...])`` on an IOKey expression
    h = ml.IOKey("x").T
    h.set_shapes([2, "n"])
    m = Model.create(output=Relu()(input=h))
    assert m.shapes["output"] == [2, "n"]
    pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [3, 2]})
    xv = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(pm.evaluate({}, {"x": xv})["output"], np.maximum(xv.T, 0))
    with pytest.raises(ml.ShapeMismatchError):
        ml.compile(m, ml.NumpyBackend(), shapes={"x": [3, 4]})
