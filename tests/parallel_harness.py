"""What the JAX and PyTorch parallelism tests share.

Both run their checks in child processes (4 simulated JAX devices; 2 or 4 gloo processes under
torchrun) that write a JSON report, which the tests then read. The helpers here build the
models and plans of those checks, compare results, and run a child once per test session.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TOL = 1e-5

#: Megatron-style split of the ConvNet's convolutions and batch norms over the "model" axis
CONV_RULES = {r"conv2d(_\d+)?\.(weight|bias)": ("model",),
              r"batchnorm2d(_\d+)?\.(weight|bias|running_mean|running_var)": ("model",)}


def mlp() -> Any:
    """The 2-layer MLP of the acceptance checks: 8 -> 16 -> 4."""
    from mithril.models import Linear, Model, Relu

    model = Model()
    model |= Linear(16)(input_size=8)
    model += Relu()
    model += Linear(4)
    return model


def models() -> dict[str, tuple[Callable[[], Any], list[int]]]:
    """name -> (model factory, input shape)."""
    from mithril.models.zoo import conv_net

    return {"mlp": (mlp, [8, 8]), "convnet": (conv_net, [8, 3, 32, 32])}


def make_plan(name: str) -> Any:
    """The parallel plans the checks use, by name."""
    from mithril.parallel import DataParallel, ParallelPlan, TensorParallel

    plans = {"dp": DataParallel(), "tp": TensorParallel(),
             "general": ParallelPlan(rules=[(lambda key: key == "linear_1.weight",
                                             (None, "data"))],
                                     data={"input": ("data", None)}),
             "dp+tp": DataParallel() + TensorParallel(),
             "dp+tp-conv": DataParallel() + TensorParallel(CONV_RULES)}
    return plans[name]


def to_numpy(backend: Any, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every value as a NumPy array (sharded arrays and DTensors are gathered)."""
    return {k: backend.to_numpy(v) for k, v in values.items()}


def max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest absolute difference over the keys of ``b``, in float64."""
    return max((float(np.max(np.abs(np.asarray(a[k], np.float64)
                                    - np.asarray(b[k], np.float64)))) for k in b),
               default=0.0)


def error_of(fn: Callable[[], Any]) -> dict[str, Any]:
    """What ``fn()`` raises, as JSON: type name, message and class hierarchy."""
    try:
        fn()
    except Exception as err:  # the tests check type and message
        return {"type": type(err).__name__, "message": str(err),
                "mro": [c.__name__ for c in type(err).__mro__]}
    return {"type": None, "message": "no error"}


def run_once(tmp_path_factory: pytest.TempPathFactory, name: str,
             run: Callable[[Path], None]) -> dict[str, Any]:
    """``run(out)`` once per test session, even with pytest-xdist's several workers (they
    share the session's temporary directory; a file lock lets one run it, the others read)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, shared by the workers
    out, lock = base / f"{name}.json", base / f"{name}.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not out.exists():
            run(out)
    return json.loads(out.read_text())


def result(results: dict[str, Any], name: str) -> dict[str, Any]:
    """One check's report; fails with the child's traceback if the check crashed."""
    r = results[name]
    assert "crashed" not in r, r.get("crashed")
    return r
