"""labkit.viz.plots: static controls select exactly one group, subplot refs, compact arrays, the look."""
import json

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from labkit.viz import plots


def scatter(name, **refs):
    return go.Scatter(x=[0, 1], y=[1, 2], name=name, **refs)


def test_dropdown_options_each_show_one_group_and_keep_static_traces():
    fig = go.Figure([scatter("static")])
    groups = {"a": [scatter("a1"), scatter("a2")], "b": [scatter("b1")],
              "c": [scatter("c1"), scatter("c2"), scatter("c3")]}
    fig = plots.figure_with_dropdown(groups, fig=fig, active=1, layout_updates=[{"title.text": k} for k in groups])
    shown = plots.control_visibility(fig)
    assert [label for label, _ in shown] == ["a", "b", "c"]
    names = [t.name for t in fig.data]
    for label, indices in shown:
        assert [names[i] for i in indices] == ["static"] + [t.name for t in groups[label]]
    # the figure opens on the active option, with its layout update applied
    assert [t.visible for t in fig.data] == [True, False, False, True, False, False, False]
    assert fig.layout.title.text == "b"
    assert fig.layout.updatemenus[0].active == 1
    assert fig.layout.updatemenus[0].buttons[2].args[1] == {"title.text": "c"}


def test_slider_keeps_subplot_refs_and_selects_one_step_each():
    fig = make_subplots(rows=1, cols=2)
    right = plots.subplot_refs(fig, 1, 2)
    assert right == {"xaxis": "x2", "yaxis": "y2"}
    steps = [(str(i), [scatter(f"left{i}", **plots.subplot_refs(fig, 1, 1)), scatter(f"right{i}", **right)])
             for i in range(4)]
    fig = plots.figure_with_slider(steps, fig=fig, prefix="step ")
    assert len(fig.layout.sliders[0].steps) == 4
    for i, (label, indices) in enumerate(plots.control_visibility(fig)):
        assert label == str(i) and indices == [2 * i, 2 * i + 1]
    assert fig.data[3].xaxis == "x2" and fig.data[3].yaxis == "y2"
    assert [t.visible for t in fig.data][:2] == [True, True] and not any(t.visible for t in fig.data[2:])


def test_frames_restyle_the_same_traces_with_only_what_changes():
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 0], marker=dict(color=[1, 2]), name="points"), scatter("static")])
    steps = [(f"e{i}", [{"y": [i, -i]}]) for i in range(3)]
    fig = plots.figure_with_frames(fig, steps, traces=[0], prefix="epoch ")
    assert [f.name for f in fig.frames] == ["e0", "e1", "e2"] and all(f.traces == (0,) for f in fig.frames)
    assert list(fig.frames[2].data[0].y) == [2, -2] and fig.frames[2].data[0].marker.color is None
    assert [list(s.args[0]) for s in fig.layout.sliders[0].steps] == [["e0"], ["e1"], ["e2"]]
    assert list(fig.data[0].y) == [0, 0] and list(fig.data[0].marker.color) == [1, 2]
    assert plots.control_visibility(fig) == []  # frames do not toggle visibility
    with pytest.raises(ValueError, match="one dict of changes"):
        plots.figure_with_frames(go.Figure([scatter("a"), scatter("b")]), [("x", [{"y": [1]}])])


def test_polar_refs_and_missing_cell():
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "polar"}] * 2])
    assert plots.subplot_refs(fig, 1, 2) == {"subplot": "polar2"}
    with pytest.raises(Exception):
        plots.subplot_refs(fig, 2, 1)


def test_controls_refuse_bad_active_and_empty_groups():
    with pytest.raises(ValueError, match="at least one group"):
        plots.figure_with_slider([])
    with pytest.raises(ValueError, match="active=3"):
        plots.figure_with_dropdown({"a": [scatter("a")]}, active=3)


def test_compact_arrays_are_small_typed_arrays():
    assert plots.compact([1, 2, 300]).dtype == np.uint16
    assert plots.compact([0, 1, 2]).dtype == np.uint8
    assert plots.compact([-1, 2]).dtype == np.int32
    floats = plots.compact([0.123456789, 2.0], digits=3)
    assert floats.dtype == np.float32 and floats[0] == pytest.approx(0.123)
    y = np.random.default_rng(0).random(1000)
    fig = go.Figure(go.Scatter(x=plots.compact(np.arange(1000)), y=plots.compact(y)))
    as_json = json.loads(fig.to_json())["data"][0]
    assert "bdata" in as_json["y"] and as_json["y"]["dtype"] == "f4"
    assert len(json.dumps(as_json)) < 9000  # 1000 points in ~8 kB, against ~22 kB of JSON numbers


def test_band_is_mean_plus_and_minus_std_with_one_legend_entry():
    band, line = plots.band_traces([0, 1, 2], [1.0, 2.0, 3.0], [0.5, np.nan, 0.5], name="vanilla", colour="#112233")
    assert list(band.y) == [1.5, 2.0, 3.5, 2.5, 2.0, 0.5]  # upper left→right, lower right→left; NaN std → 0
    assert band.fill == "toself" and band.showlegend is False and band.hoverinfo == "skip"
    assert band.fillcolor == "rgba(17,34,51,0.18)" and line.line.color == "#112233"
    fig = plots.plot_lines_with_bands({"vanilla": ([0, 1], [1, 2], [0, 0]), "svmax": ([0, 1], [2, 3], [0, 0])},
                                      title="t", log_x=True)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"
    assert fig.data[1].line.color == plots.COLOURS["vanilla"] and fig.data[3].line.color == plots.COLOURS["svmax"]
    assert fig.layout.template.layout.font.size == 14


def test_colours_are_fixed_per_method_with_a_palette_fallback():
    assert plots.colour_for("SVMax") == plots.COLOURS["svmax"] != plots.colour_for("vanilla")
    assert plots.colour_for("unknown method", 2) == plots.PALETTE[2]


def test_bars_heatmap_table_and_message():
    fig = plots.plot_bars({"R@1": (["a", "b"], [0.5, 0.7], [0.1, 0.0])}, horizontal=True,
                          colours={"R@1": ["#000000", "#FFFFFF"]}, hovertext={"R@1": ["x", "y"]})
    bar = fig.data[0]
    assert bar.orientation == "h" and list(bar.y) == ["a", "b"] and list(bar.error_x.array) == pytest.approx([0.1, 0])
    assert fig.layout.yaxis.autorange == "reversed"  # first row on top
    grouped = plots.plot_bars({"vanilla": (["lr 1"], [2.0], None), "svmax": (["lr 1"], [3.0], None)})
    assert len(grouped.data) == 2 and grouped.layout.barmode == "group" and grouped.data[0].error_y.array is None

    heat = plots.plot_heatmap([[0.1, np.nan], [-0.2, 0.3]], ["b=1", "b=2"], ["d=1", "d=2"], zmid=0.0)
    assert heat.data[0].zmid == 0.0 and list(heat.data[0].x) == ["b=1", "b=2"]

    rows = [{"row": "vanilla", "r1": 0.51234, "x": float("nan")}, {"row": "svmax", "r1": 0.9, "x": 1}]
    table = plots.plot_table(rows, {"row": "row", "r1": "R@1", "x": "x"})
    cells = table.data[0].cells.values
    assert list(cells[0]) == ["vanilla", "svmax"] and list(cells[1]) == ["0.512", "0.900"] and cells[2][0] == "—"
    assert "<b>R@1</b>" in table.data[0].header.values

    message = plots.plot_message("runs at the full budget")
    assert message.layout.annotations[0].text == "runs at the full budget" and not message.data


def test_log_count_levels_and_colour_bar():
    levels = plots.log_count_levels([0, 1, 9, 99, 2500])
    assert levels.dtype == np.uint8 and levels[0] == 0 and np.all(np.diff(levels.astype(int)) > 0)
    assert levels[2] == plots.LEVELS_PER_DECADE  # 1 + 9 = 10: one decade
    axis = plots.log_count_coloraxis(2500)
    assert axis["colorbar"]["ticktext"] == ["0", "1", "10", "100", "1k"]
    assert axis["cmax"] == float(levels[-1]) and axis["colorbar"]["tickvals"][0] == 0
