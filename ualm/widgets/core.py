"""The generic explorers: the live one (ipywidgets controls plus an Output redrawn by a figure
function) and the switch between it and the precomputed, kernel-free one of `static.py`."""
from __future__ import annotations

import math
import os

import torch

from .static import static_explorer

_F64 = torch.float64
STATIC_ENV = "UALM_STATIC_WIDGETS"
LIVE_NOTE = "Live explorer: every change is redrawn by the running kernel."


def use_static(static: bool | None = None) -> bool:
    """Whether an explorer should be the precomputed one: `static` when given, else whether the
    environment variable UALM_STATIC_WIDGETS is set to something other than '', '0', 'false',
    'no' or 'off' (the book build sets it to 1)."""
    if static is not None:
        return bool(static)
    return os.environ.get(STATIC_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def explorer(figure_fn, controls: dict, title: str | None = None):
    """A VBox of `controls` (name -> ipywidgets control), one full-width row each, and an Output
    showing `figure_fn(**values)`, redrawn when a control changes."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    out = W.Output(layout=W.Layout(width="100%"))

    def update(**values):
        with out:
            out.clear_output(wait=True)
            fig = figure_fn(**values)
            display(fig)
            plt.close(fig)

    W.interactive_output(update, controls)
    head = [W.HTML(f"<b>{title}</b>")] if title else []
    head.append(W.HTML(f"<i>{LIVE_NOTE}</i>"))
    rows = []
    for control in controls.values():
        control.layout.width = "100%"
        rows.append(W.HBox([control], layout=W.Layout(width="100%")))
    return W.VBox(head + rows + [out], layout=W.Layout(width="100%"))


def make_explorer(figure_fn, controls_fn, grid: dict, *, title: str, labels: dict,
                  defaults: dict | None = None, fixed: dict | None = None,
                  formats: dict | None = None, static: bool | None = None, **static_options):
    """The live explorer `explorer(figure_fn, controls_fn(), title)` or, where `use_static(static)`,
    the precomputed one over `grid` (see static.static_explorer; `fixed` are passed to figure_fn
    there and listed under its sliders; `static_options` such as dpi and colors go to
    static_explorer). controls_fn is called only for the live one, so that a
    static build creates no widget (and the page loads no widget JavaScript)."""
    if use_static(static):
        return static_explorer(figure_fn, grid, defaults=defaults, fixed=fixed, labels=labels,
                               title=title, formats=formats, **static_options)
    return explorer(figure_fn, controls_fn(), title)


def near(values, default):
    """`values` with `default` in it: where it is missing, it replaces the value nearest to it (on
    a log scale where both are positive), so that the grid keeps its size. Sorted for numbers."""
    values = list(values)
    if default in values:
        return values
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        def dist(v):
            if v > 0 and default > 0:
                return abs(math.log(v / default))
            return abs(v - default)
        values[min(range(len(values)), key=lambda i: dist(values[i]))] = default
        return sorted(values)
    return [default] + values


def _slider(kind, value, lo, hi, step, description, log=False):
    import ipywidgets as W

    common = dict(description=description, continuous_update=False,
                  style={"description_width": "initial"}, layout=W.Layout(width="100%"))
    if log:
        return W.FloatLogSlider(value=value, base=10, min=math.log10(lo), max=math.log10(hi),
                                step=step, **common)
    cls = W.IntSlider if kind is int else W.FloatSlider
    return cls(value=value, min=lo, max=hi, step=step, **common)


def _int_text(value, description):
    import ipywidgets as W

    return W.IntText(value=value, description=description, style={"description_width": "initial"},
                     layout=W.Layout(width="100%"))


def _dropdown(options, value, description):
    import ipywidgets as W

    return W.Dropdown(options=list(options), value=value, description=description,
                      style={"description_width": "initial"}, layout=W.Layout(width="100%"))


def _checkbox(value, description):
    import ipywidgets as W

    return W.Checkbox(value=value, description=description, layout=W.Layout(width="100%"))
