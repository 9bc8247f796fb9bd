"""Committed full-budget reproductions, and which run each page of the book shows.

An unmodified ``labkit run <chapter> --budget full`` commits two files under ``results/full/``:

- ``<slug>.json``: the claims with their provenance (command, date, labkit version, device,
  duration, and ``source_hash``: the hash of the chapter's source at the time of the run);
- ``<slug>.ipynb``: the executed notebook as the book renders it (plotly figures as HTML only,
  no duplicate JSON; no weights are ever in a notebook), so the book shows the reproduction
  without retraining.

A chapter's *source* is its notebook plus every labkit module the notebook imports, followed
through labkit's own imports (``chapter_sources``). A reproduction is *fresh* while that hash is
unchanged: editing ``labkit/methods/jpeg.py`` makes chapter 07's reproduction stale and leaves
chapter 03's alone; editing ``labkit/report.py`` (imported by every chapter) makes them all stale.

``book_pages`` decides, per chapter, what the book shows: the fresh reproduction, or the quick run
with a banner saying why (no reproduction committed, or one older than the chapter's source).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from .cache import PACKAGE_DIR, write_text_atomic

PACKAGE = PACKAGE_DIR.name  # "labkit"


# --------------------------------------------------------------------------- a chapter's source

def _code_cells(notebook: Path) -> Iterable[str]:
    nb = json.loads(Path(notebook).read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            source = "".join(cell.get("source", ""))
            # IPython magics and shell escapes are not Python
            yield "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _imported_modules(tree: ast.AST, current: str | None = None) -> set[str]:
    """Dotted names of the labkit modules a syntax tree imports (``current``: its own module name,
    for relative imports; a package's name for its ``__init__``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and current:
                package = current.split(".") if _is_package(current) else current.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # maybe submodules
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _is_package(module: str) -> bool:
    return (PACKAGE_DIR.parent / Path(*module.split(".")) / "__init__.py").is_file()


def _module_file(module: str) -> Path | None:
    base = PACKAGE_DIR.parent / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module, not a module


def chapter_sources(notebook: Path) -> list[Path]:
    """The labkit files a chapter's notebook runs: its imports, followed through labkit's imports,
    with every parent package's ``__init__``. Sorted, relative to the repository root."""
    pending = set().union(*(_imported_modules(ast.parse(code)) for code in _code_cells(notebook)))
    seen: dict[str, Path] = {}
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            name = ".".join(parts[:depth])
            path = _module_file(name)
            if path is None or name in seen:
                continue
            seen[name] = path
            pending |= _imported_modules(ast.parse(path.read_text()), name) - set(seen)
    root = PACKAGE_DIR.parent
    return sorted({p.relative_to(root) for p in seen.values()})


def chapter_source_hash(notebook: Path) -> str:
    """sha256 over the notebook's cells (sources only) and its labkit files' contents."""
    digest = hashlib.sha256()
    nb = json.loads(Path(notebook).read_text())
    for cell in nb.get("cells", []):
        digest.update(cell.get("cell_type", "").encode() + b"\0" + "".join(cell.get("source", "")).encode())
    for rel in chapter_sources(notebook):
        digest.update(str(rel).encode() + b"\0" + (PACKAGE_DIR.parent / rel).read_bytes())
    return digest.hexdigest()[:24]


# --------------------------------------------------------------------------- committing a run

def compact_notebook(nb: dict) -> dict:
    """What is committed of an executed notebook: plotly figures keep their HTML and lose the
    duplicate plotly JSON (the book renders the HTML; Lab re-runs the chapter anyway)."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.plotly.v1+json" in data and "text/html" in data:
                del data["application/vnd.plotly.v1+json"]
    return nb


def commit_full_run(slug: str, notebook_source: Path, executed: Path, claims_path: Path,
                    results_dir: Path) -> tuple[Path, Path]:
    """Copy a finished unmodified full run into ``results_dir/full`` with its source hash."""
    record = json.loads(Path(claims_path).read_text())
    record.setdefault("provenance", {})["source_hash"] = chapter_source_hash(notebook_source)
    out = Path(results_dir) / "full"
    out.mkdir(parents=True, exist_ok=True)
    nb = compact_notebook(json.loads(Path(executed).read_text()))
    write_text_atomic(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", out / f"{slug}.ipynb")
    write_text_atomic(json.dumps(record, indent=2) + "\n", out / f"{slug}.json")
    return out / f"{slug}.ipynb", out / f"{slug}.json"


# --------------------------------------------------------------------------- choosing pages

@dataclasses.dataclass(frozen=True)
class Reproduction:
    slug: str
    record: dict | None  # results/full/<slug>.json (None: none committed)
    notebook: Path | None  # results/full/<slug>.ipynb (None: none committed)
    current_hash: str

    @property
    def recorded_hash(self) -> str | None:
        return ((self.record or {}).get("provenance") or {}).get("source_hash")

    @property
    def fresh(self) -> bool:
        return self.notebook is not None and self.recorded_hash == self.current_hash

    def why_stale(self) -> str:
        if self.record is None:
            return "no full-budget reproduction of this chapter is committed yet"
        when = (self.record.get("date") or "an unknown date")[:10]
        if self.notebook is None:
            return f"the committed full-budget record ({when}) has no executed notebook to show"
        if self.recorded_hash is None:
            return f"the committed full-budget reproduction ({when}) predates source tracking"
        return f"the committed full-budget reproduction ({when}) is older than this chapter's source"


def reproduction(slug: str, notebook_source: Path, results_dir: Path) -> Reproduction:
    full = Path(results_dir) / "full"
    record_path, nb_path = full / f"{slug}.json", full / f"{slug}.ipynb"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    return Reproduction(slug, record, nb_path if nb_path.is_file() else None,
                        chapter_source_hash(notebook_source))


@dataclasses.dataclass(frozen=True)
class Page:
    """One chapter as the book shows it."""

    slug: str
    notebook: Path  # the executed notebook to render
    claims: Path | None  # its claims JSON
    budget: str  # "full" or "quick"
    banner: str  # Markdown shown at the top of the page


def _minutes(seconds: float | None) -> str:
    return "an unknown time" if seconds is None else f"{seconds / 60:.1f} min"


def full_banner(rep: Reproduction) -> str:
    record = rep.record or {}
    prov = record.get("provenance", {})
    return (f"**Full-budget reproduction.** Run on {str(record.get('date', '?'))[:10]} on "
            f"{record.get('device', '?')} in {_minutes(prov.get('duration_s'))} "
            f"(`{prov.get('command', 'labkit run --budget full')}`, labkit "
            f"{record.get('labkit_version', '?')}, source {rep.recorded_hash}). Every number on this "
            "page comes from that run.")


def quick_banner(rep: Reproduction) -> str:
    return (f"**Quick budget: a plumbing check, not the reproduction.** This page shows the quick run "
            f"because {rep.why_stale()}. Its numbers come from tiny models and one seed; "
            f"`labkit run {rep.slug} --budget full` reproduces the chapter.")


def book_pages(quick: Mapping[str, Path], reproductions: Mapping[str, Reproduction]) -> dict[str, Page]:
    """Per chapter: the fresh reproduction, else the quick run (``quick[slug]``) with a banner."""
    pages = {}
    for slug, rep in reproductions.items():
        if rep.fresh:
            pages[slug] = Page(slug, rep.notebook, rep.notebook.with_suffix(".json"), "full",
                               full_banner(rep))
        elif slug in quick:
            nb = Path(quick[slug])
            pages[slug] = Page(slug, nb, nb.with_name(f"{slug}.claims.json"), "quick", quick_banner(rep))
        else:
            raise KeyError(f"{slug}: no fresh reproduction and no quick run given")
    return pages


def stale_chapters(reproductions: Mapping[str, Reproduction]) -> list[str]:
    return [slug for slug, rep in reproductions.items() if not rep.fresh]
