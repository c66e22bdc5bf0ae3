"""Kernel and VJP registration: how a backend says which function computes which primitive.

Each backend module makes one :class:`KernelRegistry` and registers its functions explicitly::

    registry = KernelRegistry("numpy")
    kernel, vjp = registry.kernel, registry.vjp

    @kernel("relu")
    def relu(input): ...

    @kernel("dropout", mode="inference")  # the kernel used when compiled with inference=True
    def dropout_inference(input, p=0.5, rng=None): ...

    @vjp("relu")                            # NumPy only: the hand-written gradient
    def relu_vjp(grad, output, input, cache=None): ...

A backend's kernel table is exactly what was registered, checked against the op catalogue
once per registry (:meth:`KernelRegistry.table`): a name that is not a primitive, a mode the
primitive does not have, or a missing *core* kernel raises :class:`KernelRegistryError` naming
it. A *derived* primitive without a kernel of its own runs its catalogue decomposition, built
from the backend's core kernels (see ``mithril/framework/ops/decompose.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import MithrilError

F = TypeVar("F", bound=Callable[..., Any])

#: kernel modes and the suffix generated code uses for them
MODES = {"default": "", "inference": "_inference", "with_cache": "_fwd"}
#: helpers compiled code calls that are not catalogue primitives
EXTRA_KERNELS = frozenset({"split_rng", "zeros_like"})
#: the generic loop (``Scan``, mithril/framework/scan.py): one kernel for every body (issue 15)
SCAN_KERNELS = frozenset({"scan", "scan_vjp"})


class KernelRegistryError(MithrilError):
    """A backend registered a kernel or VJP the catalogue does not know, or lacks a core one."""


class KernelRegistry:
    """The kernels (and, for backends with their own gradients, VJPs) of one backend.

    >>> reg = KernelRegistry("demo")
    >>> @reg.kernel("relu")
    ... def relu(input):
    ...     return max(input, 0)
    >>> reg.kernels[("relu", "default")](-2)
    0
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        #: (primitive, mode) -> kernel
        self.kernels: dict[tuple[str, str], Callable[..., Any]] = {}
        #: primitive -> VJP
        self.vjps: dict[str, Callable[..., Any]] = {}
        #: (manual_gradients, catalogue version) -> the checked table
        self._checked: dict[tuple[bool, int], dict[str, Callable[..., Any]]] = {}

    def kernel(self, name: str, mode: str = "default") -> Callable[[F], F]:
        """Register the decorated function as the kernel of primitive ``name`` in ``mode``
        (``"default"``, ``"inference"`` for modal primitives, or ``"with_cache"``: NumPy's
        training variant returning ``(output, cache)`` for the VJP)."""
        if mode not in MODES:
            raise KernelRegistryError(
                f"{self.backend} kernel {name!r}: unknown mode {mode!r}; use one of {list(MODES)}")

        def register(fn: F) -> F:
            if (name, mode) in self.kernels:
                raise KernelRegistryError(
                    f"{self.backend} registers two kernels for {name!r} (mode {mode!r})")
            self.kernels[(name, mode)] = fn
            self._checked.clear()
            return fn

        return register

    def kernels_from(self, functions: Mapping[str, Callable[..., Any]],
                     mode: str = "default") -> None:
        """Register many kernels at once, ``{primitive: function}``: for primitives whose kernel
        is the framework's own function (``{"exp": np.exp, "add": operator.add}``), which
        also spares generated code a Python call per use.

        >>> import operator
        >>> reg = KernelRegistry("demo")
        >>> reg.kernels_from({"add": operator.add, "multiply": operator.mul})
        >>> reg.kernels[("multiply", "default")](3, 4)
        12
        """
        for name, fn in functions.items():
            self.kernel(name, mode)(fn)

    def vjp(self, name: str) -> Callable[[F], F]:
        """Register the decorated function as the VJP of primitive ``name`` (or of its
        inference kernel, ``name="<primitive>_inference"``)."""

        def register(fn: F) -> F:
            if name in self.vjps:
                raise KernelRegistryError(f"{self.backend} registers two VJPs for {name!r}")
            self.vjps[name] = fn
            self._checked.clear()
            return fn

        return register

    def vjps_from(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        """Register many VJPs at once, ``{primitive: vjp}``: for gradients short enough to be
        one expression of ``(grad, output, *inputs, cache=None)``.

        >>> reg = KernelRegistry("demo")
        >>> reg.vjps_from({"negate": lambda g, y, x, cache=None: (-g,)})
        >>> reg.vjps["negate"](2.0, -1.0, 1.0)
        (-2.0,)
        """
        for name, fn in functions.items():
            self.vjp(name)(fn)

    def table(self, manual_gradients: bool = False) -> dict[str, Callable[..., Any]]:
        """Kernels by the name generated code calls them (``relu``, ``dropout_inference``,
        ``conv2d_fwd``, ``relu_vjp``), checked against the catalogue once, with a composed
        kernel (and, with ``manual_gradients``, a composed VJP) for every derived primitive
        the backend does not implement itself."""
        from ..framework.ops.base import VERSION

        key = (manual_gradients, VERSION[0])
        table = self._checked.get(key)
        if table is None:
            table = self._build(manual_gradients)
            self._checked = {key: table}
        return dict(table)

    def _build(self, manual_gradients: bool) -> dict[str, Callable[..., Any]]:
        from ..framework.ops import CATALOGUE
        from ..framework.ops.decompose import composed_kernels

        who = f"the {self.backend} backend"
        table: dict[str, Callable[..., Any]] = {}
        for (name, mode), fn in self.kernels.items():
            op = CATALOGUE.get(name)
            if op is None and name not in EXTRA_KERNELS | SCAN_KERNELS:
                raise KernelRegistryError(
                    f"{who} registers a kernel for {name!r}, which is not a catalogue primitive")
            if mode == "inference" and (op is None or not op.modal):
                raise KernelRegistryError(
                    f"{who} registers an inference kernel for {name!r}, which has no modes")
            table[name + MODES[mode]] = fn
        for name, fn in self.vjps.items():
            base = name.removesuffix("_inference")
            op = CATALOGUE.get(base)
            if op is None or (base != name and not op.modal):
                raise KernelRegistryError(
                    f"{who} registers a VJP for {name!r}, which is not a catalogue primitive")
            table[f"{name}_vjp"] = fn
        missing = [op.name for op in CATALOGUE.values()
                   if op.needs_kernel and op.decompose is None and op.name not in table]
        if missing:
            raise KernelRegistryError(f"{who} has no kernel for the core primitives {missing}")
        if manual_gradients:
            no_vjp = [op.name for op in CATALOGUE.values()
                      if op.needs_kernel and op.decompose is None and op.differentiable
                      and f"{op.name}_vjp" not in table]
            if no_vjp:
                raise KernelRegistryError(
                    f"{who} computes its own gradients but has no VJP for the core "
                    f"primitives {no_vjp}")
        table.update(composed_kernels(table, manual_gradients))
        return table
