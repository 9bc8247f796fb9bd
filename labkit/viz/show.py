"""Render a plotly figure for JupyterLab *and* the static book.

plotly 6+ in a kernel emits only ``application/vnd.plotly.v1+json``. JupyterLab renders that MIME
type, but Jupyter Book (myst-nb) has no renderer for it and drops the output without a warning.
``show(fig)`` therefore displays a raw bundle with three entries:

- ``application/vnd.plotly.v1+json``: the figure, for JupyterLab;
- ``text/html``: ``fig.to_html(include_plotlyjs=False, full_html=False)``, for the book, which
  loads ``plotly.min.js`` once per page (see ``labkit.book``);
- ``text/plain``: ``<plotly figure: title>``, for terminals and nbval.

The HTML's div id is derived from a hash of the figure (plus an occurrence count when the same
figure is shown twice in one kernel), so re-executing a notebook gives byte-identical outputs.
"""
from __future__ import annotations

import collections
import hashlib
import json

PLOTLY_MIME = "application/vnd.plotly.v1+json"

_seen: collections.Counter[str] = collections.Counter()


def reset_ids() -> None:
    """Forget which figures were shown (a fresh kernel starts this way)."""
    _seen.clear()


def _title(fig) -> str:
    text = getattr(getattr(fig.layout, "title", None), "text", None)
    return str(text) if text else "untitled"


def figure_bundle(fig) -> dict[str, object]:
    """The MIME bundle ``show`` displays: plotly JSON, HTML with a stable div id, plain text."""
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError as exc:  # pragma: no cover - plotly is a hard dependency
        raise ImportError("labkit.viz.show needs plotly") from exc
    if not isinstance(fig, BaseFigure):
        raise TypeError(f"show(fig): fig must be a plotly Figure, got {type(fig).__name__}")

    import plotly.io as pio

    fig_json = pio.to_json(fig, validate=False, pretty=False)
    digest = hashlib.sha1(fig_json.encode()).hexdigest()[:12]
    _seen[digest] += 1
    div_id = f"labkit-plotly-{digest}" + (f"-{_seen[digest]}" if _seen[digest] > 1 else "")
    height = fig.layout.height
    html = fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id, auto_play=False,
                       default_width="100%", default_height=f"{int(height or 450)}px")
    return {
        PLOTLY_MIME: json.loads(fig_json) | {"config": {"responsive": True}},
        "text/html": html,
        "text/plain": f"<plotly figure: {_title(fig)}>",
    }


def show(fig) -> None:
    """Display ``fig`` so that JupyterLab and the static book both render it.

    Outside IPython (a plain script) this only validates ``fig`` and displays nothing.
    """
    bundle = figure_bundle(fig)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return None
    if get_ipython() is None:
        return None
    display(bundle, raw=True)
    return None
