"""Explorers of chapters 1 (image formation) and 2 (Fisher information, CRLB)."""
from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import PIXEL_NM, plotting
from ..camera import Camera
from ..seeding import make_generator
from ..defaults import I0, SHAPE, SIGMA_X, SIGMA_Y
from ..fisher import crlb
from ..protocols import mle_vs_crlb
from ..psf import expected_frame
from ..simulate import disc_emitters, kde
from .core import _F64, _int_text, _slider, make_explorer, near


# --------------------------------------------------------------------------- chapter 1

def image_formation_figure(photons: float = I0, background: float = 0.0, read_var: float = 5.0,
                           sigma: float = SIGMA_X, gain: float = 1.0, n_emitters: int = 3,
                           seed: int = 0, shape=SHAPE, sigma_y: float = SIGMA_Y):
    """One simulated frame: the camera frame x (ADU) and the KDE y with the true θ, and the
    row of x through the first emitter against its expectation g·ω + o ± one standard
    deviation sqrt(g²ω + w²). Emitters lie on the paper's disc (radius 7 px)."""
    if int(n_emitters) < 1:
        raise ValueError(f"n_emitters must be >= 1, got {n_emitters}")
    camera = Camera(gain=float(gain), offset=100.0, read_var=float(read_var))
    gen = make_generator(seed)
    theta, mask = disc_emitters(1, int(n_emitters), 7.0, shape=shape, generator=gen, dtype=_F64)
    omega = expected_frame(theta, float(photons), float(sigma), float(background), shape,
                           mask=mask)[0]
    x = camera.sample(omega, generator=gen)
    y = kde(theta, shape, sigma_y, mask=mask)[0]

    fig, axes = plotting.subplots(3, width=3.9, height=3.5)
    plotting.show_frame(axes[0], x, title="camera frame x", label="ADU")
    plotting.overlay_theta(axes[0], theta, mask)
    plotting.show_kde(axes[1], y, title=f"KDE y (σ_y = {sigma_y:g} KDE px)",
                      label="y (peak-normalised)")
    plotting.overlay_theta(axes[1], theta, mask)
    row = int(round(float(theta[0, 0, 1])))
    row = min(max(row, 0), shape[0] - 1)
    for ax in axes[:2]:
        ax.axhline(row, color="C1", lw=0.8, ls=":")
    cols = np.arange(shape[1])
    mean = plotting.to_numpy(gain * omega[row] + 100.0)
    sd = np.sqrt(plotting.to_numpy(gain**2 * omega[row] + read_var))
    ax = axes[2]
    ax.fill_between(cols, mean - sd, mean + sd, color="C0", alpha=0.25, label="g·ω + o ± sd")
    ax.plot(cols, mean, color="C0")
    ax.plot(cols, plotting.to_numpy(x[row]), "o", ms=4, color="C1", label=f"x, row y = {row}")
    ax.axvline(float(theta[0, 0, 0]), color="k", lw=0.8, ls="--", label="θ_x")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("pixel value (ADU)")
    ax.set_title("profile through the first emitter")
    ax.legend(fontsize=8, loc="upper right")
    plotting.add_nm_axis(ax, "x")
    fig.suptitle(f"i0 = {photons:.0f} photons, b = {background:g} photons/px, w² = {read_var:g} ADU², "
                 f"g = {gain:g} ADU/photon, σ = {sigma:.2f} px", fontsize=10)
    return fig


def image_formation_explorer(static: bool | None = None, **defaults):
    """Sliders for photons, background, read-noise variance, PSF σ, gain, number of emitters
    and seed, redrawing `image_formation_figure`. Precomputed (see `core.use_static`): 24 states
    over photons, background, gain and σ; the other controls fixed at their defaults."""
    d = dict(photons=I0, background=0.0, read_var=5.0, sigma=SIGMA_X, gain=1.0, n_emitters=3,
             seed=0)
    d.update(defaults)
    labels = dict(photons="photons i0", background="background (photons/px)",
                  read_var="read variance w² (ADU²)", sigma="PSF σ (px)",
                  gain="gain g (ADU/photon)", n_emitters="emitters", seed="seed")

    def controls():
        return dict(
            photons=_slider(float, d["photons"], 10, 10000, 0.05, labels["photons"], log=True),
            background=_slider(float, d["background"], 0.0, 50.0, 0.5, labels["background"]),
            read_var=_slider(float, d["read_var"], 0.0, 200.0, 1.0, labels["read_var"]),
            sigma=_slider(float, d["sigma"], 0.5, 2.5, 0.02, labels["sigma"]),
            gain=_slider(float, d["gain"], 0.25, 8.0, 0.25, labels["gain"]),
            n_emitters=_slider(int, d["n_emitters"], 1, 15, 1, labels["n_emitters"]),
            seed=_int_text(d["seed"], labels["seed"]),
        )

    grid = dict(photons=near([20.0, I0, 2000.0], d["photons"]),
                background=near([0.0, 10.0], d["background"]),
                gain=near([1.0, 4.0], d["gain"]),
                sigma=near([SIGMA_X, 1.8], d["sigma"]))
    fixed = {k: d[k] for k in ("read_var", "n_emitters", "seed")}
    return make_explorer(image_formation_figure, controls, grid, title="Image formation explorer",
                         labels=labels, defaults={k: d[k] for k in grid}, fixed=fixed, static=static)


# --------------------------------------------------------------------------- chapter 2

def crlb_figure(photons: float = I0, background: float = 0.0, read_var: float = 5.0,
                sigma: float = SIGMA_X, n_frames: int = 200, seed: int = 0, shape=(11, 11),
                device=None):
    """CRLB of an isolated emitter's x in nm against photons (for the given background, read
    noise and σ), with the current photons marked and the RMSE of `n_frames` simulated
    maximum-likelihood fits (95 % interval); and the fitted positions' errors in nm with the
    CRLB circle."""
    device = torch.device(device or "cpu")
    nm = PIXEL_NM
    camera = Camera(gain=1.0, offset=100.0, read_var=float(read_var))
    h, w = shape
    centre = torch.tensor([[[(w - 1) / 2 + 0.2, (h - 1) / 2 - 0.1]]], dtype=_F64, device=device)
    grid = torch.logspace(1, 4, 61, dtype=_F64, device=device)
    curve = crlb(centre.expand(len(grid), 1, 2), grid[:, None], float(sigma), float(background),
                 camera, shape, params=("x", "y", "photons", "background"))[:, 0] * nm

    mc = mle_vs_crlb(float(photons), float(background), int(n_frames), camera, float(sigma),
                     shape, seed=int(seed), device=device)
    err = mc.errors.cpu() * nm  # all fits, converged or not (RMSE over all of them)
    n = err.numel()
    rmse = float(err.pow(2).mean().sqrt())
    cr = float(mc.bounds[:, :2].cpu().pow(2).mean().sqrt()) * nm
    conv = mc.converged
    half = 1.96 / math.sqrt(2 * max(n, 1))  # relative 95 % half-width of an RMSE from n values

    fig, axes = plotting.subplots(2, width=4.4, height=3.7)
    ax = axes[0]
    ax.loglog(plotting.to_numpy(grid), plotting.to_numpy(curve), color="C0",
              label="CRLB (x, y, photons, bg fitted)")
    ax.errorbar([photons], [rmse], yerr=[[rmse * half], [rmse * half]], fmt="o", color="C3",
                capsize=3, label=f"MLE RMSE, {int(n_frames)} fits ({100 * conv:.0f} % converged)")
    ax.axvline(photons, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("photons per emitter i0")
    ax.set_ylabel("localization std (nm)")
    ax.set_title(f"CRLB = {cr:.1f} nm, RMSE = {rmse:.1f} nm")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    sec = ax.secondary_yaxis("right", functions=(lambda v: v / nm, lambda v: v * nm))
    sec.set_ylabel("localization std (px)")

    ax = axes[1]
    e = err.numpy()
    ax.scatter(e[:, 0], e[:, 1], s=6, alpha=0.5, color="C0", label="x̂ − x")
    for k, ls in ((1, "-"), (2, "--")):
        ax.add_patch(plt.Circle((0, 0), k * cr, fill=False, color="C3", ls=ls,
                                label=f"{k}·CRLB"))
    lim = 3.2 * cr if math.isfinite(cr) else 1.0
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("x error (nm)")
    ax.set_ylabel("y error (nm)")
    ax.set_title("fitted − true position")
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"i0 = {photons:.0f}, b = {background:g} photons/px, w² = {read_var:g} ADU², "
                 f"σ = {sigma:.2f} px, {shape[0]}×{shape[1]} px frames", fontsize=10)
    return fig


def crlb_explorer(static: bool | None = None, **defaults):
    """Sliders for photons, background, read-noise variance and PSF σ, redrawing
    `crlb_figure` (CRLB in nm and a small batch of simulated MLE fits). Precomputed (see
    `core.use_static`): 24 states over those four, frames and seed fixed."""
    d = dict(photons=I0, background=0.0, read_var=5.0, sigma=SIGMA_X, n_frames=200, seed=0)
    fixed_args = {k: defaults.pop(k) for k in ("shape", "device") if k in defaults}
    d.update(defaults)
    labels = dict(photons="photons i0", background="background (photons/px)",
                  read_var="read variance w² (ADU²)", sigma="PSF σ (px)", n_frames="frames",
                  seed="seed")

    def controls():
        return dict(
            photons=_slider(float, d["photons"], 20, 10000, 0.05, labels["photons"], log=True),
            background=_slider(float, d["background"], 0.0, 50.0, 0.5, labels["background"]),
            read_var=_slider(float, d["read_var"], 0.0, 200.0, 1.0, labels["read_var"]),
            sigma=_slider(float, d["sigma"], 0.5, 2.0, 0.02, labels["sigma"]),
            n_frames=_slider(int, d["n_frames"], 50, 2000, 50, labels["n_frames"]),
            seed=_int_text(d["seed"], labels["seed"]),
        )

    grid = dict(photons=near([20.0, I0, 2000.0], d["photons"]),
                background=near([0.0, 10.0], d["background"]),
                read_var=near([5.0, 100.0], d["read_var"]),
                sigma=near([SIGMA_X, 1.5], d["sigma"]))
    fixed = {k: d[k] for k in ("n_frames", "seed")}
    figure = functools.partial(crlb_figure, **fixed_args) if fixed_args else crlb_figure
    return make_explorer(figure, controls, grid, title="CRLB explorer", labels=labels,
                         defaults={k: d[k] for k in grid}, fixed=fixed, static=static)
