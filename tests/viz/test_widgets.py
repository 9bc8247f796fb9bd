"""labkit.viz.widgets: explorers render on a control change (no kernel needed) and show refusals."""
import ipywidgets
import plotly.graph_objects as go
import pytest

from labkit.viz import widgets
from labkit.viz.show import PLOTLY_MIME


def figure_of(n, name):
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if n == 13:
        raise RuntimeError("a bug")
    return go.Figure(go.Scatter(x=list(range(n)), y=list(range(n))), layout=dict(title=f"{name}: {n}"))


def shown(panel):
    return [output["data"] for output in panel.output.outputs]


def test_explorer_renders_now_and_on_every_change():
    controls = {"n": widgets.int_slider("n", 3, -5, 20), "name": widgets.dropdown("name", ["a", "b"])}
    panel = widgets.explorer(controls, figure_of, title="demo")
    assert isinstance(panel, ipywidgets.Widget) and isinstance(panel, ipywidgets.VBox)
    assert shown(panel)[0][PLOTLY_MIME]["layout"]["title"]["text"] == "a: 3"
    controls["n"].value = 7
    assert panel.figure.layout.title.text == "a: 7"
    controls["name"].value = "b"
    data = shown(panel)[0]
    assert data[PLOTLY_MIME]["layout"]["title"]["text"] == "b: 7" and "text/html" in data
    assert panel.values == {"n": 7, "name": "b"}


def test_value_error_is_shown_as_a_message_and_the_next_change_recovers():
    controls = {"n": widgets.int_slider("n", 3, -5, 20), "name": widgets.dropdown("name", ["a"])}
    panel = widgets.explorer(controls, figure_of)
    controls["n"].value = -2
    assert panel.figure is None and panel.messages() == ["n must be >= 0; got -2"]
    assert "n must be &gt;= 0" in shown(panel)[0]["text/html"]
    controls["n"].value = 2
    assert panel.figure.layout.title.text == "a: 2" and panel.messages() == []


def test_other_errors_are_shown_and_raised():
    controls = {"n": widgets.int_slider("n", 3, -5, 20), "name": widgets.dropdown("name", ["a"])}
    panel = widgets.explorer(controls, figure_of)
    with pytest.raises(RuntimeError, match="a bug"):
        controls["n"].value = 13
    assert "RuntimeError: a bug" in shown(panel)[0]["text/plain"]


def test_button_explorer_waits_for_a_click():
    calls = []

    def render(n):
        calls.append(n)
        return [f"n is {n}", go.Figure(layout=dict(title=str(n)))]

    controls = {"n": widgets.int_slider("n", 1, 0, 9)}
    panel = widgets.explorer(controls, render, button="Train", render_now=False)
    assert calls == [] and panel.output.outputs == ()
    controls["n"].value = 4
    assert calls == []
    panel.button.click()
    assert calls == [4] and panel.messages() == ["n is 4"] and panel.figure.layout.title.text == "4"
    assert len(panel.output.outputs) == 2 and panel.status.value == ""


def test_show_in_refuses_unknown_items_and_message_kinds():
    output = ipywidgets.Output()
    with pytest.raises(TypeError, match="plotly figures"):
        widgets.show_in(output, object())
    with pytest.raises(ValueError, match="kind"):
        widgets.Message("x", kind="loud")
    widgets.show_in(output, widgets.Message("careful", kind="error"))
    assert output.outputs[0]["data"]["text/plain"] == "careful"


def test_control_factories():
    assert widgets.log_slider("λ", 0.1, -3, 1).value == pytest.approx(0.1)
    assert widgets.selection_slider("lr", [0.01, 0.1], 0.1).value == 0.1
    assert widgets.toggle("kind", ["a", "b"]).value == "a"
    assert widgets.int_slider("b", 5, 1, 9).continuous_update is False
