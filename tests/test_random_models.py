"""Randomly generated models, compiled on every backend, against independent references.

Specs come from :mod:`tests.model_generator` (random compositions of library layers and
primitives: chains, branches, residuals, nested composites, named and exposed terminals, extra
inputs, ``|=`` and ``+=``). Each is compiled in float64 and

- on PyTorch, JAX and MLX compared with the NumPy float64 backend: outputs, gradients of every
  trainable input (for random output gradients) and new state;
- on NumPy compared with central finite differences along random directions;
- on JAX and MLX also with ``jit=True`` (fewer examples: tracing is slower).

Hypothesis runs derandomized (the same examples on every run; CI is reproducible) and shrinks
a failure to a small spec; keep it as an explicit test in ``tests/regressions/``. Specs are
drawn per input rank (2, 3, 4) so each family of layers gets its share of examples; the same
specs run on every backend. Sizes (``EXAMPLES``): 3 ranks x (100 PyTorch + 100 MLX + 40 JAX +
100 finite-difference) = 1020 generated models, each also compiled as the NumPy reference,
plus 23 jitted; about two minutes on 2 cores.
"""

from __future__ import annotations

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

#: examples per (backend, input rank); JAX runs each primitive eagerly through XLA (about
#: 0.5 s per model), the others take a few milliseconds per model
EXAMPLES = {"torch": 100, "mlx": 100, "jax": 40, "numpy": 100}
#: jitted examples: tracing and compiling take about 1 s (JAX) and 4 s (MLX) per model
JIT_EXAMPLES = {"jax": 15, "mlx": 8}

SETTINGS = settings(deadline=None, derandomize=True, database=None,
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
