"""``ParallelCompiledModel``: a compiled model whose arrays live split over a device mesh.

``ml.compile(model, backend, parallel=plan)`` compiles exactly as without a plan, then
:func:`parallelize` resolves the plan against the compiled model's keys and shapes and turns
the result into a :class:`ParallelCompiledModel`. The generated code is unchanged: JAX's
``jit`` and PyTorch's DTensor decide how each operation runs on split arrays and insert the
communication. What this class adds:

- ``randomize_params()``, ``initial_state_dict`` and ``state`` are laid out by the plan;
- ``evaluate`` lays out params, inputs and state that are not laid out yet (a plain array is
  taken as the *global* value: on PyTorch rank 0's copy is split and sent to the others);
- gradients come back with their parameters' layouts and new state with the state's;
- ``compiled.parallel`` is the resolved :class:`~mithril.parallel.plan.ShardingPlan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    CompileError,
    ShapeMismatchError,
    TypeMismatchError,
)
from ..framework.physical.checks import not_a_dict
from ..framework.physical.compiled import CompiledModel
from .mesh import DeviceMesh, Spec, check_divisible, normalize_spec
from .plan import AsGiven, ParallelPlan, ShardingPlan

SUPPORTED = ("jax", "torch")


def adapter_for(backend: Any) -> Any:
    """The framework module (``_jax`` / ``_torch``) behind ``backend``'s parallelism."""
    if backend.name == "jax":
        from . import _jax

        return _jax
    if backend.name == "torch":
        from . import _torch

        return _torch
    raise BackendUnavailableError(
        f"parallelism needs JAX or PyTorch: {type(backend).__name__} runs on one device; use "
        "ml.JaxBackend(device_mesh=...) or ml.TorchBackend(device_mesh=...)")


def layout(adapter: Any, mesh: DeviceMesh, spec: Spec) -> Any:
    """The framework's layout object for ``spec`` on ``mesh`` (a ``NamedSharding`` on JAX,
    ``(mesh, placements)`` on PyTorch)."""
    if adapter.FRAMEWORK == "jax":
        return adapter.sharding(mesh, spec)
    return (mesh, adapter.placements(mesh, spec))


def place_created(backend: Any, array: Any, device_mesh: Any) -> Any:
    """Lay out an array made by a creator (``backend.ones(..., device_mesh=...)``).

    ``device_mesh`` is ``None`` (replicated on the backend's mesh), a tuple of ints (dim ``i``
    is split into ``device_mesh[i]`` pieces, on the backend's mesh when the tuple is its shape,
    else on a mesh of that shape over the same devices), or a spec of mesh axis names for the
    backend's mesh (``("data", None)``).
    """
    adapter = adapter_for(backend)
    mesh: DeviceMesh | None = getattr(backend, "device_mesh", None)
    shape = tuple(array.shape)
    rank = len(shape)
    if device_mesh is None:
        if mesh is None:
            return array
        spec: Spec = (None,) * rank
    else:
        if isinstance(device_mesh, str) or not isinstance(device_mesh, tuple | list):
            raise ArgumentTypeError(
                f"device_mesh= takes a tuple: the number of pieces per dimension "
                f"such as (2, 1), or mesh axis names such as ('data', None); got "
                f"{device_mesh!r}")
        entries = tuple(device_mesh)
        if entries and all(isinstance(e, int) and not isinstance(e, bool) for e in entries):
            if mesh is None or entries != mesh.shape:
                cache = backend.__dict__.setdefault("_creator_meshes", {})
                if entries not in cache:
                    cache[entries] = adapter.mesh_for(backend, entries)
                mesh = cache[entries]
            assert mesh is not None
            extra = [i for i, n in enumerate(entries) if i >= rank and n > 1]
            if extra:
                raise ShapeMismatchError(
                    f"device_mesh={entries} splits dimension {extra[0]}, but the array has shape "
                    f"{list(shape)} ({rank} dimension(s)); give one size per dimension")
            spec = tuple((mesh.axis_names[i],) if i < len(entries) and entries[i] > 1 else None
                         for i in range(rank))
        else:
            if mesh is None:
                raise CompileError(
                    f"device_mesh={entries!r} names mesh axes, but {type(backend).__name__} has "
                    "no device mesh; create it with device_mesh=(...), or give the number of "
                    "pieces per dimension such as device_mesh=(2, 1)")
            spec = normalize_spec(entries, rank, mesh, "the array")
        check_divisible(shape, spec, mesh, f"an array of shape {list(shape)}")
    return adapter.place(array, layout(adapter, mesh, spec))


def parallelize(compiled: CompiledModel, plan: Any) -> ParallelCompiledModel:
    """Lay ``compiled`` out over its backend's device mesh as ``plan`` says (called by
    ``ml.compile(..., parallel=plan)``, and with ``plan=None`` for a backend with a device
    mesh: then arrays keep the layout they are given, see :class:`AsGiven`)."""
    if plan is None:
        plan = AsGiven()
    if not isinstance(plan, ParallelPlan):
        raise ArgumentTypeError(f"parallel= takes a plan such as ml.DataParallel(), "
                                f"ml.TensorParallel() or their sum, got {plan!r}")
    backend = compiled.backend
    adapter = adapter_for(backend)
    mesh: DeviceMesh | None = getattr(backend, "device_mesh", None)
    if mesh is None:
        raise CompileError(
            f"parallel={plan!r} needs a backend with a device mesh: create it with e.g. "
            f"ml.{type(backend).__name__}(device_mesh=(2,)) (one axis per way of splitting)")
    params = {k: tuple(s.shape) for k, s in compiled._params.items()}
    state = {k: tuple(s.shape) for k, s in compiled._state_specs.items()}
    data = {k: pattern.rank for k, (pattern, _, kind) in compiled._data.items()
            if kind != "scalar"}
    sharding = plan.resolve(mesh, params, state, data, _linear_layers(compiled))
    compiled.__class__ = ParallelCompiledModel  # same object, with the methods below
    assert isinstance(compiled, ParallelCompiledModel)
    compiled._setup_parallel(sharding, adapter)
    return compiled


def _linear_layers(compiled: CompiledModel) -> list[tuple[str, str | None]]:
    """``(weight key, bias key)`` of every ``linear`` primitive, in model order."""
    model = getattr(compiled, "logical_model", None)
    if model is None:
        return []
    from ..framework.logical.model import Model
    from ..framework.physical.graph import flatten

    if not isinstance(model, Model):
        return []
    out = []
    for node in flatten(model).nodes:
        if node.op.name != "linear":
            continue
        names = dict(zip(node.prim.input_names, node.inputs, strict=True))
        weight, bias = names.get("weight"), names.get("bias")
        if weight is None:
            continue
        out.append((weight.name, None if bias is None else bias.name))
    return out


class ParallelCompiledModel(CompiledModel):
    """A :class:`~mithril.CompiledModel` whose arrays are split over a device mesh.

    Made by ``ml.compile(model, backend, parallel=plan)``; ``.parallel`` is the resolved plan
    (``compiled.parallel.summary()`` prints it).
    """

    parallel: ShardingPlan

    def _setup_parallel(self, sharding: ShardingPlan, adapter: Any) -> None:
        self.parallel = sharding
        self._adapter = adapter
        self._mesh = sharding.mesh
        self._param_targets = {k: self._target(s) for k, s in sharding.params.items()}
        self._state_targets = {k: self._target(s) for k, s in sharding.state.items()}
        self._data_specs = dict(sharding.data)
        self._data_targets: dict[tuple[str, int], Any] = {}
        self._replicated: dict[int, Any] = {}
        ns = self._namespace
        if adapter.FRAMEWORK == "torch":
            # kernels whose single-device form loses work under DTensor (see _torch.py)
            ns.update(adapter.dtensor_kernels(self._mesh, ns))
        consts = ns.get("constants")
        if isinstance(consts, dict):
            for key, value in consts.items():
                if hasattr(value, "shape"):
                    consts[key] = adapter.place(value, self._replicated_target(len(value.shape)))
        raw = self._raw_forward
        pin_state = self._pin_state
        backend = self.backend

        def forward(params: Any, data: Any, state: Any, rng: Any) -> Any:
            outputs, new_state = raw(params, data, state, rng)
            return outputs, pin_state(new_state)

        self._forward = (backend.wrap_jit(forward, self._settler("_forward")) if self.jit
                         else forward)
        if self._grad_fn is not None:
            vjp = backend.vjp_fn(raw)
            pin_grads = self._pin_grads

            def grad_fn(params: Any, data: Any, state: Any, rng: Any, grads: Any) -> Any:
                outputs, new_state, gradients = vjp(params, data, state, rng, grads)
                return outputs, pin_state(new_state), pin_grads(gradients, params)

            self._grad_fn = (backend.wrap_jit(grad_fn, self._settler("_grad_fn")) if self.jit
                             else grad_fn)
        self._state = self._place_all(self._state, self._state_targets)

    # ---- layouts ----
    def _target(self, spec: Spec) -> Any:
        return layout(self._adapter, self._mesh, spec)

    def _replicated_target(self, rank: int) -> Any:
        target = self._replicated.get(rank)
        if target is None:
            target = self._replicated[rank] = self._target((None,) * rank)
        return target

    def _data_target(self, key: str, x: Any) -> Any:
        rank = len(x.shape)
        target = self._data_targets.get((key, rank))
        if target is None:
            spec = self._data_specs.get(key)
            if spec is None:
                spec = (None,) * rank
            else:
                if len(spec) > rank and any(g is not None for g in spec[rank:]):
                    raise ShapeMismatchError(
                        f"input {key!r} has shape {list(x.shape)}, but the parallel plan "
                        f"splits dimension {len(spec) - 1} of it")
                spec = normalize_spec(spec[:rank], rank, self._mesh, f"input {key!r}")
            target = self._data_targets[(key, rank)] = (spec, self._target(spec))
        return target

    def _pin_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if self.parallel.keep:
            return dict(state)
        constrain, targets = self._adapter.constrain, self._state_targets
        return {k: constrain(v, targets[k]) if k in targets else v for k, v in state.items()}

    def _pin_grads(self, grads: Mapping[str, Any], params: Mapping[str, Any]
                   ) -> dict[str, Any]:
        constrain = self._adapter.constrain
        if self.parallel.keep:  # the layout each parameter was given
            targets = self._adapter.layouts_of(params, self._mesh)
        else:
            targets = self._param_targets
        return {k: constrain(v, targets[k]) if k in targets and v is not None else v
                for k, v in grads.items()}

    def _place_all(self, values: Mapping[str, Any], targets: Mapping[str, Any]
                   ) -> dict[str, Any]:
        place, accepts = self._adapter.place, self._adapter.accepts
        if self.parallel.keep:  # arrays on the mesh keep their layout; others are replicated
            on_mesh = self._adapter.on_mesh
            return {k: v if not accepts(v) or on_mesh(v, self._mesh)
                    else place(v, self._replicated_target(len(v.shape)))
                    for k, v in values.items()}
        return {k: place(v, targets[k]) if k in targets and accepts(v) else v
                for k, v in values.items()}

    def place_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``inputs`` laid out as the plan says (what ``evaluate`` does to its inputs).

        Useful to place a batch once and evaluate it several times, or to look at how it is
        split (``mithril.parallel.shard_shapes``).
        """
        return self._place_data(inputs)

    def _place_data(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if self.parallel.keep:
            return self._place_all(data, {})
        out = {}
        for key, x in data.items():
            shape = getattr(x, "shape", None)
            if shape is None or not self._adapter.accepts(x):
                out[key] = x  # scalars, and wrong types for evaluate's own checks
                continue
            spec, target = self._data_target(key, x)
            for dim, group in enumerate(spec):
                if group is not None and shape[dim] % self._mesh.group_size(group):
                    parts = self._mesh.group_size(group)
                    raise ShapeMismatchError(
                        f"input {key!r} has shape {list(shape)}; dimension {dim} (size "
                        f"{shape[dim]}) cannot be split evenly over mesh axis "
                        f"{' x '.join(group)} = {parts} devices: make it a multiple of {parts} "
                        "(e.g. a batch size divisible by the number of data-parallel devices)")
            out[key] = self._adapter.place(x, target)
        return out

    # ---- CompiledModel API ----
    @property
    def initial_state_dict(self) -> dict[str, Any]:
        """Fresh state, laid out by the plan (replicated unless a rule splits it)."""
        return self._place_all(super().initial_state_dict, self._state_targets)

    def _adopt_state(self, value: Mapping[str, Any]) -> dict[str, Any]:
        """Assigned state is laid out by the plan."""
        return self._place_all(value, self._state_targets)

    def randomize_params(self, seed: int | None = None, excluded_keys: Any = ()
                         ) -> dict[str, Any]:
        """Parameters as :meth:`CompiledModel.randomize_params`, split by the plan (the same
        values as a single-device run with the same seed)."""
        params = super().randomize_params(seed, excluded_keys)
        return self._place_all(params, self._param_targets)

    def evaluate(self, params: Mapping[str, Any] | None = None,
                 inputs: Mapping[str, Any] | None = None,
                 output_gradients: Mapping[str, Any] | bool | None = None,
                 state: Mapping[str, Any] | None = None, rng: Any = None) -> Any:
        """:meth:`CompiledModel.evaluate` on arrays laid out by the plan.

        Arrays not laid out yet are placed first (a plain array holds the global value);
        gradients come back laid out as their parameters.
        """
        for what, value in (("params", params), ("inputs", inputs), ("state", state)):
            if value is not None and not isinstance(value, Mapping):
                raise TypeMismatchError(not_a_dict(what, value, "name: array"))
        if params:
            params = self._place_all(params, self._param_targets)
        if inputs:
            inputs = self._place_data(inputs)
        if state is not None:
            state = self._place_all(state, self._state_targets)
        if isinstance(output_gradients, Mapping):
            # seeds must live on the mesh too; a seed already there keeps its layout
            on_mesh, accepts = self._adapter.on_mesh, self._adapter.accepts
            output_gradients = {
                k: g if not accepts(g) or on_mesh(g, self._mesh)
                else self._adapter.place(g, self._replicated_target(len(g.shape)))
                for k, g in output_gradients.items()}
        return super().evaluate(params, inputs, output_gradients, state, rng)

    def summary(self, print_out: bool = True) -> str | None:
        """Print the model summary followed by how each array is split; with
        ``print_out=False`` return it instead."""
        text = super().summary(print_out=False) + "\n\n" + self.parallel.summary(False)
        if print_out:
            print(text)
            return None
        return text
