"""Figures and widgets for the chapters.

``plot_*`` builders (``labkit.viz.plots``) return plotly Figures; ``*_explorer`` builders
(``labkit.viz.widgets``) return ipywidgets panels; ``show`` renders a figure so that both JupyterLab
and the static book draw it.
"""
from .show import figure_bundle, show

__all__ = ["figure_bundle", "show"]
