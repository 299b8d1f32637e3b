"""Interactive explorers for the book (ipywidgets + matplotlib).

Each explorer `X_explorer(**defaults)` has a static counterpart `X_figure(**defaults)` that
returns a matplotlib Figure: the book shows that figure (the explorer's default state) so that
the rendered page has something without a running kernel, and the explorer calls it on every
change. ipywidgets and matplotlib are imported here only.
"""
from __future__ import annotations

import functools
import math

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from . import PIXEL_NM, detect, mcmc, plotting, posterior
from .camera import Camera, make_generator
from .defaults import COUNT, I0, SHAPE, SIGMA_X, SIGMA_Y
from .fisher import crlb
from .protocols import mle_vs_crlb
from .psf import expected_frame
from .simulate import SimConfig, disc_emitters, isolated_emitters, kde, simulate_batch

__all__ = ["image_formation_figure", "image_formation_explorer", "crlb_figure", "crlb_explorer",
           "explorer"]

_F64 = torch.float64


# --------------------------------------------------------------------------- generic explorer

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


def image_formation_explorer(**defaults):
    """Sliders for photons, background, read-noise variance, PSF σ, gain, number of emitters
    and seed, redrawing `image_formation_figure`."""
    d = dict(photons=I0, background=0.0, read_var=5.0, sigma=SIGMA_X, gain=1.0, n_emitters=3,
             seed=0)
    d.update(defaults)
    controls = dict(
        photons=_slider(float, d["photons"], 10, 10000, 0.05, "photons i0", log=True),
        background=_slider(float, d["background"], 0.0, 50.0, 0.5, "background (photons/px)"),
        read_var=_slider(float, d["read_var"], 0.0, 200.0, 1.0, "read variance w² (ADU²)"),
        sigma=_slider(float, d["sigma"], 0.5, 2.5, 0.02, "PSF σ (px)"),
        gain=_slider(float, d["gain"], 0.25, 8.0, 0.25, "gain g (ADU/photon)"),
        n_emitters=_slider(int, d["n_emitters"], 1, 15, 1, "emitters"),
        seed=W.IntText(value=d["seed"], description="seed"),
    )
    return explorer(image_formation_figure, controls, "Image formation explorer")


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


def crlb_explorer(**defaults):
    """Sliders for photons, background, read-noise variance and PSF σ, redrawing
    `crlb_figure` (CRLB in nm and a small batch of simulated MLE fits)."""
    d = dict(photons=I0, background=0.0, read_var=5.0, sigma=SIGMA_X, n_frames=200, seed=0)
    d.update(defaults)
    controls = dict(
        photons=_slider(float, d["photons"], 20, 10000, 0.05, "photons i0", log=True),
        background=_slider(float, d["background"], 0.0, 50.0, 0.5, "background (photons/px)"),
        read_var=_slider(float, d["read_var"], 0.0, 200.0, 1.0, "read variance w² (ADU²)"),
        sigma=_slider(float, d["sigma"], 0.5, 2.0, 0.02, "PSF σ (px)"),
        n_frames=_slider(int, d["n_frames"], 50, 2000, 50, "frames"),
        seed=W.IntText(value=d["seed"], description="seed"),
    )
    return explorer(crlb_figure, controls, "CRLB explorer")


# --------------------------------------------------------------------------- chapter 4

def deepstorm_figure(model, photons: float = I0, n_emitters: int = COUNT, seed: int = 0,
                     threshold: float = 0.3, refine: str = "quadratic", sigma_y: float = SIGMA_Y,
                     shape=SHAPE):
    """One frame through φ: the camera frame x, the estimate ŷ = φ(x) with LoG detections
    matched one-to-one to the truth (5 KDE px tolerance), and the true KDE y with the same
    detector (the oracle). Emitters on the paper's disc."""
    if int(n_emitters) < 1:
        raise ValueError(f"n_emitters must be >= 1, got {n_emitters}")
    cfg = SimConfig(shape=shape, i0=float(photons), count=int(n_emitters), sigma_y=float(sigma_y))
    b = simulate_batch(1, cfg, generator=make_generator(int(seed)), dtype=torch.float32)
    y_hat = model.predict(b["x"]).float().cpu()[0]
    truth = b["theta"][0][b["mask"][0]]
    refine = None if refine in (None, "none") else refine
    fig, axes = plotting.subplots(3, width=3.9, height=3.6)
    plotting.show_frame(axes[0], b["x"][0], title="camera frame x", label="ADU")
    plotting.overlay_theta(axes[0], truth)
    for ax, img, name in ((axes[1], y_hat, "φ(x) = ŷ"), (axes[2], b["y"][0], "oracle: true y")):
        pred = detect.detect(img, sigma_y=sigma_y, threshold=float(threshold), refine=refine)
        ip, it, _ = detect.match(pred, truth)
        m = detect.localization_metrics([pred], truth[None])
        plotting.show_kde(ax, img, title=f"{name}\nP = {m.precision:.2f}, R = {m.recall:.2f}",
                          label="KDE (peak-normalised)", vmin=0, vmax=1)
        plotting.draw_matches(ax, pred, truth, (ip, it), legend=ax is axes[1])
    fig.suptitle(f"i0 = {photons:.0f} photons, {int(n_emitters)} emitters, threshold {threshold:g}, "
                 f"refine = {refine}", fontsize=10)
    return fig


def deepstorm_explorer(model, **defaults):
    """Sliders for photons, number of emitters, seed, detection threshold and refinement,
    redrawing `deepstorm_figure` for the network `model`."""
    d = dict(photons=I0, n_emitters=COUNT, seed=0, threshold=0.3, refine="quadratic")
    d.update(defaults)
    controls = dict(
        photons=_slider(float, d["photons"], 20, 2000, 0.05, "photons i0", log=True),
        n_emitters=_slider(int, d["n_emitters"], 1, 20, 1, "emitters"),
        threshold=_slider(float, d["threshold"], 0.05, 0.9, 0.05, "threshold (peak)"),
        seed=W.IntText(value=d["seed"], description="seed"),
        refine=W.Dropdown(options=["quadratic", "centroid", "none"], value=d["refine"],
                          description="refine"),
    )
    return explorer(functools.partial(deepstorm_figure, model), controls, "DeepSTORM explorer")


# --------------------------------------------------------------------------- chapter 3 (MCMC)

def mcmc_figure(beta: float = 0.2, proposal_var: float = 0.05, adapt: bool = False,
                photons: float = I0, n_chains: int = 4, n_iter: int = 3000,
                burn_in: int = 500, seed: int = 0, device=None):
    """Metropolis–Hastings on one isolated emitter (paper camera) with tempering `beta` and a
    random-walk proposal of variance `proposal_var` px² (tuned during burn-in if `adapt`):
    the traces of x, the draws of (x, y) against the CRLB circle and its 1/√β inflation, and
    the posterior uncertainty map √Var(y) of eq. 5 (peak-normalised KDE units)."""
    device = torch.device(device or "cpu")
    nm = PIXEL_NM
    gen = make_generator(int(seed), device)
    theta, _ = isolated_emitters(1, SHAPE, generator=gen, dtype=_F64, device=device)
    camera = Camera()
    x = camera.sample(expected_frame(theta, float(photons), SIGMA_X, 0.0, SHAPE), generator=gen)[0]
    res = mcmc.sample_posterior(x, camera, i0=float(photons), beta=float(beta),
                                proposal=float(proposal_var), adapt=bool(adapt),
                                n_chains=int(n_chains), n_iter=int(n_iter), burn_in=int(burn_in),
                                seed=int(seed) + 1)
    bound = crlb(theta, float(photons), SIGMA_X, 0.0, camera)[0]  # (2,) px, photons known
    _, var = posterior.kde_moments(res)
    std, rh, ess = res.std(), res.rhat(), res.ess()
    truth = theta[0, 0]

    fig, axes = plotting.subplots(3, width=4.0, height=3.5)
    plotting.show_traces(axes[0], res.param("x0")[:, : min(1500, res.n_draws)], "x (px)",
                         truth=float(truth[0]), band=float(bound[0]))
    axes[0].set_title(f"traces, acceptance {float(res.acceptance.mean()):.2f}")
    axes[0].legend(fontsize=7, loc="upper right")
    ax = axes[1]
    flat = res.flat()[::max(1, res.flat().shape[0] // 4000)]
    centre = res.mean()
    d = plotting.to_numpy(flat - centre) * nm
    t = plotting.to_numpy(truth - centre) * nm
    ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, color="C0", label="draws")
    ax.scatter([t[0]], [t[1]], marker="+", s=80, color="k", zorder=5, label="true θ")
    r1 = float(bound.mean()) * nm
    ax.add_patch(plt.Circle((0, 0), r1, fill=False, color="C3", lw=1.5, zorder=4,
                            label="CRLB (β = 1)"))
    if float(beta) < 1:
        ax.add_patch(plt.Circle((0, 0), r1 / math.sqrt(float(beta)), fill=False, color="C3",
                                lw=1.5, ls="--", zorder=4, label="CRLB / √β"))
    lim = max(4 * r1 / math.sqrt(float(beta)), 1.1 * float(np.abs(d).max()) if d.size else 0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(lim, -lim)
    ax.set_aspect("equal")
    ax.set_xlabel("x − posterior mean (nm)")
    ax.set_ylabel("y − posterior mean (nm)")
    ax.set_title(f"std/CRLB x {float(std[0] / bound[0]):.2f}, y {float(std[1] / bound[1]):.2f}")
    ax.legend(fontsize=7, loc="upper right")
    plotting.show_kde(axes[2], var.sqrt(), title="posterior √Var(y)", label="√Var(y) (peak units)",
                      cmap="magma")
    c = float(truth[0]), float(truth[1])
    axes[2].set_xlim(c[0] - 3, c[0] + 3)
    axes[2].set_ylim(c[1] + 3, c[1] - 3)
    plotting.add_nm_axis(axes[2], "x")
    fig.suptitle(f"β = {float(beta):g}, proposal σ² = {float(proposal_var):g} px²"
                 f"{' (tuned in burn-in)' if adapt else ''}, {int(n_chains)} chains × "
                 f"{res.n_draws} draws: R-hat ≤ {float(rh.max()):.3f}, ESS ≥ {float(ess.min()):.0f}",
                 fontsize=10)
    return fig


def mcmc_explorer(**defaults):
    """Sliders for the tempering β and the proposal variance (log scales), a switch for the
    adaptive proposal, photons and seed, redrawing `mcmc_figure`. `defaults` set the starting
    values of those controls; other `mcmc_figure` arguments (n_chains, n_iter, burn_in, device)
    are passed on fixed."""
    d = dict(beta=0.2, proposal_var=0.05, adapt=False, photons=I0, seed=0)
    fixed = {k: defaults.pop(k) for k in ("n_chains", "n_iter", "burn_in", "device") if k in defaults}
    unknown = set(defaults) - set(d)
    if unknown:
        raise TypeError(f"mcmc_explorer got unexpected arguments {sorted(unknown)}")
    d.update(defaults)
    controls = dict(
        beta=_slider(float, d["beta"], 0.02, 1.0, 0.05, "tempering β", log=True),
        proposal_var=_slider(float, d["proposal_var"], 1e-4, 1.0, 0.1, "proposal σ² (px²)", log=True),
        adapt=W.Checkbox(value=d["adapt"], description="tune proposal in burn-in"),
        photons=_slider(float, d["photons"], 50, 5000, 0.05, "photons i0", log=True),
        seed=W.IntText(value=d["seed"], description="seed"),
    )
    return explorer(functools.partial(mcmc_figure, **fixed), controls, "Metropolis–Hastings explorer")


# --------------------------------------------------------------------------- chapter 5 (diffusion)

def diffusion_figure(result, truth=None, step: int = -1, sample: int = 0, frame: int = 0):
    """The reverse process of one chain of a `SampleResult` kept with keep_path=True: the
    condition ŷ, the network's ŷ_0 of chain `sample` after step `step`, the spread (std over
    the K chains) of ŷ_0 at that step, and the truth (if given). KDE units."""
    if result.path is None:
        raise ValueError("result has no path: call uncertainty_map(..., keep_path=True)")
    path = result.path[frame].float().cpu()  # (K, S, H, W)
    n_samples, n_steps = path.shape[:2]
    step = int(step) % n_steps
    sample = int(sample)
    if not 0 <= sample < n_samples:
        raise ValueError(f"sample must be in [0, {n_samples}), got {sample}")
    t = result.info["path_t"][step]
    panels = [(result.yhat[frame].float().cpu(), "condition ŷ = φ(x)"),
              (path[sample, step], f"chain {sample}: ŷ_0 at t = {t}"),
              (path[:, step].std(0), f"std over {n_samples} chains at t = {t}")]
    if truth is not None:
        panels.append((truth.float().cpu(), "truth y"))
    fig, axes = plotting.subplots(len(panels), width=3.2, height=3.0)
    for k, (ax, (img, title)) in enumerate(zip(axes, panels)):
        std_panel = k == 2
        plotting.show_kde(ax, img, title=title, label="std (KDE units)" if std_panel else "KDE units",
                          vmin=0, vmax=None if std_panel else 1, cmap="magma" if std_panel else "inferno")
    fig.suptitle(f"{result.info['sampler']} sampler, step {step + 1} of {n_steps} "
                 f"({result.info['evals_per_sample']} network evaluations per sample)", fontsize=10)
    return fig


def diffusion_explorer(result, truth=None):
    """Sliders over the steps and the chains of a SampleResult kept with keep_path=True;
    nothing is resampled, the figure is redrawn from the stored path."""
    n_samples, n_steps = result.path.shape[1:3]
    controls = dict(step=_slider(int, n_steps - 1, 0, n_steps - 1, 1, "step"),
                    sample=_slider(int, 0, 0, n_samples - 1, 1, "chain"))
    return explorer(functools.partial(diffusion_figure, result, truth), controls,
                    "reverse-process explorer")
