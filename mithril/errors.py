"""The exceptions Mithril raises. Each names the model path, terminal and values involved.

See ``docs/errors.md`` for the catalogue of bad input and how to fix each.
"""

from __future__ import annotations


class MithrilError(Exception):
    """Base class of every error Mithril raises on purpose."""


class ShapeMismatchError(MithrilError, ValueError):
    """Two shapes that must agree do not (at build time, compile time or evaluate)."""


class TypeMismatchError(MithrilError, TypeError):
    """A terminal's element type or kind (tensor / scalar) does not match what it meets."""


class TerminalError(MithrilError, KeyError):
    """An unknown, missing, duplicated or wrongly wired terminal name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelReuseError(MithrilError, ValueError):
    """A model instance was added to a parent twice, or changed after being added."""


class CompileError(MithrilError, ValueError):
    """The model cannot be compiled as asked (undetermined shapes, cycles, bad options)."""


class InputError(MithrilError, KeyError):
    """Missing, unknown or malformed params, inputs or state given to ``evaluate``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(MithrilError, ImportError):
    """A backend's framework, or the requested device, is not available here."""


class ModelFileError(MithrilError, ValueError):
    """A model document that is malformed, of an unknown version, or names unknown types."""


class ParamsFileError(MithrilError, ValueError):
    """A parameter file that cannot be read: missing, truncated, corrupted or not safetensors."""


class ArgumentError(MithrilError, ValueError):
    """An argument has an invalid value (a negative dimension, a probability above 1, ...)."""


class ArgumentTypeError(MithrilError, TypeError):
    """An argument has the wrong type (a string where a backend or a model is expected, ...)."""
