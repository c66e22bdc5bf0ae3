"""``DeviceMesh``: a named grid of devices, backed by the framework's own mesh object.

``ml.JaxBackend(device_mesh=(4,))`` wraps a ``jax.sharding.Mesh``;
``ml.TorchBackend(device_mesh=(2, 1))`` wraps a ``torch.distributed.device_mesh.DeviceMesh``
(one process per device, launched by ``torchrun``). Both are described by the same
framework-neutral :class:`DeviceMesh`, whose axes have names: ``("data",)`` for a 1-D mesh,
``("data", "model")`` for a 2-D one (pass a dict such as ``{"batch": 2, "tp": 2}`` for other
names).

Importing this module imports no framework.

>>> from mithril.parallel.mesh import mesh_layout
>>> mesh_layout((2, 2))
((2, 2), ('data', 'model'))
>>> mesh_layout({"batch": 4})
((4,), ('batch',))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError, CompileError

#: default axis names by mesh rank: axis 0 splits the batch, axis 1 splits the model
DEFAULT_AXIS_NAMES = ("data", "model")

#: one entry of a sharding spec after normalisation: the mesh axes a tensor dim is split over
AxisGroup = tuple[str, ...] | None
#: a normalised sharding spec: one entry per tensor dimension
Spec = tuple[AxisGroup, ...]


def default_axis_names(ndim: int) -> tuple[str, ...]:
    """``("data",)``, ``("data", "model")``, then ``axis2``, ``axis3``, ...

    >>> default_axis_names(3)
    ('data', 'model', 'axis2')
    """
    return tuple(DEFAULT_AXIS_NAMES[i] if i < len(DEFAULT_AXIS_NAMES) else f"axis{i}"
                 for i in range(ndim))


def mesh_layout(device_mesh: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``(shape, axis names)`` of a ``device_mesh=`` argument: a tuple of ints or a dict.

    >>> mesh_layout((4,))
    ((4,), ('data',))
    """
    if isinstance(device_mesh, Mapping):
        names = tuple(device_mesh)
        sizes = tuple(device_mesh.values())
        if not all(isinstance(n, str) and n for n in names):
            raise ArgumentTypeError(
                f"device_mesh axis names must be non-empty strings, got {names}")
    elif isinstance(device_mesh, Sequence) and not isinstance(device_mesh, str):
        sizes = tuple(device_mesh)
        names = default_axis_names(len(sizes))
    else:
        raise ArgumentTypeError(
            "device_mesh must be a tuple of axis sizes such as (4,) or (2, 2), a "
            "dict {axis name: size}, or the framework's own mesh object; got "
            f"{device_mesh!r}")
    if not sizes:
        raise ArgumentError("device_mesh needs at least one axis, e.g. device_mesh=(2,)")
    for s in sizes:
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ArgumentError(
                f"device_mesh axis sizes must be positive ints, got {device_mesh!r}")
    if len(set(names)) != len(names):
        raise ArgumentError(f"device_mesh axis names must differ, got {names}")
    return sizes, names


class DeviceMesh:
    """A grid of devices with named axes, and the framework mesh behind it (``.native``).

    Arrays are split over mesh axes by sharding specs (see :mod:`mithril.parallel.plan`).

    >>> from mithril.parallel.mesh import DeviceMesh
    >>> mesh = DeviceMesh((2, 2), ("data", "model"), native=None, framework="jax")
    >>> mesh.size, mesh.axis_size("model"), mesh.axis_name(-1)
    (4, 2, 'model')
    """

    def __init__(self, shape: tuple[int, ...], axis_names: tuple[str, ...], native: Any,
                 framework: str) -> None:
        self.shape = tuple(shape)
        self.axis_names = tuple(axis_names)
        self.native = native
        self.framework = framework

    @property
    def size(self) -> int:
        """Number of devices in the mesh."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def axis_name(self, axis: int | str) -> str:
        """The name of mesh axis ``axis`` (an index, negative from the end, or a name)."""
        if isinstance(axis, str):
            if axis not in self.axis_names:
                raise CompileError(f"the device mesh has no axis {axis!r}; its axes are "
                                   f"{self._describe_axes()}")
            return axis
        if isinstance(axis, int) and not isinstance(axis, bool):
            if not -self.ndim <= axis < self.ndim:
                raise CompileError(f"the device mesh has no axis {axis}; its axes are "
                                   f"{self._describe_axes()}")
            return self.axis_names[axis]
        raise CompileError(f"a mesh axis is a name or an index, got {axis!r}")

    def axis_size(self, axis: int | str) -> int:
        """Number of devices along mesh axis ``axis``."""
        return self.shape[self.axis_names.index(self.axis_name(axis))]

    def group_size(self, group: AxisGroup) -> int:
        """Number of pieces a tensor dim split over the axes of ``group`` is cut into."""
        return 1 if not group else math.prod(self.axis_size(a) for a in group)

    def _describe_axes(self) -> str:
        return ", ".join(f"{n!r} (size {s})" for n, s in zip(self.axis_names, self.shape,
                                                           strict=True))

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}={s}" for n, s in zip(self.axis_names, self.shape, strict=True))
        return f"DeviceMesh({axes}, framework={self.framework!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DeviceMesh) and other.shape == self.shape
                and other.axis_names == self.axis_names and other.native is self.native)

    def __hash__(self) -> int:
        return hash((self.shape, self.axis_names, id(self.native)))


def normalize_spec(spec: Any, rank: int, mesh: DeviceMesh, what: str) -> Spec:
    """A PartitionSpec-like tuple as one axis group per tensor dim (``None``: not split).

    Entries: ``None``, a mesh axis (name or index) or a tuple of mesh axes (the dim is split
    over their product). Dims past the end of ``spec`` are not split.

    >>> mesh = DeviceMesh((2, 2), ("data", "model"), native=None, framework="jax")
    >>> normalize_spec(("data", None), 3, mesh, "x")
    (('data',), None, None)
    >>> normalize_spec((None, (0, 1)), 2, mesh, "x")
    (None, ('data', 'model'))
    """
    if spec is None:
        spec = ()
    if isinstance(spec, str | int):
        spec = (spec,)
    if not isinstance(spec, Sequence):
        raise CompileError(f"the sharding of {what} must be a tuple with one entry per "
                           f"dimension (None, a mesh axis or a tuple of mesh axes); got {spec!r}")
    if len(spec) > rank:
        raise CompileError(f"the sharding {tuple(spec)!r} of {what} has {len(spec)} entries but "
                           f"{what} has {rank} dimension(s)")
    out: list[AxisGroup] = []
    used: set[str] = set()
    for entry in spec:
        if entry is None:
            out.append(None)
            continue
        axes = entry if isinstance(entry, tuple | list) else (entry,)
        names = tuple(mesh.axis_name(a) for a in axes)
        for n in names:
            if n in used:
                raise CompileError(f"the sharding {tuple(spec)!r} of {what} uses mesh axis "
                                   f"{n!r} twice; a mesh axis can split one dimension only")
            used.add(n)
        out.append(names or None)
    out += [None] * (rank - len(out))
    return tuple(out)


def spec_text(spec: Spec) -> str:
    """``('data', None)``-style text of a normalised spec (``replicated`` when not split).

    >>> spec_text((None, ('data',))), spec_text((None,)), spec_text((('data', 'model'),))
    ("(None, 'data')", 'replicated', "(('data', 'model'),)")
    """
    if all(g is None for g in spec):
        return "replicated"
    items = [None if g is None else (g[0] if len(g) == 1 else g) for g in spec]
    while items and items[-1] is None:
        items.pop()
    return repr(tuple(items))


def check_divisible(shape: Sequence[Any], spec: Spec, mesh: DeviceMesh, what: str) -> None:
    """Raise ``ShapeMismatchError`` if a split dimension is not a multiple of its mesh axes.

    Symbolic dims (non-ints) are checked when the array arrives.
    """
    from ..errors import ShapeMismatchError

    for dim, (size, group) in enumerate(zip(shape, spec, strict=False)):
        if group is None or not isinstance(size, int):
            continue
        parts = mesh.group_size(group)
        if size % parts:
            axes = " x ".join(f"{a!r} ({mesh.axis_size(a)})" for a in group)
            raise ShapeMismatchError(
                f"{what} has shape {list(shape)}; dimension {dim} (size {size}) cannot be split "
                f"evenly over mesh axis {axes} = {parts} devices: make it a multiple of {parts}, "
                "or split another dimension (or none) for this key")
