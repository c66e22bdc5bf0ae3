"""The MLX backend (``pip install 'mithril[mlx]'``)."""

from .backend import MlxBackend

__all__ = ["MlxBackend"]
