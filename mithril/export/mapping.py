"""The op mapping table: one entry per catalogue primitive, keyed by the primitive's NAME.

An entry is a function ``(emitter, node) -> output ref(s)`` registered with :func:`maps`.
Adding a primitive to the export is adding one such function (in the ``ops_*`` module of its
family); a primitive that cannot be exported is listed in :data:`UNSUPPORTED` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAPPINGS: dict[str, Callable[..., Any]] = {}

#: primitives with no ONNX form, and why (the export error quotes the reason)
UNSUPPORTED: dict[str, str] = {
    "cholesky": "ONNX has no Cholesky factorisation operator",
    "eigvalsh": "ONNX has no eigenvalue operator",
    "tensor_to_list": "returns Python lists, which an ONNX graph cannot hold",
}


def maps(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the ONNX mapping of the primitives ``names``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            if name in MAPPINGS:
                raise ValueError(f"primitive {name!r} already has an ONNX mapping")
            MAPPINGS[name] = fn
        return fn

    return register


def table() -> dict[str, Callable[..., Any]]:
    """All mappings (importing the op families registers them)."""
    from . import ops_elementwise, ops_loops, ops_nn, ops_shape  # noqa: F401

    return MAPPINGS
