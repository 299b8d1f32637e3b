"""Explorers for the book (matplotlib; ipywidgets for the live ones).

Each explorer `X_explorer(...)` has a static counterpart `X_figure(**defaults)` that returns a
matplotlib Figure (the explorer's default state); the explorer redraws it on every change.

An explorer comes in two kinds:

* live (in a notebook, the default): ipywidgets controls, one full-width row each, and the
  figure redrawn by the running kernel for any setting;
* precomputed (`static.StaticExplorer`): a small grid of states (at most 24) rendered to PNG
  beforehand and browsed with plain HTML sliders and a few lines of inline JavaScript, no kernel
  and no widget library needed; the default state is shown first. This is what the rendered
  book shows.

Which one: the argument `static=True / False` of each `X_explorer`; where it is None (the
default), the environment variable UALM_STATIC_WIDGETS: set to 1 (anything but '', 0, false,
no, off) it selects the precomputed kind. The book build (`python3 dev.py book`) sets it. In
the precomputed kind no ipywidgets object is created, so a page without other widgets stores no
widget state and loads no widget JavaScript.

`static.static_explorer(figure_fn, grid, ...)` makes a precomputed explorer of any figure
function. ipywidgets and matplotlib are imported here only (ipywidgets only for a live one).
"""

from .core import explorer, make_explorer, use_static
from .diffusion import diffusion_explorer, diffusion_figure, uncertainty_explorer, uncertainty_figure
from .imaging import crlb_explorer, crlb_figure, image_formation_explorer, image_formation_figure
from .inference import deepstorm_explorer, deepstorm_figure, mcmc_explorer, mcmc_figure
from .static import StaticExplorer, static_explorer

__all__ = ["explorer", "make_explorer", "use_static", "static_explorer", "StaticExplorer",
           "image_formation_figure", "image_formation_explorer", "crlb_figure",
           "crlb_explorer", "deepstorm_figure", "deepstorm_explorer", "mcmc_figure", "mcmc_explorer",
           "diffusion_figure", "diffusion_explorer", "uncertainty_figure", "uncertainty_explorer"]
