"""The Python code blocks of the user's guide, to run as written."""

from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).parent / "data" / "migrating-from-pytorch.md"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "migrating-from-pytorch.md"


def blocks() -> list[tuple[str, str]]:
    """(section heading, code) for every ```python block of the guide, in order."""
    text = GUIDE.read_text()
    out = []
    heading = ""
    for part in re.split(r"(```python\n.*?```)", text, flags=re.S):
        if part.startswith("```python"):
            out.append((heading, part[len("```python\n"):-3]))
        else:
            heads = re.findall(r"^#+ (.+)$", part, flags=re.M)
            if heads:
                heading = heads[-1]
    return out


def for_backend(code: str, backend_class: str) -> str:
    """The snippet with "cuda" read as "cpu" and TorchBackend as ``backend_class``."""
    code = re.sub(r"""(['"])cuda(:0)?\1""", '"cpu"', code)
    return code.replace("ml.TorchBackend(", f"ml.{backend_class}(")
