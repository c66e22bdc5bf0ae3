"""Working with PyTorch: compiled models as ``nn.Module``s, ``torch.nn`` weights loaded, and
``nn.Module``s converted to Mithril models (``from_torch``).

>>> from mithril.interop import TorchModule, attach, load_torch_state_dict  # imports torch
>>> from mithril.interop import from_torch  # also ``ml.from_torch``

Importing ``mithril.interop`` itself does not import PyTorch; the names above do.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TorchLoadReport", "TorchModule", "UnsupportedTorchOpsError", "attach", "from_torch",
           "load_torch_state_dict"]

_NAMES = {
    "TorchModule": "torch_module",
    "attach": "torch_module",
    "TorchLoadReport": "torch_weights",
    "load_torch_state_dict": "torch_weights",
    "from_torch": "torch_convert",
    "UnsupportedTorchOpsError": "torch_convert",
}


def __getattr__(name: str) -> Any:
    """Load the PyTorch-dependent modules on first use."""
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'mithril.interop' has no attribute {name!r}")
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] == "torch":
            from ..errors import missing_package

            raise missing_package("mithril.interop", "torch", "torch") from err
        raise
    return getattr(mod, name)
