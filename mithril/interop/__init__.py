"""Working with PyTorch: compiled models as ``nn.Module``s, and ``torch.nn`` weights loaded.

>>> from mithril.interop import TorchModule, attach, load_torch_state_dict  # imports torch

Importing ``mithril.interop`` itself does not import PyTorch; the names above do.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TorchLoadReport", "TorchModule", "attach", "load_torch_state_dict"]

_NAMES = {
    "TorchModule": "torch_module",
    "attach": "torch_module",
    "TorchLoadReport": "torch_weights",
    "load_torch_state_dict": "torch_weights",
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
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError(
                "mithril.interop needs the 'torch' package, which is not installed; install it "
                "with `pip install 'mithril[torch]'`") from err
        raise
    return getattr(mod, name)
