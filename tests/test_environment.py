"""pyproject.toml and environment.yml must list the same packages with the same pins."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalize(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(map(_normalize, pip_section)) == sorted(map(_normalize, wanted))


def test_torch_and_jupyter_book_are_pinned():
    deps = dict(map(_normalize, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]))
    assert deps["torch"] == "==2.14.1" and deps["torchvision"] == "==0.29.1"
    book = dict(map(_normalize, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                    ["optional-dependencies"]["book"]))
    assert book["jupyter-book"].startswith("==1.")
