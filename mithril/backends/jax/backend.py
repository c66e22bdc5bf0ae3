"""The JAX backend: kernels on ``jax.numpy``, gradients by ``jax.vjp``, ``jit`` by ``jax.jit``.

Creating a backend changes nothing process-wide: JAX's ``jax_enable_x64`` option stays as the
user set it. A ``float64`` backend does its own work (array creation, casts, the compiled
model's calls and tracing, the loss helpers) inside ``jax.enable_x64(True)``, a scoped,
thread-local switch, so its arrays are really 64-bit while the user's own JAX code keeps JAX's
defaults (``jnp.zeros(3)`` stays float32). Other precisions follow the user's setting: integer
arrays are int32 unless the user enabled x64 (JAX's default).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ...errors import ArgumentError, BackendUnavailableError, InputError, TypeMismatchError
from ...framework.types import Dtype, float32
from ..backend import OPERATOR_EXPRS, Backend
from ..helpers import ReferenceHelpers
from . import kernels
from . import loops as _loops  # noqa: F401  (issue 15: loop kernels register themselves)

#: Mithril device names -> JAX platform names
_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu", "mps": "METAL"}

#: what ``jax.jit`` raises for code that needs concrete values in Python (``.item()``,
#: ``int(x)``, ``tolist()``, data-dependent shapes such as ``jnp.unique``)
_UNTRACEABLE = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                jax.errors.TracerIntegerConversionError, jax.errors.NonConcreteBooleanIndexError)


class JaxBackend(ReferenceHelpers, Backend):
    """Runs compiled models on JAX (``dtype`` is the float precision, ``device`` e.g. "cpu").

    ``device_mesh=(4,)`` / ``(2, 2)`` / ``{"data": 2, "model": 2}`` / a ``jax.sharding.Mesh``
    puts arrays on a mesh of all JAX devices (``jax.sharding``): creators then make arrays
    replicated on it, or split with ``device_mesh=`` (``backend.ones(8, 4, device_mesh=(4,))``),
    and ``ml.compile(..., parallel=...)`` chooses how a model's arrays are split
    (``docs/parallel.md``).

    A float64 backend works inside ``jax.enable_x64(True)`` only while it runs its own code;
    nothing process-wide changes (see the module docstring). Inside your own ``jax.jit`` or
    ``jax.grad`` of a float64 model, enable x64 yourself (``with jax.enable_x64(True):`` around
    the call, or ``jax.config.update("jax_enable_x64", True)``): without it JAX makes the
    traced arrays float32 and ``evaluate`` refuses them.

    >>> import jax.numpy as jnp
    >>> import mithril as ml
    >>> ml.JaxBackend(dtype=ml.float64).ones(2).dtype, jnp.zeros(2).dtype
    (dtype('float64'), dtype('float32'))
    """

    has_jit = True
    default_jit = True  # compile(..., jit=None) wraps generated code in the JIT
    parallel = True
    name = "jax"
    kernels = kernels
    #: NumPy arrays too, as ``jax.numpy`` takes them (``jax.Array`` includes tracers)
    array_types = (jax.Array, np.ndarray, np.generic)
    array_type_names = "jax.Array or numpy.ndarray"
    rng_types = (jax.Array,)  # a key from jax.random.key (or jax.random.PRNGKey); tracers too
    rng_type_names = "a JAX PRNG key (jax.random.key(seed))"
    tracer_types = (jax.core.Tracer,)
    supported_devices = ("cpu", "cuda", "gpu", "tpu", "mps")
    exprs: ClassVar[dict[str, str]] = {
        **OPERATOR_EXPRS, "logical_and": "({0} & {1})", "logical_or": "({0} | {1})",
        "logical_xor": "({0} ^ {1})", "negate": "(-{0})", "indexer": "{0}[{1}]"}

    def __init__(self, dtype: Any = float32, device: str = "cpu",
                 device_mesh: Any = None) -> None:
        #: functions wrap_jit found untraceable (their vjp_fn wrappers run eagerly at once)
        self._untraceable: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
        self._jax_device: Any = None
        self._key: Any = None
        super().__init__(dtype, device)
        #: does this backend work inside ``jax.enable_x64(True)`` (float64)?
        self.x64 = self.dtype.name == "float64"
        if device_mesh is not None:
            from ...parallel import _jax as parallel_jax

            self.device_mesh = parallel_jax.make_mesh(device_mesh, self._jax_device.platform)

    # ---- devices and dtypes ----
    def _check_device(self, device: str) -> str:
        """Validate ``device`` and remember the matching ``jax.Device``."""
        # the base class validates the name but knows only the CPU; JAX may have the device
        with contextlib.suppress(BackendUnavailableError):
            super()._check_device(device)
        base, _, index = device.partition(":")
        if index and not index.isdigit():
            raise ArgumentError(f"bad device index in {device!r}; use e.g. 'cuda:0'")
        try:
            devices = jax.devices(_PLATFORMS[base])
        except (RuntimeError, ValueError) as err:
            raise BackendUnavailableError(
                f"JaxBackend cannot use device {device!r}: JAX has no {base} device here "
                f"({err}); use device='cpu'") from None
        i = int(index) if index else 0
        if i >= len(devices):
            raise BackendUnavailableError(
                f"JaxBackend cannot use device {device!r}: only {len(devices)} {base} "
                f"device(s) exist")
        self._jax_device = devices[i]
        return device

    @property
    def jax_device(self) -> Any:
        """The ``jax.Device`` arrays are placed on."""
        return self._jax_device

    native_dtype = staticmethod(kernels.native_dtype)

    def array_dtype(self, dtype: Dtype) -> np.dtype:
        """``np.dtype``, as ``x.dtype`` of a JAX array (``jnp.float32`` is a scalar type that
        compares equal to ``np.dtype('float32')`` but hashes differently)."""
        return np.dtype(kernels.native_dtype(dtype))

    # ---- arrays ----
    def _from_numpy(self, array: np.ndarray) -> jax.Array:
        """``array`` as a JAX array on this backend's device (dtype kept)."""
        return jax.device_put(array, self._jax_device)

    def _x64_for(self, dtype: Any) -> Any:
        """``jax.enable_x64(True)`` on a float64 backend or for float64 work, else no scope."""
        wide = self.x64 or getattr(dtype, "name", dtype) == "float64"
        return jax.enable_x64(True) if wide else contextlib.nullcontext()

    def _finish(self, array: np.ndarray, dtype: Dtype, device_mesh: Any = None) -> Any:
        """A created array; float64 ones inside ``jax.enable_x64(True)`` (asked for)."""
        with self._x64_for(dtype):
            return super()._finish(array, dtype, device_mesh)

    def cast(self, x: Any, dtype: Any = None) -> Any:
        """Convert ``x`` to ``dtype`` (float64 inside ``jax.enable_x64(True)``)."""
        with self._x64_for(dtype):
            return super().cast(x, dtype)

    def scoped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run inside ``jax.enable_x64(True)`` on a float64 backend; ``fn`` itself
        otherwise (no cost per call). Tracing happens inside the call, so a ``jax.jit`` of
        ``fn`` traces and caches in float64 too.

        >>> import mithril as ml
        >>> b = ml.JaxBackend(dtype=ml.float64)
        >>> b.scoped(lambda: b.kernels.cast(b.kernels.to_tensor(1.0), ml.float64))().dtype
        dtype('float64')
        """
        if not self.x64:
            return fn
        config = jax.config

        def run(*args: Any, **kwargs: Any) -> Any:
            if not config.jax_enable_x64 and _traced(args):
                raise _x64_needed()
            with jax.enable_x64(True):
                return fn(*args, **kwargs)

        run.__wrapped__ = fn
        run.x64_scoped = fn  # what runs inside the scope
        return run

    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy of ``x`` (a split array is gathered); bfloat16 becomes float32."""
        out = np.array(jax.device_get(x))  # a writable copy, as on the other backends
        if out.dtype == jnp.bfloat16:
            out = out.astype(np.float32)
        return out

    # ---- randomness ----
    def seed_framework(self, seed: int) -> None:
        """Reset the internal PRNG key from ``seed``."""
        self._key = jax.random.key(seed)

    def next_rng(self) -> jax.Array:
        """A fresh PRNG key split off the internal key (the internal key advances)."""
        self._key, sub = jax.random.split(self._key)
        return sub

    # ---- compile hooks ----
    def vjp_fn(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """Gradients of ``forward(params, data, state, rng)`` with respect to ``params``.

        Returns ``fn(params, data, state, rng, output_gradients) -> (outputs, new_state,
        gradients)``. Only the outputs named in ``output_gradients`` are pulled back (a gradient
        may be any value broadcastable to its output's shape); ``gradients`` has an entry for
        every key of ``params``, zeros for unused or non-float parameters. ``fn`` is traceable,
        so it can be wrapped with :meth:`wrap_jit`.
        """

        def fn(params: dict[str, Any], data: dict[str, Any], state: dict[str, Any], rng: Any,
               output_gradients: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
            diff = {k: v for k, v in params.items() if _is_float_array(v)}
            fixed = {k: v for k, v in params.items() if k not in diff}

            def pulled(p: dict[str, Any]) -> tuple[dict[str, Any], Any]:
                outputs, new_state = forward({**fixed, **p}, data, state, rng)
                chosen = _pulled_outputs(outputs, output_gradients)
                return chosen, (outputs, new_state)

            chosen, back, (outputs, new_state) = jax.vjp(pulled, diff, has_aux=True)
            cotangents = {k: jnp.broadcast_to(jnp.asarray(output_gradients[k], v.dtype),
                                              v.shape) for k, v in chosen.items()}
            (grads,) = back(cotangents)
            gradients = {k: grads[k] if k in grads else jnp.zeros_like(v)
                         for k, v in params.items()}
            return outputs, new_state, gradients

        fn.__wrapped__ = forward  # for wrap_jit's fallback
        return self.scoped(fn)

    def wrap_jit(self, fn: Callable[..., Any],
                 settle: Callable[[Callable[..., Any]], None] | None = None
                 ) -> Callable[..., Any]:
        """``jax.jit(fn)``: recompiles for new shapes; dicts of arrays are pytrees.

        A function that needs array values in Python (``item``, ``int(x)``, ``tolist``, a
        data-dependent shape) cannot be traced: the first call finds out, warns and runs ``fn``
        without ``jax.jit`` from then on (as ``mx.compile`` on MLX). One warning per function:
        the gradient function of a forward found untraceable (``vjp_fn``) runs eagerly without
        trying again. Only the first call is inside ``try``; it passes the chosen function
        (``jax.jit(fn)`` or ``fn``) to ``settle``, so a caller that rebinds it calls
        ``jax.jit``'s function directly from then on; other callers pay one check per call.
        """
        origin = inspect.unwrap(fn)  # the generated forward (vjp_fn's wraps it)
        # float64: every call (and so every trace) inside jax.enable_x64(True); the settled
        # function keeps the scope
        jitted = self.scoped(jax.jit(fn))
        fn = self.scoped(fn)
        untraceable = self._untraceable
        chosen: Callable[..., Any] | None = None  # after the first call: jitted or fn

        def choose(function: Callable[..., Any]) -> None:
            nonlocal chosen
            chosen = function
            if settle is not None:
                settle(function)

        def run(*args: Any, **kwargs: Any) -> Any:
            if chosen is not None:
                return chosen(*args, **kwargs)
            if origin in untraceable:
                choose(fn)
                return fn(*args, **kwargs)
            try:
                result = jitted(*args, **kwargs)
            except _UNTRACEABLE as err:
                # inside the caller's own jax.jit, fn fails too: that error propagates and the
                # next call decides again
                result = fn(*args, **kwargs)
                choose(fn)
                untraceable.add(origin)
                reason = (str(err).strip().splitlines() or [""])[0]
                warnings.warn(
                    "jax.jit cannot trace this model: it needs array values in Python "
                    f"({type(err).__name__}: {reason}); running it without jax.jit from now "
                    "on. Compile it with ml.compile(..., jit=False) to run eagerly without "
                    "this warning", RuntimeWarning, stacklevel=3)
                return result
            choose(jitted)
            return result

        return run


def _traced(args: tuple[Any, ...]) -> bool:
    """Are any of ``args`` (dicts of arrays, keys) traced values of the caller's transform?"""
    values = (v for arg in args for v in (arg.values() if isinstance(arg, dict) else (arg,)))
    return any(isinstance(v, jax.core.Tracer) for v in values)


def _x64_needed() -> TypeMismatchError:
    """A float64 model traced by the user's own ``jax.jit`` / ``jax.grad`` with x64 off."""
    return TypeMismatchError(
        "a float64 JaxBackend model is traced by your own JAX transformation (jax.jit, "
        "jax.grad, jax.vmap, ...) while JAX's x64 mode is off, so JAX would compute parts of it "
        "(the gradients) in float32: turn x64 on around the transformation, e.g. "
        "'with jax.enable_x64(True): step = jax.jit(train_step); step(...)', or for the whole "
        "program jax.config.update('jax_enable_x64', True). (The backend's own calls need no "
        "switch; a float32 backend needs none at all.)")


def _is_float_array(value: Any) -> bool:
    """Is ``value`` an array (or array-like) of an inexact dtype, i.e. differentiable?"""
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _pulled_outputs(outputs: dict[str, Any], output_gradients: dict[str, Any]) -> dict[str, Any]:
    """The float outputs that ``output_gradients`` gives a gradient for."""
    unknown = sorted(set(output_gradients) - set(outputs))
    if unknown:
        raise InputError(f"output_gradients names unknown outputs {unknown}; the outputs are "
                         f"{sorted(outputs)}")
    return {k: outputs[k] for k in output_gradients
            if output_gradients[k] is not None and _is_float_array(outputs[k])}
