"""The MLX backend: kernels in ``kernels.py``, gradients by ``mx.vjp``, JIT by ``mx.compile``.

MLX supports float64 on its CPU device only (not on Metal GPUs); ``MlxBackend(dtype=ml.float64)``
therefore needs ``device="cpu"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from ...errors import ArgumentError, ArgumentTypeError, BackendUnavailableError
from ...framework import types as ml_types
from ..backend import Backend
from ..helpers import ReferenceHelpers
from . import kernels as mlx_kernels


class MlxBackend(ReferenceHelpers, Backend):
    """Compiled models on Apple's MLX (CPU everywhere; ``"gpu"``/``"mps"`` where MLX has one)."""

    has_jit = True
    default_jit = True  # compile(..., jit=None) wraps generated code in the JIT
    name = "mlx"
    kernels = mlx_kernels
    array_types = (mx.array,)
    array_type_names = "mlx.core.array"
    rng_types = (mx.array,)
    rng_type_names = "an MLX PRNG key (mx.random.key(seed))"
    supported_devices = ("cpu", "gpu", "mps")
    #: Python operators that behave exactly like the kernels on MLX arrays and Python numbers
    exprs = {"add": "({0} + {1})", "subtract": "({0} - {1})", "multiply": "({0} * {1})",
             "divide": "({0} / {1})", "matmul": "({0} @ {1})", "negate": "(-{0})"}

    def __init__(self, dtype: Any = ml_types.float32, device: str = "cpu",
                 device_mesh: Any = None) -> None:
        self._key = mx.random.key(0)
        self.mx_device: mx.Device = mx.Device(mx.cpu)
        super().__init__(dtype, device, device_mesh)  # device_mesh: BackendUnavailableError
        if self.dtype.name == "float64" and self.mx_device != mx.Device(mx.cpu):
            raise ArgumentTypeError("MLX supports float64 only on the CPU; use device='cpu' or a "
                                    "float32/float16/bfloat16 dtype")

    # ---- framework hooks ----
    def _check_device(self, device: str) -> str:
        """``"cpu"`` -> ``mx.cpu``; ``"gpu"``/``"mps"`` -> ``mx.gpu`` when MLX has one."""
        if not isinstance(device, str):
            raise ArgumentTypeError(f"device must be a string such as 'cpu', got {device!r}")
        base = device.split(":")[0]
        if base not in ("cpu", "cuda", "mps", "gpu", "tpu"):
            raise ArgumentError(f"unknown device {device!r}; use 'cpu', 'gpu' or 'mps'")
        if base == "cpu" or (base in ("gpu", "mps") and mx.is_available(mx.gpu)):
            self.mx_device = mx.Device(mx.cpu if base == "cpu" else mx.gpu)
            return device
        raise BackendUnavailableError(
            f"MlxBackend cannot use device {device!r} on this machine (MLX GPU available: "
            f"{mx.is_available(mx.gpu)}); use device='cpu'")

    def native_dtype(self, dtype: ml_types.Dtype) -> mx.Dtype:
        """The ``mx.Dtype`` for ``dtype``."""
        return mlx_kernels.mx_dtype(dtype)

    def _from_numpy(self, array: np.ndarray) -> mx.array:
        """An MLX array with exactly ``array``'s dtype (MLX would narrow float64 otherwise)."""
        return mx.array(array, dtype=mlx_kernels.mx_dtype(array.dtype.name))

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` to NumPy (bfloat16 becomes float32, which NumPy can hold)."""
        if isinstance(x, mx.array):
            return np.array(x.astype(mx.float32) if x.dtype == mx.bfloat16 else x)
        return np.asarray(x)

    def seed_framework(self, seed: int) -> None:
        """Restart the backend's PRNG key (and MLX's global generator) from ``seed``."""
        self._key = mx.random.key(seed)
        mx.random.seed(seed)

    def next_rng(self) -> mx.array:
        """A fresh key for one call of compiled code; the backend keeps the other half."""
        self._key, sub = mlx_kernels.split_rng(self._key, 2)
        return sub

    # ---- autodiff and JIT ----
    def vjp_fn(self, forward: Callable[..., tuple[dict, dict]]) -> Callable[..., Any]:
        """Wrap ``forward(params, data, state, rng)`` into one that also returns gradients.

        The result is ``fn(params, data, state, rng, output_gradients) -> (outputs, new_state,
        gradients)``: ``gradients`` holds one array per key of ``params`` (zeros where a param
        does not reach the differentiated outputs), and only the outputs named in
        ``output_gradients`` (with a non-``None`` cotangent) are differentiated.
        """
        def fn(params: dict[str, Any], data: dict[str, Any], state: dict[str, Any], rng: Any,
               output_gradients: dict[str, Any]) -> tuple[dict, dict, dict]:
            keys = sorted(params)
            out_keys = sorted(k for k, g in output_gradients.items() if g is not None)
            if not out_keys:
                with mx.stream(self.mx_device):
                    outputs, new_state = forward(params, data, state, rng)
                return outputs, new_state, {k: mx.zeros_like(params[k]) for k in keys}
            cotangents = [self._cotangent(output_gradients[k]) for k in out_keys]
            captured: dict[str, Any] = {}

            def flat(*arrays: mx.array) -> list[mx.array]:
                outputs, new_state = forward(dict(zip(keys, arrays, strict=True)), data, state,
                                             rng)
                captured["outputs"], captured["state"] = outputs, new_state
                return _distinct([_differentiated(outputs, k, c)
                                  for k, c in zip(out_keys, cotangents, strict=True)])

            with mx.stream(self.mx_device):
                _, grads = mx.vjp(flat, [params[k] for k in keys], cotangents)
            return captured["outputs"], captured["state"], dict(zip(keys, grads, strict=True))

        return fn

    def _cotangent(self, value: Any) -> mx.array:
        """An output gradient as an MLX array (NumPy keeps its dtype; floats take ours)."""
        if isinstance(value, mx.array):
            return value
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not isinstance(value, np.ndarray | np.generic):
            return mx.array(arr, dtype=self.native_dtype(self.dtype))
        return self._from_numpy(arr)

    def wrap_jit(self, fn: Callable[..., Any],
                 settle: Callable[[Callable[..., Any]], None] | None = None
                 ) -> Callable[..., Any]:
        """``mx.compile(fn)``; recompiles for new shapes, dtypes and Python-scalar arguments.

        Dicts, lists and Python scalars may be arguments (scalars are compiled in as
        constants). A function that needs array values on the Python side (``item`` or
        data-dependent control flow) cannot be traced: it then runs eagerly, with a warning.
        """
        compiled = mx.compile(fn)
        eager = False

        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal eager
            with mx.stream(self.mx_device):
                if not eager:
                    try:
                        return compiled(*args, **kwargs)
                    except ValueError as err:
                        if "function transformations" not in str(err):
                            raise
                        warnings.warn(f"mx.compile cannot trace this function ({err}); running "
                                      "it eagerly", RuntimeWarning, stacklevel=2)
                        eager = True
                return fn(*args, **kwargs)

        return run


def _distinct(arrays: list[mx.array]) -> list[mx.array]:
    """``arrays`` with every repeat of an array replaced by a (differentiable) copy: ``mx.vjp``
    keys cotangents by output array, so one array under two output names would lose one."""
    seen: set[int] = set()
    result = []
    for arr in arrays:
        result.append(mx.array(arr) if id(arr) in seen else arr)  # a Copy node (differentiable)
        seen.add(id(arr))
    return result


def _differentiated(outputs: dict[str, Any], key: str, cotangent: mx.array) -> mx.array:
    """Output ``key`` in its cotangent's dtype (and shape, for equal sizes: ``()`` vs ``(1,)``)
    so that ``mx.vjp`` accepts the pair."""
    if key not in outputs:
        raise KeyError(f"output_gradients names {key!r}, which is not an output; outputs are "
                       f"{sorted(outputs)}")
    out = outputs[key]
    if not isinstance(out, mx.array):
        raise TypeError(f"output {key!r} is not an array ({type(out).__name__}); it cannot be "
                        "differentiated")
    if out.shape != cotangent.shape and out.size == cotangent.size:
        out = mx.reshape(out, cotangent.shape)
    return out if out.dtype == cotangent.dtype else out.astype(cotangent.dtype)
