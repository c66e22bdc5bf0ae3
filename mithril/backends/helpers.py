"""The reference Mithril's backend helpers (``zeros_like``, ``stack``, ``linspace``, ``sin``,
``rand_uniform``, ``key=``, ``jit``, ``grad``, ``vjp``, ...), one mixin for every backend.

Element-wise and shape helpers call the backend's own catalogue kernels (the code compiled models
run), so ``backend.softmax(x)`` equals a ``Softmax`` model's output; the rest use the framework's
namespace (``numpy``, ``torch``, ``jax.numpy``, ``mlx.core``), whose functions share names.
Random creators take ``key=`` (an int): the same key gives the same numbers on every backend and
leaves the backend's own random state alone. NumPy has no autodiff: ``grad``, ``vjp`` and the
other transformations raise ``BackendUnavailableError`` there (compiled models still have
gradients, through ``evaluate(..., output_gradients=...)``).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, BackendUnavailableError
from ..framework import types as T
from .backend import shape_tuple

#: the array namespace of each backend
_NAMESPACES = {"numpy": "numpy", "torch": "torch", "jax": "jax.numpy", "mlx": "mlx.core"}
#: function transformations by backend: (module, attribute)
_TRANSFORMS: dict[str, dict[str, tuple[str, str]]] = {
    "jax": {"grad": ("jax", "grad"), "value_and_grad": ("jax", "value_and_grad"),
            "vmap": ("jax", "vmap"), "jacrev": ("jax", "jacrev"), "jacfwd": ("jax", "jacfwd"),
            "jacobian": ("jax", "jacobian"), "vjp": ("jax", "vjp")},
    "torch": {"grad": ("torch.func", "grad"), "vmap": ("torch.func", "vmap"),
              "value_and_grad": ("torch.func", "grad_and_value"), "vjp": ("torch.func", "vjp"),
              "jacrev": ("torch.func", "jacrev"), "jacfwd": ("torch.func", "jacfwd"),
              "jacobian": ("torch.func", "jacrev")},
    "mlx": {"grad": ("mlx.core", "grad"), "value_and_grad": ("mlx.core", "value_and_grad"),
            "vmap": ("mlx.core", "vmap"), "vjp": ("mlx.core", "vjp")},
}


class ReferenceHelpers:
    """Reference-API members shared by every backend (mixed in before ``Backend``).

    >>> import mithril as ml
    >>> b = ml.NumpyBackend(dtype=ml.float64)
    >>> b.stack([b.zeros_like(b.ones(2)), b.linspace(0, 1, 2)]).tolist()
    [[0.0, 0.0], [0.0, 1.0]]
    """

    name: str
    dtype: T.Dtype
    device: Any
    array_types: tuple[type, ...]
    _seed: int
    float16, bfloat16, float32, float64 = T.float16, T.bfloat16, T.float32, T.float64
    int8, int16, int32, int64, uint8, bool = T.int8, T.int16, T.int32, T.int64, T.uint8, T.bool_
    is_installed = True
    pi, e, inf, nan = math.pi, math.e, math.inf, math.nan
    supported_dtypes = [T.float16, T.bfloat16, T.float32, T.float64]

    backend_type = property(lambda self: self.name, doc="``'numpy'``, ``'torch'``, ...")
    DataType = property(lambda self: self.array_types[0], doc="The framework's array type.")
    default_dtype = property(lambda self: self.dtype, doc="The float dtype (``ml.float32``).")
    precision = property(lambda self: self.dtype.bits, doc="Bits of the float dtype.")
    is_manualgrad = property(lambda self: self.manual_gradients, doc="NumPy's own VJPs?")
    seed = property(lambda self: self._seed, doc="The seed last given to ``set_seed``.")

    def get_backend_array_type(self) -> type:
        return self.array_types[0]

    def get_device(self) -> Any:
        return self.device

    def get_available_devices(self) -> list[str]:
        return ["cpu"]

    def block_until_ready(self, data: Any) -> Any:
        """Wait until ``data`` is computed (JAX, MLX); returns it."""
        if self.name == "jax":
            return data.block_until_ready()
        if self.name == "mlx":
            self._xp.eval(data)
        return data

    def empty_cache(self) -> None:
        """Free cached device memory (nothing to do on the CPU)."""

    @property
    def _xp(self) -> Any:
        return importlib.import_module(_NAMESPACES[self.name])

    def _kernel(self, op: str) -> Callable[..., Any]:
        table = self.__dict__.get("_kernel_cache")
        if table is None:
            table = self.__dict__["_kernel_cache"] = self.kernel_table()
        return table[op]

    # ---- creation ----
    def zeros_like(self, input: Any, *, dtype: Any = None) -> Any:
        out = self._xp.zeros_like(input)
        return out if dtype is None else self.cast(out, dtype)

    def ones_like(self, input: Any, *, dtype: Any = None) -> Any:
        out = self._xp.ones_like(input)
        return out if dtype is None else self.cast(out, dtype)

    def linspace(self, start: Any, stop: Any, steps: int, dtype: Any = None) -> Any:
        """``steps`` values from ``start`` to ``stop``, both included (array ends allowed)."""
        dt = self.dtype if dtype is None else T.as_dtype(dtype)
        i = self.arange(steps, dtype=dt)
        if steps == 1:
            return start + i
        step = (stop - start) / (steps - 1)
        return self.where(i == steps - 1, stop + 0 * i, start + i * step)

    def _keyed(self, draw: Callable[[np.random.Generator], np.ndarray], dtype: Any,
               key: int | None) -> Any:
        gen = np.random.default_rng(int(key)) if key is not None else self.np_rng
        dt = dtype if isinstance(dtype, T.Dtype) else self._resolve_dtype(dtype)
        return self._finish(draw(gen), dt)

    def randn(self, *shape: Any, dtype: Any = None, device_mesh: Any = None,
              key: int | None = None) -> Any:
        """Standard normal samples; ``key=`` draws them from that seed alone."""
        if key is None:
            return super().randn(*shape, dtype=dtype, device_mesh=device_mesh)
        return self._keyed(lambda g: g.standard_normal(shape_tuple(shape)), dtype, key)

    def rand(self, *shape: Any, dtype: Any = None, device_mesh: Any = None,
             key: int | None = None) -> Any:
        """Uniform samples in ``[0, 1)``; ``key=`` draws them from that seed alone."""
        if key is None:
            return super().rand(*shape, dtype=dtype, device_mesh=device_mesh)
        return self._keyed(lambda g: g.random(shape_tuple(shape)), dtype, key)

    def rand_uniform(self, low: Any, high: Any, *shape: Any, dtype: Any = None,
                     key: int | None = None) -> Any:
        """Uniform samples in ``[low, high)`` (``low``/``high`` may be arrays)."""
        return low + (high - low) * self.rand(*shape, dtype=dtype, key=key)

    def randint(self, low: int, high: int, *shape: Any, dtype: Any = None,
                device_mesh: Any = None, key: int | None = None, **kw: Any) -> Any:
        """Integers in ``[low, high)``: ``randint(0, 5, 2, 3)``, ``(2, 3)`` or ``shape=``."""
        dims = shape_tuple((kw.pop("shape", ()),)) if "shape" in kw else shape_tuple(shape)
        if kw:
            raise ArgumentError(f"randint got unknown arguments {sorted(kw)}")
        dt = T.int64 if dtype is None else T.as_dtype(dtype)
        if key is None:
            return super().randint(low, high, dims, dt, device_mesh)
        return self._keyed(lambda g: g.integers(low, high, dims), dt, key)

    def multinomial(self, probs: Any, num_samples: int, replacement: bool = False,
                    key: int | None = None) -> Any:
        """``num_samples`` indices per row of ``probs`` (unnormalised weights), as int64."""
        p = np.atleast_2d(self.to_numpy(probs)).astype(np.float64)
        gen = np.random.default_rng(int(key)) if key is not None else self.np_rng
        rows = [gen.choice(p.shape[-1], num_samples, replace=replacement, p=r / r.sum())
                for r in p.reshape(-1, p.shape[-1])]
        out = np.asarray(rows, dtype=np.int64).reshape(*p.shape[:-1], num_samples)
        return self._finish(out if np.ndim(probs) > 1 else out[0], T.int64)

    # ---- element-wise: the catalogue's kernels (more below the class) ----
    def softmax(self, input: Any, dim: int = -1) -> Any:
        return self._kernel("softmax")(input, dim)

    # ---- shapes, reductions and sorting ----
    def pad(self, input: Any, pad_width: Any) -> Any:
        """Zero padding: an int or a ``(before, after)`` pair for every dim, or one pair a dim."""
        ndim = len(input.shape)
        if isinstance(pad_width, int):
            pad_width = (pad_width, pad_width)
        if isinstance(pad_width[0], int):
            pad_width = [tuple(pad_width)] * ndim
        return self._kernel("pad")(input, tuple(tuple(p) for p in pad_width))

    def stack(self, inputs: Sequence[Any], axis: int = 0) -> Any:
        return self._xp.stack(list(inputs), axis)

    def cat(self, input: Sequence[Any], axis: int = 0) -> Any:
        name = "cat" if self.name == "torch" else "concatenate"
        return getattr(self._xp, name)(list(input), axis)

    concat = cat

    def atleast_1d(self, inputs: Any) -> Any:
        if isinstance(inputs, tuple | list):
            return type(inputs)(self.atleast_1d(x) for x in inputs)
        return self._kernel("atleast_1d")(inputs)

    def atleast_2d(self, inputs: Any) -> Any:
        if isinstance(inputs, tuple | list):
            return type(inputs)(self.atleast_2d(x) for x in inputs)
        x = self.atleast_1d(inputs)
        return x if len(x.shape) >= 2 else self.expand_dims(x, 0)

    def all(self, input: Any) -> Any:
        return self._xp.all(input)

    def any(self, input: Any) -> Any:
        return self._xp.any(input)

    def sort(self, input: Any, axis: int = -1, descending: bool = False) -> Any:
        out = self._xp.sort(-input if descending else input, axis)
        out = getattr(out, "values", out)  # torch.sort returns (values, indices)
        return -out if descending else out

    def topk(self, input: Any, k: int) -> Any:
        """The ``k`` largest values along the last axis, largest first."""
        return self.sort(input, -1, descending=True)[..., :k]

    # ---- function transformations ----
    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``jax.jit`` / ``mx.compile`` / ``torch.compile`` of ``fn`` (NumPy: ``fn`` itself)."""
        return self.wrap_jit(fn)

    def _transform(self, kind: str, fn: Callable[..., Any] | None = None) -> Any:
        """The framework's ``kind`` transformation (applied to ``fn`` when given)."""
        found = _TRANSFORMS.get(self.name, {}).get(kind)
        if found is None:
            raise BackendUnavailableError(
                f"{type(self).__name__}.{kind}: {self.name} has no {kind} transformation; use "
                f"JaxBackend{', TorchBackend' if self.name != 'torch' else ''} (compiled "
                "models still give gradients through evaluate(..., output_gradients=...))")
        transform = getattr(importlib.import_module(found[0]), found[1])
        if fn is None:
            return transform
        out = transform(fn)
        return out if not getattr(self, "x64", False) else functools.partial(
            _in_scope(lambda _, *a, **k: out(*a, **k)), self)

    def value_and_grad(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Like ``grad``, returning ``(fn(x), gradient)``."""
        both = self._transform("value_and_grad", fn)
        if self.name == "torch":  # torch.func.grad_and_value returns (gradient, value)
            return lambda *args, **kwargs: tuple(reversed(both(*args, **kwargs)))
        return both

    def vjp(self, fn: Callable[..., Any], primals: Any, *, cotangents: Any = None,
            has_aux: bool = False) -> tuple[Any, Any, Any]:
        """``(output, vjp, aux)``: ``fn(primals)`` for a dict, ``fn(*primals)`` for a list;
        ``vjp`` is the pullback, or its value at ``cotangents`` when they are given."""
        framework_vjp = self._transform("vjp")  # NumPy: BackendUnavailableError
        keys = list(primals) if isinstance(primals, dict) else None
        arrays = [primals[k] for k in keys] if keys is not None else list(primals)

        def call(*arrs: Any) -> Any:
            return fn(dict(zip(keys, arrs, strict=True))) if keys is not None else fn(*arrs)

        if self.name == "mlx":
            out, pull, *rest = _mlx_vjp(framework_vjp, call, arrays, has_aux)
        else:
            out, pull, *rest = framework_vjp(call, *arrays, has_aux=has_aux)
        aux = rest[0] if has_aux else ({} if isinstance(cotangents, dict) else [])

        def pullback(cot: Any) -> Any:
            grads = pull(cot)
            return dict(zip(keys, grads, strict=True)) if keys is not None else list(grads)

        return out, pullback if cotangents is None else pullback(cotangents), aux


def _kernel_helper(method: str, op: str, params: str) -> Callable[..., Any]:
    def helper(self: ReferenceHelpers, input: Any, *args: Any) -> Any:
        return self._kernel(op)(input, *args)

    helper.__name__ = helper.__qualname__ = method
    helper.__doc__ = f"``{method}({params})``: the ``{op}`` kernel compiled models run."
    return helper


#: helpers that are exactly a catalogue kernel: method -> (kernel, parameters)
_KERNEL_HELPERS = {
    "abs": ("absolute", "input"), "sign": ("sign", "input"), "sin": ("sin", "input"),
    "cos": ("cos", "input"), "tanh": ("tanh", "input"), "log": ("log", "input"),
    "relu": ("relu", "input"), "sigmoid": ("sigmoid", "input"),
    "softplus": ("softplus", "input"), "isnan": ("isnan", "input"),
    "stop_gradient": ("stop_gradient", "input"), "unique": ("unique", "input"),
    "leaky_relu": ("leaky_relu", "input, slope"), "clip": ("clamp", "input, min, max"),
    "where": ("where", "cond, input1, input2"), "expand_dims": ("unsqueeze", "input, axis"),
    "squeeze": ("squeeze", "input"), "reshape": ("reshape", "input, shape"),
    "transpose": ("transpose", "input, axes=None"),
    "flatten": ("flatten", "input, start_dim=0, end_dim=-1"),
    "argmax": ("argmax", "input, axis=None, keepdim=False"),
}
for _method, (_op, _params) in _KERNEL_HELPERS.items():
    setattr(ReferenceHelpers, _method, _kernel_helper(_method, _op, _params))


def _in_scope(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside ``jax.enable_x64(True)`` on a float64 JAX backend (``x64``)."""
    @functools.wraps(fn)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, "x64", False):
            return fn(self, *args, **kwargs)
        with importlib.import_module("jax").enable_x64(True):
            return fn(self, *args, **kwargs)

    return run


for _name, _value in list(vars(ReferenceHelpers).items()):
    if callable(_value) and not _name.startswith("_") and _name not in ("jit", "DataType"):
        setattr(ReferenceHelpers, _name, _in_scope(_value))


def _transform_helper(kind: str) -> Callable[..., Any]:
    def helper(self: ReferenceHelpers, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._transform(kind, fn)

    helper.__name__ = helper.__qualname__ = kind
    helper.__doc__ = (f"``{kind}(fn)``: the framework's own (``jax.{kind}``, "
                      f"``torch.func``, ``mx.{kind}``); ``grad`` differentiates a scalar ``fn`` "
                      "with respect to its first argument (an array or a dict of arrays).")
    return helper


for _kind in ("grad", "vmap", "jacrev", "jacfwd", "jacobian"):
    setattr(ReferenceHelpers, _kind, _transform_helper(_kind))


def _mlx_vjp(mx_vjp: Callable[..., Any], call: Callable[..., Any], arrays: list[Any],
             has_aux: bool) -> tuple[Any, ...]:
    """``mx.vjp`` for a function returning an array, a list or a dict (MLX wants lists)."""
    result = call(*arrays)
    out, aux = result if has_aux else (result, None)
    names = list(out) if isinstance(out, dict) else None

    def flat(*arrs: Any) -> list[Any]:
        res = call(*arrs)
        o = res[0] if has_aux else res
        return [o[n] for n in names] if names is not None else list(_as_list(o))

    def pull(cot: Any) -> list[Any]:
        cots = [cot[n] for n in names] if names is not None else list(_as_list(cot))
        return mx_vjp(flat, arrays, cots)[1]

    return (out, pull, aux) if has_aux else (out, pull)


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, list | tuple) else [x]
