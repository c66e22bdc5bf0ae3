"""What compiling hands the compiled model: typed tables read off the program once.

``ml.compile`` builds a :class:`ProgramInfo` before the undo trail is rolled back; the
compiled model and its checks read only this (no dictionaries keyed by strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class ShapePattern(NamedTuple):
    """The shape an input must have: ``rank`` (None: any rank) and one entry per axis, an int
    or ``(symbol name, symbol id)`` (axes with the same id must agree)."""

    rank: int | None
    dims: tuple[Any, ...]


@dataclass
class ParamSpec:
    """A parameter or state array: its shape, its initialiser ``(kind, fan_in)`` and kinds."""

    shape: tuple[int, ...]
    init: tuple[str, list[Any]] | None
    kinds: int


class DataSpec(NamedTuple):
    """A data input or an output: its shape pattern, element kinds and ``kind`` (``"tensor"``
    or ``"scalar"``)."""

    pattern: ShapePattern
    kinds: int
    kind: str | None


@dataclass(frozen=True)
class ProgramInfo:
    """Everything a :class:`~mithril.framework.physical.compiled.CompiledModel` needs to know
    about its program, decided at compile time.

    >>> info = ProgramInfo(params={}, state={}, data={}, outputs=["output"], output_specs={},
    ...                    shapes={"output": [2]}, unused=frozenset(), float_data=frozenset(),
    ...                    uses_rng=False)
    >>> info.outputs
    ['output']
    """

    params: dict[str, ParamSpec]
    state: dict[str, ParamSpec]
    data: dict[str, DataSpec]
    outputs: list[str]
    output_specs: dict[str, DataSpec]
    #: shapes of the model's values (ints where known, symbol names otherwise)
    shapes: dict[str, Any]
    #: inputs nothing reads (accepted by evaluate and ignored)
    unused: frozenset[str]
    #: data tensors the model computes with in its float precision (see compile._float_data)
    float_data: frozenset[str]
    #: whether the generated code draws random numbers (evaluate then supplies an ``rng``)
    uses_rng: bool
