"""THE op catalogue: one declaration per primitive.

A primitive is declared once, with :func:`~mithril.framework.ops.base.register`, in the module
of its family (``elementwise``, ``linalg``, ``reductions``, ``shape_ops``, ``indexing``, ``nn``,
``creation``). The declaration (an :class:`OpDef`) names its input and output terminals (tensor,
scalar, or either), its shape-and-type rule, its flags (differentiable, random, stateful,
modal), its docstring, and — for a *derived* primitive — its decomposition into core primitives.

Backends register kernels for the core primitives (``mithril/backends/registry.py``); a
derived primitive runs the backend's own kernel where it registers one and its decomposition
otherwise. ``tests/test_catalogue_backends.py`` and ``tests/test_catalogue_independent.py`` walk
this table on every backend; ``docs/dev/adding-a-primitive.md`` shows how to add one.
"""

from __future__ import annotations

from ..logical.meta import SCALAR, TENSOR
from . import creation, elementwise, indexing, linalg, nn, reductions, shape_ops  # noqa: F401
from .base import CATALOGUE, OpDef, Term, core_ops, derive, register, tensor_ops, unregister
from .elementwise import NON_DIFFERENTIABLE
from .linalg import polynomial_feature_count

__all__ = ["CATALOGUE", "NON_DIFFERENTIABLE", "SCALAR", "TENSOR", "OpDef", "Term", "core_ops",
           "derive", "polynomial_feature_count", "register", "tensor_ops", "unregister"]
