"""Mithril's backends (``numpy``, ``torch``, ``jax``, ``mlx``), and the reference Mithril's
module paths for them:

- ``mithril.backends.with_autograd.torch_backend`` (``TorchBackend``; ``.parallel.TorchParallel``),
  ``...with_autograd.jax_backend`` (``JaxBackend``), ``...with_autograd.mlx_backend``
  (``MlxBackend``),
- ``mithril.backends.with_manualgrad.numpy_backend`` (``NumpyBackend``).

They are the same classes as ``ml.TorchBackend`` etc. Nothing is imported until a name is
read, so importing ``mithril`` never loads a framework.

>>> from mithril.backends.with_manualgrad.numpy_backend import NumpyBackend
>>> import mithril as ml
>>> NumpyBackend is ml.NumpyBackend
True
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["TorchParallel"]


class _TorchParallelMeta(type):
    @property
    def _instance(cls) -> TorchParallel | None:
        """The live process group as a ``TorchParallel`` (``None`` when none is running)."""
        import torch.distributed as dist

        return cls() if dist.is_available() and dist.is_initialized() else None


class TorchParallel(metaclass=_TorchParallelMeta):
    """The reference Mithril's handle on PyTorch's process group
    (``mithril.backends.with_autograd.torch_backend.parallel.TorchParallel``):
    ``TorchParallel._instance`` is ``None`` unless a process group is running (a
    ``TorchBackend(device_mesh=...)`` starts or joins one), and ``clean_up()`` ends it, so a
    backend with a mesh of another size can be made next.

    >>> from mithril.backends import TorchParallel
    >>> TorchParallel._instance is None
    True
    """

    def clean_up(self) -> None:
        """End the running process group (``torch.distributed.destroy_process_group``)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class _AliasModule(types.ModuleType):
    """A module whose names are read from another module when first used."""

    def __init__(self, name: str, names: dict[str, tuple[str, str]]) -> None:
        super().__init__(name, f"The reference Mithril's module path {name} (aliases).")
        self._names = names
        self.__all__ = list(names)

    def __getattr__(self, attr: str) -> Any:
        names = self.__dict__.get("_names", {})
        if attr not in names:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        module, value_name = names[attr]
        value = getattr(importlib.import_module(module), value_name)
        setattr(self, attr, value)
        return value


def _alias(name: str, names: dict[str, tuple[str, str]]) -> _AliasModule:
    module = _AliasModule(f"{__name__}.{name}", names)
    sys.modules[module.__name__] = module
    parent, _, child = name.rpartition(".")
    holder = sys.modules[f"{__name__}.{parent}"] if parent else sys.modules[__name__]
    setattr(holder, child, module)
    return module


_alias("with_autograd", {"TorchBackend": ("mithril", "TorchBackend"),
                         "JaxBackend": ("mithril", "JaxBackend"),
                         "MlxBackend": ("mithril", "MlxBackend")})
_alias("with_autograd.torch_backend", {"TorchBackend": ("mithril", "TorchBackend")})
_alias("with_autograd.torch_backend.parallel",
       {"TorchParallel": (__name__, "TorchParallel")})
_alias("with_autograd.jax_backend", {"JaxBackend": ("mithril", "JaxBackend")})
_alias("with_autograd.mlx_backend", {"MlxBackend": ("mithril", "MlxBackend")})
_alias("with_manualgrad", {"NumpyBackend": ("mithril", "NumpyBackend")})
_alias("with_manualgrad.numpy_backend", {"NumpyBackend": ("mithril", "NumpyBackend")})
