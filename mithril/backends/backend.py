"""The Backend contract: arrays, random numbers, devices, dtypes, kernels and losses.

A backend owns one framework. Compiled code calls the backend's *kernels* — one function per
catalogue primitive, with the catalogue's terminal order — and the backend turns the generated
forward function into gradients (its own VJPs for NumPy, the framework's autodiff elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, BackendUnavailableError
from ..framework import types as T
from .losses import LossMixin

#: primitives whose kernel is exactly a Python operator on PyTorch and JAX arrays; generated
#: code writes the operator instead of a kernel call
OPERATOR_EXPRS: dict[str, str] = {
    "add": "({0} + {1})",
    "subtract": "({0} - {1})",
    "multiply": "({0} * {1})",
    "divide": "({0} / {1})",
    "floor_divide": "({0} // {1})",
    "power": "({0} ** {1})",
    "greater": "({0} > {1})",
    "less": "({0} < {1})",
    "greater_equal": "({0} >= {1})",
    "less_equal": "({0} <= {1})",
    "equal": "({0} == {1})",
    "not_equal": "({0} != {1})",
    "shift_left": "({0} << {1})",
    "shift_right": "({0} >> {1})",
    "matmul": "({0} @ {1})",
}


class Backend(LossMixin):
    """Base of ``NumpyBackend``, ``TorchBackend``, ``JaxBackend`` and ``MlxBackend``.

    ``dtype`` is the float precision of parameters and float tensors; ``device`` is where
    arrays live (``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"mps"``).
    """

    name: str = "base"
    #: does this backend compute gradients with its own VJPs (NumPy) or with autodiff?
    manual_gradients = False
    #: Python expressions generated code may use instead of a kernel call (e.g. ``{0} + {1}``)
    exprs: dict[str, str] = {}
    supported_devices: tuple[str, ...] = ("cpu",)
    #: whether the framework has a JIT for ``wrap_jit`` (without one, ``compile(..., jit=True)``
    #: changes nothing and ``compiled.jit`` is False)
    has_jit = False
    #: whether ``compile(..., jit=None)`` wraps generated code with the framework's JIT
    default_jit = False
    #: the ``mithril.parallel.DeviceMesh`` arrays are split over (JAX and PyTorch only)
    device_mesh: Any = None
    #: can arrays live on a device mesh (``device_mesh=``)? JAX and PyTorch (``mithril/parallel``)
    parallel = False
    #: the array types compiled models take as params, inputs, state and output gradients
    #: (``evaluate`` checks each value with one ``isinstance`` against this tuple)
    array_types: tuple[type, ...] = (object,)
    #: how error messages name ``array_types``
    array_type_names: str = "arrays"
    #: what ``evaluate(..., rng=)`` takes (what ``next_rng`` returns), and how errors name it
    rng_types: tuple[type, ...] = (object,)
    rng_type_names: str = "the backend's random state"
    #: traced values (JAX tracers) that ``evaluate`` must not keep as a model's state
    tracer_types: tuple[type, ...] = ()

    def __class_getitem__(cls, item: Any) -> type:
        """``ml.Backend[DataType]`` (the reference's annotation) is the class itself."""
        return cls

    def __init__(self, dtype: Any = T.float32, device: str = "cpu",
                 device_mesh: Any = None) -> None:
        # JAX and PyTorch build their mesh in their own __init__; the others have none
        if device_mesh is not None:
            raise self._no_device_mesh(device_mesh)
        self.dtype = T.as_dtype(dtype)
        if self.dtype.kind != T.FLOAT:
            raise ArgumentTypeError(f"a backend's dtype is its float precision; got {self.dtype!r}")
        self.device = self._check_device(device)
        self.kernels.registry.table(self.manual_gradients)  # KernelRegistryError if incomplete
        self._np_rng = np.random.default_rng(0)
        self._seed = 0
        self.set_seed(0)

    def __repr__(self) -> str:
        mesh = "" if self.device_mesh is None else f", device_mesh={self.device_mesh.shape}"
        return f"{type(self).__name__}(dtype={self.dtype!r}, device={self.device!r}{mesh})"

    # ---- framework hooks (each backend implements these) ----
    kernels: ModuleType
    vjps: ModuleType | None = None

    def _check_device(self, device: str) -> str:
        if not isinstance(device, str):
            raise ArgumentTypeError(f"device must be a string such as 'cpu', got {device!r}")
        base = device.split(":")[0]
        if base not in ("cpu", "cuda", "mps", "gpu", "tpu"):
            raise ArgumentError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:0' or 'mps'")
        if base != "cpu":
            raise BackendUnavailableError(
                f"{type(self).__name__} cannot use device {device!r} on this machine; "
                "use device='cpu'")
        return device

    def native_dtype(self, dtype: T.Dtype) -> Any:
        """The framework's dtype object for ``dtype``."""
        raise NotImplementedError

    def array_dtype(self, dtype: T.Dtype) -> Any:
        """What ``x.dtype`` is for an array ``x`` of ``dtype`` (equal *and* hashing alike, so
        ``evaluate`` can compare it and look it up in sets)."""
        return self.native_dtype(dtype)

    def _from_numpy(self, array: np.ndarray) -> Any:
        """A framework array holding ``array`` (dtype already final) on this device."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` to a NumPy array."""
        raise NotImplementedError

    def seed_framework(self, seed: int) -> None:
        """Seed the framework's own random state (used by dropout and similar)."""

    # ---- the shared array-creation surface ----
    def _resolve_dtype(self, dtype: Any, default_float: bool = True) -> T.Dtype:
        if dtype is None:
            return self.dtype
        return T.as_dtype(dtype)

    def _np_dtype(self, dtype: T.Dtype) -> Any:
        if dtype.name == "bfloat16":
            return np.float32  # converted by the framework afterwards
        return np.dtype(dtype.name)

    def _finish(self, array: np.ndarray, dtype: T.Dtype, device_mesh: Any = None) -> Any:
        # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        out = self._from_numpy(np.asarray(array, dtype=self._np_dtype(dtype), order="C"))
        if dtype.name == "bfloat16":
            out = self.cast(out, dtype)
        return self._place(out, device_mesh)

    def _place(self, array: Any, device_mesh: Any) -> Any:
        """Lay out a new array on a device mesh (``device_mesh=`` of the creators): replicated
        on the backend's mesh, or split as ``device_mesh`` says (JAX and PyTorch; backends
        without parallelism accept only ``device_mesh=None``)."""
        if device_mesh is None and self.device_mesh is None:
            return array
        if not self.parallel:
            raise self._no_device_mesh(device_mesh)
        from ..parallel.compiled import place_created

        return place_created(self, array, device_mesh)

    def _no_device_mesh(self, device_mesh: Any) -> BackendUnavailableError:
        """The error for ``device_mesh=`` (at construction or on a creator) on a backend
        without parallelism (NumPy, MLX)."""
        return BackendUnavailableError(
            f"device_mesh={device_mesh!r}: parallelism needs JAX or PyTorch: "
            f"{type(self).__name__} has no device meshes (it runs on one device); use "
            "ml.JaxBackend(device_mesh=...) or ml.TorchBackend(device_mesh=...)")

    def cast(self, x: Any, dtype: Any = None) -> Any:
        """Convert ``x`` to ``dtype`` (the backend's float dtype when None, as the reference's
        ``cast(value)``)."""
        return self.kernels.cast(x, self.dtype if dtype is None else T.as_dtype(dtype))

    def array(self, data: Any, dtype: Any = None, device_mesh: Any = None) -> Any:
        """A backend array from nested lists, NumPy or another framework's array.

        Floats take the backend's dtype unless ``dtype`` is given; ints and bools keep theirs.
        Arrays of every installed framework are taken in any float precision, bfloat16 and
        float16 included: they pass through NumPy in a dtype that holds their values exactly
        (bfloat16 as float32), so ``backend.array(x, dtype=ml.bfloat16)`` of a bfloat16 ``x``
        keeps every bit.
        """
        arr = _exact_numpy(data if isinstance(data, np.ndarray) else _to_numpy_any(data))
        if dtype is None:
            if arr.dtype.kind == "f":
                dt = self.dtype
            elif arr.dtype.kind == "b":
                dt = T.bool_
            elif arr.dtype.kind in "iu":
                dt = T.int64 if arr.dtype.itemsize == 8 else T.as_dtype(arr.dtype.name)
            else:
                raise ArgumentTypeError(f"cannot make an array of {arr.dtype} values")
        else:
            dt = T.as_dtype(dtype)
        return self._finish(arr, dt, device_mesh)

    def ones(self, *shape: Any, dtype: Any = None, device_mesh: Any = None) -> Any:
        return self._finish(np.ones(shape_tuple(shape)), self._resolve_dtype(dtype), device_mesh)

    def zeros(self, *shape: Any, dtype: Any = None, device_mesh: Any = None) -> Any:
        return self._finish(np.zeros(shape_tuple(shape)), self._resolve_dtype(dtype), device_mesh)

    def randn(self, *shape: Any, dtype: Any = None, device_mesh: Any = None) -> Any:
        """Standard normal samples from the backend's seeded generator."""
        return self._finish(self._np_rng.standard_normal(shape_tuple(shape)),
                            self._resolve_dtype(dtype), device_mesh)

    def rand(self, *shape: Any, dtype: Any = None, device_mesh: Any = None) -> Any:
        """Uniform samples in ``[0, 1)`` from the backend's seeded generator."""
        return self._finish(self._np_rng.random(shape_tuple(shape)), self._resolve_dtype(dtype),
                            device_mesh)

    def randint(self, low: int, high: int, shape: Sequence[int] | int = (), dtype: Any = None,
                device_mesh: Any = None) -> Any:
        """Integers in ``[low, high)``."""
        dt = T.int64 if dtype is None else T.as_dtype(dtype)
        dims = shape_tuple((shape,))
        return self._finish(self._np_rng.integers(low, high, dims), dt, device_mesh)

    def arange(self, start: float, stop: float | None = None, step: float = 1,
               dtype: Any = None) -> Any:
        if stop is None:
            start, stop = 0, start
        values = np.arange(start, stop, step)
        if dtype is None:
            dt = T.int64 if values.dtype.kind in "iu" else self.dtype
        else:
            dt = T.as_dtype(dtype)
        return self._finish(values, dt)

    def set_seed(self, seed: int) -> None:
        """Seed parameter initialisation, the creators above and the framework's RNG."""
        if not isinstance(seed, int | np.integer):
            raise ArgumentTypeError(f"seed must be an int, got {seed!r}")
        self._seed = int(seed)
        self._np_rng = np.random.default_rng(int(seed))
        self.seed_framework(int(seed))

    @property
    def np_rng(self) -> np.random.Generator:
        return self._np_rng

    # ---- compile hooks ----
    def kernel_table(self) -> dict[str, Callable[..., Any]]:
        """Kernels by the name generated code calls them, with dtype-aware ones bound to this
        backend's dtype: what ``self.kernels.registry`` holds (checked against the catalogue,
        derived primitives it lacks composed from its core kernels; see ``registry.py``)."""
        table = self.kernels.registry.table(self.manual_gradients)
        if "to_tensor" in table:
            raw = table["to_tensor"]
            float_dtype = self.native_dtype(self.dtype)
            table["to_tensor"] = lambda value: raw(value, float_dtype=float_dtype)
        return table

    def next_rng(self) -> Any:
        """The random state handed to random kernels for one call of compiled code."""
        raise NotImplementedError

    def vjp_fn(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """Gradients through ``forward`` by the framework's autodiff (see kernel-contract.md)."""
        raise NotImplementedError

    def wrap_jit(self, fn: Callable[..., Any],
                 settle: Callable[[Callable[..., Any]], None] | None = None
                 ) -> Callable[..., Any]:
        """Wrap a generated function for ``jit=True`` (identity where there is no JIT).

        ``settle``, when given, may be called once with the function to call from then on: a
        wrapper that decides something at its first call (JAX: jit, or eager for code that
        cannot be traced) lets its caller drop it, so later calls pay nothing for it.
        """
        return fn


def shape_tuple(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """A creator's ``*shape`` (``2, 3`` or one tuple/list) as a tuple of ints; ``ArgumentError``
    for anything but non-negative ints.

    >>> shape_tuple(((2, 3),)), shape_tuple((4,))
    ((2, 3), (4,))
    """
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    out = []
    for s in shape:
        if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < 0:
            raise ArgumentError(f"shape entries must be non-negative ints, got {shape!r}")
        out.append(int(s))
    return tuple(out)


def _to_numpy_any(data: Any) -> np.ndarray:
    """``data`` (a torch tensor, MLX or JAX array, nested lists, ...) as a NumPy array.

    Floats NumPy lacks (torch / MLX bfloat16, torch float8) become float32, which holds each of
    their values exactly; JAX gives ``ml_dtypes`` arrays, which :func:`_exact_numpy` widens.
    """
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # torch
        import torch

        data = data.detach().cpu()
        if data.is_floating_point() and data.dtype not in (torch.float16, torch.float32,
                                                           torch.float64):
            data = data.float()
        return data.numpy()
    if type(data).__module__.startswith("mlx"):
        import mlx.core as mx

        if data.dtype == mx.bfloat16:
            data = data.astype(mx.float32)
        return np.array(data)
    return np.asarray(data)


def _exact_numpy(arr: np.ndarray) -> np.ndarray:
    """``arr`` with an ``ml_dtypes`` dtype (JAX's bfloat16, float8, int4, ...; NumPy has no
    such dtypes of its own) widened to one that holds its values exactly: float32 for the
    floats, int8 for the small ints."""
    if arr.dtype.type.__module__.startswith("ml_dtypes"):
        name = arr.dtype.name
        if "float" in name:
            return arr.astype(np.float32)
        if "int" in name:
            return arr.astype(np.int8)
    return arr
