"""Shape rules that must stay scheduled until nothing is left to infer or check.

A rule reports 'finished' only when nothing it could still learn remains; these pin the cases
where a rule used to finish (or guess) too early. The regression tests in tests/regressions
hold the models the random generator found; these are the rules one by one.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey, ShapeMismatchError
from mithril.models import (
    Add,
    Buffer,
    Conv1d,
    Conv2d,
    GroupNorm,
    Linear,
    LogSoftmax,
    Model,
    Softmax,
    Tanh,
    Where,
)

NUMPY = ml.NumpyBackend


# ---- broadcasting with an operand of undecided kind -------------------------------------------
def test_broadcast_waits_for_an_undecided_operand() -> None:
    m = Model()
    m |= Buffer()(input=IOKey("a", shape=[2, 1]), output="s")
    m |= Add()(left="s", right="b", output="o")
    assert m.shapes["o"] == ["(V, ...)"]  # b may be a tensor of any rank: nothing guessed
    m.set_shapes(b=[4, 2, 3])
    assert m.shapes["o"] == [4, 2, 3]


def test_broadcast_with_a_number_constant_of_undecided_kind() -> None:
    """A constant's rank is its value's: a Python number broadcasts as rank 0 at once."""
    m = Model()
    m |= Buffer()(input=IOKey("a", shape=[2, 3]), output="s")
    m |= Buffer()(input=IOKey("k", value=2.0), output="k2")
    m |= Add()(left="s", right="k2", output="o")
    m |= Where()(condition=m.s > 0.0, input1="s", input2=0.5, output="w")
    assert m.shapes["o"] == [2, 3]
    assert m.shapes["w"] == [2, 3]
    pm = ml.compile(m, NUMPY(dtype=ml.float64))
    out = pm.evaluate({}, {"a": np.full((2, 3), -1.0)})
    np.testing.assert_array_equal(out["o"], np.full((2, 3), 1.0))
    np.testing.assert_array_equal(out["w"], np.full((2, 3), 0.5))


# ---- where with a declared output shape ------------------------------------------------------
def test_where_output_of_known_rank_over_variadic_inputs() -> None:
    m = Model()
    m |= Buffer()(input=IOKey("x", shape=[("V", ...), 4]), output="h")
    m |= Where()(condition=m.h > 0.0, input1="h", input2=m.h * 2.0,
                 output=IOKey("y", shape=[None, None]))
    assert m.shapes["y"][-1] == 4
    m.set_shapes(x=[3, 4])
    assert m.shapes["y"] == [3, 4]


# ---- grouped convolution ---------------------------------------------------------------------
def test_grouped_conv_relates_channels_whichever_is_known_first() -> None:
    # input channels known late: the weight's in_channels // groups follows
    m = Model()
    m |= Conv1d(None, 4, kernel_size=1, groups=2)(input="x", output="y")
    m.set_shapes(x=[None, 6, 5])
    assert m.shapes["conv1d.weight"] == [4, 3, 1]
    # the weight known first: the input channels follow
    m = Model()
    m |= Conv1d(None, 4, kernel_size=1, groups=2)(input="x", output="y")
    m.set_shapes(**{"conv1d.weight": [4, 3, 1]})
    m.set_shapes(x=[2, None, 5])
    assert m.shapes["x"] == [2, 6, 5]


def test_grouped_conv_channels_not_matching_the_weight() -> None:
    m = Model()
    m |= Conv1d(None, 4, kernel_size=1, groups=2)(input="x", output="y")
    m.set_shapes(**{"conv1d.weight": [4, None, 1]})
    m.set_shapes(x=[2, 4, 5])
    assert m.shapes["conv1d.weight"] == [4, 2, 1]
    m = Model()
    m |= Conv1d(None, 4, kernel_size=1, groups=2)(input="x", output="y")
    m.set_shapes(x=[2, 4, 5])
    with pytest.raises(ShapeMismatchError, match="does not match"):
        m.set_shapes(**{"conv1d.weight": [4, 3, 1]})


# ---- reshape with symbolic dims --------------------------------------------------------------
def test_reshape_cancels_a_symbolic_batch() -> None:
    m = Model()
    m |= Buffer()(input="input", output="x")
    m |= Buffer()(input=m.x.reshape((m.x.shape[0], -1)), output="flat")
    m |= Buffer()(input=m.x.reshape((m.x.shape[0], 2, -1)), output="split")
    m.set_shapes(input=["N", 3, 4])
    assert m.shapes["flat"] == ["N", 12]
    assert m.shapes["split"] == ["N", 2, 6]


def test_reshape_with_a_symbolic_batch_checks_the_sizes() -> None:
    m = Model()
    m |= Buffer()(input="input", output="x")
    m |= Buffer()(input=m.x.reshape((m.x.shape[0], 5, -1)), output="y")
    with pytest.raises(ShapeMismatchError, match="cannot reshape"):
        m.set_shapes(input=["N", 3, 4])
    m = Model()
    m |= Buffer()(input="input", output="x")
    m |= Buffer()(input=m.x.reshape((m.x.shape[0], 5)), output="y")
    with pytest.raises(ShapeMismatchError, match="cannot reshape"):
        m.set_shapes(input=["N", 3, 4])


# ---- symbolic dims inside scalar values ------------------------------------------------------
def test_arithmetic_on_symbolic_sizes_folds_once_they_are_known() -> None:
    """``x.shape[1] * x.shape[2]`` is a product of symbolic dims at build time; the rule folds
    it when the sizes become known (it watches the dims inside the scalar values)."""
    m = Model()
    m |= Buffer()(input=IOKey("input", shape=[None, None, None]), output="x")
    m |= Buffer()(input=m.x.reshape((m.x.shape[0], m.x.shape[1] * m.x.shape[2])),
                  output="flat")
    m |= Linear(2)(input="flat", output="output")
    pm = ml.compile(m, NUMPY(), shapes={"input": [2, 3, 4]})
    assert pm.shapes["linear.weight"] == [2, 12]


# ---- indexing a tensor of known rank ---------------------------------------------------------
def test_slice_of_a_known_rank_waits_for_the_size() -> None:
    # (after Tanh the element kind is settled: a rule reporting 'finished' would never rerun)
    m = Model()
    m |= Tanh()(input=IOKey("input", shape=[None, None, None]), output="x")
    m |= Buffer()(input=m.x[:, 1:], output="y")
    m |= Buffer()(input=m.x[..., :2], output="z")
    m.set_shapes(input=[2, 5, 7])
    assert m.shapes["y"] == [2, 4, 7]
    assert m.shapes["z"] == [2, 5, 2]


def test_int_index_of_a_known_rank_is_checked_once_the_size_is_known() -> None:
    m = Model()
    m |= Tanh()(input=IOKey("input", shape=[None, None]), output="x")
    m |= Buffer()(input=m.x[:, 4], output="y")
    assert len(m.shapes["y"]) == 1  # the index is checked when the size is known
    with pytest.raises(ShapeMismatchError, match="out of range"):
        m.set_shapes(input=[2, 3])


# ---- softmax axis ----------------------------------------------------------------------------
@pytest.mark.parametrize("layer,shape", [(lambda: Softmax(dim=2), [3, 4]),
                                         (lambda: LogSoftmax(dim=-3), [3, 4])])
def test_softmax_axis_is_checked_when_the_rank_becomes_known(layer, shape) -> None:
    m = Model()
    m |= layer()(input="x", output="y")
    with pytest.raises(ShapeMismatchError, match=r"axis .* out of range for rank 2"):
        m.set_shapes(x=shape)


def test_softmax_axis_within_the_known_dims_of_a_variadic_shape() -> None:
    m = Model()
    m |= Softmax(dim=-1)(input=IOKey("x", shape=[("V", ...), 4]), output="y")
    m |= Softmax(dim=1)(input=IOKey("z", shape=[2, 3, ("W", ...)]), output="w")
    m.set_shapes(x=[2, 4], z=[2, 3])
    assert m.shapes["y"] == [2, 4]


# ---- prefix / suffix overlap of variadic shapes ----------------------------------------------
@pytest.mark.parametrize("shape", [[2, 4, 5], [2, 4, 5, 5], [2, 4, 3, 5, 5]])
def test_group_norm_after_a_convolution_of_any_rank(shape) -> None:
    """GroupNorm's input [N, C, ...] meets a convolution's output [..., C, H, W]."""
    m = Model()
    if len(shape) == 3:
        m |= Conv1d(4, 4, kernel_size=1)
    else:
        m |= Conv2d(shape[1], 4, kernel_size=1)
    m += GroupNorm(2, 4)
    if len(shape) == 5:
        with pytest.raises(ShapeMismatchError):  # a 2-d convolution takes 3 or 4 dims
            ml.compile(m, NUMPY(), shapes={"input": shape})
        return
    pm = ml.compile(m, NUMPY(), shapes={"input": shape})
    assert pm.shapes["output"] == shape
    assert pm.shapes["groupnorm.weight"] == [4]


def test_linear_after_group_norm_waits_for_the_rank() -> None:
    """[N, C, ...] followed by Linear: the last dim is C only for a 2-d input."""
    m = Model()
    m |= GroupNorm(2, 4)
    m += Linear(3)
    pm = ml.compile(m, NUMPY(), shapes={"input": [5, 4]})
    assert pm.shapes["linear.weight"] == [3, 4]
    pm = ml.compile(m, NUMPY(), shapes={"input": [5, 4, 6]})
    assert pm.shapes["linear.weight"] == [3, 6]
