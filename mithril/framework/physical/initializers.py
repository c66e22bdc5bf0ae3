"""How parameters and state get their first values (``randomize_params``,
``initial_state_dict``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .program_info import ParamSpec


def initial_state(specs: dict[str, ParamSpec], backend: Any) -> dict[str, Any]:
    """Fresh state arrays (e.g. BatchNorm running statistics: zeros and ones) in the backend's
    float dtype.

    >>> import mithril as ml
    >>> st = initial_state({"var": ParamSpec((2,), ("ones", []), 0)}, ml.NumpyBackend())
    >>> st["var"].tolist()
    [1.0, 1.0]
    """
    out = {}
    for key, spec in specs.items():
        kind = spec.init[0] if spec.init else "zeros"
        fill = np.ones if kind == "ones" else np.zeros
        out[key] = backend.array(fill(spec.shape), dtype=backend.dtype)
    return out


def initial_value(spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """A parameter's first value, in float64, by its layer's declared initialiser (PyTorch's
    defaults: ``kaiming_uniform`` bounds from the fan-in, ``xavier_uniform``, ones, zeros).

    >>> import numpy as np
    >>> spec = ParamSpec((2, 3), ("kaiming_uniform", [3]), 0)
    >>> w = initial_value(spec, np.random.default_rng(0))
    >>> w.shape, bool(np.all(np.abs(w) <= 1 / np.sqrt(3)))
    ((2, 3), True)
    """
    shape = spec.shape
    kind, fan_in = spec.init if spec.init else ("default", [])
    if kind == "ones":
        return np.ones(shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "xavier_uniform" and len(fan_in) == 2:  # nn.init.xavier_uniform_
        bound = math.sqrt(6 / (fan_in[0] + fan_in[1]))
        return rng.uniform(-bound, bound, shape)
    if kind == "uniform_hidden":
        bound = 1 / math.sqrt(fan_in[0]) if fan_in and fan_in[0] else 1.0
        return rng.uniform(-bound, bound, shape)
    if kind == "kaiming_uniform":
        n = math.prod(fan_in) if fan_in else (math.prod(shape[1:]) if len(shape) > 1 else 1)
    else:  # no declared initialiser: PyTorch-like fan-in bound
        n = math.prod(shape[1:]) if len(shape) > 1 else max(math.prod(shape), 1)
    bound = 1 / math.sqrt(n) if n > 0 else 0.0
    return rng.uniform(-bound, bound, shape)
