"""``TorchBackend``: compiled models run on PyTorch tensors, gradients by ``torch.autograd``."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import ArgumentError, ArgumentTypeError, BackendUnavailableError, InputError
from ...framework.types import float32
from ..backend import OPERATOR_EXPRS, Backend
from ..helpers import ReferenceHelpers
from . import kernels
from . import loops as _loops  # noqa: F401  (issue 15: loop kernels register themselves)

_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


class TorchBackend(ReferenceHelpers, Backend):
    """PyTorch backend: ``TorchBackend(dtype=ml.float32, device="cpu")``.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; an unavailable device raises
    ``BackendUnavailableError``. ``self.device`` is a ``torch.device``.

    ``device_mesh=(2,)`` / ``(2, 1)`` / ``{"data": 2}`` / a ``torch.distributed`` ``DeviceMesh``
    runs one process per device (``torchrun --nproc-per-node 2 script.py``; without a launcher
    the process is a world of one): creators then make DTensors replicated on the mesh, or split
    with ``device_mesh=``, and ``ml.compile(..., parallel=...)`` chooses how a model's arrays are
    split (``docs/parallel.md``).
    """

    name = "torch"
    has_jit = True  # torch.compile (off by default)
    parallel = True
    kernels = kernels
    array_types = (torch.Tensor,)
    array_type_names = "torch.Tensor"
    rng_types = (torch.Generator,)
    rng_type_names = "a torch.Generator (torch.Generator().manual_seed(seed))"
    supported_devices = ("cpu", "cuda", "mps")
    #: the kernels of these primitives are exactly these Python operators
    exprs: ClassVar[dict[str, str]] = dict(OPERATOR_EXPRS)

    def __init__(self, dtype: Any = float32, device: str = "cpu",
                 device_mesh: Any = None) -> None:
        self._generator: torch.Generator | None = None
        super().__init__(dtype, device)
        if device_mesh is not None:
            from ...parallel import _torch as parallel_torch

            self.device_mesh = parallel_torch.make_mesh(device_mesh, self.device)

    # ---- framework hooks ----
    def _check_device(self, device: str) -> torch.device:
        """Validate ``device`` and return it as a ``torch.device``."""
        if not isinstance(device, str):
            raise ArgumentTypeError(f"device must be a string such as 'cpu', got {device!r}")
        if device.split(":")[0] in ("gpu", "tpu"):
            raise BackendUnavailableError(
                f"TorchBackend cannot use device {device!r}; use 'cpu', 'cuda', 'cuda:N' or "
                "'mps'")
        if not _DEVICE.fullmatch(device):
            raise ArgumentError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:0' or 'mps'")
        dev = torch.device(device)
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise BackendUnavailableError(
                    f"TorchBackend cannot use device {device!r}: CUDA is not available here "
                    f"(torch {torch.__version__}); use device='cpu'")
            if (dev.index or 0) >= count:
                raise BackendUnavailableError(
                    f"TorchBackend cannot use device {device!r}: only {count} CUDA device(s) "
                    "are visible")
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise BackendUnavailableError(
                f"TorchBackend cannot use device {device!r}: MPS is not available here; use "
                "device='cpu'")
        return dev

    native_dtype = staticmethod(kernels.native_dtype)

    def _from_numpy(self, array: np.ndarray) -> torch.Tensor:
        """A tensor on this device holding a copy of ``array``."""
        return torch.tensor(array, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` to NumPy (bfloat16 becomes float32, which NumPy lacks).

        A DTensor is gathered first (``full_tensor``, a collective: call it on every rank).
        """
        if not isinstance(x, torch.Tensor):
            return np.asarray(x)
        if type(x).__name__ == "DTensor":
            x = x.full_tensor()
        x = x.detach()
        host = (x.float() if x.dtype == torch.bfloat16 else x).cpu()
        # a copy the caller owns: .numpy() of a CPU tensor would share the tensor's memory
        return host.numpy().copy() if host.data_ptr() == x.data_ptr() else host.numpy()

    def seed_framework(self, seed: int) -> None:
        """Seed this backend's own ``torch.Generator`` (the global torch seed is untouched)."""
        self._generator = torch.Generator(device=self.device).manual_seed(seed)

    def next_rng(self) -> torch.Generator:
        """The seeded generator random kernels draw from."""
        assert self._generator is not None
        return self._generator

    def kernel_table(self) -> dict[str, Callable[..., Any]]:
        """Kernels by name; ``to_tensor`` makes tensors in this dtype on this device."""
        table = super().kernel_table()
        table["to_tensor"] = functools.partial(
            kernels.to_tensor, float_dtype=self.native_dtype(self.dtype), device=self.device)
        if "arange" in table:
            table["arange"] = functools.partial(kernels.arange, device=self.device)
        return table

    # ---- gradients and compilation ----
    def vjp_fn(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(params, data, state, rng, output_gradients) -> (outputs, new_state, grads)``.

        Float tensor params are differentiated through detached leaf aliases (the caller's
        tensors are not modified); every key of ``params`` gets a gradient (zeros if unused).
        """

        def run(params: dict[str, Any], data: dict[str, Any], state: dict[str, Any], rng: Any,
                output_gradients: dict[str, Any]) -> tuple[dict, dict, dict]:
            names = [name for name, value in params.items()
                     if isinstance(value, torch.Tensor) and value.is_floating_point()]
            leaves = {**params, **{n: params[n].detach().requires_grad_(True) for n in names}}
            with torch.enable_grad():
                outputs, new_state = forward(leaves, data, state, rng)
            found = autograd_backward(outputs, output_gradients, [leaves[n] for n in names])
            gradients = dict(zip(names, found, strict=True))
            for name, value in params.items():
                if gradients.get(name) is None:
                    gradients[name] = zeros_like_tensor(value)
            return _detached(outputs), _detached(new_state), gradients

        return run

    def wrap_jit(self, fn: Callable[..., Any],
                 settle: Callable[[Callable[..., Any]], None] | None = None
                 ) -> Callable[..., Any]:
        """``torch.compile(fn)``, falling back to eager (with one warning) where that fails."""
        compiled: Callable[..., Any] | None = None
        failed = False

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal compiled, failed
            if failed:
                return fn(*args, **kwargs)
            try:
                compiled = compiled or torch.compile(fn)
                return compiled(*args, **kwargs)
            except Exception as err:
                result = fn(*args, **kwargs)  # an error of fn itself re-raises here
                failed = True
                name = getattr(fn, "__qualname__", None) or repr(fn)
                warnings.warn(f"torch.compile could not compile {name} "
                              f"({type(err).__name__}: {err}); running it eagerly instead",
                              RuntimeWarning, stacklevel=2)
                return result

        return run


def autograd_backward(outputs: dict[str, Any], output_gradients: dict[str, Any],
              leaves: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """Gradients of ``sum(<output, seed>)`` with respect to ``leaves`` (None where unused)."""
    roots, seeds = [], []
    for name, seed in output_gradients.items():
        if seed is None:
            continue
        if name not in outputs:
            raise InputError(f"output_gradients names {name!r}, which is not an output; "
                             f"outputs are {sorted(outputs)}")
        out = outputs[name]
        if isinstance(out, torch.Tensor) and out.requires_grad:
            roots.append(out)
            seeds.append(seed if isinstance(seed, torch.Tensor) else torch.full_like(out, seed))
    if not roots or not leaves:
        return [None] * len(leaves)
    return list(torch.autograd.grad(roots, leaves, seeds, allow_unused=True))


def zeros_like_tensor(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    return None


def _detached(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}

