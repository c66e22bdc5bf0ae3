"""`import mithril` needs only NumPy; a missing framework names the extra to install."""

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_mithril_loads_no_framework():
    r = _run("import sys, mithril, mithril.models, mithril.optim\n"
             "from mithril.models import Model, Linear\n"
             "m = Model(); m |= Linear(3)(input_size=2)\n"
             "import mithril as ml; ml.compile(m, ml.NumpyBackend())\n"
             "print(sorted(k for k in ('torch', 'jax', 'mlx') if k in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("name,module,extra", [("TorchBackend", "torch", "torch"),
                                               ("JaxBackend", "jax", "jax"),
                                               ("MlxBackend", "mlx", "mlx")])
def test_missing_framework_names_the_extra(name, module, extra):
    # a meta-path finder that hides the framework, as if it were not installed
    code = f"""
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == {module!r} or fullname.startswith({module!r} + "."):
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
sys.meta_path.insert(0, Hide())
import mithril as ml
try:
    ml.{name}()
except ml.BackendUnavailableError as err:
    print("OK", err)
"""
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK")
    assert f"pip install '.[{extra}]'" in r.stdout
    assert "not `pip install mithril`" in r.stdout
