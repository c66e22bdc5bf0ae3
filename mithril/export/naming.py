"""ONNX value names: the model's own keys verbatim, unique names for everything else.

Inputs, outputs and initialisers keep Mithril's keys exactly as they are (ONNX names are
arbitrary strings, so quotes, dots, spaces and unicode survive); those are reserved first.
Intermediate values are named after the Mithril value that holds them (``conv2d_output``),
with a numeric suffix where a name is already taken.
"""

from __future__ import annotations


class Names:
    """Hands out unique ONNX value names; reserved names are never handed out again.

    >>> names = Names({"input", "output"})
    >>> names.fresh("output"), names.fresh("output"), names.fresh("relu")
    ('output_1', 'output_2', 'relu')
    """

    def __init__(self, reserved: set[str] | None = None) -> None:
        self.used: set[str] = set(reserved or ())

    def reserve(self, name: str) -> str:
        """Claim ``name`` exactly (a model key); it must still be free."""
        if name in self.used:
            raise ValueError(f"ONNX name {name!r} is used twice")
        self.used.add(name)
        return name

    def fresh(self, hint: str) -> str:
        """A new name based on ``hint`` that nothing else uses."""
        base = hint or "value"
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name
