"""Backend-free core: catalogue, shapes, types, logical models, compilation."""

from . import loops  # noqa: F401  (issue 15: the loop primitives join the catalogue)
