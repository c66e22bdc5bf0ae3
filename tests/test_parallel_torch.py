"""Parallelism on PyTorch (``mithril.parallel`` on ``torch.distributed`` + DTensor) against
single-device runs.

The multi-process checks run once under
``python -m torch.distributed.run --nproc-per-node 2 tests/test_parallel_torch.py RESULTS.json``
(two gloo processes on the CPU; this file is also the worker). Each rank runs every model on
its own, without a mesh (plain ``ml.TorchBackend()``, the independent reference), and on the
2-process mesh with the plan; rank 0 writes the measured differences and every rank's shard
shapes, and the tests below assert on them. ``examples/data_parallel.py`` is run both ways too.
"""

from __future__ import annotations

import json
import os
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
PROCESSES = 2
TIMEOUT = 300


# ==============================================================================================
# the worker (one per process)
# ==============================================================================================


CASES = [
    ("mlp-dp", "mlp", (2,), "dp"),
    ("mlp-tp", "mlp", (2,), "tp"),
    ("mlp-2d-data2", "mlp", (2, 1), "dp+tp"),
    ("mlp-2d-model2", "mlp", (1, 2), "dp+tp"),
    ("convnet-dp", "convnet", (2,), "dp"),
    ("convnet-tp", "convnet", (2,), "tp"),
    ("convnet-2d-data2", "convnet", (2, 1), "dp+tp-conv"),
    ("convnet-2d-model2", "convnet", (1, 2), "dp+tp-conv"),
]


def _all_ranks(value: Any) -> list[Any]:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _run(model_name: str, backend: Any, parallel: Any, **options: Any) -> tuple[Any, ...]:
    import mithril as ml

    make, shape = models()[model_name]
    pm = ml.compile(make(), backend, shapes={"input": shape}, parallel=parallel, **options)
    params = pm.randomize_params(seed=1)
    x = np.random.default_rng(0).standard_normal(shape)
    seed = np.random.default_rng(1).standard_normal(pm.shapes["output"])
    inputs = {"input": backend.array(x)}
    if options.get("inference"):
        outputs, grads = pm.evaluate(params, inputs), {}
    else:
        outputs, grads = pm.evaluate(params, inputs, output_gradients={
            "output": backend.array(seed)})
    return pm, params, outputs, grads, pm.state


_REFERENCES: dict[Any, Any] = {}


def check_equivalence(model_name: str, mesh: tuple[int, ...], plan_name: str,
                      dtype: str = "float64", **options: Any) -> dict[str, Any]:
    import mithril as ml
    from mithril.parallel import shard_shapes

    dt = getattr(ml, dtype)
    key = (model_name, dtype, tuple(sorted(options.items())))
    if key not in _REFERENCES:
        ref = ml.TorchBackend(dtype=dt)
        _REFERENCES[key] = [to_numpy(ref, d) for d in _run(model_name, ref, None, **options)[2:]]
    out1, g1, st1 = _REFERENCES[key]
    backend = ml.TorchBackend(dtype=dt, device_mesh=mesh)
    pm, params, out2, g2, st2 = _run(model_name, backend, make_plan(plan_name), **options)
    layouts_ok = all(type(g2[k]).__name__ == "DTensor"
                     and tuple(g2[k].placements) == tuple(params[k].placements) for k in g2)
    fresh = pm.initial_state_dict
    state_ok = all(tuple(st2[k].placements) == tuple(fresh[k].placements) for k in st2)
    placements = str(tuple(out2["output"].placements))
    shards = {k: list(shard_shapes(v)[0]) for k, v in params.items()}
    scale = max([1.0] + [float(np.max(np.abs(v))) for v in g1.values()])
    result = {
        "output": max_diff(out1, to_numpy(backend, out2)),
        "grads": max_diff(g1, to_numpy(backend, g2)),
        "state": max_diff(st1, to_numpy(backend, st2)),
        "grad_scale": scale, "grad_layouts_match_params": layouts_ok, "state_layouts": state_ok,
        "output_placements": placements,
        "split_params": sorted(k for k, s in pm.parallel.params.items() if any(s)),
        "param_shards_by_rank": _all_ranks(shards),
    }
    return result


def check_as_given(model_name: str) -> dict[str, Any]:
    """No ``parallel=``: a batch split by the creator stays split; same numbers as one device."""
    import mithril as ml

    make, shape = models()[model_name]
    x = np.random.default_rng(0).standard_normal(shape)
    results = []
    for backend, split in ((ml.TorchBackend(dtype=ml.float64), None),
                           (ml.TorchBackend(dtype=ml.float64, device_mesh=(2,)), (2,))):
        pm = ml.compile(make(), backend, shapes={"input": shape})
        params = pm.randomize_params(seed=1)
        out, g = pm.evaluate(params, {"input": backend.array(x, device_mesh=split)},
                             output_gradients={"output": backend.ones(*pm.shapes["output"])})
        results.append(tuple(to_numpy(backend, d) for d in (out, g, pm.state)))
    (o1, g1, s1), (o2, g2, s2) = results
    return {"output": max_diff(o1, o2), "grads": max_diff(g1, g2), "state": max_diff(s1, s2),
            "output_layout": str(tuple(out["output"].placements)),
            "grad_layouts_match_params": all(
                tuple(g[k].placements) == tuple(params[k].placements) for k in g),
            "plan": pm.parallel.plan}


def check_training(model_name: str, mesh: tuple[int, ...], plan_name: str) -> dict[str, Any]:
    """20 Adam steps of the guide's loop, without a mesh and on the mesh."""
    import mithril as ml

    make, shape = models()[model_name]
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((20, *shape))
    ys = rng.integers(0, 10 if model_name == "convnet" else 4, (20, shape[0]))

    def train(backend: Any, parallel: Any) -> tuple[list[float], dict[str, Any]]:
        pm = ml.compile(make(), backend, shapes={"input": shape}, parallel=parallel)
        params = pm.randomize_params(seed=3)
        optimizer = ml.Adam(learning_rate=1e-3)
        opt_state = optimizer.init(params)
        losses = []
        for step in range(20):
            inputs = {"input": backend.array(xs[step])}
            targets = backend.array(ys[step])
            logits = pm.evaluate(params, inputs)["output"]
            losses.append(float(backend.to_numpy(backend.cross_entropy(logits, targets))))
            _, grads = pm.evaluate(params, inputs, {
                "output": backend.cross_entropy_grad(logits, targets)})
            params, opt_state = optimizer.update(params, grads, opt_state)
        return losses, to_numpy(backend, params)

    single, p1 = train(ml.TorchBackend(dtype=ml.float64), None)
    parallel, p2 = train(ml.TorchBackend(dtype=ml.float64, device_mesh=mesh), make_plan(plan_name))
    return {"single": single, "parallel": parallel,
            "loss": float(np.max(np.abs(np.array(single) - np.array(parallel)))),
            "params": max_diff(p1, p2)}


def check_creators() -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    import mithril as ml
    from mithril.parallel import from_local, shard_shapes

    b21 = ml.TorchBackend(device_mesh=(2, 1))
    x = b21.ones(256, 128, device_mesh=(2, 1))  # the reference guide's example
    b2 = ml.TorchBackend(device_mesh=(2,))
    full = np.arange(32.0).reshape(4, 8)
    y = b2.array(full, device_mesh=(1, 2))  # on its own 1 x 2 mesh: columns split
    r = b2.randn(8, 4)  # replicated on the backend's mesh
    named = b21.zeros(6, 4, device_mesh=("data", None))
    local = from_local(b2, torch.full((2, 3), float(dist.get_rank())))  # each rank its rows
    return {
        "x": _all_ranks(list(shard_shapes(x)[0])), "x_type": type(x).__name__,
        "y": _all_ranks(list(shard_shapes(y)[0])),
        "y_local": _all_ranks(y.to_local().numpy().tolist()),
        "y_roundtrip": bool(np.array_equal(b2.to_numpy(y), full)),
        "r": _all_ranks(list(shard_shapes(r)[0])),
        "named": _all_ranks(list(shard_shapes(named)[0])),
        "local": b2.to_numpy(local).tolist(),
    }


def check_errors() -> dict[str, Any]:
    import mithril as ml
    from mithril.parallel import DataParallel, TensorParallel

    backend = ml.TorchBackend(device_mesh=(2,))
    pm = ml.compile(mlp(), backend, shapes={"input": ["N", 8]}, parallel=DataParallel())
    params = pm.randomize_params()
    return {
        "mesh": error_of(lambda: ml.TorchBackend(device_mesh=(4,))),
        "batch": error_of(lambda: pm.evaluate(params, {"input": backend.ones(3, 8)})),
        "rule": error_of(lambda: ml.compile(models()["convnet"][0](), backend,
                                          parallel=TensorParallel({r"conv2d\.weight":
                                                                   (None, "data")}))),
        "creator": error_of(lambda: backend.ones(5, 4, device_mesh=(2,))),
    }


def worker(out_path: str, mode: str = "two") -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    import mithril as ml

    world = int(os.environ["WORLD_SIZE"])
    ml.TorchBackend(device_mesh=(world,))  # joins the group torchrun set up
    results: dict[str, Any] = {"world": dist.get_world_size()}

    def record(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except Exception:
            results[name] = {"crashed": traceback.format_exc()}
            raise  # a rank that fails must not leave the other waiting in a collective

    if mode == "2x2":  # four processes
        record("mlp-2x2", lambda: check_equivalence("mlp", (2, 2), "dp+tp"))
        record("convnet-2x2", lambda: check_equivalence("convnet", (2, 2), "dp+tp-conv"))
        record("train-mlp-2x2", lambda: check_training("mlp", (2, 2), "dp+tp"))
        _finish(results, out_path)
        return
    for name, model, mesh, plan in CASES:
        record(name, lambda m=model, s=mesh, p=plan: check_equivalence(m, s, p))
    record("convnet-dp-float32", lambda: check_equivalence("convnet", (2,), "dp", "float32"))
    record("convnet-dp-inference", lambda: check_equivalence("convnet", (2,), "dp",
                                                             inference=True))
    record("train-convnet-dp", lambda: check_training("convnet", (2,), "dp"))
    record("train-mlp-tp", lambda: check_training("mlp", (2,), "tp"))
    record("convnet-as-given", lambda: check_as_given("convnet"))
    record("creators", check_creators)
    record("errors", check_errors)
    _finish(results, out_path)


def _finish(results: dict[str, Any], out_path: str) -> None:
    import torch.distributed as dist

    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


# ==============================================================================================
# the tests
# ==============================================================================================
def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _torchrun(*args: str, processes: int = PROCESSES) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(processes), *args]


def _launch(out: Path, processes: int, *args: str) -> None:
    proc = subprocess.run(_torchrun(__file__, str(out), *args, processes=processes),
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, \
        f"the {processes}-process worker failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = run_once(tmp_path_factory, "parallel_torch_results",
                    lambda out: _launch(out, PROCESSES))
    assert data["world"] == PROCESSES
    return data


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_same_outputs_gradients_and_state_as_one_device(results: dict[str, Any],
                                                        name: str) -> None:
    r = result(results, name)
    assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, r
    assert r["grad_layouts_match_params"], "gradients must come back laid out as their params"
    assert r["state_layouts"], "new state must keep the state's layout"


def test_float32_and_inference(results: dict[str, Any]) -> None:
    r = result(results, "convnet-dp-float32")
    assert r["output"] <= TOL and r["grads"] <= TOL * r["grad_scale"], r
    r = result(results, "convnet-dp-inference")
    assert r["output"] <= TOL and r["state"] <= TOL, r


def test_data_parallel_really_splits_the_batch(results: dict[str, Any]) -> None:
    for name in ("mlp-dp", "convnet-dp"):
        r = result(results, name)
        assert r["output_placements"] == "(Shard(dim=0),)", (name, r["output_placements"])
        assert r["split_params"] == []
    shards = result(results, "convnet-dp")["param_shards_by_rank"]
    assert [s["linear.weight"] for s in shards] == [[10, 2048]] * 2  # replicated model


def test_tensor_parallel_splits_linear_layers_megatron_style(results: dict[str, Any]) -> None:
    r = result(results, "mlp-tp")
    assert r["split_params"] == ["linear.bias", "linear.weight", "linear_1.weight"]
    by_rank = r["param_shards_by_rank"]
    assert [s["linear.weight"] for s in by_rank] == [[8, 8]] * 2  # column-parallel
    assert [s["linear.bias"] for s in by_rank] == [[8]] * 2
    assert [s["linear_1.weight"] for s in by_rank] == [[4, 8]] * 2  # row-parallel
    assert [s["linear_1.bias"] for s in by_rank] == [[4]] * 2  # replicated


def test_2d_meshes(results: dict[str, Any]) -> None:
    r = result(results, "convnet-2d-model2")  # (1, 2): the model axis splits conv channels
    by_rank = r["param_shards_by_rank"]
    assert [s["conv2d_1.weight"] for s in by_rank] == [[16, 16, 3, 3]] * 2
    assert [s["batchnorm2d.weight"] for s in by_rank] == [[8]] * 2
    r = result(results, "convnet-2d-data2")  # (2, 1): the batch is split, the model axis is 1
    assert r["output_placements"].startswith("(Shard(dim=0), "), r["output_placements"]


@pytest.mark.parametrize("name", ["train-convnet-dp", "train-mlp-tp"])
def test_training_20_adam_steps_matches_one_device(results: dict[str, Any], name: str) -> None:
    r = result(results, name)
    assert len(r["parallel"]) == 20
    assert r["loss"] <= TOL and r["params"] <= TOL, r
    assert r["single"][0] != r["single"][-1]


def test_without_a_plan_arrays_keep_their_layout(results: dict[str, Any]) -> None:
    r = result(results, "convnet-as-given")  # input split by backend.array(x, device_mesh=...)
    assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, r
    assert r["plan"] == "AsGiven()" and r["grad_layouts_match_params"]
    assert r["output_layout"] == "(Shard(dim=0),)", r["output_layout"]


def test_creators_make_dtensors_split_across_processes(results: dict[str, Any]) -> None:
    r = result(results, "creators")
    assert r["x_type"] == "DTensor" and r["x"] == [[128, 128]] * 2
    assert r["y"] == [[4, 4]] * 2 and r["y_roundtrip"]
    assert r["y_local"][0] != r["y_local"][1]  # each process holds its own columns
    assert r["r"] == [[8, 4]] * 2  # replicated
    assert r["named"] == [[3, 4]] * 2
    assert r["local"] == [[0.0] * 3] * 2 + [[1.0] * 3] * 2  # from_local: rank 0, then rank 1


def test_mesh_not_matching_the_processes_says_how_to_launch(results: dict[str, Any]) -> None:
    e = result(results, "errors")["mesh"]
    assert e["type"] == "BackendUnavailableError", e
    assert "needs 4 devices" in e["message"] and "has 2 process(es)" in e["message"]
    assert "torchrun --nproc-per-node 4" in e["message"]


def test_dimensions_not_divisible_by_the_mesh(results: dict[str, Any]) -> None:
    errors = result(results, "errors")
    for name, where in (("batch", "input 'input'"), ("rule", "parameter 'conv2d.weight'"),
                        ("creator", "an array of shape [5, 4]")):
        e = errors[name]
        assert e["type"] == "ShapeMismatchError", (name, e)
        assert where in e["message"] and "make it a multiple of 2" in e["message"], e


def test_2x2_mesh_on_four_processes(tmp_path: Path) -> None:
    """A real 2-D mesh: batch split in 2 and model split in 2 (4 gloo processes)."""
    _launch(tmp_path / "results.json", 4, "2x2")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world"] == 4
    for name in ("mlp-2x2", "convnet-2x2"):
        r = result(results, name)
        assert r["output"] <= TOL and r["grads"] <= TOL and r["state"] <= TOL, (name, r)
        assert r["grad_layouts_match_params"] and r["state_layouts"], (name, r)
        assert r["output_placements"].startswith("(Shard(dim=0), "), r["output_placements"]
    shards = result(results, "convnet-2x2")["param_shards_by_rank"]
    assert [s["conv2d_1.weight"] for s in shards] == [[16, 16, 3, 3]] * 4
    assert [s["linear.weight"] for s in shards] == [[5, 2048]] * 4  # column-parallel
    r = result(results, "train-mlp-2x2")
    assert r["loss"] <= TOL and r["params"] <= TOL, r


def test_mesh_without_a_launcher_leaves_no_process_group() -> None:
    import torch.distributed as dist

    import mithril as ml
    from mithril.errors import BackendUnavailableError

    if dist.is_initialized():
        pytest.fail("a process group is left over from an earlier test")
    with pytest.raises(BackendUnavailableError, match="torchrun --nproc-per-node 2"):
        ml.TorchBackend(device_mesh=(2,))
    assert not dist.is_initialized()


# ---- the example, launched both ways ---------------------------------------------------------
def test_example_data_parallel_with_torchrun() -> None:
    proc = subprocess.run(_torchrun(str(ROOT / "examples" / "data_parallel.py"), "--small"),
                          env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout and "rank 0 holds input [8, 3, 32, 32]" in proc.stdout
    assert "same loss curve as one device: True" in proc.stdout, proc.stdout


def test_example_data_parallel_on_one_process() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "data_parallel.py"),
                           "--small"], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 process(es)" in proc.stdout and "rank 0 holds input [16, 3, 32, 32]" in proc.stdout
    assert "same loss curve as one device: True" in proc.stdout, proc.stdout


if __name__ == "__main__":
    worker(*sys.argv[1:])
