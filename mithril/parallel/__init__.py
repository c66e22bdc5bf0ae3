"""Parallelism as a compilation option: one model, any split over a device mesh.

The backend owns the devices (``ml.JaxBackend(device_mesh=(4,))`` on ``jax.sharding``,
``ml.TorchBackend(device_mesh=(2,))`` on ``torch.distributed`` with one process per device);
the plan given to ``ml.compile(model, backend, parallel=...)`` says how arrays are split:

- :class:`DataParallel` — inputs split on the batch, the model replicated;
- :class:`TensorParallel` — parameters split (Megatron-LM pairs for Linear, or your rules);
- ``DataParallel() + TensorParallel()`` — both, on a 2-D mesh;
- :class:`ParallelPlan` — any split by regex rules on keys.

Importing this package imports no framework. See ``docs/parallel.md``.

>>> import mithril as ml
>>> from mithril.models import Model, Linear, Relu
>>> from mithril.parallel import DataParallel
>>> model = Model()
>>> model |= Linear(8)(input_size=4)
>>> model += Relu()
>>> backend = ml.JaxBackend(device_mesh=(1,))  # every device JAX has here (one, on a laptop)
>>> pm = ml.compile(model, backend, parallel=DataParallel())
>>> params = pm.randomize_params()
>>> pm.evaluate(params, {"input": backend.ones(6, 4)})["output"].shape
(6, 8)
>>> print(pm.parallel.summary(print_out=False).splitlines()[0])
DataParallel(axis=0) on DeviceMesh(data=1, framework='jax')
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError
from .compiled import ParallelCompiledModel, layout, parallelize
from .mesh import DeviceMesh
from .plan import DataParallel, ParallelPlan, ShardingPlan, TensorParallel

__all__ = [
    "DataParallel", "DeviceMesh", "ParallelCompiledModel", "ParallelPlan", "ShardingPlan",
    "TensorParallel", "from_local", "parallelize", "shard_shapes",
]


def shard_shapes(x: Any) -> list[tuple[int, ...]]:
    """Shapes of the pieces of ``x`` held by this process: one per local device on JAX (in
    device order), this process's piece on PyTorch (one process per device).

    A replicated array has pieces of the full shape; a split one, smaller pieces.

    >>> import mithril as ml
    >>> from mithril.parallel import shard_shapes
    >>> backend = ml.JaxBackend(device_mesh=(1,))
    >>> shard_shapes(backend.ones(4, 2, device_mesh=(1,)))
    [(4, 2)]
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        from . import _torch

        return _torch.shard_shapes(x)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        from . import _jax

        return _jax.shard_shapes(x)
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ArgumentTypeError(f"shard_shapes needs an array, got {type(x).__name__}")
    return [tuple(shape)]


def from_local(backend: Any, local: Any, spec: Any = (0,),
               global_shape: tuple[int, ...] | None = None) -> Any:
    """A global array from the piece this process holds (no data sent between processes).

    For data loaded per process: on PyTorch each rank passes its own piece
    (``DTensor.from_local``), on JAX each process its local devices' part
    (``jax.make_array_from_process_local_data``). ``spec`` says how the global array is split
    (default: dim 0 over mesh axis 0); ``global_shape`` defaults to the pieces stacked evenly.

    >>> import mithril as ml
    >>> from mithril.parallel import from_local
    >>> backend = ml.JaxBackend(device_mesh=(1,))
    >>> from_local(backend, backend.to_numpy(backend.ones(3, 2))).shape
    (3, 2)
    """
    from .compiled import adapter_for
    from .mesh import normalize_spec

    adapter = adapter_for(backend)
    mesh: DeviceMesh | None = getattr(backend, "device_mesh", None)
    if mesh is None:
        raise ArgumentError(f"from_local needs a backend with a device mesh: create it with "
                            f"ml.{type(backend).__name__}(device_mesh=(...))")
    norm = normalize_spec(spec, len(local.shape), mesh, "the array")
    return adapter.from_local(local, layout(adapter, mesh, norm), global_shape)
