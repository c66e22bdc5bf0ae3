"""Measure the reference Mithril's primitive test vectors against this package.

The reference project (synnada-ai/mithril) keeps directed test vectors for its primitives in
``tests/json_files/primitives_directed_test.json``: one case per key, each naming a model class
(``"model": "Divide"`` or ``{"name": "Power", "args": {"robust": true}, "tuples": [...]}``), its
differentiable ``inputs``, ``static_inputs`` (constants, e.g. a loss's ``target``), the gradient
arriving at ``output`` (``output_grad``) and the expected ``results``: ``eval`` (the output) and
``grad`` (one array per input). An expected value may be a dict keyed by backend (``"jax"``,
``"torch"``, ``"numpy"``) where the reference's backends disagree. Keys this tool does not
use: ``pre_gradient`` (the reference's internal Jacobian of ``Softmax``), ``diag_zero`` and
``constants`` (one case, naming no terminal of its model).

This tool builds each case's model under the reference's class name with this package
(``mithril.models.<name>(**args)``), compiles it in float64 on NumPy, PyTorch and JAX, evaluates
the output and the input gradients and compares them with the vector, with the reference's own
criterion (every element within 1e-14 absolutely, or every element within 1e-14 relatively, and
the same shape). It prints one line per case and backend with the reason of a failure (missing
class, wrong terminal name, numbers off by X, ...) and the total.

The vectors are the reference's test data: they are not part of this repository. Fetch the json
file and pass its path::

    .venv/bin/python tools/reference_vectors.py /path/to/primitives_directed_test.json
    .venv/bin/python tools/reference_vectors.py FILE --backends numpy -k power --failures
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import mithril as ml
import mithril.models as models

ATOL = 1e-14
RTOL = 1e-14
BACKENDS: dict[str, Callable[[], Any]] = {
    "numpy": lambda: ml.NumpyBackend(dtype=ml.float64),
    "torch": lambda: ml.TorchBackend(dtype=ml.float64),
    "jax": lambda: ml.JaxBackend(dtype=ml.float64),
}


@dataclass
class Outcome:
    """One case on one backend: ``category`` is ``"pass"`` or why it failed."""

    case: str
    backend: str
    category: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether the case passed on this backend."""
        return self.category == "pass"


def load_cases(path: str) -> dict[str, dict[str, Any]]:
    """The vectors of a reference json file, by case name.

    >>> import json, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    ...     json.dump({"test_a": {"model": "Buffer", "inputs": {}, "results": {}}}, f)
    >>> list(load_cases(f.name))
    ['test_a']
    """
    with open(path) as f:
        cases: dict[str, dict[str, Any]] = json.load(f)
    return cases


def model_spec(case: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The class name and constructor arguments of a case (``tuples`` arguments as tuples).

    >>> model_spec({"model": {"name": "Sum", "args": {"axis": [0, 2]}, "tuples": ["axis"]}})
    ('Sum', {'axis': (0, 2)})
    >>> model_spec({"model": "Relu"})
    ('Relu', {})
    """
    spec = case["model"]
    if isinstance(spec, str):
        return spec, {}
    args = dict(spec.get("args", {}))
    for key in spec.get("tuples", []):
        args[key] = tuple(args[key])
    return spec["name"], args


def to_numpy(value: Any) -> np.ndarray:
    """A json value as a NumPy array: float64 if any element is a float, else int64.

    >>> to_numpy([[1], [2.5]]).dtype, to_numpy([1, 2]).dtype, to_numpy(3).shape
    (dtype('float64'), dtype('int64'), ())
    """
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr


def for_backend(value: Any, backend_name: str) -> Any:
    """The expected value for one backend (vectors give a dict where backends disagree).

    >>> for_backend({"jax": 1, "torch": 2, "numpy": 3}, "torch")
    2
    >>> for_backend([1.0], "jax")
    [1.0]
    """
    if isinstance(value, dict):
        return value[backend_name]
    return value


def mismatch(expected: Any, got: Any) -> str | None:
    """``None`` when ``got`` matches ``expected`` by the reference's criterion, else why not.

    Every element within ``ATOL`` absolutely, or every element within ``RTOL`` relatively, and
    the same shape (a json scalar expects shape ``()``).

    >>> mismatch([1.0, 2.0], np.array([1.0, 2.0])) is None
    True
    >>> mismatch([1.0, 2.0], np.array([1.0, 2.5]))
    'off by 0.5 (at index (1,): expected 2.0, got 2.5)'
    >>> mismatch([[1.0]], np.array([1.0]))
    'shape (1,), expected (1, 1)'
    """
    exp = np.asarray(expected, dtype=np.float64)
    out = np.asarray(got)
    if out.shape != exp.shape:
        return f"shape {out.shape}, expected {exp.shape}"
    out = out.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(exp - out)
        same = (exp == out)  # equal infinities have a nan difference
        diff = np.where(same, 0.0, diff)
        if np.all(diff < ATOL) or np.all(diff < np.abs(exp) * RTOL):
            return None
        bad = np.where(np.isnan(diff), np.inf, diff)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), exp.shape))
    worst = float(bad[idx]) if exp.shape else float(bad)
    return (f"off by {worst:.3g} (at index {idx}: expected {float(exp[idx])!r}, "
            f"got {float(out[idx])!r})")


def compare(expected: Any, got: np.ndarray, backend_name: str, label: str = ""
            ) -> tuple[str, str] | None:
    """``None`` when ``got`` matches the vector's value for ``backend_name``, else
    ``(category, detail)``. Where the vector gives this backend its own value (the reference's
    backends disagree, typically at a kink) and ``got`` is the NumPy value instead, the
    category says so: this package follows the NumPy convention on every backend.

    >>> compare({"jax": [1.0], "numpy": [0.0]}, np.array([0.0]), "jax")[0]
    'output: backend-specific expectation (we give NumPy convention)'
    >>> compare([1.0], np.array([1.0]), "jax") is None
    True
    """
    why = mismatch(for_backend(expected, backend_name), got)
    if why is None:
        return None
    if (isinstance(expected, dict) and backend_name != "numpy"
            and mismatch(expected["numpy"], got) is None):
        return ("output: backend-specific expectation (we give NumPy convention)",
                f"{label}{why}")
    return "output value", f"{label}{why}"


def build(case: Mapping[str, Any]) -> tuple[Any, str, str]:
    """The case's model, or ``(None, category, detail)`` when it cannot be built.

    >>> build({"model": "NoSuchModel"})[1:]
    ('missing class', 'mithril.models has no NoSuchModel')
    """
    name, args = model_spec(case)
    cls = getattr(models, name, None)
    if cls is None:
        return None, "missing class", f"mithril.models has no {name}"
    try:
        model = cls(**args)
    except Exception as err:  # any refusal is a result to report
        return None, "constructor", f"{name}({args}): {type(err).__name__}: {err}"
    return model, "", ""


def run_case(name: str, case: Mapping[str, Any], backend_name: str, backend: Any) -> Outcome:
    """Build, compile and evaluate one case on one backend and compare with the vector.

    >>> case = {"model": "Multiply", "inputs": {"left": [2.0], "right": [3.0]},
    ...         "output_grad": [1.0], "results": {"eval": [6.0],
    ...         "grad": {"left": [3.0], "right": [2.0]}}}
    >>> run_case("t", case, "numpy", ml.NumpyBackend(dtype=ml.float64)).passed
    True
    >>> run_case("t", {**case, "model": "Relu"}, "numpy", ml.NumpyBackend()).category
    'terminal name'
    """
    model, category, detail = build(case)
    if model is None:
        return Outcome(name, backend_name, category, detail)
    inputs = {k: to_numpy(v) for k, v in case.get("inputs", {}).items()}
    statics = {k: to_numpy(v) for k, v in case.get("static_inputs", {}).items()}
    results = case["results"]
    want_grads: dict[str, Any] = results.get("grad", {})
    terminals = list(model.input_terminals())
    for key in [*inputs, *statics]:
        if key not in terminals:
            return Outcome(name, backend_name, "terminal name",
                           f"{type(model).__name__} has no input {key!r} (has {terminals})")
    outputs = list(model.output_terminals())
    if outputs != ["output"]:
        return Outcome(name, backend_name, "terminal name",
                       f"{type(model).__name__} outputs {outputs}, expected ['output']")
    differentiable = bool(want_grads)
    shapes = {k: list(v.shape) for k, v in inputs.items()}  # constants carry their own
    try:
        pm = ml.compile(
            model, backend, shapes=shapes,
            constant_keys={k: backend.array(v) for k, v in statics.items()},
            trainable_keys=list(inputs) if differentiable else None,
            data_keys=None if differentiable else list(inputs),
            inference=not differentiable, jit=False)
    except Exception as err:
        return Outcome(name, backend_name, "compile", f"{type(err).__name__}: {err}")
    arrays = {k: backend.array(v) for k, v in inputs.items()}
    try:
        if differentiable:
            out_grad = backend.array(to_numpy(case["output_grad"]))
            outs, grads = pm.evaluate(arrays, output_gradients={"output": out_grad})
        else:
            outs, grads = pm.evaluate({}, arrays), {}
    except Exception as err:
        return Outcome(name, backend_name, "evaluate", f"{type(err).__name__}: {err}")
    why = compare(results["eval"], to_host(outs["output"]), backend_name)
    if why is not None:
        return Outcome(name, backend_name, *why)
    if differentiable:
        got_keys = {k for k, v in grads.items() if v is not None}
        if got_keys != set(want_grads):
            return Outcome(name, backend_name, "gradient keys",
                           f"gradients for {sorted(got_keys)}, expected {sorted(want_grads)}")
        for key, want in want_grads.items():
            why = compare(want, to_host(grads[key]), backend_name, f"{key}: ")
            if why is not None:
                category, detail = why
                return Outcome(name, backend_name, category.replace("output", "gradient"),
                               detail)
    return Outcome(name, backend_name, "pass")


def to_host(value: Any) -> np.ndarray:
    """A backend array as a NumPy array.

    >>> to_host(np.ones(2)).tolist()
    [1.0, 1.0]
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value)


def run(cases: Mapping[str, Mapping[str, Any]], backend_names: Sequence[str],
        show: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every case on every named backend (see ``BACKENDS``), in order.

    >>> case = {"model": "Add", "inputs": {"left": [1.0], "right": [2.0]},
    ...         "output_grad": [1.0], "results": {"eval": [3.0],
    ...         "grad": {"left": [1.0], "right": [1.0]}}}
    >>> [o.category for o in run({"t": case}, ["numpy"])]
    ['pass']
    """
    outcomes = []
    for backend_name in backend_names:
        backend = BACKENDS[backend_name]()
        for name, case in cases.items():
            try:
                outcome = run_case(name, case, backend_name, backend)
            except Exception as err:  # a crash of the runner is a result too
                outcome = Outcome(name, backend_name, "crash",
                                  f"{type(err).__name__}: {err} "
                                  f"{traceback.format_exc(limit=-2)!r}")
            outcomes.append(outcome)
            if show is not None:
                show(outcome)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the vectors of a json file and print per-case results and the total;
    0 when every run passes.

    >>> import json, tempfile
    >>> case = {"model": "Exponential", "inputs": {"input": [0.0]}, "output_grad": [2.0],
    ...         "results": {"eval": [1.0], "grad": {"input": [2.0]}}}
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    ...     json.dump({"test_exp": case}, f)
    >>> main([f.name, "--backends", "numpy"])  # doctest: +NORMALIZE_WHITESPACE
    test_exp                                      numpy  PASS
    <BLANKLINE>
    numpy: 1 of 1 pass
    1 of 1 pass (1 cases x 1 backends)
    0
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the reference's primitives_directed_test.json")
    parser.add_argument("--backends", default="numpy,torch,jax",
                        help="comma-separated subset of numpy,torch,jax")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--failures", action="store_true", help="print failing lines only")
    ns = parser.parse_args(argv)
    cases = {k: v for k, v in load_cases(ns.path).items() if ns.k in k}
    names = [b for b in ns.backends.split(",") if b]

    def show(o: Outcome) -> None:
        if o.passed and ns.failures:
            return
        status = "PASS" if o.passed else f"FAIL [{o.category}] {o.detail}"
        print(f"{o.case:45s} {o.backend:6s} {status}", flush=True)

    outcomes = run(cases, names, show)
    passed = sum(o.passed for o in outcomes)
    print()
    for backend_name in names:
        mine = [o for o in outcomes if o.backend == backend_name]
        print(f"{backend_name}: {sum(o.passed for o in mine)} of {len(mine)} pass")
    failing = Counter(o.category for o in outcomes if not o.passed)
    for category, count in failing.most_common():
        print(f"  failing, {category}: {count}")
    print(f"{passed} of {len(outcomes)} pass ({len(cases)} cases x {len(names)} backends)")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
