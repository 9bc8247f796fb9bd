"""Plotly builders shared by the chapters: one look, controls that work without a kernel.

Every ``plot_*`` returns a ``plotly.graph_objects.Figure`` and never shows it (``labkit.viz.show``
does). Controls in the static book have no Python behind them, so ``figure_with_dropdown`` and
``figure_with_slider`` put *every* trace in the figure once and let plotly's ``updatemenus`` /
``sliders`` switch their ``visible`` flags: no data is duplicated per step. Arrays go through
``compact`` (float32 or the smallest integer type), which plotly 6+ writes as base64 typed arrays,
several times smaller than JSON numbers.
"""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

# Tableau-10: distinguishable, and mild enough for overlapping bands.
PALETTE = ("#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#B07AA1",
           "#76B7B2", "#EDC948", "#9C755F", "#FF9DA7", "#BAB0AC")
# One colour per method across every chapter: baselines blue-grey, the paper's method orange,
# the method on top of another baseline in a darker shade of the same family.
COLOURS = {
    "vanilla": "#5F7A9A", "baseline": "#5F7A9A", "svmax": "#F28E2B", "vanilla + svmax": "#F28E2B",
    "unrolled": "#2C4F75", "unrolled + svmax": "#B8560F", "spread_out": "#59A14F",
    "svmax_plain": "#B07AA1", "svmax_unnormalized": "#E15759", "bound": "#333333",
}
FONT = "Helvetica Neue, Helvetica, Arial, sans-serif"
GRID = "#E5E7EB"

# A small template of our own: plotly's built-in ones embed ~8 kB of per-trace-type defaults
# into every figure's JSON.
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family=FONT, size=14, color="#222222"),
    # pinned 16 px below the top edge whatever the height, so menus placed above a plot clear it
    title=dict(font=dict(size=18), x=0.01, xanchor="left", y=1.0, yanchor="top", pad=dict(t=16)),
    colorway=list(PALETTE), paper_bgcolor="white", plot_bgcolor="white",
    xaxis=dict(gridcolor=GRID, linecolor="#9CA3AF", zeroline=False, ticks="outside", tickcolor="#9CA3AF",
               title=dict(standoff=8)),
    yaxis=dict(gridcolor=GRID, linecolor="#9CA3AF", zeroline=False, ticks="outside", tickcolor="#9CA3AF",
               title=dict(standoff=8)),
    polar=dict(bgcolor="white", angularaxis=dict(gridcolor=GRID, linecolor="#9CA3AF"),
               radialaxis=dict(gridcolor=GRID, linecolor="#9CA3AF")),
    legend=dict(bgcolor="rgba(255,255,255,0.8)", borderwidth=0, font=dict(size=13)),
    hoverlabel=dict(font=dict(family=FONT, size=13)), hovermode="closest",
    margin=dict(l=70, r=30, t=80, b=60),
))


def colour_for(name: str, index: int = 0) -> str:
    """The house colour of a method name (``COLOURS``), else the ``index``-th palette colour."""
    return COLOURS.get(str(name).strip().lower(), PALETTE[index % len(PALETTE)])


def rgba(colour: str, alpha: float) -> str:
    """``#RRGGBB`` with an opacity, for bands and fills."""
    colour = colour.lstrip("#")
    red, green, blue = (int(colour[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha:g})"


def compact(values: Any, digits: int | None = None) -> np.ndarray:
    """Values as a small NumPy array: integers keep the smallest int type, floats become float32.

    plotly writes NumPy arrays as base64 typed arrays; float32 halves float64 and is far more
    precision than a plot shows. ``digits`` rounds first (for values that end up in hover text).
    """
    array = np.asarray(values)
    if array.dtype.kind in "biu":
        return array.astype(np.min_scalar_type(int(array.max(initial=0)))
                            if array.min(initial=0) >= 0 else np.int32)
    array = array.astype(np.float64)
    if digits is not None:
        array = np.round(array, digits)
    return array.astype(np.float32)


def style(fig: go.Figure, *, title: str | None = None, height: int | None = None, **layout: Any) -> go.Figure:
    """Apply the house template, a title and a height; returns ``fig``."""
    fig.update_layout(template=TEMPLATE, **layout)
    if title is not None:
        fig.update_layout(title_text=title)
    if height is not None:
        fig.update_layout(height=height)
    return fig


def subplot_refs(fig: go.Figure, row: int, col: int) -> dict[str, str]:
    """The trace keywords that place a trace in cell (row, col) of a ``make_subplots`` figure.

    ``{"xaxis": "x3", "yaxis": "y3"}`` for a Cartesian cell, ``{"subplot": "polar2"}`` for a polar
    one: traces built with these can go to ``figure_with_slider`` as plain objects.
    """
    subplot = fig.get_subplot(row, col)
    if subplot is None:
        raise ValueError(f"the figure has no subplot at row={row}, col={col}")
    if hasattr(subplot, "xaxis"):
        return {"xaxis": subplot.xaxis.plotly_name.replace("axis", ""),
                "yaxis": subplot.yaxis.plotly_name.replace("axis", "")}
    return {"subplot": subplot.plotly_name}


# ---- controls that work in the static book -----------------------------------------------------

def _add_groups(fig: go.Figure, groups: Sequence[Sequence[Any]], active: int) -> list[list[bool]]:
    """Add each group's traces; return one visibility mask per group (earlier traces stay on)."""
    if not groups:
        raise ValueError("a control needs at least one group of traces")
    if not 0 <= active < len(groups):
        raise ValueError(f"active={active} is not one of the {len(groups)} groups")
    num_static = len(fig.data)
    owner = []
    for index, traces in enumerate(groups):
        for trace in traces:
            fig.add_trace(trace)
            owner.append(index)
    masks = [[True] * num_static + [o == index for o in owner] for index in range(len(groups))]
    for trace, visible in zip(fig.data, masks[active]):
        trace.visible = visible
    return masks


def figure_with_dropdown(groups: Mapping[str, Sequence[Any]], *, fig: go.Figure | None = None, active: int = 0,
                         layout_updates: Sequence[Mapping[str, Any]] | None = None, x: float = 0.0,
                         y: float = 1.0) -> go.Figure:
    """A dropdown whose options each show one group of traces (and hide all others).

    ``groups`` maps an option label to its traces (with ``xaxis``/``yaxis`` refs for subplots);
    traces already in ``fig`` stay visible under every option. ``layout_updates[i]`` is applied
    with option i (a title, an axis range). ``x``/``y`` place the menu's top-left corner in paper
    coordinates (the default sits just above the plot area, left). Say what the menu chooses in
    the option labels ("lr 0.1 · seed 0"): a separate caption would need room the layout lacks.
    """
    fig = fig if fig is not None else go.Figure()
    labels = list(groups)
    masks = _add_groups(fig, [groups[k] for k in labels], active)
    updates = list(layout_updates or [{}] * len(labels))
    buttons = [dict(label=str(lab), method="update", args=[{"visible": mask}, dict(update)])
               for lab, mask, update in zip(labels, masks, updates)]
    fig.update_layout(updatemenus=[dict(buttons=buttons, active=active, direction="down", showactive=True,
                                        x=x, xanchor="left", y=y, yanchor="bottom", pad=dict(t=2, b=6),
                                        bgcolor="white", bordercolor="#9CA3AF", font=dict(size=13))])
    if updates[active]:
        fig.update_layout(updates[active])
    return fig


def figure_with_slider(steps: Sequence[tuple[str, Sequence[Any]]], *, fig: go.Figure | None = None, active: int = 0,
                       prefix: str = "", layout_updates: Sequence[Mapping[str, Any]] | None = None) -> go.Figure:
    """A slider whose steps each show one group of traces: ``steps`` is ``[(label, traces), ...]``.

    Traces already in ``fig`` stay visible at every step; ``layout_updates[i]`` goes with step i.
    """
    fig = fig if fig is not None else go.Figure()
    masks = _add_groups(fig, [traces for _, traces in steps], active)
    updates = list(layout_updates or [{}] * len(steps))
    slider_steps = [dict(label=str(lab), method="update", args=[{"visible": mask}, dict(update)])
                    for (lab, _), mask, update in zip(steps, masks, updates)]
    fig.update_layout(sliders=[dict(steps=slider_steps, active=active, x=0.02, len=0.96, pad=dict(t=50, b=10),
                                    currentvalue=dict(prefix=prefix, font=dict(size=14)),
                                    font=dict(size=12), bordercolor="#9CA3AF", tickcolor="#9CA3AF")])
    if updates[active]:
        fig.update_layout(updates[active])
    return fig


def figure_with_frames(fig: go.Figure, steps: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
                       traces: Sequence[int] | None = None, active: int = 0, prefix: str = "") -> go.Figure:
    """A slider over animation frames that restyle the *same* traces: ``steps`` is
    ``[(label, [changes for each trace in traces]), ...]``, ``traces`` the indices (default: all).

    For many steps of the same points (an embedding per epoch) this beats ``figure_with_slider``:
    a frame carries only the arrays that change (positions), while colours, sizes and names are
    stored once, and there is no visibility mask per step. Frames play in the static book too.
    """
    indices = list(range(len(fig.data))) if traces is None else list(traces)
    if not steps:
        raise ValueError("a slider needs at least one step")
    if not 0 <= active < len(steps):
        raise ValueError(f"active={active} is not one of the {len(steps)} steps")
    if any(len(changes) != len(indices) for _, changes in steps):
        raise ValueError(f"every step must give one dict of changes for each of the {len(indices)} traces")
    fig.frames = [go.Frame(name=str(label), traces=indices,
                           data=[type(fig.data[i])(**changes) for i, changes in zip(indices, step_changes)])
                  for label, step_changes in steps]
    for i, changes in zip(indices, steps[active][1]):  # the figure opens on the active step
        fig.data[i].update(changes)
    # redraw: true, because only Cartesian scatter traces can be tweened; duration 0: a slider, not a movie
    animate = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    fig.update_layout(sliders=[dict(steps=[dict(label=str(label), method="animate", args=[[str(label)], animate])
                                           for label, _ in steps],
                                    active=active, x=0.02, len=0.96, pad=dict(t=50, b=10),
                                    currentvalue=dict(prefix=prefix, font=dict(size=14)), font=dict(size=12),
                                    bordercolor="#9CA3AF", tickcolor="#9CA3AF")])
    return fig


def control_visibility(fig: go.Figure) -> list[tuple[str, list[int]]]:
    """``(label, indices of the traces it shows)`` for each dropdown option or slider step of ``fig``."""
    entries = [(b.label, b.args) for menu in fig.layout.updatemenus for b in menu.buttons]
    entries += [(s.label, s.args) for slider in fig.layout.sliders for s in slider.steps if s.method != "animate"]
    return [(label, [i for i, v in enumerate(args[0]["visible"]) if v is True]) for label, args in entries]


# ---- traces ------------------------------------------------------------------------------------

def band_traces(x: Sequence[float], mean: Sequence[float], std: Sequence[float], *, name: str, colour: str,
                refs: Mapping[str, str] | None = None, showlegend: bool = True, dash: str | None = None,
                value_format: str = ".3f") -> list[go.Scatter]:
    """A mean line and a shaded mean ± std band (one polygon, no hover), sharing a legend entry."""
    x, mean, std = np.asarray(x, float), np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
    refs = dict(refs or {})
    band = go.Scatter(x=compact(np.r_[x, x[::-1]]), y=compact(np.r_[mean + std, (mean - std)[::-1]]),
                      mode="lines", fill="toself", fillcolor=rgba(colour, 0.18), line=dict(width=0), hoverinfo="skip",
                      showlegend=False, legendgroup=name, name=name, **refs)
    line = go.Scatter(x=compact(x), y=compact(mean), mode="lines", name=name, legendgroup=name,
                      showlegend=showlegend, line=dict(color=colour, width=2.5, dash=dash),
                      hovertemplate=f"{html.escape(name)}<br>%{{x}}: %{{y:{value_format}}}<extra></extra>", **refs)
    return [band, line]


def errorbar_trace(x: Sequence[float], y: Sequence[float], error: Sequence[float] | None, *, name: str,
                   colour: str, dash: str | None = None, symbol: str = "circle", value_format: str = ".3f",
                   refs: Mapping[str, str] | None = None) -> go.Scatter:
    """Markers joined by a line, with symmetric error bars (e.g. ± std over seeds)."""
    error_y = dict(type="data", array=compact(np.nan_to_num(error), 4), thickness=1.5, width=5,
                   color=colour) if error is not None else None
    return go.Scatter(x=list(x), y=compact(y, 4), error_y=error_y, mode="lines+markers", name=name,
                      line=dict(color=colour, width=2.5, dash=dash),
                      marker=dict(color=colour, size=9, symbol=symbol, line=dict(color="white", width=1)),
                      hovertemplate=f"{html.escape(name)}<br>%{{x}}: %{{y:{value_format}}}<extra></extra>",
                      **dict(refs or {}))


def bound_trace(x: Sequence[float], y: Sequence[float], *, name: str, dash: str = "dash",
                colour: str = COLOURS["bound"], refs: Mapping[str, str] | None = None, **kwargs: Any) -> go.Scatter:
    """A thin reference line (a bound, a target, a chance level)."""
    return go.Scatter(x=compact(x), y=compact(y), mode="lines", name=name,
                      line=dict(color=colour, width=1.5, dash=dash),
                      hovertemplate=f"{html.escape(name)}: %{{y:.3f}}<extra></extra>", **dict(refs or {}), **kwargs)


# ---- whole figures -----------------------------------------------------------------------------

def plot_lines_with_bands(curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], *,
                          title: str = "", x_title: str = "", y_title: str = "", log_x: bool = False,
                          colours: Mapping[str, str] | None = None, height: int = 420) -> go.Figure:
    """One mean line with a ± std band per entry of ``curves``: ``{name: (x, mean, std)}``."""
    fig = go.Figure()
    for index, (name, (x, mean, std)) in enumerate(curves.items()):
        colour = (colours or {}).get(name) or colour_for(name, index)
        fig.add_traces(band_traces(x, mean, std, name=name, colour=colour))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else None)
    fig.update_yaxes(title_text=y_title)
    return style(fig, title=title, height=height)


def plot_bars(series: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[float] | None]], *,
              title: str = "", value_title: str = "", category_title: str = "", horizontal: bool = False,
              colours: Mapping[str, str | Sequence[str]] | None = None,
              hovertext: Mapping[str, Sequence[str]] | None = None, value_format: str = ".3f",
              value_range: Sequence[float] | None = None, height: int | None = None) -> go.Figure:
    """Bars with error bars: ``{series name: (categories, values, errors or None)}``; series are grouped.

    A series' colour may be one colour or one per bar. Values are written on the bars.
    """
    fig = go.Figure()
    for index, (name, (categories, values, errors)) in enumerate(series.items()):
        colour = (colours or {}).get(name) or colour_for(name, index)
        error = dict(type="data", array=compact(np.nan_to_num(errors), 4), thickness=1.5, width=4,
                     color="#444444") if errors is not None else None
        values = compact(values, 4)
        position = dict(y=list(categories), x=values, error_x=error, orientation="h") if horizontal else \
            dict(x=list(categories), y=values, error_y=error)
        axis = "x" if horizontal else "y"
        fig.add_trace(go.Bar(name=name, marker=dict(color=colour, line=dict(width=0)),
                             texttemplate=f"%{{{axis}:{value_format}}}", textposition="inside",
                             insidetextanchor="start" if horizontal else "middle",
                             hovertext=(hovertext or {}).get(name),
                             hovertemplate=(f"%{{hovertext}}<br>%{{{axis}:{value_format}}}"
                                            f"<extra>{html.escape(name)}</extra>") if hovertext and name in hovertext
                             else None, **position))
    value_axis, category_axis = ((fig.update_xaxes, fig.update_yaxes) if horizontal
                                 else (fig.update_yaxes, fig.update_xaxes))
    value_axis(title_text=value_title, range=list(value_range) if value_range is not None else None)
    category_axis(title_text=category_title, showgrid=False, autorange="reversed" if horizontal else None,
                  ticks="")
    fig.update_layout(barmode="group", bargap=0.25, showlegend=len(series) > 1,
                      uniformtext=dict(minsize=10, mode="hide"))
    return style(fig, title=title, height=height)


def plot_heatmap(z: Any, x: Sequence[Any], y: Sequence[Any], *, title: str = "", x_title: str = "",
                 y_title: str = "", value_title: str = "", zmid: float | None = None, value_format: str = ".2f",
                 colorscale: str | list = "RdBu", height: int = 420) -> go.Figure:
    """A labelled heatmap of ``z`` (rows along ``y``, columns along ``x``), values written in the cells.

    With ``zmid`` the colour scale is diverging and centred on it (e.g. 0 for a difference).
    """
    z = compact(z, 4)
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in x], y=[str(v) for v in y], zmid=zmid, colorscale=colorscale,
                               texttemplate=f"%{{z:{value_format}}}", textfont=dict(size=15),
                               colorbar=dict(title=dict(text=value_title, side="right")), xgap=2, ygap=2,
                               hovertemplate=f"{x_title} %{{x}}, {y_title} %{{y}}: "
                                             f"%{{z:{value_format}}}<extra></extra>"))
    fig.update_xaxes(title_text=x_title, type="category", showgrid=False)
    fig.update_yaxes(title_text=y_title, type="category", showgrid=False)
    return style(fig, title=title, height=height)


def plot_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str] | None = None, *,
               title: str | None = None, digits: int = 3, height: int | None = None) -> go.Figure:
    """A plotly table of ``rows`` (dicts). ``columns``: keys to show, or ``{key: header}``."""
    if not rows:
        return plot_message("no rows", title=title)
    columns = dict(columns) if isinstance(columns, Mapping) else {k: k for k in (columns or rows[0])}

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "—" if np.isnan(value) else f"{value:.{digits}f}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(key)) for row in rows] for key in columns]
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{html.escape(h)}</b>" for h in columns.values()], fill_color="#EEF1F5",
                    align="left", font=dict(size=14), height=32),
        cells=dict(values=cells, align="left", fill_color=[["white", "#F8F9FB"] * (len(rows) // 2 + 1)],
                   font=dict(size=13), height=28)))
    fig = style(fig, title=title, height=height or 120 + 29 * len(rows))
    return fig.update_layout(margin=dict(l=10, r=10, t=60 if title else 10, b=10))


def plot_message(text: str, *, title: str | None = None, height: int = 220) -> go.Figure:
    """A figure that only says ``text``: the stand-in when there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(text=html.escape(text), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=16, color="#555555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, title=title, height=height)


# ---- log-scaled counts (histograms, GAN sample densities) ---------------------------------------

LEVELS_PER_DECADE = 32  # log levels of 1 + count; 8 decades fit in a uint8


def log_count_levels(counts: Any) -> np.ndarray:
    """``round(32·log10(1 + counts))`` as uint8: a log colour scale that stays a tiny typed array."""
    levels = np.round(LEVELS_PER_DECADE * np.log10(1.0 + np.asarray(counts, dtype=np.float64)))
    return np.clip(levels, 0, 255).astype(np.uint8)


def log_count_coloraxis(max_count: float, *, colorscale: str | list = "Viridis", title: str = "count") -> dict:
    """A shared ``coloraxis`` for ``log_count_levels`` heatmaps whose colour bar reads in counts."""
    ticks = [c for c in (0, 1, 10, 100, 1000, 10_000, 100_000) if c <= max(max_count, 1)]
    return dict(colorscale=colorscale, cmin=0, cmax=max(float(log_count_levels(max_count)), 1.0),
                colorbar=dict(title=dict(text=title, side="right"),
                              tickvals=[float(log_count_levels(c)) for c in ticks],
                              ticktext=[f"{c // 1000}k" if c >= 1000 else str(c) for c in ticks], thickness=14))


def png_source(image: Any) -> str:
    """An image as a PNG data URI for ``go.Image(source=...)``: a fraction of the size of raw pixels.

    ``image`` is ``(3, H, W)`` floats in [0, 1] or ``(3, H, W)`` / ``(H, W, 3)`` uint8.
    """
    import base64
    import io

    from PIL import Image

    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[0] == 3 and pixels.shape[-1] != 3:
        pixels = np.transpose(pixels, (1, 2, 0))  # (H, W, 3)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.round(255 * pixels), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def logged_steps(num_logged: int, end: int, start: int = 0, every: int = 10) -> list[int]:
    """The iterations ``fit(log_every=every)`` logs at for a run from ``start`` to ``end`` (every
    ``every`` steps and the last); spread evenly over the run when the count does not match."""
    steps = list(range(start, end, every))
    if end - 1 not in steps:
        steps.append(end - 1)
    if len(steps) != num_logged:
        steps = np.linspace(start, max(end - 1, start), num_logged).round().astype(int).tolist()
    return steps
