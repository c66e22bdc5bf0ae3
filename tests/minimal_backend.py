"""A test backend that implements only the core primitives (on NumPy, float64).

Its registry holds the NumPy backend's kernels and VJPs of the *core* primitives and nothing
else: every derived primitive runs from its catalogue decomposition, with gradients through the
decomposition's tape (``mithril/framework/ops/decompose.py``). The catalogue walk on it
(``tests/test_catalogue_minimal.py``) shows that the core is enough.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import mithril as ml
from mithril.backends.numpy import kernels as numpy_kernels
from mithril.backends.registry import EXTRA_KERNELS, KernelRegistry
from mithril.framework.ops import core_ops


def core_registry() -> KernelRegistry:
    """A registry with the NumPy kernels (all modes) and VJPs of the core primitives only."""
    core = {op.name for op in core_ops()}
    reg = KernelRegistry("minimal")
    src = numpy_kernels.registry
    for (name, mode), fn in src.kernels.items():
        if name in core or name in EXTRA_KERNELS:
            reg.kernel(name, mode)(fn)
    for name, fn in src.vjps.items():
        if name.removesuffix("_inference") in core:
            reg.vjp(name)(fn)
    return reg


class MinimalBackend(ml.NumpyBackend):
    """``NumpyBackend`` whose kernel table is built from the core kernels alone."""

    name = "minimal"
    kernels: Any = SimpleNamespace(**{k: getattr(numpy_kernels, k) for k in dir(numpy_kernels)
                                      if not k.startswith("__")})
    kernels.registry = core_registry()
    exprs: dict[str, str] = {}

    def __init__(self, dtype: Any = ml.float64, device: str = "cpu") -> None:
        super().__init__(dtype, device)
