"""The JAX backend (``mithril.JaxBackend``)."""

from .backend import JaxBackend

__all__ = ["JaxBackend"]
