"""The catalogue walk against an independent reference: every backend, NumPy included.

Each case of :mod:`tests.catalogue_cases` is compiled as a one-primitive model on NumPy,
PyTorch, JAX and MLX in float64, and its outputs and gradients (of ``<g, output>`` for a random
``g``, with respect to every differentiable float input) are compared with the primitive
written directly in PyTorch (``FORMULAS`` in :mod:`tests.catalogue_cases`, differentiated by
``torch.autograd``): never with Mithril's own kernels or VJPs, so a mistake shared by every
backend (or in the NumPy reference the other walk compares with) fails here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril import IOKey
from mithril.framework.ops import CATALOGUE
from mithril.models import Model, Operator
from tests.catalogue_cases import CASES, FORMULAS

BACKENDS = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}
RTOL, ATOL = 1e-7, 1e-9


def test_every_walked_primitive_has_an_independent_formula() -> None:
    assert set(CASES) == set(FORMULAS), set(CASES) ^ set(FORMULAS)


def _build(op_name: str, scalars: dict[str, Any], tensors: dict[str, np.ndarray]
           ) -> tuple[Model, set[str], set[str]]:
    """A one-primitive model; its differentiable float tensor inputs are trainable."""
    op = CATALOGUE[op_name]
    scalars = dict(scalars)
    n = scalars.pop("n", None)
    if scalars.get("dtype") == "float":
        scalars["dtype"] = ml.float64
    prim = Operator(op, n_inputs=n, **scalars)
    model = Model()
    terminals = {k: IOKey(k) for k in tensors}
    terminals.update({t: IOKey(t) for t in prim.output_names})
    model |= prim(**terminals)
    terms = {t.name: t for t in prim.in_terms}
    params = {k for k, v in tensors.items()
              if op.differentiable and np.issubdtype(v.dtype, np.floating)
              and terms[k].differentiable and terms[k].kind != "scalar"}
    return model, params, set(tensors) - params


def _reference(op_name: str, scalars: dict[str, Any], tensors: dict[str, np.ndarray],
               params: set[str], out_grad: np.ndarray | None
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    t = {k: torch.tensor(v, requires_grad=k in params and out_grad is not None)
         for k, v in tensors.items()}
    outs = FORMULAS[op_name](scalars, t)
    grads: dict[str, np.ndarray] = {}
    if out_grad is not None and params:
        objective = (outs["output"] * torch.from_numpy(out_grad)).sum()
        keys = sorted(params)
        found = torch.autograd.grad(objective, [t[k] for k in keys], allow_unused=True)
        grads = {k: np.zeros(tensors[k].shape) if g is None else g.numpy()
                 for k, g in zip(keys, found, strict=True)}
    return ({k: None if v is None else np.asarray(v.detach().numpy())
             for k, v in outs.items()}, grads)


def _cases() -> list[Any]:
    rng = np.random.default_rng(0)
    return [pytest.param(name, case, id=f"{name}-{i}")
            for name, make in CASES.items() if name in FORMULAS
            for i, case in enumerate(make(rng))]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("op_name,case", _cases())
def test_primitive_matches_independent_formula(backend_name: str, op_name: str,
                                               case: Any) -> None:
    scalars, tensors = case
    backend = BACKENDS[backend_name](dtype=ml.float64)
    model, params, data = _build(op_name, scalars, tensors)
    pm = ml.compile(model, backend, shapes={k: list(v.shape) for k, v in tensors.items()},
                    trainable_keys=params, data_keys=data, jit=False)
    p = {k: backend.array(tensors[k]) for k in params}
    d = {k: backend.array(tensors[k]) for k in data}
    out_grad = None
    if params:
        shape = _reference(op_name, scalars, tensors, params, None)[0]["output"].shape
        out_grad = np.random.default_rng(1).standard_normal(shape)
        outs, grads = pm.evaluate(p, d, output_gradients={"output": backend.array(out_grad)})
    else:
        outs, grads = pm.evaluate(p, d), {}
    want, want_grads = _reference(op_name, scalars, tensors, params, out_grad)
    assert set(outs) == set(want), (sorted(outs), sorted(want))
    for k, ref in want.items():
        if ref is None:
            assert outs[k] is None, k
            continue
        got = backend.to_numpy(outs[k])
        assert got.shape == ref.shape, (k, got.shape, ref.shape)
        if ref.dtype == bool or np.issubdtype(ref.dtype, np.integer):
            assert np.array_equal(got, ref), (k, got, ref)
        else:
            np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=f"output {k}")
    assert set(grads) == set(want_grads)
    for k, ref in want_grads.items():
        np.testing.assert_allclose(backend.to_numpy(grads[k]), ref, rtol=RTOL * 10,
                                   atol=ATOL * 10, err_msg=f"gradient of {k}")
