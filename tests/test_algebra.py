"""The connection algebra builds catalogue primitives that compute what NumPy computes."""

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey
from mithril.models import Buffer, Model

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4)) + 2.0
B = RNG.standard_normal((3, 4)) + 2.0

CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "radd": (lambda a, b: 2.0 + a, lambda a, b: 2.0 + a),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "rsub": (lambda a, b: 1 - a, lambda a, b: 1 - a),
    "mul": (lambda a, b: a * b * 3, lambda a, b: a * b * 3),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "rdiv": (lambda a, b: 1 / a, lambda a, b: 1 / a),
    "pow": (lambda a, b: a ** 2, lambda a, b: a ** 2),
    "matmul": (lambda a, b: a @ b.T, lambda a, b: a @ b.T),
    "neg": (lambda a, b: -a, lambda a, b: -a),
    "abs": (lambda a, b: abs(a - 2), lambda a, b: abs(a - 2)),
    "gt": (lambda a, b: (a > b).cast(ml.float64), lambda a, b: (a > b).astype(float)),
    "le": (lambda a, b: (a <= b).cast(ml.float64), lambda a, b: (a <= b).astype(float)),
    "index": (lambda a, b: a[0], lambda a, b: a[0]),
    "slice": (lambda a, b: a[:, 1:3], lambda a, b: a[:, 1:3]),
    "newaxis": (lambda a, b: a[None, ..., 1], lambda a, b: a[None, ..., 1]),
    "reshape": (lambda a, b: a.reshape((2, 6)), lambda a, b: a.reshape(2, 6)),
    "reshape_sym": (lambda a, b: a.reshape((a.shape[1], -1)), lambda a, b: a.reshape(4, -1)),
    "transpose": (lambda a, b: a.transpose((1, 0)), lambda a, b: a.T),
    "T": (lambda a, b: a.T, lambda a, b: a.T),
    "sum": (lambda a, b: a.sum(axis=1), lambda a, b: a.sum(1)),
    "mean": (lambda a, b: a.mean(axis=0, keepdim=True), lambda a, b: a.mean(0, keepdims=True)),
    "max": (lambda a, b: a.max(axis=1), lambda a, b: a.max(1)),
    "min": (lambda a, b: a.min(), lambda a, b: a.min()),
    "prod": (lambda a, b: a.prod(axis=0), lambda a, b: a.prod(0)),
    "var": (lambda a, b: a.var(axis=1), lambda a, b: a.var(1)),
    "sqrt": (lambda a, b: a.sqrt(), lambda a, b: np.sqrt(a)),
    "exp": (lambda a, b: a.exp(), lambda a, b: np.exp(a)),
    "log": (lambda a, b: a.log(), lambda a, b: np.log(a)),
    "shape_arith": (lambda a, b: a * (a.shape[0] * 2), lambda a, b: a * 6),
}


@pytest.mark.parametrize("name", list(CASES))
def test_algebra_matches_numpy(name):
    build, reference = CASES[name]
    m = Model()
    m |= Buffer()(input=IOKey("a", shape=[3, 4]), output="a_out")
    m |= Buffer()(input=IOKey("b", shape=[3, 4]), output="b_out")
    result = build(m.a, m.b)
    m |= Buffer()(input=result, output=IOKey("out"))
    backend = ml.NumpyBackend(dtype=ml.float64)
    pm = ml.compile(m, backend, outputs=["out"])
    out = pm.evaluate({}, {k: v for k, v in {"a": A, "b": B}.items() if k in pm.data_keys})
    np.testing.assert_allclose(out["out"], reference(A, B), rtol=1e-12)


def test_symbolic_shape_values_fold_at_compile_time():
    m = Model()
    m |= Buffer()(input=IOKey("x", shape=["N", 6]), output="y")
    r = m.y.reshape((m.y.shape[0], 2, 3))
    m |= Buffer()(input=r, output=IOKey("out"))
    backend = ml.NumpyBackend(dtype=ml.float64)
    known = ml.compile(m, backend, shapes={"x": [4, 6]}, outputs=["out"])
    assert ".shape" not in known.code  # the shape is known: folded into a constant
    free = ml.compile(m, backend, outputs=["out"])
    assert ".shape" in free.code  # computed at run time
    x = np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(free.evaluate({}, {"x": x})["out"], x.reshape(5, 2, 3))
