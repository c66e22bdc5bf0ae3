"""Randomly generated models, compiled on every backend, against independent references.

Specs come from :mod:`tests.model_generator` (random compositions of library layers and
primitives: chains, branches, residuals, nested composites, named and exposed terminals, extra
inputs, ``|=`` and ``+=``). Each is compiled in float64 and

- on PyTorch, JAX and MLX compared with the NumPy float64 backend: outputs, gradients of every
  trainable input (for random output gradients) and new state;
- on NumPy compared with central finite differences along random directions;
- on JAX and MLX also with ``jit=True`` (fewer examples: tracing is slower).

The cross-backend comparisons would pass a wiring bug shared by every backend, so the NumPy
float64 backend (the reference of the others) is also compared with an independent reference:
the same spec computed with PyTorch functional ops in float64
(:mod:`tests.torch_functional_reference`), outputs, gradients and new BatchNorm state, and the
compiled model's parameter keys with the keys Mithril's naming rule gives. Stateful specs (a
``BatchNorm2d`` tracking running statistics first, more drawn) run in both modes; the
finite-difference check covers inference specs too (their derivative from PyTorch).

Hypothesis runs derandomized (the same examples on every run; CI is reproducible) and shrinks
a failure to a small spec; keep it as an explicit test in ``tests/regressions/``. With
``MITHRIL_HYPOTHESIS_FRESH=1`` (``make mutate``, ``make test-fresh``) it draws fresh examples.
Specs are drawn per input rank (2, 3, 4) so each family of layers gets its share of examples;
the same specs run on every backend. Sizes (``EXAMPLES``): 3 ranks x (100 PyTorch + 100 MLX + 40
JAX + 100 finite-difference + 100 PyTorch-functional) generated models, plus 2 x 40 stateful
ones and 32 jitted; about three minutes on 2 cores.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests import model_generator
from tests.model_generator import (
    Spec,
    build,
    check_against_reference,
    check_finite_differences,
    specs,
)
from tests.torch_functional_reference import check_against_torch

#: examples per (backend, input rank); JAX runs each primitive eagerly through XLA (about
#: 0.5 s per model), the others take a few milliseconds per model
EXAMPLES = {"torch": 100, "mlx": 100, "jax": 40, "numpy": 100, "pytorch_functional": 100,
            "stateful": 40}
#: jitted examples: tracing and compiling take about 1 s (JAX) and 4 s (MLX) per model
JIT_EXAMPLES = {"jax": 20, "mlx": 12}

#: fresh random examples instead of the fixed derandomized ones (mutation runs, long runs)
FRESH = os.environ.get("MITHRIL_HYPOTHESIS_FRESH") == "1"

SETTINGS = settings(deadline=None, derandomize=not FRESH, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("backend_name", ["torch", "jax", "mlx"])
def test_random_model_matches_numpy_float64(backend_name: str, rank: int) -> None:
    """Outputs, gradients and state of a random model equal NumPy float64's."""

    @settings(SETTINGS, max_examples=EXAMPLES[backend_name])
    @given(spec=specs(rank))
    def check(spec: Spec) -> None:
        check_against_reference(spec, backend_name)

    check()


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_random_model_gradients_match_finite_differences(rank: int) -> None:
    """NumPy float64 gradients of a random model equal central finite differences."""

    @settings(SETTINGS, max_examples=EXAMPLES["numpy"])
    @given(spec=specs(rank))
    def check(spec: Spec) -> None:
        check_finite_differences(spec)

    check()


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_random_model_matches_pytorch_functional(rank: int) -> None:
    """NumPy float64 outputs, gradients, state and parameter keys equal the same spec written
    with PyTorch functional ops (an implementation that shares no code with Mithril)."""

    @settings(SETTINGS, max_examples=EXAMPLES["pytorch_functional"])
    @given(spec=specs(rank))
    def check(spec: Spec) -> None:
        check_against_torch(spec)

    check()


@pytest.mark.parametrize("inference", [False, True], ids=["training", "inference"])
def test_stateful_random_model_matches_pytorch_functional(inference: bool) -> None:
    """Models starting with a tracking BatchNorm2d: running statistics moved by momentum with
    the unbiased batch variance (training) or used as they are (inference), as in PyTorch; and
    the gradients (training) or outputs' derivatives (inference) by finite differences."""

    @settings(SETTINGS, max_examples=EXAMPLES["stateful"])
    @given(spec=specs(stateful=True, inference=inference))
    def check(spec: Spec) -> None:
        check_against_torch(spec)
        check_finite_differences(spec, directions=1)

    check()


@pytest.mark.parametrize("backend_name", ["jax", "mlx"])
def test_random_model_jitted_matches_numpy_float64(backend_name: str) -> None:
    """The same with the framework's JIT on (JAX and MLX trace the generated code)."""

    @settings(SETTINGS, max_examples=JIT_EXAMPLES[backend_name])
    @given(spec=specs())
    def check(spec: Spec) -> None:
        check_against_reference(spec, backend_name, jit=True)

    check()


def test_generated_models_are_rebuilt_identically() -> None:
    """A spec builds the same model every time (regression tests rely on it)."""

    @settings(SETTINGS, max_examples=10)
    @given(spec=specs())
    def check(spec: Spec) -> None:
        a, b = build(spec), build(spec)
        assert a.model.to_dict() == b.model.to_dict()
        assert a.data_shapes == b.data_shapes and a.output_shapes == b.output_shapes
        assert eval(repr(spec), vars(model_generator)) == spec  # pasteable as a regression

    check()
