"""The catalogue's data types: terminals (``Term``), entries (``OpDef``) and the table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, TENSOR, Meta
from ..rules import (
    as_scalar,
    as_tensor,
)


@dataclass(frozen=True)
class Term:
    """One terminal of a primitive.

    ``kind`` is ``"tensor"``, ``"scalar"`` or ``None`` (either: a tensor, or a Python number
    that broadcasts). ``default`` is the value used when the terminal is left unconnected
    (``TBD``: it becomes an input of the model). ``optional`` tensors accept ``None``.
    """

    name: str
    kind: str | None = TENSOR
    kinds: int = T.NUMBER
    default: Any = TBD
    differentiable: bool = True
    optional: bool = False

    def make_meta(self) -> Meta:
        if self.kind == TENSOR and self.optional:
            m = Meta.poly(self.kinds)  # a tensor, or None when absent
        elif self.kind == TENSOR:
            m = Meta.tensor(None, self.kinds)
        elif self.kind == SCALAR:
            m = Meta.scalar(self.kinds)
        else:
            m = Meta.poly(self.kinds)
        return m


#: primitives that are plain Python in generated code (no kernel)
PYTHON_ONLY = frozenset({"to_tuple", "shape", "buffer"})


@dataclass
class OpDef:
    """One primitive: its terminals, its shape-and-type rule and its flags.

    ``decompose``, when set, makes the primitive *derived*: a function ``(k, *inputs)`` that
    computes the outputs (a value, or a tuple for several outputs) with the core kernels of a
    backend, reached as attributes of ``k`` (``k.exp(x)``); a backend without a kernel of its
    own for the primitive runs it (``mithril/framework/ops/decompose.py``). Core primitives
    (``decompose is None``) need a kernel in every backend, and a VJP in the NumPy backend.
    ``public`` names the class of ``mithril.models`` that exposes the primitive, if any.
    """

    name: str
    inputs: tuple[Term, ...]
    outputs: tuple[Term, ...]
    rule: Callable[..., bool]
    fold: Callable[..., Any] | None = None  # Python evaluation on concrete scalar inputs
    expr: str | None = None  # Python expression for scalar-only use, e.g. "({0} + {1})"
    variadic: bool = False  # the first input is repeated (``input1 ... inputN``)
    state: dict[str, str] = field(default_factory=dict)  # state input -> its updated output
    modal: bool = False  # has a different kernel in inference (``<name>_inference``)
    random: bool = False  # draws from the backend's random state
    differentiable: bool = True
    doc: str = ""  # one line for the signature table and the public class
    public: str | None = None  # the class of mithril.models exposing it (``Relu``)
    decompose: Callable[..., Any] | None = None  # derived: the formula in core kernels
    #: a modal derived primitive's inference formula (default: ``decompose``)
    decompose_inference: Callable[..., Any] | None = None

    @property
    def needs_kernel(self) -> bool:
        """Does generated code call a kernel for it (False: plain Python such as ``shape``)?"""
        return self.name not in PYTHON_ONLY

    @property
    def core(self) -> bool:
        """A kernel primitive without a decomposition: every backend must implement it."""
        return self.needs_kernel and self.decompose is None

    @property
    def stateful(self) -> bool:
        """Does it update state (``batch_norm``'s running statistics)?"""
        return bool(self.state)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


CATALOGUE: dict[str, OpDef] = {}
#: bumped by every change of the catalogue (backends rebuild their kernel tables after one)
VERSION = [0]


def register(op: OpDef) -> OpDef:
    """Add ``op`` to the catalogue (each name once)."""
    if op.name in CATALOGUE:
        raise ValueError(f"primitive {op.name!r} is already in the catalogue")
    CATALOGUE[op.name] = op
    VERSION[0] += 1
    return op


def unregister(name: str) -> OpDef:
    """Remove primitive ``name`` from the catalogue (for examples and tests).

    >>> from mithril.framework.ops import OpDef, Term, register, unregister
    >>> op = register(OpDef("demo", (Term("input"),), (Term("output"),), lambda i, o: True))
    >>> unregister("demo") is op, "demo" in CATALOGUE
    (True, False)
    """
    VERSION[0] += 1
    return CATALOGUE.pop(name)


def derive(formulas: dict[str, Callable[..., Any]]) -> None:
    """Make registered primitives derived: ``formulas`` maps each name to its decomposition
    ``(k, *inputs)`` in core kernels (see :class:`OpDef`).

    >>> from mithril.framework.ops import CATALOGUE
    >>> CATALOGUE["square"].decompose is not None  # derive({"square": lambda k, x: ...})
    True
    """
    for name, formula in formulas.items():
        CATALOGUE[name].decompose = formula
    VERSION[0] += 1


def reduced_count(shape: Any, axis: Any) -> int:
    """How many elements a reduction over ``axis`` (None: all) of ``shape`` combines."""
    n = len(shape)
    axes = range(n) if axis is None else [a % n for a in (
        (axis,) if isinstance(axis, int) else axis)]
    return math.prod(int(shape[a]) for a in set(axes))


OUT = (Term("output"),)


def _scalar_or_tensor_out(out: Meta, ins: list[Meta]) -> str | None:
    """Decide the output kind of a polymorphic op; None while an input is undecided."""
    kinds = [m.kind for m in ins]
    if TENSOR in kinds:
        as_tensor(out)
        return TENSOR
    if None in kinds:
        return None
    as_scalar(out)
    return SCALAR




OUT_ANY = (Term("output", kinds=T.ANY),)


def _same(k: int) -> int:
    return k


def _float(k: int) -> int:
    return T.FLOAT


def _bool(k: int) -> int:
    return T.BOOL


def _int(k: int) -> int:
    return T.INT


def tensor_ops() -> list[OpDef]:
    """Primitives generated code calls a kernel for (the others are plain Python).

    >>> from mithril.framework.ops import tensor_ops
    >>> "relu" in {op.name for op in tensor_ops()}
    True
    """
    return [op for op in CATALOGUE.values() if op.needs_kernel]


def core_ops() -> list[OpDef]:
    """The core: kernel primitives without a decomposition, which every backend implements.

    >>> from mithril.framework.ops import core_ops
    >>> "exp" in {op.name for op in core_ops()}
    True
    """
    return [op for op in CATALOGUE.values() if op.core]
