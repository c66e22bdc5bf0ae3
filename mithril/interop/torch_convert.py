"""``ml.from_torch``: a ``torch.nn.Module`` as a logical Mithril model, with its weights.

The module is traced with ``torch.export`` (in training mode, so that ``Dropout`` and
``BatchNorm`` appear as such) into a graph of ATen operators; each operator becomes a catalogue
primitive (see :mod:`mithril.interop._aten`). Parameters and state keep the module's
``state_dict`` keys (``layer1.0.conv1.weight``); what depends on no input, parameter or state
(position ids, causal masks, shapes) is computed once while converting and becomes a constant.
The shapes are those of the example inputs. The model is nested like the module: one
submodel per submodule call, grouped by the ``nn_module_stack`` torch.export records for
every operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArgumentTypeError, CompileError, TypeMismatchError
from ..framework.logical.model import Connection, IOKey, Model
from ._aten import CONVERTERS, SHAPE_ONLY, NotConvertible
from ._graph_builder import UNSUPPORTED, Builder, Ref, Unsupported, is_dynamic, to_numpy

__all__ = ["UnsupportedTorchOpsError", "from_torch"]


class UnsupportedTorchOpsError(CompileError):
    """``from_torch`` met operators it cannot convert; ``unsupported`` lists
    ``(operator, reason, source location)`` for every one of them."""

    def __init__(self, message: str, unsupported: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def from_torch(module: nn.Module, example_inputs: Any
               ) -> tuple[Model, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(model, params, state)``: ``module`` as a logical Mithril model and its weights.

    ``example_inputs`` is a tensor, a tuple of positional tensors, or a dict of keyword
    tensors (names of ``forward``'s arguments); the model's inputs are named after those
    arguments, with the example's shapes and dtypes (integer inputs such as token ids stay
    integers). Its output is ``output`` for a returned tensor, ``output0``, ``output1``, ...
    for a tuple, or the field names of a returned dict, dataclass or ``ModelOutput``
    (``logits``, ``last_hidden_state``). ``params`` and ``state`` hold NumPy copies of the
    module's parameters and buffers under its ``state_dict`` keys (tied weights once, under
    the name the module's forward uses).

    The model is nested like the module: each submodule call is a submodel named as the
    submodule (``layer1`` holding ``0`` holding ``conv1``; a second call of one submodule
    is ``relu_1``, sharing its parameters), with ``forward``'s own operations in the model
    that ran them; the model's parameter keys stay the ``state_dict``'s.

    The model keeps both modes: compiled normally, ``Dropout`` is active and ``BatchNorm``
    uses batch statistics and updates ``state``; compiled with ``inference=True``, they act
    as in ``module.eval()``. Operators with no Mithril counterpart raise one
    :class:`UnsupportedTorchOpsError` listing all of them with their source lines.

    >>> import torch
    >>> import mithril as ml
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> model, params, state = ml.from_torch(net, torch.randn(3, 4))
    >>> sorted(params), state
    (['0.bias', '0.weight', '2.bias', '2.weight'], {})
    >>> from mithril.models import Model
    >>> [child.name for child in model.children if isinstance(child, Model)]  # submodels
    ['0', '1', '2']
    >>> pm = ml.compile(model, ml.NumpyBackend(), inference=True)
    >>> x = torch.randn(3, 4)
    >>> out = pm.evaluate(params, {"input": x.numpy()})["output"]  # Sequential.forward(input)
    >>> bool(abs(out - net(x).detach().numpy()).max() < 1e-5)
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeMismatchError(f"from_torch needs a torch.nn.Module, got "
                                f"{type(module).__name__}")
    args, kwargs = _example(example_inputs)
    program = _export(module, args, kwargs)
    converter = _Converter(module, program)
    return converter.run()


def _example(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        return tuple(example_inputs), {}
    raise ArgumentTypeError(f"example_inputs must be a tensor, a tuple of tensors or a dict of "
                            f"tensors, got {type(example_inputs).__name__}")


def _export(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    modes = {m: m.training for m in module.modules()}
    try:
        module.train()  # Dropout and BatchNorm appear in the graph only in training mode
        return torch.export.export(module, args, kwargs)
    except Exception as err:  # torch's own errors: data-dependent control flow, ...
        raise CompileError(f"torch.export could not trace {type(module).__name__}: "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                           ) from err
    finally:
        for m, training in modes.items():
            m.training = training


class _Converter:
    def __init__(self, module: nn.Module, program: Any) -> None:
        self.module = module
        self.program = program
        self.sig = program.graph_signature
        self.b = Builder()
        self.env: dict[Any, Any] = {}
        self.unsupported: list[tuple[str, str, str]] = []
        self.unsupported_in: list[str] = []  # the submodule each one is in ("" for forward)
        self.tensors = {**dict(module.named_parameters(remove_duplicate=False)),
                        **dict(module.named_buffers(remove_duplicate=False))}
        self.state_names: set[str] = set()
        self.aliases: dict[int, list[str]] = {}  # id(tensor) -> every key it has (tied ones)
        for key, tensor in self.tensors.items():
            self.aliases.setdefault(id(tensor), []).append(key)
        # the submodule calls open now, outermost first: (nn_module_stack key, module path,
        # fx nodes whose values live in the call's submodel); the top model is the first
        self.calls: list[tuple[str, str, list[Any]]] = [("", "", [])]
        self.position: dict[Any, int] = {}
        self.index = 0  # the position of the node being converted
        self.children: dict[str, set[str]] = {}  # module path -> its submodules' names

    # ---- the walk ----
    def run(self) -> tuple[Model, dict[str, np.ndarray], dict[str, np.ndarray]]:
        graph = self.program.graph
        self.state_names = self._batch_norm_state(graph)
        nodes = list(graph.nodes)
        self.position = {node: i for i, node in enumerate(nodes)}
        self.children = _submodule_names(nodes)
        self.b.reserve(self.children.get("", set()))
        inputs: dict[str, Any] = {}
        for i, node in enumerate(nodes):
            self.index = i
            if node.op == "placeholder":
                self.env[node] = self._placeholder(node, inputs)
            elif node.op == "call_function":
                self.env[node] = self._call(node)
                if self.calls[-1][1] and is_dynamic(self.env[node]):
                    self.calls[-1][2].append(node)
            elif node.op == "output" and not self.unsupported:
                self._switch([])  # every submodel closed: the outputs are the top's
        if self.unsupported:
            raise self._error()
        outputs = self._outputs(graph)
        model = self.b.model
        for name, (kind, fan_in) in self.b.inits.items():
            if name in model.named:
                model.set_initializer(name, kind, fan_in)
        for name, val in inputs.items():
            if name in model.named:
                model.set_shapes({name: list(val.shape)})
                if not (val.is_floating_point() or val.dtype == torch.bool):
                    model.set_types({name: int})
        if not outputs:
            raise CompileError(f"{type(self.module).__name__} returns no tensor that depends "
                               "on its inputs or weights")
        params, state = {}, {}
        for name in model.named:
            if name in self.state_names:
                state[name] = to_numpy_exact(self.tensors[name])
            elif name in self.tensors:
                params[name] = to_numpy_exact(self.tensors[name])
        model.set_shapes({k: list(v.shape) for k, v in {**params, **state}.items()})
        model.set_differentiability({k: True for k in params})
        return model, params, state

    def _batch_norm_state(self, graph: Any) -> set[str]:
        """Buffers that are BatchNorm running statistics (state); other buffers are constants."""
        names = {**self.sig.inputs_to_buffers}
        out = set()
        for node in graph.nodes:
            if node.op == "call_function" and str(node.target).startswith("aten.batch_norm"):
                for arg in node.args[3:5]:
                    if getattr(arg, "name", None) in names:
                        out.add(names[arg.name])
        return out

    def _placeholder(self, node: Any, inputs: dict[str, Any]) -> Any:
        sig = self.sig
        if node.name in sig.inputs_to_parameters:
            return self._ref(sig.inputs_to_parameters[node.name])
        if node.name in sig.inputs_to_buffers:
            name = sig.inputs_to_buffers[node.name]
            if name in self.state_names:
                return self._ref(name)
            return self.tensors[name].detach().clone()
        constants = getattr(sig, "inputs_to_lifted_tensor_constants", {})
        if node.name in constants:
            return self.program.constants[constants[node.name]].detach().clone()
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return val  # a non-tensor argument, fixed at its example value
        inputs[node.name] = val
        return Ref(node.name, data=True, shape=tuple(int(d) for d in val.shape))

    def _ref(self, name: str) -> Ref:
        tensor = self.tensors[name]
        return Ref(name, shape=tuple(tensor.shape),
                   aliases=tuple(k for k in self.aliases[id(tensor)] if k != name))

    def _call(self, node: Any) -> Any:
        target = str(getattr(node.target, "overloadpacket", node.target))
        if not target.startswith("aten.") and not target.startswith("_operator."):
            target = f"{getattr(node.target, '__module__', '')}.{node.target.__name__}" \
                if hasattr(node.target, "__name__") else target
        args = self._values(node.args)
        kwargs = {k: self._values(v) for k, v in node.kwargs.items()}
        if _contains_unsupported(args) or _contains_unsupported(kwargs):
            if target not in CONVERTERS and target not in SHAPE_ONLY:  # list it too
                self._unsupported(node, target, "no Mithril counterpart")
            return UNSUPPORTED
        if target in SHAPE_ONLY:
            return self._fold(node, args, kwargs, shapes_only=True)
        if not is_dynamic(args) and not is_dynamic(list(kwargs.values())):
            if _is_random(node.target):  # folding would freeze one draw into the model
                self._unsupported(node, target, "random values")
                return UNSUPPORTED
            return self._fold(node, args, kwargs)
        fn = CONVERTERS.get(target)
        if fn is None:
            self._unsupported(node, target, "no Mithril counterpart")
            return UNSUPPORTED
        if not self.unsupported and self._switch(_module_calls(node, self.calls)):
            args = self._values(node.args)  # the values as the submodel now open sees them
            kwargs = {k: self._values(v) for k, v in node.kwargs.items()}
        try:
            value = fn(self.b, node, args, kwargs)
        except NotConvertible as err:
            self._unsupported(node, target, str(err))
            return UNSUPPORTED
        if target.endswith("_") and node.args and node.args[0] in self.env:
            self.env[node.args[0]] = value  # in-place: later readers see the new value
            if self.calls[-1][1]:
                self.calls[-1][2].append(node.args[0])
        return value

    # ---- submodels ----
    def _switch(self, calls: list[tuple[str, str]]) -> bool:
        """Make the submodels of ``calls`` (``(key, module path)``, outermost first) the open
        ones: close the open calls that are not among them, open the new ones. Whether a call
        was closed (values read from it are then the parent's)."""
        common = 0
        while common < min(len(calls), len(self.calls) - 1) and \
                self.calls[common + 1][0] == calls[common][0]:
            common += 1
        closed = len(self.calls) - 1 > common
        while len(self.calls) - 1 > common:
            self._leave()
        for key, path in calls[common:]:
            parent = self.calls[-1][1]
            name = path[len(parent) + 1:] if parent and path.startswith(parent + ".") else path
            self.b.enter(path, name, self.children.get(path, set()))
            self.calls.append((key, path, []))
        return closed

    def _leave(self) -> None:
        """Close the innermost call: what it computed that later nodes read becomes its
        submodel's outputs, and those nodes' values the parent's connections."""
        _, _, nodes = self.calls.pop()
        model = self.b.model
        needed = [n for n in nodes if any(self.position[u] >= self.index for u in n.users)]
        values: list[Connection] = []
        for n in needed:
            values.extend(_connections(self.env[n], model))
        mapping = self.b.leave(values)
        outer = self.calls[-1][2]
        for n in needed:
            self.env[n] = _remap(self.env[n], mapping)
            if self.calls[-1][1]:
                outer.append(n)

    def _values(self, value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            return self.env.get(value, UNSUPPORTED)
        if isinstance(value, list | tuple):
            return type(value)(self._values(v) for v in value)
        return value

    def _fold(self, node: Any, args: Any, kwargs: dict[str, Any],
              shapes_only: bool = False) -> Any:
        """Run an operator whose inputs are all known, in torch, once."""
        if shapes_only:
            args = tuple(torch.zeros(a.meta["val"].shape, dtype=a.meta["val"].dtype)
                         if isinstance(a, torch.fx.Node) else v
                         for a, v in zip(node.args, args, strict=True))
        with torch.no_grad():
            return node.target(*args, **kwargs)

    def _outputs(self, graph: Any) -> list[str]:
        out_node = next(n for n in graph.nodes if n.op == "output")
        user = [s for s in self.sig.output_specs if s.kind.name == "USER_OUTPUT"]
        values = list(out_node.args[0])[-len(user):] if user else []
        names = _output_names(self.program.call_spec.out_spec, len(values))
        done = []
        for name, node in zip(names, values, strict=True):
            value = self._values(node) if isinstance(node, torch.fx.Node) else node
            if not is_dynamic(value):
                continue  # a constant output (None, a fixed tensor): not part of the model
            self.b.model.__ior__(self._output(name, value))
            done.append(name)
        return done

    def _output(self, name: str, value: Any) -> Any:
        from ..framework.logical.model import Operator
        from ..framework.ops import CATALOGUE

        return Operator(CATALOGUE["buffer"])(input=self.b.terminal(value), output=IOKey(name))

    def _unsupported(self, node: Any, target: str, why: str) -> None:
        self.unsupported.append((target, why, _location(node)))
        self.unsupported_in.append(_module_of(node))

    def _error(self) -> UnsupportedTorchOpsError:
        lines = [f"from_torch: {len(self.unsupported)} operation(s) of "
                 f"{type(self.module).__name__} have no Mithril counterpart:"]
        for (op, why, where), module in zip(self.unsupported, self.unsupported_in, strict=True):
            lines.append(f"  {op}: {why}" + (f"\n    in {module}" if module else "") +
                         (f"\n    at {where}" if where else ""))
        return UnsupportedTorchOpsError("\n".join(lines), list(self.unsupported))


def _module_calls(node: Any, open_calls: list[tuple[str, str, list[Any]]]
                  ) -> list[tuple[str, str]]:
    """The submodule calls ``node`` runs in, outermost first, as ``(key, module path)`` (its
    ``nn_module_stack`` without the module itself); a node without one stays where it is."""
    stack = node.meta.get("nn_module_stack")
    if stack is None:
        return [(key, path) for key, path, _ in open_calls[1:]]
    return [(key, entry[0]) for key, entry in stack.items() if entry[0]]


def _submodule_names(nodes: list[Any]) -> dict[str, set[str]]:
    """Module path -> the names its called submodules take in it (``{"": {"conv1", ...},
    "layer1": {"0", "1"}}``)."""
    out: dict[str, set[str]] = {}
    for node in nodes:
        parent = ""
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            path = entry[0]
            if not path:
                continue
            name = path[len(parent) + 1:] if parent and path.startswith(parent + ".") else path
            out.setdefault(parent, set()).add(name)
            parent = path
    return out


def _connections(value: Any, model: Model) -> list[Connection]:
    """The connections of ``model`` in a node's value (a connection, or a list of them)."""
    if isinstance(value, Connection):
        return [value] if value.model is model else []
    if isinstance(value, list | tuple):
        return [c for v in value for c in _connections(v, model)]
    return []


def _remap(value: Any, mapping: dict[int, Any]) -> Any:
    if isinstance(value, Connection):
        return mapping.get(id(value), value)
    if isinstance(value, list | tuple):
        return type(value)(_remap(v, mapping) for v in value)
    return value


def _contains_unsupported(value: Any) -> bool:
    if isinstance(value, Unsupported):
        return True
    if isinstance(value, list | tuple):
        return any(_contains_unsupported(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_unsupported(v) for v in value.values())
    return False


def _is_random(target: Any) -> bool:
    tags = getattr(target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags


def _module_of(node: Any) -> str:
    """The innermost submodule a node runs in, as ``layer1.0.conv1 (Conv2d)``; "" for the
    module's own ``forward``."""
    entries = [e for e in (node.meta.get("nn_module_stack") or {}).values() if e[0]]
    if not entries:
        return ""
    path, cls = entries[-1][0], entries[-1][1]
    name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return f"{path} ({name})"


def _location(node: Any) -> str:
    """The innermost user source line of a node (``file:line in function: code``)."""
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    for i in range(len(trace) - 1, -1, -1):
        line = trace[i].strip()
        if line.startswith("File "):
            code = trace[i + 1].strip() if i + 1 < len(trace) else ""
            return f"{line.removeprefix('File ')}: {code}".rstrip(": ")
    return ""


def _output_names(spec: Any, n: int) -> list[str]:
    if spec is None or spec.is_leaf():
        return ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    context = spec.context
    if isinstance(context, list | tuple) and len(context) == n and all(
            isinstance(c, str) for c in context):
        return list(context)
    if isinstance(context, dict | str) or dataclasses.is_dataclass(spec.type):
        keys = list(context) if isinstance(context, list | tuple) else []
        if len(keys) == n:
            return [str(k) for k in keys]
    return [f"output{i}" for i in range(n)]


def to_numpy_exact(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy in the tensor's own dtype (bfloat16 as float32)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().copy()


_ = to_numpy  # constants use the builder's conversion
