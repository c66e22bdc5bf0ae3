"""torchvision and transformers for the tests, imported once (no weights are ever downloaded).

The registry's torchvision 0.28.0 wheel is built for CUDA: its C extension does not load beside
the CPU build of torch 2.13, and ``torchvision._meta_registrations`` (fake kernels for those C
ops) fails on import. Its model code needs neither, so the module is replaced by an empty one
before the first import (transformers imports torchvision too). This stays in the tests: the
library itself never imports torchvision or transformers.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest


def _stub_meta_registrations() -> None:
    name = "torchvision._meta_registrations"
    if name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)


def torchvision_models() -> Any:
    """``torchvision.models`` (skips the test when torchvision is not installed)."""
    _stub_meta_registrations()
    return pytest.importorskip("torchvision.models")


def transformers_module() -> Any:
    """``transformers`` (skips the test when it is not installed); configs only, no downloads."""
    _stub_meta_registrations()
    return pytest.importorskip("transformers")
