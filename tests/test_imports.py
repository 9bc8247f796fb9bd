"""The experiments and methods import on a machine with torch alone (a GPU image, a cluster
worker): no plotly, ipywidgets, papermill or Jupyter Book."""
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"
ABSENT = ("plotly", "ipywidgets", "papermill", "nbformat", "jupyter_book", "IPython", "tqdm.notebook")


def _modules(folder: str) -> list[str]:
    return sorted(f"labkit.{folder}.{p.stem}" for p in (PACKAGE / folder).glob("*.py") if p.stem != "__init__")


def test_experiments_and_methods_import_without_the_notebook_stack():
    modules = _modules("experiments") + _modules("methods") + ["labkit.parallel", "labkit.cluster", "labkit.cache"]
    assert len(modules) > 20
    script = "\n".join([
        "import sys",
        f"for name in {ABSENT!r}:",
        "    sys.modules[name] = None  # any import of it raises ImportError",
        "import importlib",
        f"for module in {modules!r}:",
        "    importlib.import_module(module)",
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {ABSENT!r} and sys.modules[m] is not None)",
        "assert not loaded, loaded",
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
