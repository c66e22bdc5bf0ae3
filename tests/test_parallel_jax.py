"""Parallelism on JAX (``mithril.parallel`` on ``jax.sharding``) against single-device runs.

The multi-device checks run once, in a child process that sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX is imported (this file is
also that child: ``python tests/test_parallel_jax.py RESULTS.json``). The child runs each
model on one device (plain ``ml.JaxBackend()``, the independent reference) and on the 4-device
mesh with the plan, and writes the measured differences and layouts; the tests below assert on
them, so every check reports on its own. Checks that need a single device only run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.parallel_harness import (
    TOL,
    error_of,
    make_plan,
    max_diff,
    mlp,
    models,
    result,
    run_once,
    to_numpy,
)

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 4


# ==============================================================================================
# the child process
# ==============================================================================================


#: (name, model, mesh, plan) of the equivalence checks
CASES = [
    ("mlp-dp", "mlp", (4,), "dp"),
    ("mlp-tp", "mlp", (4,), "tp"),
    ("mlp-2d", "mlp", (2, 2), "dp+tp"),
    ("convnet-dp", "convnet", (4,), "dp"),
    ("convnet-tp", "convnet", (4,), "tp"),
    ("convnet-2d", "convnet", (2, 2), "dp+tp-conv"),
    ("mlp-general-plan", "mlp", (4,), "general"),
]


def _run(model_name: str, backend: Any, parallel: Any, param_seed: int = 1,
         **options: Any) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    make, shape = models()[model_name]
    import mithril as ml

    pm = ml.compile(make(), backend, shapes={"input": shape}, parallel=parallel, **options)
    params = pm.randomize_params(seed=param_seed)
    x = np.random.default_rng(0).standard_normal(shape)
    out_shape = pm.shapes["output"]
    seed = np.random.default_rng(1).standard_normal(out_shape)
    inputs = {"input": backend.array(x)}
    if options.get("inference"):
        outputs = pm.evaluate(params, inputs)
        grads: dict[str, Any] = {}
    else:
        outputs, grads = pm.evaluate(params, inputs, output_gradients={
            "output": backend.array(seed)})
    return pm, params, outputs, grads, pm.state


_REFERENCES: dict[Any, Any] = {}


def check_equivalence(model_name: str, mesh: tuple[int, ...], plan_name: str,
                      dtype: str = "float64", **options: Any) -> dict[str, Any]:
    import jax

    import mithril as ml
    from mithril.parallel import shard_shapes

    dt = getattr(ml, dtype)
    key = (model_name, dtype, tuple(sorted(options.items())))
    if key not in _REFERENCES:  # the single-device run, shared by the plans
        _REFERENCES[key] = _run(model_name, ml.JaxBackend(dtype=dt), None, **options)[2:]
    out1, g1, st1 = _REFERENCES[key]
    backend = ml.JaxBackend(dtype=dt, device_mesh=mesh)
    pm, params, out2, g2, st2 = _run(model_name, backend, make_plan(plan_name), **options)
    scale = max([1.0] + [float(np.max(np.abs(np.asarray(v)))) for v in g1.values()])
    layout_ok = all(g2[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim)
                    for k in g2)
    fresh = pm.initial_state_dict  # laid out by the plan
    state_ok = all(st2[k].sharding.is_equivalent_to(fresh[k].sharding, st2[k].ndim)
                   for k in st2)
    out = out2["output"]
    return {
        "output": max_diff(out1, out2), "grads": max_diff(g1, g2), "state": max_diff(st1, st2),
        "grad_scale": scale, "grad_layouts_match_params": layout_ok, "state_layouts": state_ok,
        "output_spec": str(out.sharding.spec) if isinstance(out, jax.Array) else "",
        "split_params": sorted(k for k, s in pm.parallel.params.items() if any(s)),
        "param_shards": {k: [list(s) for s in shard_shapes(v)]
                         for k, v in params.items()},
    }


def check_as_given(model_name: str) -> dict[str, Any]:
    """No ``parallel=``: a batch split by the creator stays split; same numbers as one device."""
    import mithril as ml

    make, shape = models()[model_name]
    x = np.random.default_rng(0).standard_normal(shape)
    results = []
    for backend, split in ((ml.JaxBackend(dtype=ml.float64), None),
                           (ml.JaxBackend(dtype=ml.float64, device_mesh=(4,)), (4,))):
        pm = ml.compile(make(), backend, shapes={"input": shape})
        params = pm.randomize_params(seed=1)
        out, g = pm.evaluate(params, {"input": backend.array(x, device_mesh=split)},
                             output_gradients={"output": backend.ones(*pm.shapes["output"])})
        results.append(tuple(to_numpy(backend, d) for d in (out, g, pm.state)))
    (o1, g1, s1), (o2, g2, s2) = results
    return {"output": max_diff(o1, o2), "grads": max_diff(g1, g2), "state": max_diff(s1, s2),
            "output_layout": str(out["output"].sharding.spec),
            "grad_layouts_match_params": all(
                g[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim) for k in g),
            "plan": pm.parallel.plan}


def check_training(model_name: str, mesh: tuple[int, ...], plan_name: str) -> dict[str, Any]:
    """20 Adam steps of the guide's loop, on one device and on the mesh."""
    import jax

    import mithril as ml

    make, shape = models()[model_name]
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((20, *shape))
    classes = 10 if model_name == "convnet" else 4
    ys = rng.integers(0, classes, (20, shape[0]))

    def train(backend: Any, parallel: Any) -> tuple[list[float], dict[str, Any]]:
        pm = ml.compile(make(), backend, shapes={"input": shape}, parallel=parallel)
        params = pm.randomize_params(seed=3)
        optimizer = ml.Adam(learning_rate=1e-3)
        opt_state = optimizer.init(params)
        # the guide's loop; the loss and the update are jitted (as usual on JAX), which keeps
        # the test quick: eager JAX compiles every small operation on sharded arrays anew.
        # Our own jax.jit of a float64 backend's functions needs x64 on around it
        # (docs/backends/jax.md): the backend never turns it on process-wide.
        loss_fn = jax.jit(backend.cross_entropy)
        loss_grad_fn = jax.jit(backend.cross_entropy_grad)
        update = jax.jit(optimizer.update)
        losses = []
        with jax.enable_x64(True):
            for step in range(20):
                inputs = {"input": backend.array(xs[step])}
                targets = backend.array(ys[step])
                logits = pm.evaluate(params, inputs)["output"]
                losses.append(float(backend.to_numpy(loss_fn(logits, targets))))
                _, grads = pm.evaluate(params, inputs,
                                       {"output": loss_grad_fn(logits, targets)})
                params, opt_state = update(params, grads, opt_state)
        return losses, params

    single, p1 = train(ml.JaxBackend(dtype=ml.float64), None)
    parallel, p2 = train(ml.JaxBackend(dtype=ml.float64, device_mesh=mesh), make_plan(plan_name))
    return {"single": single, "parallel": parallel,
            "loss": float(np.max(np.abs(np.array(single) - np.array(parallel)))),
            "params": max_diff(p1, p2)}


def check_creators() -> dict[str, Any]:
    import mithril as ml
    from mithril.parallel import from_local, shard_shapes

    b1 = ml.JaxBackend(device_mesh=(4,))
    x = b1.ones(256, 128, device_mesh=(4,))
    b2 = ml.JaxBackend(device_mesh=(2, 2))
    y = b2.ones(256, 128, device_mesh=(2, 2))
    z = b1.array(np.arange(64.0).reshape(8, 8), device_mesh=(2, 2))  # its own 2x2 mesh
    r = b1.randn(8, 4)  # replicated on the backend's mesh
    named = b2.zeros(8, 6, device_mesh=(None, "model"))
    local = from_local(b1, np.arange(16.0).reshape(8, 2))  # one process: all
    pieces = [np.asarray(s.data) for s in sorted(z.addressable_shards,
                                                  key=lambda s: s.device.id)]
    distinct = len({p.tobytes() for p in pieces})
    return {
        "x": [list(s) for s in shard_shapes(x)],
        "y": [list(s) for s in shard_shapes(y)],
        "z": [list(s) for s in shard_shapes(z)],
        "r": [list(s) for s in shard_shapes(r)],
        "named": [list(s) for s in shard_shapes(named)],
        "local": [list(s) for s in shard_shapes(local)],
        "z_distinct_pieces": distinct,
        "z_roundtrip": bool(np.array_equal(b1.to_numpy(z), np.arange(64.0).reshape(8, 8))),
        "x_devices": len(x.sharding.device_set),
    }


def check_input_layout() -> dict[str, Any]:
    """What the data-parallel plan does to an input: split on the batch over 4 devices."""
    import jax

    import mithril as ml
    from mithril.parallel import DataParallel, shard_shapes

    backend = ml.JaxBackend(device_mesh=(4,))
    pm = ml.compile(mlp(), backend, shapes={"input": [8, 8]}, parallel=DataParallel())
    placed = pm.place_inputs({"input": jax.numpy.ones((8, 8))})["input"]
    return {"input": [list(s) for s in shard_shapes(placed)]}


def check_errors() -> dict[str, Any]:
    import mithril as ml
    from mithril.parallel import DataParallel, TensorParallel

    backend = ml.JaxBackend(device_mesh=(4,))
    pm = ml.compile(mlp(), backend, shapes={"input": ["N", 8]}, parallel=DataParallel())
    params = pm.randomize_params()
    return {
        "too_many": error_of(lambda: ml.JaxBackend(device_mesh=(8,))),
        "too_few": error_of(lambda: ml.JaxBackend(device_mesh=(2,))),
        "batch": error_of(lambda: pm.evaluate(params, {"input": backend.ones(6, 8)})),
        "rule": error_of(lambda: ml.compile(models()["convnet"][0](), backend,
                                          parallel=TensorParallel({r"linear\.weight":
                                                                   ("data", None)}))),
        "creator": error_of(lambda: backend.ones(6, 4, device_mesh=(4,))),
        "axis": error_of(lambda: ml.compile(mlp(), backend, shapes={"input": [8, 8]},
                                          parallel=TensorParallel(axis="model"))),
    }


def worker(out_path: str) -> None:
    import jax

    results: dict[str, Any] = {"devices": len(jax.devices())}

    def record(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except Exception:
            results[name] = {"crashed": traceback.format_exc()}

    for name, model, mesh, plan in CASES:
        record(name, lambda m=model, s=mesh, p=plan: check_equivalence(m, s, p))
    record("mlp-dp-float32", lambda: check_equivalence("mlp", (4,), "dp", "float32"))
    record("mlp-dp-nojit", lambda: check_equivalence("mlp", (4,), "dp", jit=False))
    record("convnet-dp-inference", lambda: check_equivalence("convnet", (4,), "dp",
                                                             inference=True))
    record("train-convnet-dp", lambda: check_training("convnet", (4,), "dp"))
    record("train-mlp-2d", lambda: check_training("mlp", (2, 2), "dp+tp"))
    record("convnet-as-given", lambda: check_as_given("convnet"))
    record("creators", check_creators)
    record("input_layout", check_input_layout)
    record("errors", check_errors)
    Path(out_path).write_text(json.dumps(results))


# ==============================================================================================
# the tests
# ==============================================================================================
@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    def run(out: Path) -> None:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
                   JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, __file__, str(out)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, \
            f"the 4-device JAX worker failed:\n{proc.stdout}\n{proc.stderr}"

    data = run_once(tmp_path_factory, "parallel_jax_results", run)
    assert data["devices"] == DEVICES
    return data


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_same_outputs_gradients_and_state_as_one_device(results: dict[str, Any],
                                                        name: str) -> None:
    r = result(results, name)
    assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, r
    assert r["grad_layouts_match_params"], "gradients must come back laid out as their params"
    assert r["state_layouts"], "new state must keep the state's layout"


def test_float32_matches_within_float32_noise(results: dict[str, Any]) -> None:
    # (float32 on one device is itself ~1e-5 away from exact for gradients of size ~10)
    r = result(results, "mlp-dp-float32")
    assert r["output"] <= TOL and r["grads"] <= TOL * r["grad_scale"], r


def test_without_jit_and_in_inference_mode(results: dict[str, Any]) -> None:
    for name in ("mlp-dp-nojit", "convnet-dp-inference"):
        r = result(results, name)
        assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, (name, r)


def test_data_parallel_really_splits_the_batch(results: dict[str, Any]) -> None:
    r = result(results, "convnet-dp")
    assert r["output_spec"].startswith("P('data'"), r["output_spec"]
    assert r["split_params"] == []  # the model is replicated
    assert r["param_shards"]["linear.weight"] == [[10, 2048]] * 4
    assert result(results, "input_layout")["input"] == [[2, 8]] * 4


def test_tensor_parallel_splits_linear_layers_megatron_style(results: dict[str, Any]) -> None:
    r = result(results, "mlp-tp")  # Linear(8 -> 16) column-parallel, Linear(16 -> 4) row-parallel
    assert r["split_params"] == ["linear.bias", "linear.weight", "linear_1.weight"]
    assert r["param_shards"]["linear.weight"] == [[4, 8]] * 4
    assert r["param_shards"]["linear.bias"] == [[4]] * 4
    assert r["param_shards"]["linear_1.weight"] == [[4, 4]] * 4
    assert r["param_shards"]["linear_1.bias"] == [[4]] * 4  # replicated
    conv = result(results, "convnet-tp")  # 10 outputs do not divide by 4: row-parallel instead
    assert conv["param_shards"]["linear.weight"] == [[10, 512]] * 4


def test_2d_mesh_splits_batch_and_model(results: dict[str, Any]) -> None:
    r = result(results, "mlp-2d")
    assert r["output_spec"].startswith("P('data'"), r["output_spec"]
    assert r["param_shards"]["linear.weight"] == [[8, 8]] * 4
    conv = result(results, "convnet-2d")
    assert conv["param_shards"]["conv2d_1.weight"] == [[16, 16, 3, 3]] * 4
    assert conv["param_shards"]["batchnorm2d.weight"] == [[8]] * 4
    assert "linear.weight" in conv["split_params"]


@pytest.mark.parametrize("name", ["train-convnet-dp", "train-mlp-2d"])
def test_training_20_adam_steps_matches_one_device(results: dict[str, Any], name: str) -> None:
    r = result(results, name)
    assert len(r["parallel"]) == 20
    assert r["loss"] <= TOL and r["params"] <= TOL, r
    assert r["single"][0] != r["single"][-1]  # it did train


def test_without_a_plan_arrays_keep_their_layout(results: dict[str, Any]) -> None:
    r = result(results, "convnet-as-given")  # input split by backend.array(x, device_mesh=...)
    assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, r
    assert r["plan"] == "AsGiven()" and r["grad_layouts_match_params"]
    assert r["output_layout"].startswith("P('data'"), r["output_layout"]


def test_creators_make_split_arrays(results: dict[str, Any]) -> None:
    r = result(results, "creators")
    assert r["x"] == [[64, 128]] * 4 and r["x_devices"] == 4
    assert r["y"] == [[128, 64]] * 4  # rows in 2 pieces, columns in 2
    assert r["z"] == [[4, 4]] * 4 and r["z_distinct_pieces"] == 4 and r["z_roundtrip"]
    assert r["r"] == [[8, 4]] * 4  # replicated: every device holds all of it
    assert r["named"] == [[8, 3]] * 4
    assert r["local"] == [[2, 2]] * 4


def test_general_plan_with_a_predicate_rule_and_data_rules(results: dict[str, Any]) -> None:
    r = result(results, "mlp-general-plan")
    assert r["split_params"] == ["linear_1.weight"]
    assert r["param_shards"]["linear_1.weight"] == [[4, 4]] * 4
    assert r["output_spec"].startswith("P('data'"), r["output_spec"]


def test_mesh_larger_than_the_devices_says_how_to_get_more(results: dict[str, Any]) -> None:
    e = result(results, "errors")["too_many"]
    assert e["type"] == "BackendUnavailableError"
    assert "needs 8 devices" in e["message"] and "4 cpu device(s)" in e["message"]
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in e["message"]
    assert "jax.distributed.initialize()" in e["message"]
    e = result(results, "errors")["too_few"]
    assert e["type"] == "BackendUnavailableError" and "device_mesh=(4,)" in e["message"]


def test_dimensions_not_divisible_by_the_mesh(results: dict[str, Any]) -> None:
    errors = result(results, "errors")
    for name, where in (("batch", "input 'input'"), ("rule", "parameter 'linear.weight'"),
                        ("creator", "an array of shape [6, 4]")):
        e = errors[name]
        assert e["type"] == "ShapeMismatchError", (name, e)
        assert where in e["message"] and "cannot be split evenly" in e["message"], e
        assert "make it a multiple of 4" in e["message"], e


def test_unknown_mesh_axis(results: dict[str, Any]) -> None:
    e = result(results, "errors")["axis"]
    assert e["type"] == "CompileError" and "no axis 'model'" in e["message"], e
    assert "'data' (size 4)" in e["message"]


# ---- single-device checks, in this process ----------------------------------------------------
def test_same_script_runs_on_one_device() -> None:
    import jax

    import mithril as ml
    from mithril.parallel import DataParallel, ParallelCompiledModel

    n = len(jax.devices())
    backend = ml.JaxBackend(dtype=ml.float64, device_mesh=(n,))
    ref = ml.JaxBackend(dtype=ml.float64)
    x = np.random.default_rng(0).standard_normal((8 * n, 8))
    out = {}
    for b, plan in ((ref, None), (backend, DataParallel())):
        pm = ml.compile(mlp(), b, shapes={"input": [8 * n, 8]}, parallel=plan)
        out[plan is None] = pm.evaluate(pm.randomize_params(seed=0), {"input": b.array(x)},
                                        output_gradients={"output": b.ones(8 * n, 4)})
    assert max_diff(out[True][0], out[False][0]) <= 1e-12
    assert max_diff(out[True][1], out[False][1]) <= 1e-12
    assert isinstance(pm, ParallelCompiledModel)
    assert "DataParallel(axis=0)" in pm.summary(print_out=False)


def test_numpy_and_mlx_raise_parallelism_needs_jax_or_torch() -> None:
    import mithril as ml
    from mithril.errors import BackendUnavailableError
    from mithril.parallel import DataParallel

    with pytest.raises(BackendUnavailableError, match="parallelism needs JAX or PyTorch"):
        ml.compile(mlp(), ml.NumpyBackend(), shapes={"input": [4, 8]},
                   parallel=DataParallel())
    with pytest.raises(BackendUnavailableError, match="parallelism needs JAX or PyTorch"):
        ml.NumpyBackend().ones(4, 4, device_mesh=(2,))
    mlx = pytest.importorskip("mlx.core")
    assert mlx is not None
    with pytest.raises(BackendUnavailableError, match="parallelism needs JAX or PyTorch"):
        ml.MlxBackend().zeros(4, 4, device_mesh=(2,))
    with pytest.raises(BackendUnavailableError, match="parallelism needs JAX or PyTorch"):
        ml.compile(mlp(), ml.MlxBackend(), shapes={"input": [4, 8]}, parallel=DataParallel())


def test_plan_needs_a_mesh_and_a_plan() -> None:
    import mithril as ml
    from mithril.errors import CompileError
    from mithril.parallel import DataParallel, TensorParallel

    with pytest.raises(CompileError, match=re.escape("ml.JaxBackend(device_mesh=(2,))")):
        ml.compile(mlp(), ml.JaxBackend(), shapes={"input": [4, 8]}, parallel=DataParallel())
    with pytest.raises(TypeError, match="parallel= takes a plan"):
        ml.compile(mlp(), ml.JaxBackend(device_mesh=(1,)), parallel="data")
    with pytest.raises(CompileError, match="both set batch axis"):
        DataParallel() + DataParallel(axis=1)
    with pytest.raises(CompileError, match="bad regular expression"):
        TensorParallel({"linear[": ("model",)})
    with pytest.raises(CompileError, match="uses mesh axis 'data' twice"):
        ml.compile(mlp(), ml.JaxBackend(device_mesh=(1,)), shapes={"input": [4, 8]},
                   parallel=TensorParallel({r"linear\.weight": ("data", "data")}))
    with pytest.raises(CompileError, match="has 3 entries but"):
        ml.compile(mlp(), ml.JaxBackend(device_mesh=(1,)), shapes={"input": [4, 8]},
                   parallel=TensorParallel({r"linear\.bias": (None, None, "data")}))


def test_plans_read_well() -> None:
    from mithril.parallel import DataParallel, ParallelPlan, TensorParallel

    assert repr(DataParallel() + TensorParallel()) == \
        "DataParallel(axis=0) + TensorParallel(axis=-1)"
    assert repr(ParallelPlan(data={"x": ("data",)})) == "ParallelPlan(data={'x': ('data',)})"


if __name__ == "__main__":
    worker(sys.argv[1])
