"""The reference's padding forms under its names (issue 14): ``Convolution1D(padding=(left,
right))``, ``Convolution2D(padding=((top, bottom), (left, right)))``, ``"SAME"``/``"VALID"`` in
any case, and ``MaxPool1D``/``MaxPool2D``/``AvgPool2D`` with per-side pairs (zero padding, as
the reference pads). Outputs on every backend and, on NumPy, gradients are compared with
PyTorch float64 (``F.pad`` then the unpadded ``F.conv*``/``F.*_pool*``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.errors import ArgumentError, MithrilError
from mithril.models import (
    AvgPool2D,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Convolution1D,
    Convolution2D,
    MaxPool1D,
    MaxPool1d,
    MaxPool2D,
    MaxPool2d,
)
from tests.backend_names import BACKENDS, backend_of

RNG = np.random.default_rng(14)


def _flat(pairs):
    """F.pad's order: the last dim's (before, after) first."""
    return [p for pair in reversed(pairs) for p in pair]


def _grads(pm, b, params, inputs, out_grad):
    _, grads = pm.evaluate({k: b.array(v) for k, v in params.items()},
                           {k: b.array(v) for k, v in inputs.items()},
                           {"output": b.array(out_grad)})
    return {k: np.asarray(v) for k, v in grads.items()}


# (layer, input shape, per-side pairs the reference pads with, stride)
CONV_CASES = {
    "1d_left": (lambda: Convolution1D(3, 2, 2, (1, 0)), (2, 3, 9), ((1, 0),), 2),
    "1d_right": (lambda: Convolution1D(3, 2, stride=2, padding=(0, 1)), (2, 3, 9), ((0, 1),), 2),
    "1d_list": (lambda: Convolution1D(3, 2, padding=[2, 0]), (2, 3, 7), ((2, 0),), 1),
    "1d_SAME": (lambda: Convolution1D(3, 2, padding="SAME"), (2, 3, 7), ((1, 1),), 1),
    "1d_Same_k5": (lambda: Convolution1D(5, 2, padding="Same"), (2, 3, 7), ((2, 2),), 1),
    "1d_VALID": (lambda: Convolution1D(3, 2, padding="VALID"), (2, 3, 7), ((0, 0),), 1),
    "1d_int": (lambda: Convolution1D(3, 2, padding=2), (2, 3, 7), ((2, 2),), 1),
    "2d_sym_pairs": (lambda: Convolution2D(3, 2, padding=((1, 1), (1, 1))), (2, 3, 6, 5),
                     ((1, 1), (1, 1)), 1),
    "2d_top0": (lambda: Convolution2D(3, 2, padding=((0, 1), (1, 1))), (2, 3, 6, 5),
                ((0, 1), (1, 1)), 1),
    "2d_left0": (lambda: Convolution2D(3, 2, padding=((1, 1), (0, 1))), (2, 3, 6, 5),
                 ((1, 1), (0, 1)), 1),
    "2d_mixed_stride": (lambda: Convolution2D(3, 2, 2, ((2, 0), 1)), (2, 3, 7, 8),
                        ((2, 0), (1, 1)), 2),
    "2d_per_dim": (lambda: Convolution2D(3, 2, padding=(1, 2)), (2, 3, 6, 5), ((1, 1), (2, 2)), 1),
    "2d_same_rect": (lambda: Convolution2D((3, 5), 2, padding="same"), (2, 3, 6, 7),
                     ((1, 1), (2, 2)), 1),
    "2d_Valid": (lambda: Convolution2D(3, 2, padding="Valid"), (2, 3, 6, 5), ((0, 0), (0, 0)), 1),
}


def _torch_conv(x, w, bias, pairs, stride):
    conv = F.conv1d if x.ndim == 3 else F.conv2d
    return conv(F.pad(x, _flat(pairs)), w, bias, stride=stride)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_padding_forms_match_torch(case, name):
    make, shape, pairs, stride = CONV_CASES[case]
    b = backend_of(name)
    pm = ml.compile(make(), b, shapes={"input": list(shape)}, jit=False)
    wshape = pm.shapes["weight"]
    xv, wv = RNG.standard_normal(shape), RNG.standard_normal(wshape)
    bv = RNG.standard_normal(wshape[0])
    out = np.asarray(pm.evaluate({"weight": b.array(wv), "bias": b.array(bv)},
                                 {"input": b.array(xv)})["output"])
    ref = _torch_conv(torch.tensor(xv), torch.tensor(wv), torch.tensor(bv), pairs, stride)
    assert list(out.shape) == list(ref.shape) == pm.shapes["output"]
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_padding_gradients_match_torch(case):
    make, shape, pairs, stride = CONV_CASES[case]
    b = backend_of("numpy")
    pm = ml.compile(make(), b, shapes={"input": list(shape)}, trainable_keys={"input"})
    wshape = pm.shapes["weight"]
    xv, wv = RNG.standard_normal(shape), RNG.standard_normal(wshape)
    bv = RNG.standard_normal(wshape[0])
    gv = RNG.standard_normal(pm.shapes["output"])
    grads = _grads(pm, b, {"weight": wv, "bias": bv, "input": xv}, {}, gv)
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (xv, wv, bv))
    _torch_conv(xt, wt, bt, pairs, stride).backward(torch.tensor(gv))
    for key, t in (("input", xt), ("weight", wt), ("bias", bt)):
        np.testing.assert_allclose(grads[key], t.grad.numpy(), rtol=1e-10, atol=1e-10)


# (layer, input shape, per-side pairs, kernel, stride, kind)
POOL_CASES = {
    "max1d_right": (lambda: MaxPool1D(2, padding=(0, 1)), (2, 3, 5), ((0, 1),), 2, 2, "max"),
    "max1d_left_s1": (lambda: MaxPool1D(3, 1, (2, 0)), (2, 3, 6), ((2, 0),), 3, 1, "max"),
    "max1d_int": (lambda: MaxPool1D(3, padding=1), (2, 3, 7), ((1, 1),), 3, 3, "max"),
    "max1d_unbatched": (lambda: MaxPool1D(2, padding=[1, 0]), (3, 5), ((1, 0),), 2, 2, "max"),
    "max2d_per_side": (lambda: MaxPool2D(2, padding=((1, 0), (0, 1))), (2, 3, 5, 5),
                       ((1, 0), (0, 1)), (2, 2), (2, 2), "max"),
    "max2d_sym_pairs": (lambda: MaxPool2D(3, 2, ((1, 1), (1, 1))), (2, 3, 7, 6),
                        ((1, 1), (1, 1)), (3, 3), (2, 2), "max"),
    "max2d_per_dim": (lambda: MaxPool2D((2, 3), 1, (1, 0)), (2, 3, 5, 6), ((1, 1), (0, 0)),
                      (2, 3), (1, 1), "max"),
    "max2d_unbatched": (lambda: MaxPool2D(2, padding=((0, 1), (1, 0))), (3, 5, 5),
                        ((0, 1), (1, 0)), (2, 2), (2, 2), "max"),
    "avg2d_per_side": (lambda: AvgPool2D(2, padding=((1, 0), (0, 1))), (2, 3, 5, 5),
                       ((1, 0), (0, 1)), (2, 2), (2, 2), "avg"),
    "avg2d_sym": (lambda: AvgPool2D(3, 2, 1), (2, 3, 7, 6), ((1, 1), (1, 1)), (3, 3), (2, 2),
                  "avg"),
    "avg2d_wide": (lambda: AvgPool2D(2, 1, ((2, 2), (0, 0))), (2, 3, 4, 4), ((2, 2), (0, 0)),
                   (2, 2), (1, 1), "avg"),
}


def _torch_pool(x, pairs, k, s, kind):
    unbatched = x.ndim == len(pairs) + 1
    x = F.pad(x[None] if unbatched else x, _flat(pairs))  # zeros: the reference's padding
    if kind == "avg":
        y = F.avg_pool2d(x, k, s)
    else:
        y = (F.max_pool1d if len(pairs) == 1 else F.max_pool2d)(x, k, s)
    return y[0] if unbatched else y


def _negative_input(shape):
    # mostly negative values: zero padding and PyTorch's -inf padding differ at the borders
    return RNG.standard_normal(shape) - 2.0


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_padding_forms_match_torch(case, name):
    make, shape, pairs, k, s, kind = POOL_CASES[case]
    b = backend_of(name)
    pm = ml.compile(make(), b, shapes={"input": list(shape)}, jit=False)
    xv = _negative_input(shape)
    out = np.asarray(pm.evaluate({}, {"input": b.array(xv)})["output"])
    ref = _torch_pool(torch.tensor(xv), pairs, k, s, kind).numpy()
    assert list(out.shape) == list(ref.shape) == pm.shapes["output"]
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_padding_gradients_match_torch(case):
    make, shape, pairs, k, s, kind = POOL_CASES[case]
    b = backend_of("numpy")
    pm = ml.compile(make(), b, shapes={"input": list(shape)}, trainable_keys={"input"})
    xv = _negative_input(shape)
    gv = RNG.standard_normal(pm.shapes["output"])
    grads = _grads(pm, b, {"input": xv}, {}, gv)
    xt = torch.tensor(xv, requires_grad=True)
    _torch_pool(xt, pairs, k, s, kind).backward(torch.tensor(gv))
    np.testing.assert_allclose(grads["input"], xt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_input_shape_is_fine(name):
    b = backend_of(name)
    pm = ml.compile(MaxPool2D(2, padding=((1, 0), (0, 1))), b, jit=False)
    xv = _negative_input((2, 3, 4, 5))
    out = np.asarray(pm.evaluate({}, {"input": b.array(xv)})["output"])
    ref = _torch_pool(torch.tensor(xv), ((1, 0), (0, 1)), 2, 2, "max").numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_unpadded_reference_pools_are_the_primitives():
    assert isinstance(MaxPool2D(2), MaxPool2d) and isinstance(MaxPool1D(2), MaxPool1d)
    assert isinstance(AvgPool2D(2, padding=1), AvgPool2d)
    assert isinstance(MaxPool2D(2, padding=((0, 0), (0, 0))), MaxPool2d)
    assert not isinstance(MaxPool2D(2, padding=1), MaxPool2d)  # zero padding: a composite


@pytest.mark.parametrize("make, words", [
    (lambda: Convolution1D(3, 2, padding=(1, 2, 3)), ["Convolution1D", "(1, 2, 3)"]),
    (lambda: Convolution1D(3, 2, padding=((1, 0),)), ["Convolution1D", "((1, 0),)"]),
    (lambda: Convolution1D(3, 2, padding=(1, -1)), ["Convolution1D", "(1, -1)"]),
    (lambda: Convolution1D(3, 2, padding="full"), ["Convolution1D", "'full'"]),
    (lambda: Convolution1D(4, 2, padding="SAME"), ["Convolution1D", "odd", "kernel_size=4"]),
    (lambda: Convolution2D(3, 2, padding=((1, 0), (0, 1), (1, 1))), ["Convolution2D",
                                                                   "((1, 0), (0, 1), (1, 1))"]),
    (lambda: Convolution2D(3, 2, padding=((1, 0, 2), 1)), ["Convolution2D", "((1, 0, 2), 1)"]),
    (lambda: Convolution2D(3, 2, padding=(1.5, 1)), ["Convolution2D", "(1.5, 1)"]),
    (lambda: Convolution2D(3, 2, padding=(True, 1)), ["Convolution2D", "(True, 1)"]),
    (lambda: MaxPool1D(2, padding=(0, 1, 1)), ["MaxPool1D", "(0, 1, 1)"]),
    (lambda: MaxPool2D(2, padding=((1, 0), "x")), ["MaxPool2D", "((1, 0), 'x')"]),
    (lambda: AvgPool2D(2, padding=[[1], [0, 1]]), ["AvgPool2D", "[[1], [0, 1]]"]),
    (lambda: AvgPool2D(2, dilation=2), ["AvgPool2D", "dilation"]),
])
def test_malformed_padding_raises_at_build_time(make, words):
    with pytest.raises(ArgumentError) as info:
        make()
    assert isinstance(info.value, MithrilError)
    for word in words:
        assert word in str(info.value)


def test_the_guides_classes_keep_pytorchs_forms():
    # nn.Conv1d takes one int per spatial dim; a (left, right) pair is refused there
    with pytest.raises(ArgumentError):
        Conv1d(3, 2, 3, padding=(1, 0))
    with pytest.raises(ArgumentError):
        Conv2d(3, 2, 3, padding=((1, 0), (0, 1)))
    with pytest.raises(ArgumentError):
        Conv2d(3, 2, 3, padding="SAME")
    # the guide's MaxPool2d pads with -inf (PyTorch), the reference's MaxPool2D with zeros
    xv = _negative_input((1, 2, 5, 5))
    b = backend_of("numpy")
    guide = ml.compile(MaxPool2d(3, 2, 1), b, shapes={"input": [1, 2, 5, 5]})
    ref = ml.compile(MaxPool2D(3, 2, 1), b, shapes={"input": [1, 2, 5, 5]})
    out_guide = guide.evaluate({}, {"input": xv})["output"]
    out_ref = ref.evaluate({}, {"input": xv})["output"]
    np.testing.assert_allclose(out_guide, F.max_pool2d(torch.tensor(xv), 3, 2, 1).numpy())
    np.testing.assert_allclose(
        out_ref, F.max_pool2d(F.pad(torch.tensor(xv), [1, 1, 1, 1]), 3, 2).numpy())
    assert (out_ref[..., 0, 0] == 0.0).all() and (out_guide[..., 0, 0] < 0.0).all()


def test_reference_forms_round_trip_through_to_dict():
    m = ml.models.Model()
    m |= Convolution2D(3, 2, padding=((0, 1), (1, 1)))(input="input", output="c")
    m |= MaxPool2D(2, padding=((1, 0), (0, 1)))(input="c", output="output")
    again = ml.models.Model.from_dict(m.to_dict())
    b = backend_of("numpy")
    shapes = {"input": [1, 3, 6, 5]}
    pm1, pm2 = ml.compile(m, b, shapes=shapes), ml.compile(again, b, shapes=shapes)
    assert pm1.shapes["output"] == pm2.shapes["output"] == [1, 2, 3, 3]
    params = {k: RNG.standard_normal(pm1.shapes[k]) for k in pm1.param_keys}
    xv = RNG.standard_normal(shapes["input"])
    np.testing.assert_allclose(pm1.evaluate(params, {"input": xv})["output"],
                               pm2.evaluate(params, {"input": xv})["output"])


def test_guide_pool_with_per_side_pairs_fails_at_build_not_in_the_kernel():
    # the catalogue's pooling primitives take one int per spatial dim (the kernel contract);
    # per-side pairs were accepted by the NumPy and JAX kernels and crashed PyTorch's at
    # evaluate with a raw TypeError
    from mithril.errors import ShapeMismatchError

    for make in (lambda: MaxPool2d(2, padding=((1, 0), (0, 1))),
                 lambda: MaxPool1d(2, padding=((0, 1),)),
                 lambda: AvgPool2d(2, padding=((1, 1), (0, 0)))):
        with pytest.raises(ShapeMismatchError, match=r"padding must be an int or a tuple") as info:
            make()  # when the layer is built
        assert "MaxPool2D" in str(info.value) and "((" in str(info.value)
