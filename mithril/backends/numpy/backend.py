"""``NumpyBackend``: CPU arrays, NumPy kernels and hand-written VJPs (no autodiff, no JIT)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...framework import types as _types
from ..backend import Backend
from ..helpers import ReferenceHelpers
from . import kernels as _kernels
from . import loops as _loops  # noqa: F401  (issue 15: loop kernels register themselves)
from . import vjps as _vjps

if TYPE_CHECKING:
    from collections.abc import Callable


@functools.cache
def _warm_allocator() -> None:
    """Let glibc's malloc keep big freed blocks instead of returning them to the OS.

    Training allocates and frees many multi-megabyte temporaries per step. glibc serves blocks
    above its mmap threshold (128 KiB until raised) with fresh ``mmap`` pages and trims freed
    heap tops past twice that, so each step page-faults its memory back in, which measured
    ~35% of a small ConvNet's step. Freeing one ~30 MiB mmap'd block raises both thresholds
    (the dynamic maximum is 32 MiB / 64 MiB). Harmless elsewhere (other allocators ignore it).
    Runs once per process.
    """
    np.empty(30 * 2**20, np.uint8)  # freed at once


class NumpyBackend(ReferenceHelpers, Backend):
    """Runs compiled models with NumPy on the CPU; gradients come from ``vjps.py``.

    ``dtype`` is the float precision (``ml.float16``, ``ml.float32`` or ``ml.float64``; NumPy
    has no bfloat16). Only ``device="cpu"`` exists, and there is no parallelism:
    ``device_mesh=`` raises ``BackendUnavailableError``, as on MLX.
    """

    name = "numpy"
    manual_gradients = True
    #: binary primitives generated code writes as plain operators (same result as the kernel)
    exprs: ClassVar[dict[str, str]] = {"add": "({0} + {1})", "subtract": "({0} - {1})",
                                       "multiply": "({0} * {1})", "matmul": "({0} @ {1})"}
    supported_devices = ("cpu",)
    kernels = _kernels
    vjps = _vjps
    array_types = (np.ndarray, np.generic)  # 0-d results of arithmetic are NumPy scalars
    array_type_names = "numpy.ndarray"
    rng_types = (np.random.Generator,)
    rng_type_names = "a numpy.random.Generator (np.random.default_rng(seed))"

    def __init__(self, dtype: Any = _types.float32, device: str = "cpu",
                 device_mesh: Any = None) -> None:
        _kernels._native_dtype(dtype)  # fail early on bfloat16
        super().__init__(dtype, device, device_mesh)  # device_mesh: BackendUnavailableError
        _warm_allocator()

    def native_dtype(self, dtype: Any) -> np.dtype:
        """The NumPy dtype for ``dtype`` (``TypeError`` for bfloat16, which NumPy lacks)."""
        return _kernels._native_dtype(dtype)

    def _from_numpy(self, array: np.ndarray) -> np.ndarray:
        """NumPy arrays are already this backend's arrays."""
        return np.asarray(array)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A copy of ``x`` as a NumPy array."""
        return np.array(x, copy=True)

    def seed_framework(self, seed: int) -> None:
        """Reseed the generator handed to random kernels (a stream apart from ``np_rng``)."""
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))

    def next_rng(self) -> np.random.Generator:
        """The backend's seeded generator: the same object every call, so each call advances it
        (the draws restart after ``set_seed``)."""
        return self._rng

    def wrap_jit(self, fn: Callable[..., Any],
                 settle: Callable[[Callable[..., Any]], None] | None = None
                 ) -> Callable[..., Any]:
        """NumPy has no JIT: ``fn`` unchanged (``compile`` does not call this: ``compiled.jit``
        is False on NumPy)."""
        return fn
