"""Names code written for the reference Mithril imports from ``mithril.types``.

``DataType`` (the type variable of backend arrays, as in ``ml.Backend[DataType]``), ``Dtype``
and the dtypes with their C-style aliases (``ml.types.double`` is ``ml.float64``,
``int``/``short``/``long`` are int32/int16/int64, ``float``/``half`` float32/float16),
``Constant`` with its ``epsilon_table``, and ``Tensor``: a tensor constant given as a terminal
value, or ``Tensor[float]`` as a type.

>>> import numpy as np
>>> import mithril as ml
>>> from mithril.types import Tensor
>>> from mithril.models import Add, Model
>>> m = Model()
>>> m |= Add()(left="x", right=Tensor([1.0, 2.0]), output="y")
>>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [2]})
>>> pm.evaluate({}, {"x": np.zeros(2)})["y"].tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import builtins
import enum
import types as _pytypes
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .errors import ArgumentError
from .framework.logical.meta import TBD
from .framework.types import (
    Dtype,
    bfloat16,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)

#: the array type of a backend, as a type variable (``ml.Backend[DataType]``)
DataType = TypeVar("DataType")
GenericDataType = DataType
short, long, half, double = int16, int64, float16, float64
#: what ``ml.compile(constant_keys=...)`` and ``shapes=`` take
PhysicalConstantType = Mapping[str, Any]
PhysicalShapeType = Mapping[str, Sequence[builtins.int | None]]

#: names that are builtins in Python (``int``, ``float``, ``bool``): given by ``__getattr__`` so
#: that this module's own code keeps the builtins
_ALIASES = {"int": int32, "float": float32, "bool": bool_}


def __getattr__(name: str) -> Dtype:
    if name in _ALIASES:
        return _ALIASES[name]
    raise AttributeError(f"module 'mithril.types' has no attribute {name!r}")


class Constant(enum.Enum):
    """Precision-dependent constants; their values per float width are in ``epsilon_table``."""

    EPSILON = 0
    LEFT_EPSILON = 1
    MIN_POSITIVE_NORMAL = 2
    MIN_POSITIVE_SUBNORMAL = 3
    STABLE_RECIPROCAL_THRESHOLD = 4
    ZEROS = 5
    ONES = 6


def _epsilons(dtype: type) -> dict[Constant, builtins.float]:
    info = np.finfo(dtype)
    return {Constant.EPSILON: builtins.float(info.eps),
            Constant.LEFT_EPSILON: builtins.float(info.epsneg),
            Constant.MIN_POSITIVE_NORMAL: builtins.float(info.tiny),
            Constant.MIN_POSITIVE_SUBNORMAL: builtins.float(info.smallest_subnormal),
            Constant.STABLE_RECIPROCAL_THRESHOLD: builtins.float(np.sqrt(info.tiny))}


#: ``epsilon_table[bits][Constant.X]``: machine epsilon, smallest normal, ... of float16/32/64
epsilon_table = {16: _epsilons(np.float16), 32: _epsilons(np.float32), 64: _epsilons(np.float64)}


class Tensor(np.ndarray):
    """A tensor constant: ``Add()(left="x", right=Tensor([1.0, 2.0]))`` fixes ``right``.

    It is a NumPy array (``Tensor(value)`` copies ``value``; ``dtype=`` an ``ml`` dtype or a
    NumPy one). As a type, ``Tensor`` is any tensor and ``Tensor[float]`` a float one:
    ``model.set_types(input=Tensor[float])``. Without a value, ``Tensor()`` (or
    ``Tensor(shape=[2, "N"])``) is a tensor yet to come, as an element of a tuple value:
    ``IOKey("x", value=(Tensor(), Tensor()))`` is an input holding a tuple of two tensors.

    >>> from mithril.types import Tensor
    >>> Tensor([[1, 2]]).shape, Tensor[float].__args__
    ((1, 2), (<class 'float'>,))
    """

    #: the element kinds ``Tensor`` stands for as a type
    __args__ = (builtins.int, builtins.float, builtins.bool)

    def __new__(cls, value: Any = TBD, shape: Sequence[Any] | None = None, dtype: Any = None,
                differentiable: builtins.bool = False) -> Tensor:
        if value is TBD:
            # the reference's ``Tensor()``: a tensor without a value, an element of a tuple
            # value (``IOKey("x", value=(Tensor(), Tensor()))``, a tuple of tensor inputs)
            from .framework.logical.sequences import TensorSlot
            return TensorSlot(shape, dtype)  # type: ignore[return-value]
        if differentiable:
            raise ArgumentError("Tensor(..., differentiable=True): give trainable values as "
                                "parameters (evaluate's params) instead of as a constant")
        np_dtype = getattr(dtype, "name", dtype)
        arr = np.array(value, dtype=None if np_dtype is None else np.dtype(np_dtype))
        if shape is not None and any(isinstance(s, builtins.int) for s in shape) and (
                len(shape) != arr.ndim or any(isinstance(s, builtins.int) and s != d
                                              for s, d in zip(shape, arr.shape, strict=False))):
            raise ArgumentError(f"Tensor value of shape {list(arr.shape)} does not match "
                                f"shape={list(shape)}")
        return arr.view(cls)

    def __class_getitem__(cls, item: Any) -> _pytypes.GenericAlias:
        return _pytypes.GenericAlias(cls, item)


__all__ = ["DataType", "GenericDataType", "Constant", "epsilon_table", "Tensor", "Dtype",
           "uint8", "int8", "int16", "short", "int32", "int64", "long", "float16", "half",
           "bfloat16", "float32", "float64", "double", "bool_", "PhysicalConstantType",
           "PhysicalShapeType"]
