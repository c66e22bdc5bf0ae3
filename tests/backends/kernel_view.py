"""A backend's kernels module seen through its kernel table (derived primitives composed)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


class KernelView:
    """Attributes of ``module`` (kernels, private helpers, ``registry``), falling back to the
    backend's kernel table, which holds the composed kernels (and VJPs) of derived primitives."""

    def __init__(self, module: ModuleType, backend_cls: Any, suffix: str = "") -> None:
        self.module = module
        self._backend_cls = backend_cls
        self._suffix = suffix
        self._table: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self.module, name)
        except AttributeError:
            if self._table is None:
                self._table = self._backend_cls().kernel_table()
            if name in self._table:
                return self._table[name]
            raise
