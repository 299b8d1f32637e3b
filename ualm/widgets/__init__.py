"""Interactive explorers for the book (ipywidgets + matplotlib).

Each explorer `X_explorer(**defaults)` has a static counterpart `X_figure(**defaults)` that
returns a matplotlib Figure: the book shows that figure (the explorer's default state) so that
the rendered page has something without a running kernel, and the explorer calls it on every
change. ipywidgets and matplotlib are imported here only.
"""

from .core import explorer
from .diffusion import diffusion_explorer, diffusion_figure, uncertainty_explorer, uncertainty_figure
from .imaging import crlb_explorer, crlb_figure, image_formation_explorer, image_formation_figure
from .inference import deepstorm_explorer, deepstorm_figure, mcmc_explorer, mcmc_figure

__all__ = ["explorer", "image_formation_figure", "image_formation_explorer", "crlb_figure",
           "crlb_explorer", "deepstorm_figure", "deepstorm_explorer", "mcmc_figure", "mcmc_explorer",
           "diffusion_figure", "diffusion_explorer", "uncertainty_figure", "uncertainty_explorer"]
