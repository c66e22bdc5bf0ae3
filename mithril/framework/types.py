"""Data types: the dtypes users name, and the kinds (bool < int < float) inference works with.

At the logical level a tensor's type is a set of possible *kinds*; the concrete precision of a
float is the backend's choice at compile time (``TorchBackend(dtype=ml.float64)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentTypeError

BOOL, INT, FLOAT = 1, 2, 4
ANY = BOOL | INT | FLOAT
NUMBER = INT | FLOAT
KIND_NAMES = {BOOL: "bool", INT: "int", FLOAT: "float"}


@dataclass(frozen=True)
class Dtype:
    """A concrete element type, e.g. ``ml.float32``."""

    name: str
    kind: int
    bits: int

    def __repr__(self) -> str:
        return f"ml.{self.name}"


float16 = Dtype("float16", FLOAT, 16)
bfloat16 = Dtype("bfloat16", FLOAT, 16)
float32 = Dtype("float32", FLOAT, 32)
float64 = Dtype("float64", FLOAT, 64)
int8 = Dtype("int8", INT, 8)
int16 = Dtype("int16", INT, 16)
int32 = Dtype("int32", INT, 32)
int64 = Dtype("int64", INT, 64)
uint8 = Dtype("uint8", INT, 8)
bool_ = Dtype("bool", BOOL, 8)

DTYPES: dict[str, Dtype] = {
    d.name: d for d in (float16, bfloat16, float32, float64, int8, int16, int32, int64, uint8,
                        bool_)
}

# the reference's ``Dtype`` is an enum: ``mithril.types.Dtype.int64`` names the dtype ``ml.int64``
for _d in DTYPES.values():
    setattr(Dtype, "bool_" if _d.name == "bool" else _d.name, _d)
del _d


def as_dtype(value: object) -> Dtype:
    """Accept ``ml.float32``, ``"float32"`` or a framework/NumPy dtype with that name."""
    if isinstance(value, Dtype):
        return value
    name = value if isinstance(value, str) else getattr(value, "name", None) or str(value)
    name = name.removeprefix("torch.").removeprefix("mlx.core.")
    if name == "bool_":
        name = "bool"
    if name not in DTYPES:
        raise ArgumentTypeError(f"unknown dtype {value!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def kind_of_python(value: object) -> int:
    """The kind of a Python scalar (bool is not an int here)."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    raise TypeError(f"not a number: {value!r}")


def kind_names(mask: int) -> str:
    names = [n for k, n in KIND_NAMES.items() if mask & k]
    return " | ".join(names) if names else "nothing"


def kind_from_type(t: object) -> int:
    """``float`` / ``int`` / ``bool`` / ``ml.float32`` / a union of them -> kind mask."""
    if t is None:
        return ANY
    if isinstance(t, int) and not isinstance(t, bool) and 0 < t <= ANY:
        return t
    if isinstance(t, Dtype):
        return t.kind
    if t is float:
        return FLOAT
    if t is int:
        return INT
    if t is bool:
        return BOOL
    args = getattr(t, "__args__", None)
    if args:
        mask = 0
        for a in args:
            mask |= kind_from_type(a)
        return mask
    raise ArgumentTypeError(f"unsupported type {t!r}; use float, int, bool or an ml dtype")


def promote(a: int, b: int) -> int:
    """Kinds of ``a op b`` for arithmetic: the larger of the two kinds (bool < int < float)."""
    out = 0
    for ka in (BOOL, INT, FLOAT):
        if not a & ka:
            continue
        for kb in (BOOL, INT, FLOAT):
            if b & kb:
                out |= max(ka, kb)
    return out
