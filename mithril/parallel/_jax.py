"""The JAX side of :mod:`mithril.parallel`: ``jax.sharding.Mesh``, ``NamedSharding`` and
``PartitionSpec``. Placement is ``jax.device_put``; inside ``jax.jit`` the compiler (GSPMD /
Shardy) propagates shardings and inserts the collectives, and
``jax.lax.with_sharding_constraint`` pins the layout of gradients and new state.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ..errors import ArgumentTypeError, BackendUnavailableError
from .mesh import DeviceMesh, Spec, mesh_layout

FRAMEWORK = "jax"


def make_mesh(device_mesh: Any, platform: str = "cpu") -> DeviceMesh:
    """A :class:`DeviceMesh` over all of JAX's ``platform`` devices (every process's, after
    ``jax.distributed.initialize()``), or around a given ``jax.sharding.Mesh``."""
    if isinstance(device_mesh, DeviceMesh):
        if device_mesh.framework != FRAMEWORK:
            raise ArgumentTypeError(
                f"a {device_mesh.framework} device mesh cannot be used with JAX")
        return device_mesh
    if isinstance(device_mesh, Mesh):
        return DeviceMesh(tuple(device_mesh.devices.shape), tuple(device_mesh.axis_names),
                          device_mesh, FRAMEWORK)
    shape, names = mesh_layout(device_mesh)
    devices = jax.devices(platform)
    size = int(np.prod(shape))
    if size != len(devices):
        raise BackendUnavailableError(_count_message(shape, size, len(devices), platform))
    native = Mesh(np.asarray(devices, dtype=object).reshape(shape), names,
                  axis_types=(AxisType.Auto,) * len(shape))
    return DeviceMesh(shape, names, native, FRAMEWORK)


def mesh_for(backend: Any, device_mesh: Any) -> DeviceMesh:
    """A mesh over the devices of ``backend``'s platform."""
    return make_mesh(device_mesh, backend.jax_device.platform)


def _count_message(shape: tuple[int, ...], size: int, count: int, platform: str) -> str:
    text = (f"device_mesh {shape} needs {size} devices, but JAX has {count} {platform} "
            f"device(s) here (jax.devices({platform!r})). ")
    if size > count:
        if platform == "cpu":
            text += (f"On the CPU, simulate {size} devices by setting "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={size} in the "
                     "environment before JAX is imported; ")
        text += ("to span several machines, call jax.distributed.initialize() on each before "
                 "creating the backend.")
    else:
        text += (f"Use all {count} (device_mesh=({count},)), or pass a jax.sharding.Mesh over "
                 "the devices you want as device_mesh=.")
    return text


def sharding(mesh: DeviceMesh, spec: Spec) -> NamedSharding:
    """The ``NamedSharding`` of a normalised spec on ``mesh``."""
    items: list[Any] = [None if g is None else (g[0] if len(g) == 1 else g) for g in spec]
    while items and items[-1] is None:
        items.pop()
    return NamedSharding(mesh.native, PartitionSpec(*items))


def accepts(x: Any) -> bool:
    """Can ``x`` be laid out on a mesh here (a JAX or NumPy array)?"""
    return isinstance(x, jax.Array | np.ndarray)


def on_mesh(x: Any, mesh: DeviceMesh) -> bool:
    """Does ``x`` already live on ``mesh`` (in any layout)?"""
    current = getattr(x, "sharding", None)
    return isinstance(current, NamedSharding) and current.mesh == mesh.native


def layouts_of(values: Any, mesh: DeviceMesh) -> dict[str, Any]:
    """Nothing to pin on JAX: ``jax.jit`` already returns whole arrays (no pending sums)."""
    return {}


def is_placed(x: Any, target: NamedSharding) -> bool:
    """Is ``x`` a JAX array already laid out as ``target``?"""
    current = getattr(x, "sharding", None)
    if current is None or not isinstance(x, jax.Array):
        return False
    try:
        return bool(current.is_equivalent_to(target, x.ndim))
    except (ValueError, TypeError):
        return False


def place(x: Any, target: NamedSharding) -> Any:
    """``x`` (a JAX or NumPy array holding the global value) laid out as ``target``."""
    if is_placed(x, target):
        return x
    if getattr(x, "dtype", None) == np.float64:  # a float64 backend's: keep it float64
        with jax.enable_x64(True):
            return jax.device_put(x, target)
    return jax.device_put(x, target)


def constrain(x: Any, target: NamedSharding) -> Any:
    """Pin ``x`` to ``target`` inside traced code (``jax.lax.with_sharding_constraint``)."""
    if not isinstance(x, jax.Array) and not hasattr(x, "aval"):
        return x
    return jax.lax.with_sharding_constraint(x, target)


def shard_shapes(x: Any) -> list[tuple[int, ...]]:
    """Shapes of the pieces of ``x`` this process holds, one per device in device-id order."""
    shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
    return [tuple(s.data.shape) for s in shards]


def from_local(local: Any, target: NamedSharding, global_shape: tuple[int, ...] | None) -> Any:
    """A global array from this process's part (``jax.make_array_from_process_local_data``)."""
    return jax.make_array_from_process_local_data(target, np.asarray(local), global_shape)
