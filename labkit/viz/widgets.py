"""ipywidgets helpers shared by the chapters' live explorers.

An explorer is a row of controls above an output area; ``render(**values)`` returns what to show
(a plotly Figure, a message, or a list of them). The output area is an ``ipywidgets.Output`` whose
``outputs`` are set to the same MIME bundle ``labkit.viz.show`` displays, rather than a plotly
``FigureWidget``: FigureWidget needs ``anywidget`` in plotly 6+, and setting ``outputs`` needs no
kernel at all, so explorers can be built and driven in tests (set a control's ``.value``).
"""
from __future__ import annotations

import html
import traceback
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets
from plotly.basedatatypes import BaseFigure

from labkit.viz.show import figure_bundle

STYLE = {"description_width": "initial"}

_MESSAGE_COLOURS = {"info": ("#1F3A5F", "#EEF4FB"), "error": ("#7A1F1F", "#FDF0F0")}


class Message:
    """Text to show in an explorer's output instead of (or beside) a figure."""

    def __init__(self, text: str, kind: str = "info"):
        if kind not in _MESSAGE_COLOURS:
            raise ValueError(f"kind must be one of {sorted(_MESSAGE_COLOURS)}; got {kind!r}")
        self.text, self.kind = str(text), kind

    def bundle(self) -> dict[str, str]:
        colour, background = _MESSAGE_COLOURS[self.kind]
        body = html.escape(self.text).replace("\n", "<br>")
        return {"text/html": f'<div style="padding:8px 12px;border-left:4px solid {colour};color:{colour};'
                             f'background:{background};font-size:14px">{body}</div>',
                "text/plain": self.text}


def _bundle(item: Any) -> dict[str, Any]:
    if isinstance(item, BaseFigure):
        return figure_bundle(item)
    if isinstance(item, Message):
        return item.bundle()
    if isinstance(item, str):
        return Message(item).bundle()
    if hasattr(item, "_repr_html_"):  # IPython.display.HTML, a pandas table
        return {"text/html": item._repr_html_(), "text/plain": repr(item)}
    raise TypeError(f"an explorer can show plotly figures, Messages, strings or objects with _repr_html_; "
                    f"got {type(item).__name__}")


def show_in(output: widgets.Output, items: Any) -> None:
    """Replace what ``output`` shows with ``items`` (one item or a list) — no kernel needed."""
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    output.outputs = tuple({"output_type": "display_data", "data": _bundle(item), "metadata": {}}
                           for item in items)


def controls_box(controls: Mapping[str, widgets.Widget]) -> widgets.Box:
    """Controls side by side, wrapping onto more lines when the page is narrow."""
    return widgets.Box(list(controls.values()),
                       layout=widgets.Layout(display="flex", flex_flow="row wrap", align_items="center",
                                             justify_content="flex-start", margin="0 0 8px 0"))


class Explorer(widgets.VBox):
    """Controls, an optional button, a status line and an output area that ``render`` fills.

    Attributes for notebooks and tests: ``controls`` (name → widget), ``output``, ``items`` (what
    the last render returned, e.g. the figure to ``show`` as a static copy) and ``figure`` (the
    first figure among them, or None).
    """

    def __init__(self, controls: Mapping[str, widgets.Widget], render: Callable[..., Any], *,
                 button: str | None = None, title: str | None = None, render_now: bool = True):
        self.controls = dict(controls)
        self.render = render
        self.output = widgets.Output(layout=widgets.Layout(min_height="120px"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 8px"))
        self.button = widgets.Button(description=button, button_style="primary", icon="play") if button else None
        self.items: list[Any] = []
        header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        row = [controls_box(self.controls)] + ([widgets.HBox([self.button, self.status])] if self.button else
                                               [self.status])
        super().__init__(header + row + [self.output])
        if self.button is not None:  # slow renders (training) wait for a click
            self.button.on_click(lambda _: self.refresh())
        else:
            for control in self.controls.values():
                control.observe(lambda _: self.refresh(), names="value")
        if render_now:
            self.refresh()

    @property
    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    @property
    def figure(self) -> BaseFigure | None:
        return next((item for item in self.items if isinstance(item, BaseFigure)), None)

    def refresh(self) -> None:
        """Render with the controls' current values. A ``ValueError`` is the reader's input being
        refused (b < d, say): its message is shown. Anything else is a bug: shown, then raised."""
        self.status.value = "<i>working…</i>"
        try:
            result = self.render(**self.values)
        except ValueError as error:
            result = Message(str(error), kind="error")
        except Exception as error:
            show_in(self.output, Message("".join(traceback.format_exception_only(type(error), error)), "error"))
            self.status.value = ""
            raise
        finally:
            if self.status.value.startswith("<i>working"):
                self.status.value = ""
        self.items = list(result) if isinstance(result, (list, tuple)) else [result]
        show_in(self.output, self.items)

    def messages(self) -> list[str]:
        """The text of the messages currently shown (for tests and for a notebook's assert)."""
        return [item.text if isinstance(item, Message) else item for item in self.items
                if isinstance(item, (Message, str))]


def explorer(controls: Mapping[str, widgets.Widget], render: Callable[..., Any], *, button: str | None = None,
             title: str | None = None, render_now: bool = True) -> Explorer:
    """Lay out ``controls`` above an output that shows ``render(**{name: control.value})``.

    Without ``button`` every control change re-renders; with it, only a click does (for renders
    that train). ``render`` may return a Figure, a ``Message``/str, or a list of them.
    """
    return Explorer(controls, render, button=button, title=title, render_now=render_now)


# ---- controls with the house style ---------------------------------------------------------------

def dropdown(description: str, options: Sequence[Any], value: Any = None) -> widgets.Dropdown:
    return widgets.Dropdown(description=description, options=list(options),
                            value=value if value is not None else list(options)[0], style=STYLE,
                            layout=widgets.Layout(width="auto"))


def toggle(description: str, options: Sequence[Any], value: Any = None) -> widgets.ToggleButtons:
    return widgets.ToggleButtons(description=description, options=list(options),
                                 value=value if value is not None else list(options)[0], style=STYLE)


def int_slider(description: str, value: int, low: int, high: int, step: int = 1) -> widgets.IntSlider:
    # continuous_update off: one render when the reader lets go, not one per pixel dragged
    return widgets.IntSlider(description=description, value=value, min=low, max=high, step=step,
                             continuous_update=False, style=STYLE)


def log_slider(description: str, value: float, low_exponent: float, high_exponent: float,
               step: float = 0.1) -> widgets.FloatLogSlider:
    return widgets.FloatLogSlider(description=description, value=value, base=10, min=low_exponent,
                                  max=high_exponent, step=step, continuous_update=False, readout_format=".3g",
                                  style=STYLE)


def selection_slider(description: str, options: Sequence[Any], value: Any = None) -> widgets.SelectionSlider:
    return widgets.SelectionSlider(description=description, options=list(options),
                                   value=value if value is not None else list(options)[0],
                                   continuous_update=False, style=STYLE)
