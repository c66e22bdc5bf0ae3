"""The four backends by name, as the cross-backend tests parametrise them."""

from __future__ import annotations

from typing import Any

import mithril as ml

BACKENDS = ["numpy", "torch", "jax", "mlx"]
_CLASSES = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}


def backend_of(name: str, dtype: Any = ml.float64) -> Any:
    """A CPU backend by name; ``dtype`` an ``ml`` dtype or its name (``"float32"``)."""
    return _CLASSES[name](dtype=getattr(ml, dtype) if isinstance(dtype, str) else dtype)
