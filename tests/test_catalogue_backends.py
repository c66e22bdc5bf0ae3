"""The catalogue walk: every primitive, compiled on every backend, matches NumPy float64.

Outputs and gradients (w.r.t. every differentiable float input) of each backend are compared
with the NumPy backend in float64, whose kernels and VJPs are themselves checked against
PyTorch and finite differences in tests/backends/. Tolerances depend on the dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mithril as ml
from mithril import IOKey
from mithril.framework.ops import CATALOGUE, tensor_ops
from mithril.models import Model, Operator
from tests.catalogue_cases import CASES, NOT_WALKED

BACKENDS = ["numpy", "torch", "jax", "mlx"]
TOLERANCE = {"float32": (2e-4, 2e-5), "float64": (1e-7, 1e-9)}


def make_backend(name: str, dtype: str) -> Any:
    cls = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
           "mlx": ml.MlxBackend}[name]
    return cls(dtype=getattr(ml, dtype))


def test_every_primitive_is_walked_or_explained():
    names = {op.name for op in tensor_ops()}
    assert names == set(CASES) | set(NOT_WALKED), (names ^ (set(CASES) | set(NOT_WALKED)))


def build(op_name: str, scalars: dict[str, Any], tensors: dict[str, np.ndarray], dtype: Any
          ) -> tuple[Model, set[str], set[str]]:
    op = CATALOGUE[op_name]
    scalars = dict(scalars)
    n = scalars.pop("n", None)
    if scalars.get("dtype") == "float":
        scalars["dtype"] = dtype
    prim = Operator(op, n_inputs=n, **scalars)
    model = Model()
    terminals = {k: IOKey(k) for k in tensors}
    terminals.update({t: IOKey(t) for t in prim.output_names})
    model |= prim(**terminals)
    terms = {t.name: t for t in prim.in_terms}
    params, data = set(), set()
    for k, v in tensors.items():
        float_input = np.issubdtype(v.dtype, np.floating)
        if op.differentiable and float_input and terms[k].differentiable and \
                terms[k].kind != "scalar":
            params.add(k)
        else:
            data.add(k)
    return model, params, data


def run(backend: Any, model: Model, params: set[str], data: set[str],
        tensors: dict[str, np.ndarray], out_grads: dict[str, np.ndarray] | None) -> Any:
    pm = ml.compile(model, backend, shapes={k: list(v.shape) for k, v in tensors.items()},
                    trainable_keys=params, data_keys=data, jit=False)
    p = {k: backend.array(tensors[k]) for k in params}
    d = {k: backend.array(tensors[k]) for k in data}
    if out_grads:
        og = {k: backend.array(v) for k, v in out_grads.items()}
        outs, grads = pm.evaluate(p, d, output_gradients=og)
    else:
        outs, grads = pm.evaluate(p, d), {}
    to_np = backend.to_numpy
    return ({k: None if v is None else to_np(v) for k, v in outs.items()},
            {k: to_np(v) for k, v in grads.items()})


def _cases():
    rng = np.random.default_rng(0)
    for name, make in CASES.items():
        for i, case in enumerate(make(rng)):
            yield pytest.param(name, case, id=f"{name}-{i}")


CASE_LIST = list(_cases())


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op_name,case", CASE_LIST)
def test_primitive_matches_numpy_float64(backend_name, dtype, op_name, case):
    scalars, tensors = case
    reference = make_backend("numpy", "float64")
    model, params, data = build(op_name, scalars, tensors, ml.float64)
    ref_out, _ = run(reference, model, params, data, tensors, None)
    rng = np.random.default_rng(1)
    out_grads = None
    if params:
        out_grads = {k: rng.standard_normal(v.shape) for k, v in ref_out.items()
                     if v is not None and np.issubdtype(v.dtype, np.floating)
                     and k == "output"}
        model, params, data = build(op_name, scalars, tensors, ml.float64)
        ref_out, ref_grads = run(reference, model, params, data, tensors, out_grads)
    backend = make_backend(backend_name, dtype)
    model, params, data = build(op_name, scalars, tensors, getattr(ml, dtype))
    cast = {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in tensors.items()}
    og = {k: v.astype(dtype) for k, v in (out_grads or {}).items()}
    out, grads = run(backend, model, params, data, cast, og or None)
    rtol, atol = TOLERANCE[dtype]
    for k, ref in ref_out.items():
        if ref is None:
            assert out[k] is None
            continue
        got = out[k]
        assert got.shape == ref.shape, (k, got.shape, ref.shape)
        np.testing.assert_allclose(got.astype(np.float64) if got.dtype != bool else got, ref,
                                   rtol=rtol, atol=atol, err_msg=f"output {k}")
    if out_grads:
        for k, ref in ref_grads.items():
            np.testing.assert_allclose(grads[k], ref, rtol=rtol * 10, atol=atol * 10,
                                       err_msg=f"gradient of {k}")
