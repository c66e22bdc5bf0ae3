"""The MLX backend (the ``mlx`` extra: ``pip install '.[mlx]'``)."""

from .backend import MlxBackend

__all__ = ["MlxBackend"]
