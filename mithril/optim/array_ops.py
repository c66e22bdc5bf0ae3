"""Tiny framework dispatch for the optimizers: one function per array operation.

Each function looks at the type of its (first) array argument and calls the matching
NumPy, PyTorch, JAX or MLX function. Frameworks are never imported here: an array of a
framework can only exist once the user has imported that framework, so the type checks read
``sys.modules`` instead. Plain operators (``a * b``, ``a ** 2``, ``a / b``, ``a // b``,
comparisons) work on all four frameworks and are used directly by the callers.

>>> import numpy as np
>>> from mithril.optim import array_ops as ops
>>> ops.framework_of(np.ones(2))
'numpy'
>>> float(ops.sqrt(ops.cast(4, np.ones(2))))
2.0
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

from ..errors import ArgumentTypeError
from .foreach import TensorList

__all__ = [
    "cast",
    "cos",
    "framework_of",
    "full_like",
    "is_array",
    "is_x64",
    "keep_requires_grad",
    "maximum",
    "no_grad",
    "sqrt",
    "sum",
    "where",
    "as_array",
    "zero_counter",
    "zeros_like",
]

Array = Any

_FRAMEWORKS = ("torch", "jax", "mlx", "numpy")


def _array_type(framework: str) -> type | None:
    """The array class of ``framework`` if that framework is already imported, else None."""
    if framework == "numpy":
        module = sys.modules.get("numpy")
        return None if module is None else module.ndarray
    if framework == "torch":
        module = sys.modules.get("torch")
        return None if module is None else module.Tensor
    if framework == "jax":
        module = sys.modules.get("jax")
        return None if module is None else getattr(module, "Array", None)
    module = sys.modules.get("mlx.core")
    return None if module is None else module.array


def framework_of(x: Any) -> str:
    """Name of the framework ``x`` belongs to: ``numpy``, ``torch``, ``jax`` or ``mlx``.

    NumPy scalars (``np.float64(1.0)``) count as NumPy; Python numbers raise ``TypeError``.

    >>> import numpy as np
    >>> framework_of(np.float32(1.0))
    'numpy'
    """
    for name in _FRAMEWORKS:
        cls = _array_type(name)
        if cls is not None and isinstance(x, cls):
            return name
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(x, numpy.generic):
        return "numpy"
    raise ArgumentTypeError(f"expected a NumPy, PyTorch, JAX or MLX array, got {type(x).__name__}")


def is_array(x: Any) -> bool:
    """True for an array of one of the four frameworks, False for anything else.

    >>> is_array(3.0)
    False
    """
    try:
        framework_of(x)
    except TypeError:
        return False
    return True


def _module(x: Array) -> Any:
    """The array namespace of ``x``'s framework (numpy, torch, jax.numpy or mlx.core)."""
    name = framework_of(x)
    if name == "jax":
        return _jax_numpy()
    return sys.modules["mlx.core" if name == "mlx" else name]


def _jax_numpy() -> Any:
    """``jax.numpy``, imported on first use (only reached when JAX arrays are around)."""
    import jax.numpy as jnp

    return jnp


# ---- element-wise ------------------------------------------------------------------------------
def sqrt(x: Array) -> Array:
    """Element-wise square root.

    >>> import numpy as np
    >>> sqrt(np.array([4.0, 9.0])).tolist()
    [2.0, 3.0]
    """
    if isinstance(x, TensorList):
        return x.sqrt()
    return _module(x).sqrt(x)


def cos(x: Array | float) -> Array | float:
    """Element-wise cosine; a Python number gives a Python float.

    >>> cos(0.0)
    1.0
    """
    if isinstance(x, int | float):
        return math.cos(x)
    return _module(x).cos(x)


def maximum(a: Array, b: Array) -> Array:
    """Element-wise maximum of two arrays of one framework.

    >>> import numpy as np
    >>> maximum(np.array([1.0, 5.0]), np.array([3.0, 2.0])).tolist()
    [3.0, 5.0]
    """
    if isinstance(a, TensorList):
        return a.maximum(b)
    return _module(a).maximum(a, b)


def where(condition: Array, a: Array | float, b: Array | float) -> Array:
    """``a`` where ``condition`` holds, else ``b`` (either may be a Python number).

    >>> import numpy as np
    >>> where(np.array([True, False]), np.array([1.0, 2.0]), 0.0).tolist()
    [1.0, 0.0]
    """
    if isinstance(a, TensorList):
        return a.where(condition, b)
    return _module(condition).where(condition, a, b)


def sum(x: Array) -> Array:
    """Sum of all elements, as a 0-d array (a NumPy scalar for NumPy).

    >>> import numpy as np
    >>> float(sum(np.ones((2, 3))))
    6.0
    """
    return _module(x).sum(x)


# ---- creation and dtype --------------------------------------------------------------------
def zeros_like(x: Array) -> Array:
    """Zeros with the shape, dtype (and device) of ``x``; never tracks gradients.

    >>> import numpy as np
    >>> zeros_like(np.ones(2)).tolist()
    [0.0, 0.0]
    """
    return full_like(x, 0.0)


def full_like(x: Array, value: float) -> Array:
    """An array filled with ``value``, with the shape, dtype (and device) of ``x``.

    >>> import numpy as np
    >>> full_like(np.ones(2, dtype=np.float32), 0.5).dtype
    dtype('float32')
    """
    if framework_of(x) == "torch":
        return _module(x).full_like(x, value, requires_grad=False)
    return _module(x).full_like(x, value)


def cast(x: Array | float, like: Array) -> Array:
    """``x`` (an array of ``like``'s framework or a Python number) as an array of ``like``'s dtype.

    Used to turn step counters and scalar coefficients into 0-d arrays of a parameter's
    dtype, so that they never change the dtype of the parameter they multiply.

    >>> import numpy as np
    >>> cast(3, np.ones(2, dtype=np.float32)).dtype
    dtype('float32')
    """
    name = framework_of(like)
    if name == "numpy":
        return _module(like).asarray(x, dtype=like.dtype)
    if name == "torch":
        return _module(like).as_tensor(x, dtype=like.dtype, device=like.device)
    if name == "jax":
        return _module(like).asarray(x, dtype=like.dtype)
    mx = _module(like)
    return x.astype(like.dtype) if isinstance(x, mx.array) else mx.array(x, dtype=like.dtype)


def zero_counter(like: Array | None) -> Array:
    """A 0-d int32 array holding 0, of ``like``'s framework (NumPy when ``like`` is None).

    >>> int(zero_counter(None))
    0
    """
    if like is None:
        import numpy as np

        return np.zeros((), dtype=np.int32)
    name = framework_of(like)
    module = _module(like)
    if name == "torch":
        return module.zeros((), dtype=module.int32, device=like.device)
    if name == "mlx":
        return module.array(0, dtype=module.int32)
    return module.zeros((), dtype=module.int32)


def as_array(x: Array, like: Array) -> Array:
    """``x`` as an array: NumPy returns scalars for 0-d results, this wraps them back.

    >>> import numpy as np
    >>> type(as_array(np.ones(()) * 2.0, np.ones(()))).__name__
    'ndarray'
    """
    if framework_of(like) == "numpy":
        return _module(like).asarray(x)
    return x


# ---- autograd (PyTorch only) -----------------------------------------------------------------
def no_grad(like: Array | None) -> contextlib.AbstractContextManager[Any]:
    """The context an update of ``like``'s framework runs in: ``torch.no_grad()`` for
    PyTorch, ``jax.enable_x64(True)`` for float64 JAX arrays (so they stay float64 whatever
    the user's ``jax_enable_x64`` setting), a do-nothing context for the others.

    >>> import numpy as np
    >>> with no_grad(np.ones(1)):
    ...     pass
    """
    if like is None:
        return contextlib.nullcontext()
    name = framework_of(like)
    if name == "torch":
        return _module(like).no_grad()
    if name == "jax" and is_x64(like):
        return sys.modules["jax"].enable_x64(True)
    return contextlib.nullcontext()


def is_x64(x: Array) -> bool:
    """Is ``x`` a 64-bit float array (JAX needs ``jax.enable_x64`` to keep it so)?

    >>> import numpy as np
    >>> is_x64(np.ones(1)), is_x64(np.ones(1, dtype=np.float32))
    (True, False)
    """
    dtype = getattr(x, "dtype", None)
    return getattr(dtype, "itemsize", 0) == 8 and getattr(dtype, "kind", "") == "f"


def keep_requires_grad(new: Array, old: Array) -> Array:
    """``new``, marked as requiring gradients when ``old`` is a PyTorch tensor that did.

    >>> import numpy as np
    >>> keep_requires_grad(np.ones(1), np.zeros(1)).tolist()
    [1.0]
    """
    if getattr(old, "requires_grad", False) and framework_of(old) == "torch":
        return new.requires_grad_(True)
    return new
