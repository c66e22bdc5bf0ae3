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


def missing_package(user: str, package: str, extra: str) -> BackendUnavailableError:
    """The error for ``user`` (a backend, a feature) needing ``package``, naming the extra.

    Mithril is installed from a checkout or a built wheel (the package index's ``mithril`` is
    another project), so the hint gives both forms.

    >>> err = missing_package("TorchBackend", "torch", "torch")
    >>> isinstance(err, BackendUnavailableError), "pip install '.[torch]'" in str(err)
    (True, True)
    """
    return BackendUnavailableError(
        f"{user} needs the '{package}' package, which is not installed; install Mithril with "
        f"its '{extra}' extra: `pip install '.[{extra}]'` in a Mithril checkout, or "
        f"`pip install '<wheel>.whl[{extra}]'` for a built wheel (not `pip install mithril`: "
        "that name on the package index is another project)")


class ModelFileError(MithrilError, ValueError):
    """A model document that is malformed, of an unknown version, or names unknown types."""


class ParamsFileError(MithrilError, ValueError):
    """A parameter file that cannot be read: missing, truncated, corrupted or not safetensors."""


class ArgumentError(MithrilError, ValueError):
    """An argument has an invalid value (a negative dimension, a probability above 1, ...)."""


class ArgumentTypeError(MithrilError, TypeError):
    """An argument has the wrong type (a string where a backend or a model is expected, ...)."""
