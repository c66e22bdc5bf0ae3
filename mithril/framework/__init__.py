"""Backend-free core: catalogue, shapes, types, logical models, compilation.

Code written for the reference Mithril imports ``Connection``, ``IOKey`` and ``Tensor`` from
here (they are the ones ``mithril`` and ``mithril.models`` give):

>>> from mithril.framework import Connection, IOKey, Tensor
>>> import mithril as ml
>>> IOKey is ml.IOKey and Tensor is ml.Tensor and Connection is ml.Connection
True
"""

from typing import Any

from . import loops  # noqa: F401  (issue 15: the loop primitives join the catalogue)


def __getattr__(name: str) -> Any:
    # given lazily: mithril.types imports this package, so importing it here would be circular
    if name in ("Connection", "IOKey"):
        from .logical import model
        return getattr(model, name)
    if name == "Tensor":
        from ..types import Tensor
        return Tensor
    raise AttributeError(f"module 'mithril.framework' has no attribute {name!r}")
