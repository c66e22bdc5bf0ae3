"""Build and compile time of residual stacks (issue: linear, fast composition)."""

from __future__ import annotations

import time

from .models import residual_stack
from .timing import table

SIZES = (1, 6, 12, 24, 48)


def run(backend_factory=None) -> str:
    import mithril as ml

    backend = backend_factory() if backend_factory else ml.NumpyBackend()
    rows = [["blocks", "build ms", "build ms/block", "compile ms", "compile ms/block"]]
    for n in SIZES:
        build = compile_t = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            model = residual_stack(n)
            t1 = time.perf_counter()
            ml.compile(model, backend, shapes={"input": [8, 32]}, jit=False)
            t2 = time.perf_counter()
            build, compile_t = min(build, t1 - t0), min(compile_t, t2 - t1)
        rows.append([str(n), f"{build * 1e3:.1f}", f"{build / n * 1e3:.2f}",
                     f"{compile_t * 1e3:.1f}", f"{compile_t / n * 1e3:.2f}"])
    return "Build and compile time of N residual blocks (Linear, Relu, Linear, Add)\n" + \
        table(rows)


if __name__ == "__main__":
    print(run())
