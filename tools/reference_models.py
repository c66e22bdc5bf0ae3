"""Measure the reference Mithril's directed model tests against this package.

The reference project (synnada-ai/mithril) keeps json-driven directed tests for whole models in
``tests/json_files/``: ``models_directed_test.json``, ``no_grad_inference_test.json``,
``integration_directed_test.json``, ``static_keys_directed_test.json`` and
``discard_keys_directed_test.json``. Each case names a model: a class of ``mithril.models``
(``{"name": "Linear", "args": {...}, "tuples": [...], "enums": {...}, "types": {...},
"differentiability_info": {...}}``) or a composite (``"name": "Model"`` with ``submodels`` and
``connections``: per submodel, per terminal, a key name, an ``IOKey`` description
``{"name", "type", "expose", "differentiable"}``, a constant ``{"tensor": v}`` or
``{"connect": [[submodel, terminal], ...]}``). Then the values: ``inputs`` (differentiable or
not), ``static_keys`` (compile-time constants), ``discard_keys``, the gradients arriving at the
outputs (``output_grads``) and the expected ``results`` (``eval`` and ``grad``). Training cases
(the integration file) add ``output_specs`` (a loss per output, its reduce steps and target),
``regularizations`` and ``final_loss_combiner`` (or the same inside ``train_context``) and
expect ``final_cost``; the static-key and discard-key files expect the lists of keys the
reference folds or discards (``results["static_keys"]``, ``results["output_keys"]``).

This tool builds each case with this package under the reference's names, compiles it in
float64 on NumPy, PyTorch and JAX (``jit=False``), evaluates outputs and gradients and compares
them with the reference's criterion (``tools/reference_vectors.py``: every element within 1e-14
absolutely or relatively, same shape). Inputs with an expected gradient are trainable, the
other inputs are data; outputs without a given gradient receive zeros. It prints one line per
failing case (or every case with ``--all``) with a short reason class and the totals per file
and backend.

What is not comparable, and how it is counted:

- ``static_keys_directed_test.json`` lists the keys the reference folds at compile time,
  including its generated names (``output_0``); this package does not list folded keys. A case
  passes when the model builds and compiles with the given keys as ``constant_keys`` (random
  values of the given shapes); the lists are not compared.
- ``discard_keys_directed_test.json``: ``output_keys`` is compared with the compiled model's
  ``output_keys``; the discarded internal keys are not (generated names).
- ``injected_static_keys`` name internal keys of the reference (``TsnePJoint_0_output``); they
  are passed as constants under that name and fail when no such key exists.

``--ctor-fallback`` gives a static key (or a loss's call argument) that is a terminal in the
reference but a constructor argument here (``QuantileLoss`` ``quantile``, ``CrossEntropy``
``robust``, ``LeakyRelu`` ``slope``, ``Softmax`` ``axis``) to the constructor instead, to see
whether the numbers agree once that naming difference is set aside.

The json files are the reference's test data: they are not part of this repository. Fetch them
and pass their paths::

    .venv/bin/python tools/reference_models.py /path/to/models_directed_test.json
    .venv/bin/python tools/reference_models.py /path/to/json_files/*.json --backends numpy
    .venv/bin/python tools/reference_models.py FILE -k conv --all
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_vectors import (
    BACKENDS,
    Outcome,
    compare,
    load_cases,
    to_host,
    to_numpy,
)

import mithril as ml
import mithril.models as models


class CaseFailure(Exception):
    """A case cannot go on: ``category`` is the reason class, the message the detail."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


def _err(err: BaseException) -> str:
    """``Type: message`` of an exception, on one line and at most 300 characters.

    >>> _err(ValueError("bad\\nvalue"))
    'ValueError: bad value'
    """
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def constructor_args(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a model description: ``tuples`` as tuples, ``enums`` as
    members of the named enum where this package has it (else the value as given).

    >>> constructor_args({"name": "Sum", "args": {"axis": [0, 2]}, "tuples": ["axis"]})
    {'axis': (0, 2)}
    """
    args = dict(spec.get("args", {}))
    for key in spec.get("tuples", []):
        if key in args:
            args[key] = _as_tuple(args[key])
    if isinstance(args.get("activations"), list):  # the json names activations by name
        args["activations"] = [_activation(a) for a in args["activations"]]
    if isinstance(args.get("activation"), str):
        args["activation"] = _activation(args["activation"])
    if "kernel" in args:  # KernelizedSVM(kernel=RBFKernel()): a model description or name
        kernel = args["kernel"]
        args["kernel"] = build_model(kernel if isinstance(kernel, dict) else {"name": kernel})
    for key, enum_name in spec.get("enums", {}).items():
        enum = getattr(ml, enum_name, None) or getattr(models, enum_name, None)
        if enum is not None and key in args:
            args[key] = enum[args[key]]
    return args


def _activation(name: Any) -> Any:
    """An activation the json names (``"relu"``, ``"buffer"``) as a model instance.

    >>> type(_activation("relu")).__name__, type(_activation("buffer")).__name__
    ('Relu', 'Buffer')
    """
    if not isinstance(name, str):
        return name
    cls_name = {"relu": "Relu", "buffer": "Buffer", "sigmoid": "Sigmoid", "tanh": "Tanh",
                "softplus": "Softplus", "leaky_relu": "LeakyRelu", "gelu": "Gelu",
                "softmax": "Softmax"}.get(name.lower())
    cls = getattr(models, cls_name or name, None)
    if cls is None:
        raise CaseFailure("harness", f"unknown activation name {name!r}")
    return cls()


def _as_tuple(value: Any) -> Any:
    """Lists (nested) as tuples: ``[[1, 1], [0, 1]]`` -> ``((1, 1), (0, 1))``.

    >>> _as_tuple([[1, 1], [0, 1]])
    ((1, 1), (0, 1))
    """
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def _type(name: Any) -> Any:
    """A json type name as this package's type (``"tensor"`` -> ``ml.Tensor``).

    >>> _type("tensor") is ml.Tensor, _type(None)
    (True, None)
    """
    if name is None:
        return None
    if name == "tensor":
        return ml.Tensor
    return {"float": float, "int": int, "bool": bool}.get(name)


#: ``--ctor-fallback``: a static key that is a constructor argument here (a terminal in the
#: reference: ``QuantileLoss(quantile=...)``, ``LeakyRelu(slope=...)``) goes to the constructor
CTOR_FALLBACK = False


def _move_ctor_keys(spec: Mapping[str, Any], statics: dict[str, Any]) -> Mapping[str, Any]:
    """With ``CTOR_FALLBACK``, the model description with the static keys that its class takes
    as constructor arguments (and that are not its terminals) moved into ``args``."""
    cls = getattr(models, spec.get("name", ""), None)
    if not CTOR_FALLBACK or cls is None or "submodels" in spec:
        return spec
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read: leave the case as it is
        return spec
    # also a terminal that the default constructor fixes (LeakyRelu's slope 0.01): it cannot
    # take a constant any more
    moved = {k: statics.pop(k) for k in list(statics)
             if k in params and k not in ("input", "target")}
    return {**spec, "args": {**spec.get("args", {}), **moved}} if moved else spec


def build_model(spec: Mapping[str, Any]) -> Any:
    """The model a case describes (a class of ``mithril.models`` or a composite ``Model``),
    with its ``types`` and differentiability applied; raises :class:`CaseFailure`.

    >>> m = build_model({"name": "Model", "submodels": {"m1": {"name": "Relu"}},
    ...                  "connections": {"m1": {"input": "x", "output": "y"}}})
    >>> sorted(m.interface())
    ['x', 'y']
    >>> try:
    ...     build_model({"name": "NoSuchModel"})
    ... except CaseFailure as failure:
    ...     print(failure.category, "|", failure.detail)
    missing class | mithril.models has no NoSuchModel
    """
    name = spec["name"]
    if name == "Model" and "submodels" in spec:
        model = _build_composite(spec)
    else:
        cls = getattr(models, name, None)
        if cls is None:
            raise CaseFailure("missing class", f"mithril.models has no {name}")
        args = constructor_args(spec)
        try:
            model = cls(**args)
        except TypeError as err:
            raise CaseFailure("unknown argument", f"{name}({args}): {_err(err)}") from err
        except Exception as err:
            raise CaseFailure("constructor", f"{name}({args}): {_err(err)}") from err
    types = {k: _type(v) for k, v in spec.get("types", {}).items()}
    flags = dict(spec.get("differentiability_info", {}))
    flags.update(dict(spec.get("assigned_differentiabilities", [])))
    try:
        if types:
            model.set_types(types)
        if flags:
            model.set_differentiability(flags)
    except Exception as err:
        raise CaseFailure("terminal name", f"{name} types/differentiability: {_err(err)}"
                          ) from err
    return model


def _build_composite(spec: Mapping[str, Any]) -> Any:
    """A composite ``Model`` from ``submodels`` and ``connections``, children added in the
    order of ``submodels``."""
    model = ml.Model()
    children: dict[str, Any] = {}
    connections = spec.get("connections", {})
    for sub_name, sub_spec in spec["submodels"].items():
        child = build_model(sub_spec)
        kwargs = {term: _connection(value, children)
                  for term, value in connections.get(sub_name, {}).items()}
        try:
            model |= child(**kwargs)
        except Exception as err:
            raise CaseFailure(f"build: {type(err).__name__}",
                              f"adding {sub_name} ({sub_spec['name']}) with {kwargs}: "
                              f"{_err(err)}") from err
        children[sub_name] = child
    return model


def _connection(value: Any, children: Mapping[str, Any]) -> Any:
    """A terminal value of a composite's description as this package's connection value."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise CaseFailure("harness", f"unknown connection description {value!r}")
    if "key" in value:
        return _connection(value["key"], children)
    if "tensor" in value:
        return ml.Tensor(value["tensor"])
    if "connect" in value:
        targets = value["connect"]
        if len(targets) != 1:
            raise CaseFailure(
                "join connections",
                f"one connection joining {targets}: no spelling here joins existing "
                "connections of a model into one")
        sub, term = targets[0]
        if sub not in children:
            raise CaseFailure("harness", f"{sub} is not added yet")
        iface = children[sub].interface()
        if term not in iface:
            raise CaseFailure("terminal name",
                              f"{sub} has no terminal {term!r} (has {list(iface)})")
        return iface[term]
    return ml.IOKey(value.get("name"), type=_type(value.get("type")),
                    differentiable=value.get("differentiable"), expose=value.get("expose"))


def _array(value: Any, backend: Any) -> Any:
    """A json value as a backend array (float64 or int64, as ``to_numpy`` gives it)."""
    return backend.array(to_numpy(value))


def _constant(value: Any, backend: Any) -> Any:
    """A static key's value: json scalars stay Python scalars, lists become arrays."""
    if isinstance(value, (bool, int, float)):
        return value
    return _array(value, backend)


def case_kind(case: Mapping[str, Any]) -> str:
    """``"static"``, ``"discard"``, ``"train"`` or ``"model"``: what a case checks.

    >>> case_kind({"results": {"static_keys": []}}), case_kind({"results": {"eval": {}}})
    ('static', 'model')
    """
    results = case.get("results", {})
    if "static_keys" in results:
        return "static"
    if "output_keys" in results:
        return "discard"
    if "output_specs" in case or "train_context" in case:
        return "train"
    return "model"


def _train_spec(case: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[dict[str, Any]],
                                                  list[dict[str, Any]]]:
    """The model description, the losses and the regularizations of a training case, in one
    form: ``{"loss", "kwargs", "input", "target", "reduces"}`` per loss."""
    if "train_context" in case:
        ctx = case["train_context"]
        losses = [{"loss": item["model"], "kwargs": {}, "params": {}, "input": item["input"],
                   "target": item["target"], "reduces": item.get("reduces", ["Mean"])}
                  for item in ctx.get("losses", [])]
        return ctx["model"], losses, list(ctx.get("regularizations", []))
    losses = []
    for out, spec in case.get("output_specs", {}).items():
        if "loss" not in spec:  # an output named without a loss
            continue
        loss = spec["loss"]
        kwargs: dict[str, Any] = {}
        params: dict[str, Any] = {}
        if isinstance(loss, dict):
            kwargs = dict(loss.get("call_kwargs", {}))
            params = dict(loss.get("params", {}))
            loss = loss["fn"]
        losses.append({"loss": loss, "kwargs": kwargs, "params": params, "input": out,
                       "target": spec.get("target_key"),
                       "reduces": spec.get("reduce_steps", ["Mean"])})
    return case["model"], losses, list(case.get("regularizations", []))


def _scalar(value: Any) -> Any:
    """``{"tensor": v}`` as ``ml.Tensor(v)``, anything else as given."""
    if isinstance(value, dict) and "tensor" in value:
        return ml.Tensor(value["tensor"])
    return value


#: the json's regularizer names
REGULARIZERS = {"l1": "L1", "l2": "L2", "quadraticformregularizer": "QuadraticFormRegularizer"}


def build_train_model(case: Mapping[str, Any]) -> Any:
    """The ``TrainModel`` of a training case: the model, a loss per output spec and the
    regularizations; raises :class:`CaseFailure`."""
    spec, losses, regs = _train_spec(case)
    model = build_model(spec)
    try:
        tm = models.TrainModel(model)
    except Exception as err:
        raise CaseFailure(f"TrainModel: {type(err).__name__}", _err(err)) from err
    for item in losses:
        cls = getattr(models, item["loss"], None)
        if cls is None:
            raise CaseFailure("missing class", f"mithril.models has no {item['loss']}")
        reduces = [getattr(models, r)() for r in item["reduces"]]
        kwargs = {k: _scalar(v) for k, v in item["kwargs"].items()}
        params = dict(item["params"])
        if CTOR_FALLBACK:  # QuantileLoss(quantile=...) here, a terminal in the reference
            moved = _move_ctor_keys({"name": item["loss"]}, kwargs)
            params.update({k: v.item() if isinstance(v, np.ndarray) else v
                           for k, v in moved.get("args", {}).items()})
        if item["target"] is not None:  # a loss without target: Relu, Buffer as the loss
            kwargs["target"] = item["target"]
        try:
            tm.add_loss(cls(**params), input=item["input"], reduce_steps=reduces,
                        **kwargs)
        except Exception as err:
            raise CaseFailure(f"add_loss: {type(err).__name__}", _err(err)) from err
    for reg in regs:
        cls_name = REGULARIZERS.get(reg["model"].lower(), reg["model"])
        cls = getattr(models, cls_name, None)
        if cls is None:
            raise CaseFailure("missing class", f"mithril.models has no {cls_name}")
        coef = reg["coef"]
        coef = coef["tensor"] if isinstance(coef, dict) else coef
        target = re.compile(reg["input"]) if reg.get("regex") else reg["input"]
        extra = {k: v for k, v in reg.items() if k not in ("model", "coef", "input", "regex")}
        try:
            tm.add_regularization(cls(), coef=coef, input=target, **extra)
        except Exception as err:
            raise CaseFailure(f"add_regularization: {type(err).__name__}", _err(err)) from err
    return tm


def _compile(model: Any, backend: Any, **kwargs: Any) -> Any:
    try:
        return ml.compile(model, backend, jit=False, **kwargs)
    except Exception as err:
        raise CaseFailure(f"compile: {type(err).__name__}", _err(err)) from err


def _check_terminals(model: Any, keys: Sequence[str], what: str) -> None:
    inputs = list(model.input_terminals())
    for key in keys:
        if key not in inputs:
            raise CaseFailure("terminal name", f"{what} {key!r} is not an input of the model "
                                               f"(inputs: {inputs})")


def _compare_all(expected: Mapping[str, Any], got: Mapping[str, Any], backend_name: str,
                 what: str) -> None:
    """Compare every expected value (a list for ``is_list`` values) with ours."""
    for key, want in expected.items():
        if key not in got or got[key] is None:
            have = sorted(k for k, v in got.items() if v is not None)
            raise CaseFailure(f"{what} keys", f"no {what} {key!r} (have {have})")
        value = got[key]
        pairs = ([(w, v) for w, v in zip(want, value, strict=False)]
                 if isinstance(value, (list, tuple)) else [(want, value)])
        if isinstance(value, (list, tuple)) and len(value) != len(want):
            raise CaseFailure("shape", f"{what} {key}: {len(value)} arrays, "
                                       f"expected {len(want)}")
        for w, v in pairs:
            why = compare(w, to_host(v), backend_name, f"{key}: ")
            if why is not None:
                category, detail = why
                if detail.split(": ", 1)[1].startswith("shape"):
                    category = "shape"
                raise CaseFailure(f"{what}: {category.replace('output: ', '')}", detail)


def run_model_case(case: Mapping[str, Any], backend_name: str, backend: Any) -> None:
    """An eval/grad case (models, no-grad files); raises :class:`CaseFailure` on a failure.

    >>> case = {"model": {"name": "Multiply"}, "inputs": {"left": [2.0], "right": [3.0]},
    ...         "output_grads": {"output": [1.0]},
    ...         "results": {"eval": {"output": [6.0]}, "grad": {"left": [3.0], "right": [2.0]}}}
    >>> run_model_case(case, "numpy", ml.NumpyBackend(dtype=ml.float64))
    """
    statics = dict(case.get("static_keys", {}))
    model = build_model(_move_ctor_keys(case["model"], statics))
    inputs = dict(case.get("inputs", {}))
    is_list = bool(inputs.pop("is_list", False))
    results = case["results"]
    want_grads: Mapping[str, Any] = results.get("grad", {})
    _check_terminals(model, [*inputs, *statics], "key")
    arrays = {k: ([_array(x, backend) for x in v] if is_list else _array(v, backend))
              for k, v in inputs.items()}
    trainable = [k for k in inputs if k in want_grads]
    data = [k for k in inputs if k not in want_grads]
    shapes = {k: list(np.shape(to_numpy(v))) for k, v in inputs.items() if not is_list}
    pm = _compile(model, backend, shapes=shapes,
                  constant_keys={k: _constant(v, backend) for k, v in statics.items()},
                  trainable_keys=trainable or None, data_keys=data or None,
                  discard_keys=case.get("discard_keys") or None,
                  inference=not want_grads)
    want_outs = results.get("eval", {})
    missing = [k for k in want_outs if k not in pm.output_keys]
    if missing:
        raise CaseFailure("terminal name", f"outputs {pm.output_keys}, expected "
                                           f"{sorted(want_outs)}")
    params = {k: arrays[k] for k in trainable}
    feed = {k: arrays[k] for k in data}
    try:
        outs = pm.evaluate(params, feed)
    except Exception as err:
        raise CaseFailure(f"evaluate: {type(err).__name__}", _err(err)) from err
    _compare_all(want_outs, outs, backend_name, "output")
    if not want_grads:
        return
    given = case.get("output_grads", {})
    out_grads = {}
    for key in pm.output_keys:
        if key in given:
            out_grads[key] = _array(given[key], backend)
        elif outs.get(key) is not None:
            out_grads[key] = backend.array(np.zeros(np.shape(to_host(outs[key]))))
    try:
        _, grads = pm.evaluate(params, feed, output_gradients=out_grads)
    except Exception as err:
        raise CaseFailure(f"gradient: {type(err).__name__}", _err(err)) from err
    _compare_all(want_grads, grads, backend_name, "gradient")


def run_train_case(case: Mapping[str, Any], backend_name: str, backend: Any) -> None:
    """A training case (integration file): ``final_cost``, outputs and the parameters'
    gradients of ``final_cost``."""
    tm = build_train_model(case)
    statics = dict(case.get("static_keys", {}))
    inputs = dict(case.get("inputs", {}))
    _check_terminals(tm, [*inputs, *statics], "key")
    shapes = {k: list(np.shape(to_numpy(v))) for k, v in {**inputs, **statics}.items()}
    pm = _compile(tm, backend, shapes=shapes,
                  constant_keys={k: _constant(v, backend) for k, v in statics.items()},
                  trainable_keys=list(inputs) or None)
    params = {k: _array(v, backend) for k, v in inputs.items()}
    try:
        outs, grads = pm.evaluate(params, {}, output_gradients=True)
    except Exception as err:
        raise CaseFailure(f"evaluate: {type(err).__name__}", _err(err)) from err
    results = case["results"]
    _compare_all(results.get("eval", {}), outs, backend_name, "output")
    _compare_all(results.get("grad", {}), grads, backend_name, "gradient")


def run_discard_case(case: Mapping[str, Any], backend_name: str, backend: Any) -> None:
    """A discard-key case: the compiled model's outputs are the expected ``output_keys``."""
    model = build_train_model(case) if "output_specs" in case else build_model(case["model"])
    terminals = set(model.input_terminals())  # the reference ignores shapes of other keys
    shapes = {k: v for k, v in case.get("shapes", {}).items() if k in terminals}
    pm = _compile(model, backend, shapes=shapes or None,
                  discard_keys=case.get("discard_keys") or None)
    want = sorted(case["results"]["output_keys"])
    if sorted(pm.output_keys) != want:
        raise CaseFailure("output keys", f"outputs {sorted(pm.output_keys)}, expected {want}")


def run_static_case(case: Mapping[str, Any], backend_name: str, backend: Any) -> None:
    """A static-key case: the model builds and compiles with the static inputs as constants
    (random values of the given shapes)."""
    model = build_model(case["model"])
    shapes = case.get("static_input_shapes", {})
    _check_terminals(model, list(shapes), "static key")
    rng = np.random.default_rng(0)
    constants = {k: backend.array(rng.random(tuple(s))) for k, s in shapes.items()}
    _compile(model, backend, constant_keys=constants, inference=bool(case.get("inference")))


RUNNERS: dict[str, Callable[[Mapping[str, Any], str, Any], None]] = {
    "model": run_model_case, "train": run_train_case, "discard": run_discard_case,
    "static": run_static_case,
}


def run_case(name: str, case: Mapping[str, Any], backend_name: str, backend: Any) -> Outcome:
    """One case on one backend, as an :class:`Outcome` (``"pass"`` or the reason class).

    >>> case = {"model": {"name": "Add"}, "inputs": {"left": [1.0], "right": [2.0]},
    ...         "output_grads": {"output": [1.0]},
    ...         "results": {"eval": {"output": [3.0]}, "grad": {"left": [1.0]}}}
    >>> run_case("t", case, "numpy", ml.NumpyBackend(dtype=ml.float64)).category
    'pass'
    >>> run_case("t", {**case, "model": {"name": "Nope"}}, "numpy", ml.NumpyBackend()).category
    'missing class'
    >>> wrong = {**case, "results": {"eval": {"output": [3.0]}, "grad": {"left": [2.0]}}}
    >>> o = run_case("t", wrong, "numpy", ml.NumpyBackend(dtype=ml.float64))
    >>> o.category, o.detail
    ('gradient: output value', 'left: off by 1 (at index (0,): expected 2.0, got 1.0)')
    """
    try:
        RUNNERS[case_kind(case)](case, backend_name, backend)
    except CaseFailure as failure:
        return Outcome(name, backend_name, failure.category, failure.detail)
    except Exception as err:  # a crash of the runner is a result too
        return Outcome(name, backend_name, f"crash: {type(err).__name__}",
                       f"{_err(err)} {traceback.format_exc(limit=-2)!r}")
    return Outcome(name, backend_name, "pass")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the cases of the json files on the backends and print failures (or
    every case with ``--all``) and the totals per file and backend; 0 when all pass.

    >>> import json, tempfile
    >>> case = {"model": {"name": "Exponential"}, "inputs": {"input": [0.0]},
    ...         "output_grads": {"output": [2.0]},
    ...         "results": {"eval": {"output": [1.0]}, "grad": {"input": [2.0]}}}
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    ...     json.dump({"test_exp": case}, f)
    >>> main([f.name, "--backends", "numpy", "--all"])  # doctest: +ELLIPSIS
    test_exp                                      numpy  PASS
    <BLANKLINE>
    tmp...json numpy: 1 of 1 pass
    1 of 1 pass
    0
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="the reference's *_test.json files")
    parser.add_argument("--backends", default="numpy,torch,jax",
                        help="comma-separated subset of numpy,torch,jax")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--all", action="store_true", help="print passing cases too")
    parser.add_argument("--ctor-fallback", action="store_true",
                        help="give static keys that are constructor arguments here (terminals "
                             "in the reference) to the constructor")
    ns = parser.parse_args(argv)
    global CTOR_FALLBACK
    CTOR_FALLBACK = ns.ctor_fallback
    names = [b for b in ns.backends.split(",") if b]
    outcomes: list[tuple[str, Outcome]] = []
    for path in ns.paths:
        cases = {k: v for k, v in load_cases(path).items() if ns.k in k}
        for backend_name in names:
            backend = BACKENDS[backend_name]()
            for name, case in cases.items():
                outcome = run_case(name, case, backend_name, backend)
                outcomes.append((os.path.basename(path), outcome))
                if ns.all or not outcome.passed:
                    status = "PASS" if outcome.passed else (
                        f"FAIL [{outcome.category}] {outcome.detail}")
                    print(f"{name:45s} {backend_name:6s} {status}", flush=True)
    print()
    for path in ns.paths:
        base = os.path.basename(path)
        for backend_name in names:
            mine = [o for f, o in outcomes if f == base and o.backend == backend_name]
            print(f"{base} {backend_name}: {sum(o.passed for o in mine)} of {len(mine)} pass")
    failing = Counter(o.category for _, o in outcomes if not o.passed)
    for category, count in failing.most_common():
        print(f"  failing, {category}: {count}")
    passed = sum(o.passed for _, o in outcomes)
    print(f"{passed} of {len(outcomes)} pass")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
