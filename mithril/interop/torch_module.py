"""``TorchModule``: a compiled Mithril model as a real ``torch.nn.Module``.

The parameters are ``nn.Parameter``s and the state (BatchNorm running statistics) buffers,
registered in nested submodules that follow Mithril's key hierarchy, so ``state_dict()`` keys
are Mithril's keys (``conv2d.weight``, ``batchnorm2d.running_mean``). ``forward`` runs the
compiled model's generated code on them with autograd, so any PyTorch optimizer, scheduler,
loss or training loop works, and the module can be a submodule of an existing ``nn.Module``:

>>> import torch
>>> import mithril as ml
>>> from mithril.interop import TorchModule
>>> from mithril.models import Model, Linear, Relu
>>> model = Model()
>>> model |= Linear(8)(input_size=4)
>>> model += Relu()
>>> model += Linear(2)
>>> module = TorchModule(ml.compile(model, ml.TorchBackend()))
>>> optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
>>> out = module({"input": torch.randn(5, 4)})["output"]
>>> out.sum().backward()
>>> optimizer.step()
>>> sorted(module.state_dict())[:2]
['linear.bias', 'linear.weight']

``module.train()`` runs the training code (batch statistics, dropout, running statistics
updated in the buffers); ``module.eval()`` runs a twin compiled with ``inference=True``. The
twin is compiled from the logical model when you give it (``inference_model=model``), or
taken as given (``inference_model=ml.compile(model, backend, inference=True)``). Models
without mode-dependent layers need no twin.

Dtype and device are those of the compiled model's backend (``ml.TorchBackend(dtype=...,
device=...)``): ``.to()`` a different dtype or device makes ``forward`` raise
``TypeMismatchError``; compile for the new backend and move the values with ``state_dict()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CompileError, InputError, ShapeMismatchError, TypeMismatchError
from ..framework.physical.compiled import CompiledModel

__all__ = ["TorchModule", "attach"]

_TORCH_MODULE_ATTR = "_torch_module"


class _Namespace(nn.Module):
    """One level of Mithril's key hierarchy (``conv2d`` in ``conv2d.weight``)."""

    def extra_repr(self) -> str:
        own = [*self._parameters.items(), *self._buffers.items()]
        return ", ".join(f"{name}: {list(t.shape)}" for name, t in own if t is not None)


class TorchModule(nn.Module):
    """A compiled Mithril model (TorchBackend) as a ``torch.nn.Module``.

    - ``params``: initial parameters (any arrays, Mithril keys); default
      ``compiled_model.randomize_params()``. Values are copied.
    - ``state``: initial state; default a copy of ``compiled_model.state``.
    - ``inference_model``: what ``eval()`` runs: a compiled model built with
      ``inference=True``, or the logical model (compiled lazily with ``compile_options``).

    ``forward(inputs)`` takes and returns dicts keyed by terminal names.

    >>> import torch
    >>> import mithril as ml
    >>> from mithril.interop import TorchModule
    >>> from mithril.models import Model, Conv2d, BatchNorm2d
    >>> model = Model()
    >>> model |= Conv2d(in_channels=1, out_channels=2, kernel_size=3)
    >>> model += BatchNorm2d(num_features=2)
    >>> module = TorchModule(ml.compile(model, ml.TorchBackend()), inference_model=model)
    >>> _ = module({"input": torch.randn(4, 1, 5, 5)})  # training: running stats updated
    >>> bool(module.state_dict()["batchnorm2d.running_mean"].abs().sum() > 0)
    True
    >>> module.eval()(  # inference: running statistics
    ...     {"input": torch.randn(1, 1, 5, 5)})["output"].shape
    torch.Size([1, 2, 3, 3])
    """

    def __init__(self, compiled_model: CompiledModel, params: Mapping[str, Any] | None = None,
                 state: Mapping[str, Any] | None = None, *, inference_model: Any = None,
                 compile_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(compiled_model, CompiledModel):
            raise TypeMismatchError(f"TorchModule needs a compiled model, got "
                                    f"{type(compiled_model).__name__}")
        backend = compiled_model.backend
        if getattr(backend, "name", None) != "torch":
            raise TypeMismatchError(
                f"TorchModule needs a model compiled for ml.TorchBackend, this one is compiled "
                f"for {type(backend).__name__}")
        self._compiled = compiled_model
        self._twin: CompiledModel | None = None
        self._twin_source: Any = None
        self._twin_options = {k: v for k, v in dict(compile_options or {}).items()
                              if k not in ("inference", "file_path")}
        if inference_model is not None:
            if isinstance(inference_model, CompiledModel):
                self._twin = self._checked_twin(inference_model)
            else:
                self._twin_source = inference_model
        self._modal_ops = _modal_ops_used(compiled_model)

        if params is None:
            params = compiled_model.randomize_params()
        if state is None:
            state = compiled_model.state
        values = _checked_values("params", params, compiled_model._params)
        values_state = _checked_values("state", state, compiled_model._state_specs)
        entries = [(k, "param", values[k]) for k in compiled_model.param_keys]
        entries += [(k, "buffer", values_state[k]) for k in compiled_model.state_keys]
        self._slots: dict[str, tuple[nn.Module, str, str]] = {}  # key -> (owner, leaf, kind)
        self._torch_names: dict[str, str] = {}  # Mithril key -> torch path, where they differ
        self._build(entries)
        if self._torch_names:
            self.register_state_dict_post_hook(_rename_after_save)
            self.register_load_state_dict_pre_hook(_rename_before_load)

    # ---- building ----
    def _as_tensor(self, value: Any) -> torch.Tensor:
        backend = self._compiled.backend
        if isinstance(value, torch.Tensor):
            t = value.detach()
            dtype = backend.native_dtype(backend.dtype) if t.is_floating_point() else t.dtype
            return t.to(device=backend.device, dtype=dtype, copy=True)
        return backend.array(value)  # floats take the backend's dtype

    def _build(self, entries: list[tuple[str, str, Any]]) -> None:
        split = [(key, key.split("."), kind, value) for key, kind, value in entries]
        children: dict[tuple[str, ...], list[str]] = {}
        leaves: dict[tuple[str, ...], list[str]] = {}
        for _, parts, _, _ in split:
            for i in range(len(parts) - 1):
                names = children.setdefault(tuple(parts[:i]), [])
                if parts[i] not in names:
                    names.append(parts[i])
            leaves.setdefault(tuple(parts[:-1]), []).append(parts[-1])
        containers: dict[tuple[str, ...], nn.Module] = {(): self}
        allocated: dict[tuple[str, ...], dict[tuple[str, bool], str]] = {}

        def torch_name(path: tuple[str, ...], name: str, is_leaf: bool) -> str:
            table = allocated.setdefault(path, {})
            if (name, is_leaf) in table:
                return table[(name, is_leaf)]
            owner = containers[path]
            taken = set(children.get(path, ())) | set(leaves.get(path, ())) | set(table.values())
            ok = (name and "." not in name and name not in vars(owner)
                  and not hasattr(type(owner), name)
                  and not (is_leaf and name in children.get(path, ())))
            chosen = name
            if not ok:
                chosen = (name.replace(".", "_") or "_") + "_"
                while (chosen in taken or chosen in vars(owner)
                       or hasattr(type(owner), chosen)):
                    chosen += "_"
            table[(name, is_leaf)] = chosen
            return chosen

        for key, parts, kind, value in split:
            path: tuple[str, ...] = ()
            torch_parts = []
            for part in parts[:-1]:
                name = torch_name(path, part, False)
                torch_parts.append(name)
                sub = (*path, part)
                if sub not in containers:
                    containers[sub] = _Namespace()
                    containers[path].add_module(name, containers[sub])
                path = sub
            leaf = torch_name(path, parts[-1], True)
            torch_parts.append(leaf)
            owner = containers[path]
            tensor = self._as_tensor(value)
            if kind == "param":
                owner.register_parameter(leaf, nn.Parameter(tensor,
                                                            tensor.is_floating_point()))
            else:
                owner.register_buffer(leaf, tensor)
            self._slots[key] = (owner, leaf, kind)
            tpath = ".".join(torch_parts)
            if tpath != key:
                self._torch_names[key] = tpath

    # ---- the inference twin ----
    def _checked_twin(self, twin: CompiledModel) -> CompiledModel:
        main = self._compiled
        problems = []
        if not twin.inference:
            problems.append("it was not compiled with inference=True")
        if twin.backend is not main.backend and (
                type(twin.backend) is not type(main.backend)
                or twin.backend.dtype != main.backend.dtype
                or twin.backend.device != main.backend.device):
            problems.append(f"its backend {twin.backend!r} differs from {main.backend!r}")
        for what, a, b in (("parameters", twin._params, main._params),
                           ("state", twin._state_specs, main._state_specs)):
            sa = {k: tuple(s.shape) for k, s in a.items()}
            sb = {k: tuple(s.shape) for k, s in b.items()}
            if sa != sb:
                problems.append(f"its {what} {sa} differ from the training model's {sb}")
        if twin.data_keys != main.data_keys:
            problems.append(f"its inputs {sorted(twin.data_keys)} differ from "
                            f"{sorted(main.data_keys)}")
        if problems:
            raise CompileError("the inference model does not match the training model: "
                               + "; ".join(problems))
        return twin

    def _inference_model(self) -> CompiledModel:
        main = self._compiled
        if main.inference or not self._modal_ops:
            return main  # the same code in both modes
        if self._twin is None:
            if self._twin_source is None:
                raise CompileError(
                    f"eval(): this compiled model uses {sorted(self._modal_ops)}, which behave "
                    "differently at inference, but TorchModule has no inference twin; create it "
                    "with TorchModule(compiled, inference_model=<the logical model>) or "
                    "inference_model=ml.compile(model, backend, inference=True)")
            from ..framework.physical.compile import compile as ml_compile

            twin = ml_compile(self._twin_source, main.backend, inference=True,
                              **self._twin_options)
            self._twin = self._checked_twin(twin)
        return self._twin

    # ---- running ----
    def forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model on ``inputs`` (``{"input": tensor}``); returns ``{output: tensor}``.

        In training mode the state buffers are updated; outputs carry autograd to the
        parameters whenever gradients are enabled.

        >>> import torch
        >>> import mithril as ml
        >>> from mithril.interop import TorchModule
        >>> from mithril.models import Linear
        >>> module = TorchModule(ml.compile(Linear(3, input_size=2), ml.TorchBackend()))
        >>> module({"input": torch.ones(4, 2)})["output"].requires_grad
        True
        """
        if not isinstance(inputs, Mapping):
            raise TypeMismatchError(
                f"TorchModule takes a dict of inputs such as {{'input': tensor}}, got "
                f"{type(inputs).__name__}; its inputs are {sorted(self._compiled.data_keys)}")
        training = self.training and not self._compiled.inference
        model = self._compiled if training else self._inference_model()
        params = {k: owner._parameters[leaf] for k, (owner, leaf, kind) in self._slots.items()
                  if kind == "param"}
        state = {k: owner._buffers[leaf] for k, (owner, leaf, kind) in self._slots.items()
                 if kind == "buffer"}
        self._check_placement(params, state)
        data = dict(inputs)
        model._check(params, data)
        rng = model.backend.next_rng() if model._uses_rng else None
        outputs, new_state = model._forward(params, data, state, rng)
        if training and state:
            with torch.no_grad():
                for key, buf in state.items():
                    buf.copy_(new_state[key])
        return dict(outputs)

    def _check_placement(self, *groups: Mapping[str, Any]) -> None:
        backend = self._compiled.backend
        want = backend.native_dtype(backend.dtype)
        device = backend.device
        for group in groups:
            for key, t in group.items():
                if t is None:
                    raise InputError(f"TorchModule: {key!r} was set to None")
                if (t.is_floating_point() and t.dtype != want) or t.device != device:
                    raise TypeMismatchError(
                        f"TorchModule: {key!r} is {t.dtype} on {t.device}, but the compiled "
                        f"model runs {want} on {device}; a TorchModule keeps its backend's "
                        "dtype and device — compile for ml.TorchBackend(dtype=..., device=...) "
                        "and move the values with state_dict()/load_state_dict()")

    # ---- Mithril views ----
    @property
    def compiled_model(self) -> CompiledModel:
        """The compiled model whose code ``forward`` runs in training mode."""
        return self._compiled

    def mithril_params(self) -> dict[str, torch.Tensor]:
        """The parameters by Mithril key, detached (sharing memory), for ``evaluate``.

        >>> import mithril as ml
        >>> from mithril.interop import TorchModule
        >>> from mithril.models import Linear
        >>> pm = ml.compile(Linear(3, input_size=2), ml.TorchBackend())
        >>> sorted(TorchModule(pm).mithril_params())
        ['bias', 'weight']
        """
        return {k: owner._parameters[leaf].detach()
                for k, (owner, leaf, kind) in self._slots.items() if kind == "param"}

    def mithril_state(self) -> dict[str, torch.Tensor]:
        """The state by Mithril key, detached (sharing memory), for ``evaluate(state=...)``.

        >>> import mithril as ml
        >>> from mithril.interop import TorchModule
        >>> from mithril.models import Linear
        >>> TorchModule(ml.compile(Linear(3, input_size=2), ml.TorchBackend())).mithril_state()
        {}
        """
        return {k: owner._buffers[leaf].detach()
                for k, (owner, leaf, kind) in self._slots.items() if kind == "buffer"}

    def named_mithril_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(Mithril key, nn.Parameter)`` pairs in the compiled model's parameter order.

        >>> import mithril as ml
        >>> from mithril.interop import TorchModule
        >>> from mithril.models import Linear
        >>> pm = ml.compile(Linear(3, input_size=2), ml.TorchBackend())
        >>> [k for k, _ in TorchModule(pm).named_mithril_parameters()]
        ['weight', 'bias']
        """
        for key, (owner, leaf, kind) in self._slots.items():
            if kind == "param":
                yield key, owner._parameters[leaf]

    def extra_repr(self) -> str:
        c = self._compiled
        return (f"backend={c.backend!r}, inputs={sorted(c.data_keys)}, outputs={c.output_keys}, "
                f"params={len(c.param_keys)}, state={len(c.state_keys)}")


def attach(compiled_model: CompiledModel) -> TorchModule:
    """The ``TorchModule`` of a compiled model, created on first use and then reused.

    Used by ``CompiledModel.torch_parameters()`` and ``CompiledModel.__call__(inputs)`` on
    TorchBackend. The inference twin is compiled from ``compiled_model.logical_model`` (with
    ``compiled_model.compile_options``) when ``compile`` recorded them.

    >>> import torch
    >>> import mithril as ml
    >>> from mithril.interop import attach
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(3, input_size=2), ml.TorchBackend())
    >>> attach(pm) is attach(pm)
    True
    >>> attach(pm)({"input": torch.ones(1, 2)})["output"].shape
    torch.Size([1, 3])
    """
    module = compiled_model.__dict__.get(_TORCH_MODULE_ATTR)
    if module is None:
        module = TorchModule(compiled_model,
                             inference_model=getattr(compiled_model, "logical_model", None),
                             compile_options=getattr(compiled_model, "compile_options", None))
        compiled_model.__dict__[_TORCH_MODULE_ATTR] = module
    return module


# ----------------------------------------------------------------------------------------------
def _checked_values(what: str, values: Mapping[str, Any], specs: Mapping[str, Any]
                    ) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise TypeMismatchError(f"{what} must be a dict {{key: array}}, got "
                                f"{type(values).__name__}")
    missing = [k for k in specs if k not in values]
    unknown = [k for k in values if k not in specs]
    if missing or unknown:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unknown {unknown}"] if unknown else [])
        raise InputError(f"TorchModule {what}: {' and '.join(parts)}; expected {list(specs)}")
    for key, spec in specs.items():
        shape = tuple(getattr(values[key], "shape", ()))
        if shape != tuple(spec.shape):
            raise ShapeMismatchError(f"TorchModule {what}: {key!r} has shape {list(shape)}, the "
                                     f"model expects {list(spec.shape)}")
    return dict(values)


def _modal_ops_used(compiled: CompiledModel) -> set[str]:
    """Kernels in the training code that have a different inference kernel."""
    from ..framework.ops import CATALOGUE

    names = {name for name, op in CATALOGUE.items() if getattr(op, "modal", False)}
    return {name for name in names if re.search(rf"\b{re.escape(name)}(_fwd)?\(", compiled.code)}


def _rename_after_save(module: TorchModule, state_dict: dict[str, Any], prefix: str,
                       local_metadata: Any) -> None:
    """state_dict post-hook: torch paths that had to differ become Mithril keys again."""
    back = {prefix + t: prefix + k for k, t in module._torch_names.items()}
    items = list(state_dict.items())
    state_dict.clear()
    for name, value in items:
        state_dict[back.get(name, name)] = value


def _rename_before_load(module: TorchModule, state_dict: dict[str, Any], prefix: str,
                        local_metadata: Any, strict: bool, missing_keys: list[str],
                        unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """load_state_dict pre-hook: Mithril keys become the torch paths they are stored under."""
    for key, tpath in module._torch_names.items():
        if prefix + key in state_dict:
            state_dict[prefix + tpath] = state_dict.pop(prefix + key)
