"""Chapters as papermill runs: discovery, parameter checks, execution, staleness.

A chapter is ``notebooks/NN-<slug>.ipynb``. ``run_chapter`` executes it with papermill into
``build/executed/<budget>/`` with ``LABKIT_OUTPUT_DIR`` pointing there (so the notebook's
``report.save_claims`` lands beside it) and ``LABKIT_PROGRESS=text``. A failed run keeps its
executed notebook, with the failing cell marked by papermill, and raises ``ChapterFailed``.
A successful run adds provenance (command, duration) to the claims JSON and writes a stamp whose
key covers the notebook, labkit's source and the parameters; ``is_fresh`` compares against it.
An unmodified full-budget run also commits its executed notebook and claims to ``results/full/``
(``labkit.reproductions``): the book renders the reproduction from there without retraining.
"""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .cache import PACKAGE_DIR, source_hash, write_text_atomic
from . import reproductions
from .config import BUDGETS, check_choice

REPO_ROOT = PACKAGE_DIR.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build" / "executed"
RESULTS_DIR = REPO_ROOT / "results"
QUICK_LIMIT_S = 60.0  # the quick budget on an idle 2-core machine (the suite checks a ratio: labkit.timing)
FULL_LIMIT_S = 20 * 60.0


class ChapterFailed(RuntimeError):
    """A chapter's notebook raised; ``executed`` is the kept notebook with the failing cell."""

    def __init__(self, chapter: str, executed: Path, reason: str):
        super().__init__(f"chapter {chapter} failed: {reason}\nexecuted notebook kept at {executed}")
        self.chapter, self.executed, self.reason = chapter, executed, reason

    def __reduce__(self):  # it crosses processes when ``labkit book --workers N`` runs chapters side by side
        return ChapterFailed, (self.chapter, self.executed, self.reason)


@dataclass(frozen=True)
class Chapter:
    slug: str  # "03-svmax"
    path: Path

    @property
    def number(self) -> str:
        return self.slug.split("-", 1)[0]

    @property
    def title(self) -> str:
        nb = json.loads(self.path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                for line in "".join(cell["source"]).splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
        return self.slug

    def parameters(self) -> dict[str, Any]:
        """The ``parameters`` cell's names and their literal default values."""
        nb = json.loads(self.path.read_text())
        for cell in nb["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                tree = ast.parse("".join(cell["source"]))
                return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
        raise ValueError(f"{self.path.name} has no cell tagged 'parameters'")


def chapters(notebooks_dir: Path | None = None) -> dict[str, Chapter]:
    found = sorted((notebooks_dir or NOTEBOOKS_DIR).glob("[0-9][0-9]-*.ipynb"))
    return {p.stem: Chapter(p.stem, p) for p in found}


def find_chapter(name: str, notebooks_dir: Path | None = None) -> Chapter:
    """Accept ``03-svmax``, ``03`` or ``svmax``; an unknown name lists the valid ones."""
    known = chapters(notebooks_dir)
    for slug, chapter in known.items():
        if name in (slug, chapter.number, slug.split("-", 1)[1]):
            return chapter
    check_choice("chapter", name, list(known))
    raise AssertionError("unreachable")


def parse_value(text: str) -> Any:
    """``-p name value`` values are Python literals (``0.1``, ``True``, ``(1, 2)``) or bare strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(chapter: Chapter, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Reject unknown names and values whose type differs from the default's, before any work."""
    defaults = chapter.parameters()
    checked = {}
    for name, value in overrides.items():
        if name not in defaults:
            raise ValueError(f"unknown parameter {name!r} for {chapter.slug}; "
                             f"valid parameters: {', '.join(sorted(defaults))}")
        default = defaults[name]
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise TypeError(f"parameter {name}={value!r} has the wrong type for {chapter.slug}: "
                                f"expected {type(default).__name__} like the default {default!r}")
        if name == "budget":
            check_choice("budget", value, BUDGETS)
        if name == "workers" and value < 0:
            raise ValueError(f"workers={value!r} is not valid; use 0 (one process per core) or a "
                             "positive number of processes")
        checked[name] = value
    return checked


def run_key(chapter: Chapter, parameters: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(chapter.path.read_bytes())
    digest.update(source_hash().encode())
    digest.update(json.dumps(dict(parameters), sort_keys=True).encode())
    return digest.hexdigest()[:24]


def executed_path(chapter: Chapter, budget: str, build_dir: Path | None = None) -> Path:
    return (build_dir or BUILD_DIR) / budget / f"{chapter.slug}.ipynb"


def _stamp_path(executed: Path) -> Path:
    return executed.with_suffix(".stamp.json")


def is_fresh(chapter: Chapter, budget: str, parameters: Mapping[str, Any] | None = None,
             build_dir: Path | None = None) -> bool:
    params = {"budget": budget, **(parameters or {})}
    executed = executed_path(chapter, budget, build_dir)
    stamp = _stamp_path(executed)
    if not (executed.exists() and stamp.exists()):
        return False
    return json.loads(stamp.read_text()).get("key") == run_key(chapter, params)


def run_chapter(name: str, budget: str = "quick", parameters: Mapping[str, Any] | None = None, *,
                build_dir: Path | None = None, results_dir: Path | None = None,
                command: str | None = None) -> Path:
    """Execute one chapter; return the executed notebook. Raises ``ChapterFailed`` on error."""
    import papermill

    check_choice("budget", budget, BUDGETS)
    chapter = find_chapter(name)
    params = check_parameters(chapter, {"budget": budget, **(parameters or {})})
    out = executed_path(chapter, budget, build_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (_stamp_path(out), out.with_suffix(".claims.json")):
        stale.unlink(missing_ok=True)
    env = {"LABKIT_OUTPUT_DIR": str(out.parent), "LABKIT_PROGRESS": "text"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(chapter.path), str(out), parameters=params,
                                   kernel_name="python3", language="python", progress_bar=False,
                                   cwd=str(out.parent))
    except Exception as error:  # papermill already saved the notebook with the failing cell
        raise ChapterFailed(chapter.slug, out, str(error).strip().splitlines()[-1] if str(error) else
                            type(error).__name__) from error
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    duration = time.perf_counter() - start
    provenance = {
        "command": command or f"labkit run {chapter.slug} --budget {budget}",
        "parameters": params,
        "duration_s": round(duration, 1),
        "limit_s": FULL_LIMIT_S if budget == "full" else QUICK_LIMIT_S,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_hash": reproductions.chapter_source_hash(chapter.path),
        "cpus": os.cpu_count(),
    }
    claims_path = out.with_suffix(".claims.json")
    if claims_path.exists():
        record = json.loads(claims_path.read_text())
        record["provenance"] = provenance
        write_text_atomic(json.dumps(record, indent=2) + "\n", claims_path)
        if budget == "full" and set(params) == {"budget"}:
            reproductions.commit_full_run(chapter.slug, chapter.path, out, claims_path,
                                          results_dir or RESULTS_DIR)
    write_text_atomic(json.dumps({"key": run_key(chapter, params), **provenance}, indent=2), _stamp_path(out))
    return out
