"""Property tests of shape unification and broadcasting against NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mithril import ShapeMismatchError
from mithril.framework.shapes import (
    Frag,
    PropagationError,
    ShapeConflict,
    Trail,
    frag_from_template,
    propagate,
    unify_frags,
)
from mithril.models import Add, Model

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=5)


@st.composite
def generalisations(draw, shape):
    """A template that ``shape`` satisfies: dims kept, made symbols, None, or a variadic run."""
    items = []
    i = 0
    used_var = False
    while i < len(shape):
        choice = draw(st.sampled_from(["int", "sym", "none", "var"]))
        if choice == "var" and not used_var:
            n = draw(st.integers(0, len(shape) - i))
            items.append(("V", ...))
            used_var = True
            i += n
            continue
        if choice == "sym":
            items.append(f"s{i}")
        elif choice == "none":
            items.append(None)
        else:
            items.append(shape[i])
        i += 1
    if not used_var and draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), ("W", ...))
    return items


def concrete(f: Frag) -> list[int | None]:
    return f.values()


@settings(max_examples=200, deadline=None)
@given(st.data(), shapes)
def test_unifying_generalisations_recovers_the_shape(data, shape):
    templates = [data.draw(generalisations(shape)) for _ in range(3)]
    frags = [frag_from_template(t, {}) for t in templates]
    with Trail():
        for f in frags:
            unify_frags(f, frag_from_template(shape))
        propagate()
        for f in frags:
            assert concrete(f) == shape


@settings(max_examples=200, deadline=None)
@given(shapes, shapes)
def test_different_ranks_or_sizes_conflict(a, b):
    if a == b:
        return
    with pytest.raises(ShapeConflict), Trail():
        unify_frags(frag_from_template(a), frag_from_template(b))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.lists(st.integers(1, 4), min_size=0, max_size=4))
def test_add_broadcasts_like_numpy(data, base):
    # make a broadcast-compatible or incompatible pair from ``base``
    left = [data.draw(st.sampled_from([d, 1])) for d in base]
    right = [data.draw(st.sampled_from([d, 1, d + 1])) for d in base]
    right = right[data.draw(st.integers(0, len(right))):]
    m = Model()
    m |= Add()(left="a", right="b", output="c")
    try:
        expected = list(np.broadcast_shapes(tuple(left), tuple(right)))
    except ValueError:
        with pytest.raises(ShapeMismatchError):
            m.set_shapes(a=left, b=right)
        return
    m.set_shapes(a=left, b=right)
    assert m.shapes["c"] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_broadcast_infers_through_symbols_once_known(shape):
    m = Model()
    m |= Add()(left="a", right="b", output="c")
    m.set_shapes(a=["N", *([None] * (len(shape) - 1))], b=[1] * len(shape))
    m.set_shapes(a=shape)
    assert m.shapes["c"] == shape


def test_variadic_prefix_propagates_through_nesting_both_ways():
    from mithril.models import Linear, Relu

    inner = Model()
    inner |= Linear(10)(input="input", output="h")
    inner |= Relu()(input="h", output="output")
    outer = Model()
    outer |= inner(input="x", output="y")
    outer.set_shapes(x=[("V", ...), 4])
    assert outer.shapes["y"][-1] == 10
    outer.set_shapes(y=[2, 3, 10])  # set on the output: flows back to the input
    assert outer.shapes["x"] == [2, 3, 4]


@settings(max_examples=300, deadline=None)
@given(st.data(), shapes)
def test_variadic_generalisations_unify_with_each_other_first(data, shape):
    """Two generalisations of one shape unify with each other before the rank is known
    (``[N, C, ...]`` with ``[..., C, H, W]``: their prefix and suffix may overlap) and both
    become the shape once one side learns it."""
    first, second = (frag_from_template(data.draw(generalisations(shape)), {})
                     for _ in range(2))
    with Trail():
        unify_frags(first, second)
        propagate()
        unify_frags(data.draw(st.sampled_from([first, second])), frag_from_template(shape))
        propagate()
        assert concrete(first) == shape
        assert concrete(second) == shape


def test_prefix_and_suffix_overlap_is_decided_by_the_rank():
    def pair():
        f = frag_from_template(["N", "C", ("V", ...)], {})
        g = frag_from_template([("B", ...), "C2", "H", "W"], {})
        return f, g

    for rank in (3, 4, 6):
        f, g = pair()
        with Trail():
            unify_frags(f, g)
            propagate()
            assert not f.known_rank and not g.known_rank  # nothing committed yet
            unify_frags(g, frag_from_template(list(range(2, 2 + rank))))
            propagate()
            assert concrete(f) == list(range(2, 2 + rank))
    # the overlap is also decided when the other side learns its rank
    f, g = pair()
    with Trail():
        unify_frags(f, g)
        unify_frags(f, frag_from_template([None, None, None, None]))
        propagate()
        assert len(g.dims()) == 4
        assert g.dims()[0].root() is f.dims()[0].root()
        assert g.dims()[1].root() is f.dims()[1].root()  # C is C2
    # a rank that fits neither side's dims conflicts once known
    f, g = pair()
    with pytest.raises(PropagationError, match="needs at least 3 dims"), Trail():
        unify_frags(f, g)
        unify_frags(f, frag_from_template([2, 3]))  # g needs 3 dims
        propagate()
