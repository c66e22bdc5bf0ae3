"""The whole catalogue walk on a backend with the core kernels only (tests/minimal_backend.py).

Every walked primitive, derived ones through their decompositions, gives the NumPy backend's
float64 outputs and gradients; the core is small and every other primitive is derived.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril as ml
from mithril.framework.ops import CATALOGUE, core_ops
from tests.minimal_backend import MinimalBackend
from tests.test_catalogue_backends import CASE_LIST, build, run


def test_the_minimal_backend_registers_core_kernels_only() -> None:
    names = {name for name, _ in MinimalBackend.kernels.registry.kernels}
    assert names <= {op.name for op in core_ops()} | {"split_rng", "zeros_like"}
    table = MinimalBackend().kernel_table()
    derived = [op.name for op in CATALOGUE.values() if op.decompose is not None]
    assert derived and all(name in table for name in derived)


def test_core_is_small() -> None:
    assert len(core_ops()) <= 47, sorted(op.name for op in core_ops())


@pytest.mark.parametrize("op_name,case", CASE_LIST)
def test_primitive_on_core_kernels_matches_numpy(op_name, case) -> None:
    scalars, tensors = case
    model, params, data = build(op_name, scalars, tensors, ml.float64)
    reference = ml.NumpyBackend(dtype=ml.float64)
    ref_out, _ = run(reference, model, params, data, tensors, None)
    rng = np.random.default_rng(1)
    out_grads = {k: rng.standard_normal(v.shape) for k, v in ref_out.items()
                 if v is not None and np.issubdtype(v.dtype, np.floating)
                 and k == "output"} if params else None
    model, params, data = build(op_name, scalars, tensors, ml.float64)
    ref_out, ref_grads = run(reference, model, params, data, tensors, out_grads)
    model, params, data = build(op_name, scalars, tensors, ml.float64)
    out, grads = run(MinimalBackend(), model, params, data, tensors, out_grads)
    for k, ref in ref_out.items():
        if ref is None:
            assert out[k] is None
            continue
        assert out[k].shape == ref.shape, (k, out[k].shape, ref.shape)
        np.testing.assert_allclose(out[k], ref, rtol=1e-9, atol=1e-12, err_msg=f"output {k}")
    assert set(grads) == set(ref_grads)
    for k, ref in ref_grads.items():
        np.testing.assert_allclose(grads[k], ref, rtol=1e-8, atol=1e-10, err_msg=f"grad {k}")
