"""What the examples share: picking a backend on the command line, CPU threads, the digits.

The examples import it as a sibling module (``python examples/<name>.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

import numpy as np

import mithril as ml

#: command-line name -> Mithril backend class name
BACKENDS = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
            "mlx": "MlxBackend"}


def example_parser(doc: str | None, **backend_choice: Any) -> argparse.ArgumentParser:
    """An argument parser described by the example's docstring, with ``--backend`` (PyTorch
    when installed, else NumPy) and ``--threads``. ``backend_choice`` overrides ``choices`` or
    ``default`` of ``--backend``."""
    default = "torch" if importlib.util.find_spec("torch") else "numpy"
    options = {"choices": list(BACKENDS), "default": default, **backend_choice}
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--backend", **options,
                        help=f"backend to run on (default {options['default']})")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for the framework (default 1; 0: its own default)")
    return parser


def limit_threads(threads: int) -> None:
    """Give the framework ``threads`` CPU threads; call before the backend is created.

    The backends import their framework on first use, so the usual environment variables still
    take effect here. One thread suits these small models: it is about as fast as several on an
    idle machine and cannot be slowed down by other processes competing for the same cores.
    """
    if threads > 0:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(threads)


def make_backend(name: str) -> Any:
    """The float32 CPU backend called ``name`` on the command line."""
    return getattr(ml, BACKENDS[name])(device="cpu", dtype=ml.float32)


def load_digits(seed: int, size: int = 8, channels: int = 1, limit: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as standardised (N, channels, size, size) float32
    images (``size`` a multiple of 8: each pixel becomes a square), shuffled with ``seed``,
    at most ``limit`` of them; an 80/20 train/test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = digits.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    scale = size // 8
    images = np.kron(images, np.ones((1, scale, scale), dtype=np.float32))
    x = np.repeat(images[:, None], channels, axis=1)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))[:limit]
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    x = (x - x[:n_train].mean()) / x[:n_train].std()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
