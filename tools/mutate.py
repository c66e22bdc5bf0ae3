"""Targeted mutation testing: does the suite notice when the library is subtly wrong?

Each mutant is one small source edit (a literal ``old -> new`` replacement that must match
exactly once) in ``mithril/``: BatchNorm momentum and state, attention scaling, residual
wiring, optimizer formulas, parameter keys in ``to_dict``/``from_dict``, weight loading,
code generation and graph passes. For each mutant the script copies the repository (without
``.git`` and ``.venv``) into a temporary folder, applies the edit there, runs the test files
that cover it with pytest (stopping at the first failure) and records whether the mutant was
*killed* (a test failed) or *survived* (every test passed). The working tree is never edited,
so it is safe to run while others work in the same checkout.

Hypothesis tests run with fresh random seeds here (``MITHRIL_HYPOTHESIS_FRESH=1``, read by
``tests/test_random_models.py``); CI stays derandomized.

Usage (``make mutate`` runs them all)::

    .venv/bin/python tools/mutate.py            # every mutant
    .venv/bin/python tools/mutate.py --list     # the mutants and their tests
    .venv/bin/python tools/mutate.py bn_momentum_layer adam_bias_correction_m
    .venv/bin/python tools/mutate.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# test files by area (paths relative to the repository root)
BN = ["tests/test_initial_state.py", "tests/test_layers_parity.py",
      "tests/test_catalogue_independent.py",
      "tests/test_guide_backends.py", "tests/test_numerics.py", "tests/test_random_models.py"]
ATTN = ["tests/test_layers_parity.py", "tests/test_gpt2.py", "tests/test_catalogue_independent.py",
        "tests/test_random_models.py"]
NUMPY_KERNELS = ["tests/backends/test_numpy_kernels.py"]
GPT = ["tests/test_gpt2.py", "tests/test_examples.py"]
OPTIM = ["tests/test_optim.py", "tests/test_training.py"]
IO = ["tests/test_model_dict.py", "tests/test_params_io.py", "tests/test_reference_models.py",
      "tests/test_random_models.py"]
INTEROP = ["tests/test_torch_interop.py", "tests/test_pairing_order.py"]
GRAPH = ["tests/test_compile_numpy.py", "tests/test_algebra.py", "tests/test_logical_guide.py",
         "tests/test_random_models.py"]
STATE = ["tests/test_compile_numpy.py", "tests/test_training.py", "tests/test_guide_backends.py",
         "tests/test_torch_interop.py", "tests/test_integration_steps.py"]


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


def m(name: str, path: str, old: str, new: str, tests: list[str], why: str = "") -> Mutant:
    return Mutant(name, path, old, new, tuple(dict.fromkeys(tests)), why)


MUTANTS: list[Mutant] = [
    # ---- BatchNorm momentum and state --------------------------------------------------------
    m("bn_momentum_layer", "mithril/models/layers.py",
      'CATALOGUE["batch_norm"], momentum=float(momentum)',
      'CATALOGUE["batch_norm"], momentum=float(1 - momentum)', BN,
      "BatchNorm2d hands 1 - momentum to the primitive (every backend)"),
    m("bn_momentum_numpy", "mithril/backends/numpy/nn.py",
      "new_mean = (1 - momentum) * running_mean + momentum * mu",
      "new_mean = momentum * running_mean + (1 - momentum) * mu", NUMPY_KERNELS + BN,
      "NumPy kernel: running mean moves by 1 - momentum"),
    m("bn_biased_running_var_numpy", "mithril/backends/numpy/nn.py",
      "new_var = (1 - momentum) * running_var + momentum * unbiased",
      "new_var = (1 - momentum) * running_var + momentum * var", NUMPY_KERNELS + BN,
      "NumPy kernel: running variance from the biased batch variance"),
    m("bn_state_not_kept", "mithril/framework/physical/compiled.py",
      "        self._state = new_state\n", "        pass\n", STATE,
      "a compiled model that keeps its state never updates it"),
    m("bn_running_mean_init_ones", "mithril/models/layers.py",
      'self.set_initializer("running_mean", "zeros")\n'
      '            self.set_initializer("running_var", "ones")',
      'self.set_initializer("running_mean", "ones")\n'
      '            self.set_initializer("running_var", "ones")', BN,
      "BatchNorm2d's running mean starts at ones"),
    # ---- attention ---------------------------------------------------------------------------
    m("attention_scale_layer", "mithril/models/attention.py",
      "is_causal=is_causal, scale=None)(",
      "is_causal=is_causal, scale=1.0)(", ATTN,
      "MultiheadAttention without the 1/sqrt(head_dim) scaling"),
    m("attention_scale_numpy", "mithril/backends/numpy/nn.py",
      "s = 1 / math.sqrt(query.shape[-1]) if scale is None else scale",
      "s = 1 / query.shape[-1] if scale is None else scale", NUMPY_KERNELS + ATTN,
      "NumPy kernel scales scores by 1/E instead of 1/sqrt(E)"),
    # ---- residual wiring ---------------------------------------------------------------------
    m("gpt2_residual_from_normed", "mithril/models/gpt.py",
      'Add()(left="input", right="a", output="x1")',
      'Add()(left="h1", right="a", output="x1")', GPT,
      "GPT-2's attention residual adds ln_1(x) instead of x"),
    m("gpt2_mlp_residual_swapped", "mithril/models/gpt.py",
      'Add()(left="x1", right="m", output=IOKey("output"))',
      'Add()(left="input", right="m", output=IOKey("output"))', GPT,
      "GPT-2's MLP residual skips the attention branch"),
    m("gpt2_mlp_reads_wrong_norm", "mithril/models/gpt.py",
      'block |= mlp(input="h2", output="m")', 'block |= mlp(input="h1", output="m")', GPT,
      "GPT-2's MLP reads ln_1's output"),
    # ---- optimizers --------------------------------------------------------------------------
    m("adam_bias_correction_m", "mithril/optim/optimizers.py",
      "step_size = lr / (1 - self.beta1 ** t)", "step_size = lr", OPTIM,
      "Adam without the first-moment bias correction"),
    m("adam_bias_correction_v", "mithril/optim/optimizers.py",
      "denom = ops.sqrt(v) / ops.sqrt(1 - self.beta2 ** t) + self.eps",
      "denom = ops.sqrt(v) + self.eps", OPTIM,
      "Adam without the second-moment bias correction"),
    m("adamw_decay_without_lr", "mithril/optim/optimizers.py",
      "p = p * (1 - lr * self.weight_decay)", "p = p * (1 - self.weight_decay)", OPTIM,
      "AdamW decays by weight_decay, not lr * weight_decay"),
    m("sgd_nesterov_as_plain", "mithril/optim/optimizers.py",
      "direction = g + self.momentum * buf if self.nesterov else buf",
      "direction = buf", OPTIM, "SGD ignores nesterov"),
    # ---- to_dict / from_dict -----------------------------------------------------------------
    m("from_dict_drops_names", "mithril/framework/logical/serialize.py",
      'model = Model(name=node.get("name"))', "model = Model(name=None)", IO,
      "from_dict forgets composite names: parameter keys renumbered"),
    m("from_dict_reverses_children", "mithril/framework/logical/serialize.py",
      "for j, entry in enumerate(children):", "for j, entry in enumerate(children[::-1]):", IO,
      "from_dict adds children in reverse order: sibling keys (linear, linear_1) swap"),
    # ---- weight loading ----------------------------------------------------------------------
    m("interop_single_layer_pairs_reversed", "mithril/interop/_pairing.py",
      "            for a, b in _aligned(mine[0], other[0], use_leaves):",
      "            for a, b in _aligned(mine[0], other[0][::-1], use_leaves):", INTEROP,
      "a layer paired by shape pairs its tensors in reverse"),
    m("interop_ignores_running_stats", "mithril/interop/torch_weights.py",
      '_IGNORED_LEAVES = ("num_batches_tracked",)',
      '_IGNORED_LEAVES = ("num_batches_tracked", "running_mean")', INTEROP,
      "loading skips BatchNorm running means"),
    # ---- code generation and passes ----------------------------------------------------------
    m("codegen_fanout_grad_overwritten", "mithril/framework/physical/codegen.py",
      'body.append((f"{g} = {g} + {res}[{i}]", {g, res}))',
      'body.append((f"{g} = {res}[{i}]", {g, res}))', GRAPH,
      "a value used twice gets the last use's gradient only"),
    m("codegen_output_grads_not_summed", "mithril/framework/physical/codegen.py",
      "body.append((f\"{g} = {g} + output_gradients[{key!r}]\", {g}))",
      "body.append((f\"{g} = output_gradients[{key!r}]\", {g}))", GRAPH,
      "an output read under two names gets one name's gradient"),
    m("cse_ignores_constants", "mithril/framework/physical/passes.py",
      'parts.append(("const", repr(concrete(v.root.value))))', 'parts.append(("const",))',
      GRAPH, "common-subexpression elimination merges ops with different constants"),
]

# Mutants of the two bugs fixed in issue 21's sibling issues (order-based pairing in
# load_torch_state_dict; the guide's loop updating BatchNorm state twice per step).
MUTANTS += [
    m("interop_order_pairing_bug", "mithril/interop/torch_weights.py",
      "    _pairing.by_name(ours, theirs, pair)\n"
      "    _pairing.by_suffix(ours, theirs, pair)\n"
      "    # trainable inputs pair by name only: never guessed from shapes\n"
      "    weights = [e for e in ours if e.name not in inputs]\n"
      "    for use_leaves in (True, False):\n"
      "        _pairing.by_layer(weights, theirs, pair, use_leaves, report.ambiguous)\n",
      "    weights = [e for e in ours if e.name not in inputs]\n"
      "    for use_leaves in (True, False):\n"
      "        _pairing.by_layer(weights, theirs, pair, use_leaves, [])\n", INTEROP,
      "the original bug: same-shape layers paired by execution order, silently"),
    m("guide_loop_double_state_update", "mithril/framework/physical/compiled.py",
      "            if last is not None:  # the gradient of the forward call just made?",
      "            if False:  # the gradient of the forward call just made?",
      ["tests/test_training_loop.py", *STATE],
      "the original bug: the guide's loop (forward, then gradients) moves BatchNorm state twice"),
]


# ----------------------------------------------------------------------------------------------
def copy_tree(dest: Path, source: Path = ROOT) -> Path:
    """A copy of the repository (or of ``source``) in ``dest/main`` (``../shared`` linked
    beside it)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "site", "__pycache__", ".pytest_cache",
                                    ".ruff_cache", ".hypothesis", "*.egg-info")
    repo = dest / "main"
    shutil.copytree(source, repo, ignore=ignore, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared)
    return repo


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_tests(repo: Path, tests: tuple[str, ...], workers: str, timeout: float
              ) -> tuple[str, float, str]:
    """``("killed" | "survived" | "error" | "timeout", seconds, last lines of output)``."""
    present = [t for t in tests if (repo / t.split("::")[0]).exists()]
    if not present:
        return "error", 0.0, "no test file of this mutant exists"
    env = dict(os.environ, PYTHONPATH=str(repo), MITHRIL_HYPOTHESIS_FRESH="1",
               PYTHONDONTWRITEBYTECODE="1")
    # the files in the order given (the likeliest to fail first), stopping at a failure
    cmd = [python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-n", workers,
           *present]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - start, ""
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
    failed = proc.returncode == 1 or (proc.returncode == 2 and "FAILED " in proc.stdout)
    status = "survived" if proc.returncode == 0 else "killed" if failed else "error"
    return status, time.time() - start, tail


def check_imports_copy(repo: Path) -> None:
    """The copy's ``mithril`` is the one imported (not the editable install's)."""
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([python(), "-c", "import mithril; print(mithril.__file__)"],
                         cwd=repo, env=env, capture_output=True, text=True, check=True)
    if not out.stdout.strip().startswith(str(repo)):
        raise SystemExit(f"the copy's mithril is not the one imported: {out.stdout.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("-n", "--workers", default="0",
                        help="pytest-xdist workers (0: one process, files in order)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="mutate a copy of this tree (e.g. `git archive` of an older "
                             "commit, to measure the survival rate before new tests)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    args = parser.parse_args()
    chosen = [mu for mu in MUTANTS if not args.names or mu.name in args.names]
    unknown = set(args.names) - {mu.name for mu in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants {sorted(unknown)}")
    if args.list:
        for mu in chosen:
            print(f"{mu.name:38} {mu.path}\n    {mu.why}\n    tests: {' '.join(mu.tests)}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="mithril-mutate-") as tmp:
        repo = copy_tree(Path(tmp), args.source.resolve())
        check_imports_copy(repo)
        for mu in chosen:
            target = repo / mu.path
            original = target.read_text()
            count = original.count(mu.old)
            if count != 1:
                status, seconds, tail = "stale", 0.0, f"'old' text found {count} times"
            else:
                target.write_text(original.replace(mu.old, mu.new))
                try:
                    status, seconds, tail = run_tests(repo, mu.tests, args.workers,
                                                      args.timeout)
                finally:
                    target.write_text(original)
            results.append({"name": mu.name, "status": status, "seconds": round(seconds, 1),
                            "why": mu.why, "tail": tail})
            print(f"{status:9} {seconds:7.1f}s  {mu.name}  ({mu.why})", flush=True)
            if status == "error":
                print("    " + tail.replace("\n", "\n    "), flush=True)
    ran = [r for r in results if r["status"] in ("killed", "survived")]
    survivors = [r["name"] for r in ran if r["status"] == "survived"]
    print(f"\n{len(ran)} mutants run, {len(survivors)} survived "
          f"({100 * len(survivors) / max(1, len(ran)):.0f}%)")
    for name in survivors:
        print(f"  survivor: {name}")
    other = [r for r in results if r["status"] not in ("killed", "survived")]
    for r in other:
        print(f"  {r['status']}: {r['name']} {r['tail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if survivors or other else 0


if __name__ == "__main__":
    sys.exit(main())
