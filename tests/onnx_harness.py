"""Shared checks of the ONNX export: export, ``onnx.checker``, onnxruntime against NumPy.

``roundtrip`` compiles a model on the NumPy backend (float32, inference behaviour), exports
it with the same parameters and state, checks the file with ``onnx.checker`` and runs it in
onnxruntime; every output must equal the NumPy backend's within a relative 1e-5 (of the
output's largest magnitude), at each batch size asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import mithril as ml

RTOL = 1e-5


def session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype == bool or np.issubdtype(want.dtype, np.integer):
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = float(np.max(np.abs(want[np.isfinite(want)]))) if np.isfinite(want).any() else 1.0
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                               atol=rtol * max(scale, 1e-30), err_msg=what)


def perturbed_state(pm: Any, seed: int) -> dict[str, np.ndarray]:
    """Running statistics away from their initial values (so that using them is tested)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in pm.initial_state_dict.items():
        base = np.asarray(v, dtype=np.float32)
        shift = rng.uniform(0.5, 1.5, base.shape) if "var" in k else \
            0.3 * rng.standard_normal(base.shape)
        out[k] = (base * shift if "var" in k else base + shift).astype(np.float32)
    return out


def roundtrip(make: Callable[[], Any], shapes: Mapping[str, Sequence[Any]],
              draw: Callable[[int], dict[str, np.ndarray]], batches: Sequence[int],
              folder: str, *, seed: int = 0, opset: int | None = None,
              trainable: Any = None) -> tuple[str, dict[str, np.ndarray]]:
    """Export ``make()`` and compare onnxruntime with the NumPy backend at each batch size.

    ``draw(n)`` gives the data for batch size ``n``. Returns the file and the parameters.
    """
    backend = ml.NumpyBackend()
    pm = ml.compile(make(), backend, shapes=dict(shapes), inference=True, jit=False,
                    trainable_keys=trainable)
    params = {k: np.asarray(v, np.float32) for k, v in pm.randomize_params(seed=seed).items()}
    state = perturbed_state(pm, seed)
    path = os.path.join(folder, "model.onnx")
    ml.export_onnx(make(), params, path, shapes=dict(shapes), state=state, opset=opset)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    assert sorted(names) == sorted(pm.output_keys), (names, pm.output_keys)
    assert sorted(i.name for i in sess.get_inputs()) == sorted(pm.data_keys)
    for n in batches:
        feed = {k: (v.astype(np.float32) if v.dtype == np.float64 else v)
                for k, v in draw(n).items()}
        want = pm.evaluate(params, feed, state=state)
        want = want[0] if isinstance(want, tuple) else want
        got = dict(zip(names, sess.run(None, feed), strict=True))
        for k in names:
            assert_close(got[k], backend.to_numpy(want[k]), f"output {k!r} at batch {n}")
    return path, params
