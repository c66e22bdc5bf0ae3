"""The example scripts run to the end on their small settings (each in its own process).

Every example runs on NumPy and on its default backend (PyTorch); the quick ones also run on
JAX and MLX. Each child process uses one thread per framework: the suite already runs tests in
parallel, and several processes each spinning up a thread pool on a shared machine can make
PyTorch's CPU kernels many times slower than they are alone.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 300  # seconds; the small settings take a few seconds each on an idle machine

#: what each example must print when it worked
EXPECTED = {
    "convnet.py": ["test accuracy", "predicts the same: True"],
    "resnet18_digits.py": ["ResNet-18 (width 8)", "test accuracy after 3 steps"],
    "lstm_sequence.py": ["over any sequence length", "one compiled model trained on batches",
                         "test MSE on 1000 new sequences"],
    "gpt_text.py": ["NumPy LICENSE.txt", "trained sample:"],
    "trainmodel_regression.py": ["['final_cost', 'mae', 'output']", "predicted 90th percentile"],
}
QUICK = ["convnet.py", "trainmodel_regression.py"]


def _installed(backend: str) -> bool:
    return backend == "numpy" or importlib.util.find_spec(backend) is not None


CASES = [(name, backend) for name in EXPECTED for backend in ("numpy", "torch")]
CASES += [(name, backend) for name in QUICK for backend in ("jax", "mlx")]


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), CASES)
def test_example_small(name: str, backend: str, tmp_path: Path) -> None:
    if not _installed(backend):
        pytest.skip(f"{backend} is not installed")
    result = run_example(name, "--backend", backend, "--small", cwd=tmp_path)
    assert result.returncode == 0, f"{name} --backend {backend} --small failed:\n" \
                                   f"{result.stdout}\n{result.stderr}"
    for phrase in EXPECTED[name]:
        assert phrase in result.stdout, f"{name} did not print {phrase!r}:\n{result.stdout}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_help(name: str, tmp_path: Path) -> None:
    result = run_example(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--backend", "--small", "--seed", "--threads"):
        assert option in result.stdout


@pytest.mark.slow
def test_demo_one_epoch_on_every_backend(tmp_path: Path) -> None:
    """The README's main job, one epoch: every installed backend learns, their float32 loss
    curves agree within 1e-3 of NumPy's, and the plot is written."""
    result = run_example("demo.py", "--epochs", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    rows = {}
    for line in result.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("numpy", "torch", "jax", "mlx") and cells[1].endswith("%"):
            rows[cells[0]] = (float(cells[1].rstrip("%")) / 100, float(cells[-1]))
    expected = [b for b in ("numpy", "torch", "jax", "mlx") if _installed(b)]
    assert sorted(rows) == sorted(expected), result.stdout
    for backend, (accuracy, deviation) in rows.items():
        assert accuracy >= 0.9, f"{backend}: {accuracy:.1%} after one epoch\n{result.stdout}"
        assert deviation < 1e-3, f"{backend}: first-epoch loss differs by {deviation}"
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 10_000


NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")
TIMING = re.compile(r"\(\d+\.\d+s\)")


def numbers(text: str) -> list[float]:
    """Every number printed, timings left out."""
    return [float(n.replace(",", "")) for n in NUMBER.findall(TIMING.sub("", text))]


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK)
def test_example_numbers_agree_across_backends_and_make_sense(name: str, tmp_path: Path) -> None:
    """Numbers, not phrases: NumPy and PyTorch print the same numbers (losses, accuracies,
    sizes; to the printed digits), and the results are what the example claims."""
    out = {}
    for backend in ("numpy", "torch"):
        (tmp_path / backend).mkdir()
        result = run_example(name, "--backend", backend, "--small", cwd=tmp_path / backend)
        assert result.returncode == 0, result.stdout + result.stderr
        out[backend] = result.stdout
    a, b = numbers(out["numpy"]), numbers(out["torch"])
    assert len(a) == len(b) > 5, (out["numpy"], out["torch"])
    for x, y in zip(a, b, strict=True):  # one unit of the last printed digit (float32)
        assert abs(x - y) <= max(1e-3 * abs(x), 1.01e-4), (x, y, out["numpy"], out["torch"])
    text = out["numpy"]
    if name == "convnet.py":
        accuracy = float(re.search(r"test accuracy: ([\d.]+)%", text)[1])
        assert accuracy >= 30.0, text  # ten classes: chance is 10%
        assert re.search(r"'test_accuracy': '([\d.]+)'", text)[1] == f"{accuracy / 100:.4f}"
    else:  # the MLP fits as well as least squares (closed form); the quantile covers ~90%
        mlp, lstsq = (float(v) for v in re.search(r"MLP ([\d.]+), least squares ([\d.]+)",
                                                  text).groups())
        assert mlp >= lstsq - 0.05, text
        below = float(re.search(r"below the predicted 90th percentile: ([\d.]+)%", text)[1])
        assert 80.0 <= below <= 97.0, text
