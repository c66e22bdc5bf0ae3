"""The NumPy backend: NumPy kernels with hand-written VJPs."""

from .backend import NumpyBackend

__all__ = ["NumpyBackend"]
