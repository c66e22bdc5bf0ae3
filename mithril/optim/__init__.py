"""Functional optimizers, learning-rate schedules and gradient clipping for all backends.

The optimizers follow ``torch.optim``'s update rules and defaults and work on dicts of NumPy,
PyTorch, JAX or MLX arrays (one framework per dict); importing this package imports none of
PyTorch, JAX or MLX.

>>> import numpy as np
>>> from mithril.optim import SGD, StepLR
>>> optimizer = SGD(learning_rate=StepLR(0.1, step_size=10, gamma=0.5), momentum=0.9)
>>> params = {"w": np.array([1.0, 2.0])}
>>> state = optimizer.init(params)
>>> params, state = optimizer.update(params, {"w": np.array([1.0, 1.0])}, state)
>>> params["w"].round(4).tolist()
[0.9, 1.9]
"""

from .clipping import clip_by_global_norm, global_norm
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedules import CosineAnnealing, LinearWarmup, Schedule, StepLR

__all__ = [
    "SGD", "Adagrad", "Adam", "AdamW", "CosineAnnealing", "LinearWarmup", "Optimizer",
    "RMSprop", "Schedule", "StepLR", "clip_by_global_norm", "global_norm",
]
