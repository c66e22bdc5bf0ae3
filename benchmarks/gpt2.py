"""Build and compile time of GPT-2 (12 layers, 768 wide, 12 heads, vocabulary 50257)."""

from __future__ import annotations

import importlib.util
import time

from .timing import table


def run(repeat: int = 3) -> str:
    import mithril as ml
    from mithril.models.gpt import gpt2

    names = ["NumpyBackend"] + [cls for cls, module in (("TorchBackend", "torch"),
                                                        ("JaxBackend", "jax"),
                                                        ("MlxBackend", "mlx"))
                                if importlib.util.find_spec(module)]
    rows = [["backend", "build s", "compile s", "total s"]]
    for name in names:
        backend = getattr(ml, name)()
        best = (float("inf"), float("inf"))
        for _ in range(repeat):
            t0 = time.perf_counter()
            model = gpt2()
            t1 = time.perf_counter()
            ml.compile(model, backend)
            t2 = time.perf_counter()
            if t2 - t0 < sum(best):
                best = (t1 - t0, t2 - t1)
        rows.append([name, f"{best[0]:.3f}", f"{best[1]:.3f}", f"{sum(best):.3f}"])
    return ("GPT-2 124M: build + compile (target < 1.5 s together; the reference project "
            "needs about 30 s)\n" + table(rows))


if __name__ == "__main__":
    print(run())
