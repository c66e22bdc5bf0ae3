"""Sample inputs for every primitive of the catalogue (used by the cross-backend walk).

Each case is ``(scalars, tensors)``: values of the primitive's scalar terminals (fixed when the
primitive is built) and NumPy float64 arrays for its tensor terminals (given at run time).
Inputs avoid points where a function is not differentiable (|x| away from 0 for abs, relu, ...)
so gradients compare cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Case = tuple[dict[str, Any], dict[str, np.ndarray]]


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.uniform(0.3, 2.0, shape)
    return x * rng.choice([-1.0, 1.0], shape)


def _pos(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values far apart from each other (no ties for max/min/sort-like ops)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.37 + rng.uniform(0, 0.1, shape)) - n * 0.15


def _spd(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Well-conditioned symmetric positive-definite matrices (batched)."""
    b = rng.standard_normal(shape)
    return b @ np.swapaxes(b, -1, -2) + shape[-1] * np.eye(shape[-1])


def _symmetric(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Symmetric matrices with well-separated eigenvalues (batched)."""
    q, _ = np.linalg.qr(rng.standard_normal(shape))
    values = np.arange(shape[-1]) * 1.5 - 2.0 + rng.uniform(0, 0.2, shape[:-1])
    return (q * values[..., None, :]) @ np.swapaxes(q, -1, -2)


SHAPES = [(3, 4), (2, 3, 5)]


def binary(fn: Callable[..., np.ndarray] = _away_from_zero) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        return [({}, {"left": fn(rng, (3, 4)), "right": fn(rng, (3, 4))}),
                ({}, {"left": fn(rng, (2, 3, 4)), "right": fn(rng, (3, 1))}),
                ({}, {"left": fn(rng, (5,)), "right": fn(rng, (4, 5))})]
    return make


def unary(fn: Callable[..., np.ndarray] = _away_from_zero, **scalars: Any
          ) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        return [(dict(scalars), {"input": fn(rng, s)}) for s in SHAPES]
    return make


def reduction(multi_axis: bool = True, **extra: Any) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = [({"axis": None, "keepdim": False, **extra}, {"input": _distinct(rng, (3, 4))}),
                 ({"axis": 1, "keepdim": True, **extra}, {"input": _distinct(rng, (3, 4))}),
                 ({"axis": -1, "keepdim": False, **extra}, {"input": _distinct(rng, (2, 5))})]
        if multi_axis:
            cases.append(({"axis": (0, 2), "keepdim": False, **extra},
                          {"input": _distinct(rng, (2, 3, 4))}))
        return cases
    return make


def _conv(nd: int) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for stride, pad, dil, groups, bias in [(1, 0, 1, 1, True), (2, 1, 1, 1, False),
                                                (1, 2, 2, 2, True), (2, 1, 1, 4, True)]:
            spatial = (9,) * nd
            k = (3,) * nd
            x = rng.standard_normal((2, 4, *spatial))
            w = rng.standard_normal((6 if groups != 4 else 8, 4 // groups, *k)) * 0.3
            tensors = {"input": x, "weight": w}
            if bias:
                tensors["bias"] = rng.standard_normal(w.shape[0])
            pads = tuple((pad, pad + (1 if i == 0 and stride == 1 else 0)) for i in range(nd))
            scalars = {"stride": (stride,) * nd, "padding": pads, "dilation": (dil,) * nd,
                       "groups": groups}
            if not bias:
                scalars["bias"] = None
            cases.append((scalars, tensors))
        return cases
    return make


def _conv_transpose(nd: int) -> Callable[..., list[Case]]:
    """Stride, padding (beyond the kernel: cropping), output_padding, dilation, groups."""
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for stride, pad, out_pad, dil, groups, k, bias in [
                (1, 0, 0, 1, 1, 3, True), (2, 1, 1, 1, 1, 3, False), (3, 2, 2, 2, 2, 2, True),
                (2, 3, 0, 1, 4, 2, True), ((2, 1) if nd == 2 else 2, 0, 0, 1, 1, 3, True)]:
            x = rng.standard_normal((2, 4, *(5, 4)[:nd]))
            w = rng.standard_normal((4, 2 if groups == 4 else 3, *(k,) * nd)) * 0.3
            tensors = {"input": x, "weight": w}
            if bias:
                tensors["bias"] = rng.standard_normal(w.shape[1] * groups)
            scalars: dict[str, Any] = {"stride": stride, "padding": pad,
                                       "output_padding": out_pad, "dilation": dil,
                                       "groups": groups}
            if not bias:
                scalars["bias"] = None
            cases.append((scalars, tensors))
        return cases
    return make


def _pool(nd: int, dilation: bool) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for k, s, p, d in [(2, None, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2)]:
            if not dilation and d != 1:
                continue
            sc = {"kernel_size": (k,) * nd, "stride": None if s is None else (s,) * nd,
                  "padding": (p,) * nd}
            if dilation:
                sc["dilation"] = (d,) * nd
            cases.append((sc, {"input": _distinct(rng, (2, 3, *(8,) * nd))}))
        return cases
    return make


def _batch_norm(rng: np.random.Generator) -> list[Case]:
    x = rng.standard_normal((4, 3, 5, 5))
    return [({"momentum": 0.1, "eps": 1e-5},
             {"input": x, "weight": _pos(rng, (3,)), "bias": rng.standard_normal(3),
              "running_mean": rng.standard_normal(3), "running_var": _pos(rng, (3,))}),
            ({"momentum": 0.3, "eps": 1e-3, "weight": None, "bias": None, "running_mean": None,
              "running_var": None}, {"input": rng.standard_normal((6, 2))})]


def _layer_norm(rng: np.random.Generator) -> list[Case]:
    return [({"normalized_shape": (4,), "eps": 1e-5},
             {"input": rng.standard_normal((3, 4)), "weight": _pos(rng, (4,)),
              "bias": rng.standard_normal(4)}),
            ({"normalized_shape": (3, 4), "eps": 1e-5, "weight": None, "bias": None},
             {"input": rng.standard_normal((2, 3, 4))})]


def _group_norm(rng: np.random.Generator) -> list[Case]:
    return [({"num_groups": 2, "eps": 1e-5},
             {"input": rng.standard_normal((2, 4, 3, 3)), "weight": _pos(rng, (4,)),
              "bias": rng.standard_normal(4)})]


def _sdp(rng: np.random.Generator) -> list[Case]:
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    return [({"is_causal": False, "scale": None, "attn_mask": None},
             {"query": q, "key": k, "value": v}),
            ({"is_causal": True, "scale": 0.3, "attn_mask": None},
             {"query": q, "key": k, "value": v})]


def _embedding(rng: np.random.Generator) -> list[Case]:
    return [({}, {"input": rng.integers(0, 6, (3, 4)), "weight": rng.standard_normal((6, 5))})]


def _matmul(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({}, {"left": n((3, 4)), "right": n((4, 5))}),
            ({}, {"left": n((2, 3, 4)), "right": n((4, 2))}),
            ({}, {"left": n((2, 1, 3, 4)), "right": n((5, 4, 2))}),
            ({}, {"left": n((4,)), "right": n((4, 3))})]


def _linear(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({}, {"input": n((3, 4)), "weight": n((5, 4)), "bias": n(5)}),
            ({"bias": None}, {"input": n((2, 3, 4)), "weight": n((5, 4))})]


def _where(rng: np.random.Generator) -> list[Case]:
    return [({}, {"condition": rng.random((3, 4)) > 0.5, "input1": rng.standard_normal((3, 4)),
                  "input2": rng.standard_normal((1, 4))})]


def _concat(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({"axis": 0, "n": 2}, {"input1": n((2, 3)), "input2": n((4, 3))}),
            ({"axis": -1, "n": 3}, {"input1": n((2, 1)), "input2": n((2, 3)), "input3": n((2, 2))})]


CASES: dict[str, Callable[[np.random.Generator], list[Case]]] = {
    "add": binary(), "subtract": binary(), "multiply": binary(), "divide": binary(),
    "floor_divide": binary(), "power": binary(_pos), "minimum": binary(_distinct),
    "maximum": binary(_distinct), "greater": binary(), "less": binary(),
    "greater_equal": binary(), "less_equal": binary(), "equal": binary(),
    "not_equal": binary(),
    "negate": unary(), "absolute": unary(), "exp": unary(), "log": unary(_pos),
    "sqrt": unary(_pos), "square": unary(), "sign": unary(), "sin": unary(), "cos": unary(),
    "floor": unary(), "reciprocal": unary(), "relu": unary(), "sigmoid": unary(),
    "tanh": unary(), "silu": unary(), "softplus": unary(), "stop_gradient": unary(),
    "isnan": unary(), "gelu": unary(approximate=False),
    "leaky_relu": unary(slope=0.2), "clamp": unary(min=-0.8, max=1.1),
    "softmax": unary(axis=-1), "log_softmax": unary(axis=0),
    "matmul": _matmul, "linear": _linear,
    "sum": reduction(), "mean": reduction(), "max": reduction(), "min": reduction(),
    "prod": reduction(), "variance": reduction(correction=1),
    "reshape": lambda rng: [({"shape": (4, 3)}, {"input": rng.standard_normal((3, 4))}),
                            ({"shape": (2, -1)}, {"input": rng.standard_normal((2, 3, 2))})],
    "transpose": lambda rng: [({"axes": None}, {"input": rng.standard_normal((3, 4))}),
                              ({"axes": (1, 2, 0)}, {"input": rng.standard_normal((2, 3, 4))})],
    "swap_axes": lambda rng: [({"axis1": 0, "axis2": 2},
                               {"input": rng.standard_normal((2, 3, 4))})],
    "flatten": lambda rng: [({"start_dim": 1, "end_dim": -1},
                             {"input": rng.standard_normal((2, 3, 4))}),
                            ({"start_dim": 0, "end_dim": 1},
                             {"input": rng.standard_normal((2, 3, 4))})],
    "squeeze": lambda rng: [({"axis": 1}, {"input": rng.standard_normal((3, 1, 4))}),
                            ({"axis": None}, {"input": rng.standard_normal((1, 3, 1))})],
    "unsqueeze": lambda rng: [({"axis": 1}, {"input": rng.standard_normal((3, 4))})],
    "broadcast_to": lambda rng: [({"shape": (2, 3, 4)}, {"input": rng.standard_normal((3, 1))})],
    "concat": _concat,
    "pad": lambda rng: [({"pad_width": ((1, 0), (0, 2))}, {"input": rng.standard_normal((3, 4))})],
    "indexer": lambda rng: [({"index": (slice(None), 1)}, {"input": rng.standard_normal((3, 4))}),
                            ({"index": (0, slice(1, None, 2))},
                             {"input": rng.standard_normal((3, 5))}),
                            ({"index": (None, Ellipsis, 2)},
                             {"input": rng.standard_normal((2, 3, 4))})],
    "where": _where,
    "cast": lambda rng: [({"dtype": "float"}, {"input": rng.standard_normal((3, 4))})],
    "conv1d": _conv(1), "conv2d": _conv(2),
    "conv_transpose1d": _conv_transpose(1), "conv_transpose2d": _conv_transpose(2),
    "max_pool1d": _pool(1, True), "max_pool2d": _pool(2, True), "avg_pool2d": _pool(2, False),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm, "group_norm": _group_norm,
    "embedding": _embedding, "scaled_dot_product": _sdp,
    "nan_to_num": lambda rng: [({"nan": 0.5, "posinf": 9.0, "neginf": -9.0},
                                {"input": np.array([[1.0, np.nan], [np.inf, -np.inf]])})],
    "one_hot": lambda rng: [({"num_classes": 5}, {"input": rng.integers(0, 5, (3, 4))})],
    "argmax": reduction(multi_axis=False), "argmin": reduction(multi_axis=False),
    "arange": lambda rng: [({"start": 0, "stop": 5, "step": 1, "dtype": None}, {}),
                           ({"start": 0.5, "stop": 2.0, "step": 0.25, "dtype": "float"}, {}),
                           ({"start": 5, "stop": -3, "step": -2, "dtype": None}, {})],
    "split": lambda rng: [({"split_size": 2, "axis": 1}, {"input": rng.standard_normal((3, 4))}),
                          ({"split_size": 3, "axis": -1},
                           {"input": rng.standard_normal((2, 2, 6))}),
                          ({"split_size": 1, "axis": 0}, {"input": rng.standard_normal((2, 3))})],
    "unique": lambda rng: [({}, {"input": np.array([[1.5, -2.0, 1.5], [0.25, -2.0, 3.0]])})],
    "cholesky": lambda rng: [({}, {"input": _spd(rng, (4, 4))}),
                             ({}, {"input": _spd(rng, (2, 3, 3))})],
    "eigvalsh": lambda rng: [({}, {"input": _spd(rng, (4, 4))}),
                             ({}, {"input": _symmetric(rng, (2, 3, 3))})],
    "polynomial_features": lambda rng: [({"degree": 2}, {"input": rng.standard_normal((3, 4))}),
                                        ({"degree": 3},
                                         {"input": rng.standard_normal((2, 2, 3))}),
                                        ({"degree": 1}, {"input": rng.standard_normal((5, 2))})],
    "atleast_1d": lambda rng: [({}, {"input": np.array(1.5)}),
                               ({}, {"input": rng.standard_normal((3, 4))})],
}

#: primitives that the walk does not run through compile, with the reason
NOT_WALKED = {
    "logical_and": "boolean-only op; covered by each backend's kernel tests",
    "logical_or": "boolean-only op; covered by each backend's kernel tests",
    "logical_xor": "boolean-only op; covered by each backend's kernel tests",
    "logical_not": "boolean-only op; covered by each backend's kernel tests",
    "shift_left": "integer-only op; covered by each backend's kernel tests",
    "shift_right": "integer-only op; covered by each backend's kernel tests",
    "size": "returns a Python int; covered by each backend's kernel tests",
    "item": "returns a Python number; covered by each backend's kernel tests",
    "to_tensor": "takes a Python value; covered by each backend's kernel tests",
    "dropout": "random; covered statistically in test_dropout",
    "randn": "random; covered statistically in test_reference_models",
    "randint": "random; covered statistically in test_reference_models",
    "dtype_of": "returns an ml dtype; covered on every backend in test_reference_models",
    "to_slice": "returns a Python slice; covered on every backend in test_reference_models",
    "to_list": "returns a Python list; covered on every backend in test_reference_models",
    "tensor_to_list": "returns Python lists; covered on every backend in test_reference_models",
}
