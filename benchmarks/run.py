"""All benchmarks in one run: `make bench` (or `python -m benchmarks.run`)."""

from __future__ import annotations

import sys


def main() -> int:
    from . import backends, build_compile, gpt2, recurrent, training_loop

    print(build_compile.run())
    print()
    print(gpt2.run())
    print()
    print(backends.run())
    print()
    print(training_loop.run())
    print()
    print(recurrent.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
