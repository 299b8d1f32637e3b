"""ualm: uncertainty-aware single-molecule localization microscopy by guided diffusion.

Conventions: θ has shape (..., N, 2) holding (x, y) in low-resolution pixels; pixel k covers
[k - 1/2, k + 1/2]; images are indexed [row = y, column = x]; ω and backgrounds are photons,
frames x are ADU.
Heavier parts are submodules: `ualm.models` (DeepSTORM), `ualm.train` (training loop),
`ualm.detect` (LoG detection, matching, metrics), `ualm.pretrained` (bundled weights),
`ualm.plotting` and `ualm.widgets` (matplotlib / ipywidgets, imported on demand).
"""
import os as _os
import sys as _sys

# OpenMP threads that wait by sleeping, not spinning, unless the user chose otherwise: beside
# another busy process (a shared JupyterHub, a laptop at work) spinning threads take the cores
# their peers need, and fit_mle fell to 1/20 of its idle rate (benchmarks/busy_neighbour.py).
# It takes effect only if torch is imported after ualm, as in the book's chapters: OpenMP reads
# the variable when torch loads it.
_policy = _os.environ.get("OMP_WAIT_POLICY")  # an empty one is the user's too: OpenMP ignores it
if _policy is None and "torch" not in _sys.modules:
    _policy = "PASSIVE"
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .camera import PAPER_CAMERA, Camera
from .defaults import KDE_PIXEL_NM, PIXEL_NM
from .device import pick_device, pick_profile
from .fisher import crlb, fisher_information, mortensen_std
from .likelihood import nll_poisson, nll_poisson_gaussian, param_names
from .diagnostics import ess, rhat
from .mcmc import MCMCResult, sample_posterior
from .mle import FitResult, fit_mle
from .posterior import kde_moments
from .psf import expected_frame, expected_frame_jacobian, pixel_integral
from .seeding import make_generator
from .session import Session, start
from .simulate import (SimConfig, SMLMDataset, disc_emitters, from_kde_coords, isolated_emitters,
                       kde, kde_centres, kde_peak, simulate_batch, to_kde_coords)

from . import threads as _threads

_threads.OPENMP_SLEEPS = (_policy or "").upper() == "PASSIVE"

__version__ = "0.1.0"
__all__ = [
    "Camera", "PAPER_CAMERA", "make_generator", "pick_device", "pick_profile", "start", "Session",
    "expected_frame", "expected_frame_jacobian", "pixel_integral",
    "SimConfig", "SMLMDataset", "simulate_batch", "disc_emitters", "isolated_emitters",
    "kde", "kde_centres", "kde_peak", "to_kde_coords", "from_kde_coords",
    "nll_poisson", "nll_poisson_gaussian",
    "fisher_information", "crlb", "mortensen_std", "param_names", "fit_mle", "FitResult",
    "sample_posterior", "MCMCResult", "rhat", "ess", "kde_moments",
    "PIXEL_NM", "KDE_PIXEL_NM",
]
