"""The PyTorch side of :mod:`mithril.parallel`: ``torch.distributed`` (one process per device,
launched by ``torchrun``), ``init_device_mesh`` and DTensor (``distribute_tensor``,
``Shard``, ``Replicate``). Compiled code runs on DTensors: each operator's sharding strategy
decides the layout of its result and DTensor inserts the collectives (all-reduce, all-gather,
all-to-all) the computation needs, forwards and backwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh as TorchDeviceMesh
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor

from ..errors import ArgumentTypeError, BackendUnavailableError, CompileError
from .mesh import DeviceMesh, Spec, mesh_layout

FRAMEWORK = "torch"


def _launched() -> bool:
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def _world_size() -> int:
    """The number of processes: the group's, else the launcher's, else 1."""
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if _launched() else 1


def ensure_process_group(device: torch.device) -> None:
    """Join the process group ``torchrun`` set up (``env://``), or start a one-process group.

    ``torchrun`` (and other launchers) export ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; without them this process is the whole world (one device), so the same
    script runs with ``python script.py`` and with ``torchrun --nproc-per-node N script.py``.
    """
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if _launched():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def make_mesh(device_mesh: Any, device: torch.device) -> DeviceMesh:
    """A :class:`DeviceMesh` over all processes (``init_device_mesh``), or around a given
    ``torch.distributed.device_mesh.DeviceMesh``."""
    if isinstance(device_mesh, DeviceMesh):
        if device_mesh.framework != FRAMEWORK:
            raise ArgumentTypeError(
                f"a {device_mesh.framework} device mesh cannot be used with PyTorch")
        return device_mesh
    if isinstance(device_mesh, TorchDeviceMesh):
        names = device_mesh.mesh_dim_names or tuple(
            f"axis{i}" for i in range(device_mesh.ndim))
        return DeviceMesh(tuple(device_mesh.shape), tuple(names), device_mesh, FRAMEWORK)
    shape, names = mesh_layout(device_mesh)
    size = 1
    for s in shape:
        size *= s
    world = _world_size()  # checked before joining: a wrong mesh leaves no group behind
    if size != world:
        raise BackendUnavailableError(
            f"device_mesh {shape} needs {size} devices, one process each, but this run has "
            f"{world} process(es) (torch.distributed world size). Launch {size} processes with "
            f"`torchrun --nproc-per-node {size} your_script.py` (across machines add --nnodes "
            "and --rdzv-endpoint), or use a mesh of "
            f"{world} device(s) (device_mesh=({world},)).")
    ensure_process_group(device)
    native = init_device_mesh(device.type, shape, mesh_dim_names=names)
    return DeviceMesh(shape, names, native, FRAMEWORK)


def mesh_for(backend: Any, device_mesh: Any) -> DeviceMesh:
    """A mesh over all processes, on ``backend``'s device type."""
    return make_mesh(device_mesh, backend.device)


def placements(mesh: DeviceMesh, spec: Spec) -> tuple[Placement, ...]:
    """DTensor placements (one per mesh axis) of a normalised spec (one entry per tensor dim).

    A tensor dim split over several mesh axes must name them in mesh order (DTensor's layout).
    """
    out: list[Placement] = [Replicate()] * mesh.ndim
    for dim, group in enumerate(spec):
        if group is None:
            continue
        idx = [mesh.axis_names.index(a) for a in group]
        if idx != sorted(idx):
            raise CompileError(
                f"PyTorch splits a dimension over several mesh axes in mesh order; write "
                f"{tuple(mesh.axis_names[i] for i in sorted(idx))} instead of {group}")
        for i in idx:
            out[i] = Shard(dim)
    return tuple(out)


Target = tuple[DeviceMesh, tuple[Placement, ...]]


def accepts(x: Any) -> bool:
    """Can ``x`` be laid out on a mesh here (a PyTorch tensor)?"""
    return isinstance(x, torch.Tensor)


def on_mesh(x: Any, mesh: DeviceMesh) -> bool:
    """Is ``x`` a DTensor on ``mesh`` (in any layout)?"""
    return isinstance(x, DTensor) and x.device_mesh is mesh.native


def layouts_of(values: Any, mesh: DeviceMesh) -> dict[str, Target]:
    """The layout of each DTensor of ``values`` (gradients are pinned to their parameter's)."""
    return {k: (mesh, tuple(v.placements)) for k, v in values.items()
            if isinstance(v, DTensor) and v.device_mesh is mesh.native}


def is_placed(x: Any, target: Target) -> bool:
    """Is ``x`` a DTensor on ``target``'s mesh with its placements?"""
    mesh, places = target
    return (isinstance(x, DTensor) and x.device_mesh is mesh.native
            and tuple(x.placements) == places)


def place(x: Any, target: Target) -> Any:
    """``x`` (a tensor holding the global value, or a DTensor) laid out as ``target``.

    A plain tensor is split from **rank 0**'s copy (``distribute_tensor``), so all processes
    see the same values; a DTensor on the same mesh is redistributed.
    """
    mesh, places = target
    if isinstance(x, DTensor):
        if x.device_mesh is mesh.native:
            if tuple(x.placements) == places:
                return x
            return x.redistribute(mesh.native, places)
        x = x.full_tensor()
    if not isinstance(x, torch.Tensor):
        return x
    return distribute_tensor(x.detach(), mesh.native, places)


def constrain(x: Any, target: Target) -> Any:
    """``x`` with ``target``'s placements (pending partial sums are all-reduced)."""
    if x is None:
        return None
    return place(x, target)


def shard_shapes(x: Any) -> list[tuple[int, ...]]:
    """Shape of the piece of ``x`` this process holds (one process per device)."""
    if isinstance(x, DTensor):
        return [tuple(x.to_local().shape)]
    return [tuple(x.shape)]


def from_local(local: Any, target: Target, global_shape: tuple[int, ...] | None) -> Any:
    """A DTensor from each process's own piece (``DTensor.from_local``, no communication)."""
    mesh, places = target
    shape = None if global_shape is None else torch.Size(global_shape)
    stride = None
    if shape is not None:
        stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(local, mesh.native, places, shape=shape, stride=stride)


def to_full(x: Any) -> Any:
    """The global value of a DTensor as a plain tensor (a collective: every rank calls it)."""
    return x.full_tensor() if isinstance(x, DTensor) else x


# ---- kernels whose single-device form does not fit DTensor ----------------------------------
def dtensor_kernels(mesh: DeviceMesh, table: dict[str, Callable[..., Any]]
                    ) -> dict[str, Callable[..., Any]]:
    """Replacements for kernels of ``table`` that need a DTensor-aware form.

    - ``batch_norm`` / ``batch_norm_inference``: written with reductions and elementwise ops,
      so batch statistics of a batch-split input are all-reduced (a few numbers per channel,
      as ``nn.SyncBatchNorm``) and the batch stays split; PyTorch's fused kernel would move the
      activations to a channel split, and its in-place running-statistics update would land in
      a temporary and be lost.
    - ``conv1d`` / ``conv2d``: DTensor convolves batch-split (or replicated) inputs with
      replicated weights only, and its convolution handler does not redistribute other layouts
      itself; here inputs are moved to a batch split and weights gathered first.
    - ``to_tensor``: literals become replicated DTensors (plain tensors cannot meet DTensors).
    """
    out: dict[str, Callable[..., Any]] = {}
    if "batch_norm" in table:
        out["batch_norm"] = _batch_norm
    if "batch_norm_inference" in table:
        out["batch_norm_inference"] = _batch_norm_inference
    for name in ("conv1d", "conv2d"):
        if name in table:
            out[name] = _conv_on_batch_split(table[name])
    if "to_tensor" in table:
        raw = table["to_tensor"]

        def to_tensor(*args: Any, **kwargs: Any) -> Any:
            value = raw(*args, **kwargs)
            if isinstance(value, torch.Tensor) and not isinstance(value, DTensor):
                value = DTensor.from_local(value, mesh.native, [Replicate()] * mesh.ndim)
            return value

        out["to_tensor"] = to_tensor
    return out


def _channel_shape(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.ndim - 2)


def _batch_norm(input: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, running_mean: torch.Tensor | None = None,
                running_var: torch.Tensor | None = None, momentum: float = 0.1,
                eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """Training batch norm over axis 1 (``nn.BatchNorm``'s numbers) from reductions."""
    dims = [0, *range(2, input.ndim)]
    mean = torch.mean(input, dim=dims, keepdim=True)
    centered = input - mean
    var = torch.mean(centered * centered, dim=dims, keepdim=True)
    out = centered * torch.rsqrt(var + eps)
    shape = _channel_shape(input)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    if running_mean is None or running_var is None:
        return out, None, None
    n = input.numel() // input.shape[1]
    with torch.no_grad():
        unbiased = var.detach().reshape(-1) * (n / max(n - 1, 1))
        new_mean = running_mean * (1 - momentum) + mean.detach().reshape(-1) * momentum
        new_var = running_var * (1 - momentum) + unbiased * momentum
    return out, new_mean, new_var


def _batch_norm_inference(input: torch.Tensor, weight: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None,
                          running_mean: torch.Tensor | None = None,
                          running_var: torch.Tensor | None = None, momentum: float = 0.1,
                          eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """Batch norm with running statistics (batch statistics when they are ``None``)."""
    if running_mean is None or running_var is None:
        out, _, _ = _batch_norm(input, weight, bias, None, None, momentum, eps)
        return out, running_mean, running_var
    shape = _channel_shape(input)
    out = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out, running_mean, running_var


def _conv_on_batch_split(conv: Callable[..., Any]) -> Callable[..., Any]:
    def run(input: Any, weight: Any, bias: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input, DTensor):
            mesh = input.device_mesh
            wanted = []
            for i, p in enumerate(input.placements):
                if isinstance(p, Shard) and p.dim == 0:
                    wanted.append(p)
                elif isinstance(p, Shard) and input.shape[0] % mesh.size(i) == 0 and not any(
                        isinstance(q, Shard) and q.dim == 0 for q in input.placements):
                    wanted.append(Shard(0))
                else:
                    wanted.append(Replicate())
            if tuple(wanted) != tuple(input.placements):
                input = input.redistribute(mesh, wanted)
            replicated = [Replicate()] * mesh.ndim
            if isinstance(weight, DTensor) and any(not p.is_replicate()
                                                   for p in weight.placements):
                weight = weight.redistribute(mesh, replicated)
            if isinstance(bias, DTensor) and any(not p.is_replicate() for p in bias.placements):
                bias = bias.redistribute(mesh, replicated)
        return conv(input, weight, bias, *args, **kwargs)

    return run
