"""The four backends by name, as the cross-backend tests parametrise them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mithril as ml

BACKENDS = ["numpy", "torch", "jax", "mlx"]
_CLASSES = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}


def backend_of(name: str, dtype: Any = ml.float64) -> Any:
    """A CPU backend by name; ``dtype`` an ``ml`` dtype or its name (``"float32"``)."""
    return _CLASSES[name](dtype=getattr(ml, dtype) if isinstance(dtype, str) else dtype)

#: Each backend at its widest CPU float (MLX has no float64), as ``(name, dtype)`` pairs.
WIDEST = [("numpy", "float64"), ("torch", "float64"), ("jax", "float64"), ("mlx", "float32")]


def ids_of(pairs: list[tuple[str, str]]) -> list[str]:
    """Test ids ``"name-dtype"`` for ``(name, dtype)`` pairs.

    >>> ids_of([("mlx", "float32")])
    ['mlx-float32']
    """
    return [f"{b}-{d}" for b, d in pairs]


def tolerances(float64: tuple[float, float],
               other: tuple[float, float]) -> Callable[[str], dict[str, float]]:
    """``tol(dtype)``: the ``rtol``/``atol`` keywords of ``assert_allclose`` for a dtype name,
    ``float64`` for ``"float64"`` and ``other`` for any other dtype.

    >>> tolerances((1e-12, 1e-12), (1e-5, 1e-6))("float32")
    {'rtol': 1e-05, 'atol': 1e-06}
    """
    def tol(dtype: str) -> dict[str, float]:
        rtol, atol = float64 if dtype == "float64" else other
        return {"rtol": rtol, "atol": atol}
    return tol
