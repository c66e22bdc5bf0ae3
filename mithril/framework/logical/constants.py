"""What a constant or connection given to a terminal is: its type kind, whether it is data or a
constant, and how error messages name it (used when a child is added to a ``Model``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import types as T
from .connection import Connection, IOKey
from .meta import TBD


def value_repr(value: Any) -> str:
    """How an error message names a value given for a terminal."""
    if isinstance(value, IOKey):
        return repr(value)
    if value is TBD or value is None:
        return "the new connection"
    return f"the value {value!r}"


def is_data_input(conn: Connection) -> bool:
    """An input that may be a canonical input: nothing produces it, it is not a constant and
    not a parameter."""
    r = conn.meta.root()
    return conn.producer is None and r.value is TBD and r.differentiable is not True


def is_constant(conn: Connection, created: list[Connection]) -> bool:
    """Is ``conn`` a connection made for a constant (created for it, or without a name)?"""
    return any(c is conn for c in created) or conn.key is None


def kind_of_array(arr: np.ndarray) -> int:
    """The type kind (``T.BOOL``, ``T.INT``, ``T.FLOAT``) of a constant array."""
    if arr.dtype == np.bool_:
        return T.BOOL
    if np.issubdtype(arr.dtype, np.integer):
        return T.INT
    return T.FLOAT


def kind_of_scalar(value: Any) -> int:
    """The type kind of a constant scalar (a tuple of ints counts as ``T.INT``).

    >>> kind_of_scalar((1, 2)) == T.INT, kind_of_scalar(0.5) == T.FLOAT
    (True, True)
    """
    if isinstance(value, bool):
        return T.BOOL
    if isinstance(value, int):
        return T.INT
    if isinstance(value, float):
        return T.FLOAT
    if isinstance(value, tuple | list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return T.INT
    return T.ANY
