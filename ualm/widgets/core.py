"""The generic explorer: controls plus an Output redrawn by a figure function."""
from __future__ import annotations

import math

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

_F64 = torch.float64


def explorer(figure_fn, controls: dict, title: str | None = None):
    """A VBox of `controls` (name -> ipywidgets control) and an Output showing
    `figure_fn(**values)`, redrawn when a control changes."""
    out = W.Output()

    def update(**values):
        with out:
            out.clear_output(wait=True)
            fig = figure_fn(**values)
            display(fig)
            plt.close(fig)

    W.interactive_output(update, controls)
    boxes = [W.HTML(f"<b>{title}</b>")] if title else []
    items = list(controls.values())
    rows = [W.HBox(items[i:i + 3]) for i in range(0, len(items), 3)]
    return W.VBox(boxes + rows + [out])


def _slider(kind, value, lo, hi, step, description, log=False):
    common = dict(description=description, continuous_update=False,
                  style={"description_width": "initial"})
    if log:
        return W.FloatLogSlider(value=value, base=10, min=math.log10(lo), max=math.log10(hi),
                                step=step, **common)
    cls = W.IntSlider if kind is int else W.FloatSlider
    return cls(value=value, min=lo, max=hi, step=step, **common)


