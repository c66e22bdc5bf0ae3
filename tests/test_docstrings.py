"""Every docstring example (``>>>``) in the package runs and prints what it says.

Modules are imported by name; a module whose framework is not installed is skipped (CI has all
of them). The API reference renders these same examples (docs/griffe_doctests.py).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import mithril

FRAMEWORKS = {"torch", "jax", "mlx"}


def _modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(mithril.__path__, "mithril.")]
    return sorted(["mithril", *names])


def _needs_missing_framework(name: str) -> str | None:
    for part in name.split("."):
        if part in FRAMEWORKS and importlib.util.find_spec(part) is None:
            return part
    return None


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    missing = _needs_missing_framework(name)
    if missing:
        pytest.skip(f"{missing} is not installed")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_examples_exist() -> None:
    attempted = 0
    for name in _modules():
        if not _needs_missing_framework(name):
            finder = doctest.DocTestFinder()
            tests = finder.find(importlib.import_module(name))
            attempted += sum(len(t.examples) for t in tests)
    assert attempted > 200, f"only {attempted} docstring examples in the package"
