"""Backend-free core: catalogue, shapes, types, logical models, compilation."""
