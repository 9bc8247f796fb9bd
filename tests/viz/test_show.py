"""labkit.viz.show: one bundle that JupyterLab and the static book both render."""
import subprocess
import sys

import plotly.graph_objects as go
import pytest

from labkit.viz import figure_bundle, show
from labkit.viz.show import PLOTLY_MIME, reset_ids


def make_figure(title="curve"):
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 1, 4]), layout=dict(title=title))


@pytest.fixture(autouse=True)
def fresh_ids():
    reset_ids()
    yield
    reset_ids()


def test_bundle_holds_plotly_json_html_and_text():
    bundle = figure_bundle(make_figure())
    assert set(bundle) == {PLOTLY_MIME, "text/html", "text/plain"}
    assert bundle[PLOTLY_MIME]["data"][0]["y"] == [0, 1, 4]
    assert bundle[PLOTLY_MIME]["layout"]["title"]["text"] == "curve"
    assert bundle["text/plain"] == "<plotly figure: curve>"
    assert "Plotly.newPlot" in bundle["text/html"]


def test_untitled_figure_says_so():
    assert figure_bundle(go.Figure())["text/plain"] == "<plotly figure: untitled>"


def test_html_does_not_embed_or_fetch_plotly_js():
    html = figure_bundle(make_figure())["text/html"]
    assert "<script src=" not in html.replace(" ", "")
    assert "cdn.plot.ly" not in html
    assert len(html) < 50_000  # plotly.min.js itself is megabytes


def test_div_id_is_stable_after_a_reset():
    first = figure_bundle(make_figure())["text/html"]
    reset_ids()
    second = figure_bundle(make_figure())["text/html"]
    assert first == second
    assert 'id="labkit-plotly-' in first


def test_div_id_is_stable_across_processes():
    code = ("import plotly.graph_objects as go; from labkit.viz import figure_bundle; "
            "f = go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 1, 4]), layout=dict(title='curve')); "
            "print(figure_bundle(f)['text/html'])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].strip() == figure_bundle(make_figure())["text/html"]


def test_same_figure_twice_gets_two_ids_and_different_figures_differ():
    ids = [figure_bundle(make_figure())["text/html"].split('id="')[1].split('"')[0] for _ in range(2)]
    assert ids[0] != ids[1] and ids[1] == ids[0] + "-2"
    other = figure_bundle(make_figure("other"))["text/html"].split('id="')[1].split('"')[0]
    assert other not in ids


@pytest.mark.parametrize("bad", [None, {"data": []}, "figure", object()])
def test_non_plotly_input_is_a_type_error_naming_the_parameter(bad):
    with pytest.raises(TypeError, match=r"fig must be a plotly Figure"):
        show(bad)


def test_matplotlib_figure_is_rejected():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    try:
        with pytest.raises(TypeError, match="fig"):
            show(fig)
    finally:
        plt.close(fig)


def test_show_outside_ipython_is_a_quiet_no_op(capsys):
    assert show(make_figure()) is None
    assert capsys.readouterr().out == ""


def test_show_in_ipython_displays_the_raw_bundle(monkeypatch):
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.append((objs, kw)))
    assert show(make_figure()) is None
    (objs, kwargs), = shown
    assert kwargs == {"raw": True}
    assert set(objs[0]) == {PLOTLY_MIME, "text/html", "text/plain"}


def test_package_reexports_show():
    import importlib

    assert show is importlib.import_module("labkit.viz.show").show
