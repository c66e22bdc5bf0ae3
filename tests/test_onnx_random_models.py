"""Randomly generated models (``tests/model_generator.py``) exported to ONNX.

Each drawn spec is built, exported with a symbolic batch ``N`` (its data input is data and
the behaviour is inference, whatever the spec says for training) and run in onnxruntime at the
spec's batch size and at a larger one; ``onnx.checker`` must accept the file and every output
must equal the NumPy backend's (float32) within a relative 1e-5. 100 models in all
(hypothesis, derandomized: the same models on every run).
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.model_generator import Spec, build, specs
from tests.onnx_harness import roundtrip

#: models per input rank (2, 3, 4): 100 in all
EXAMPLES = {2: 34, 3: 33, 4: 33}

SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def check_spec(spec: Spec, folder: str) -> None:
    built = build(spec)
    batch = spec.input_shape[0]
    shapes = {k: ["N" if i == 0 and s[0] == batch else d for i, d in enumerate(s)]
              for k, s in built.data_shapes.items()}

    def draw(n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(spec.seed + n)
        return {k: rng.standard_normal([n if d == "N" else d for d in shape]).astype(np.float32)
                for k, shape in shapes.items()}

    roundtrip(lambda: build(spec).model, shapes, draw, [batch, batch + 2], folder,
              seed=spec.seed)


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_random_model_roundtrip(rank: int, tmp_path: Path) -> None:
    done: list[Spec] = []

    @settings(SETTINGS, max_examples=EXAMPLES[rank])
    @given(spec=specs(rank))
    def check(spec: Spec) -> None:
        with TemporaryDirectory(dir=tmp_path) as folder:
            check_spec(spec, folder)
        done.append(spec)

    check()
    assert len(done) == EXAMPLES[rank]  # every drawn model was exported and compared
