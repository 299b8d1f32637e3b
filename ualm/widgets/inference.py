"""Explorers of chapters 3 (Metropolis–Hastings) and 4 (DeepSTORM)."""
from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import PIXEL_NM, detect, mcmc, plotting, posterior
from ..camera import Camera
from ..seeding import make_generator
from ..defaults import COUNT, I0, SHAPE, SIGMA_X, SIGMA_Y
from ..fisher import crlb
from ..psf import expected_frame
from ..simulate import SimConfig, isolated_emitters, simulate_batch
from .core import _F64, _checkbox, _dropdown, _int_text, _slider, make_explorer, near


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
        plotting.show_kde(ax, img, title=f"{name}\nprecision {m.precision:.2f}, recall {m.recall:.2f}",
                          label="KDE (peak-normalised)", vmin=0, vmax=1)
        # where the KDE clears the threshold: what the slider moves, even when the detections
        # do not change (a bright emitter peaks near 1, far above any threshold)
        h, w = img.shape[-2:]
        ax.contour(plotting.to_numpy(img), levels=[float(threshold)], colors="w", linewidths=0.8,
                   linestyles="--", extent=plotting.frame_extent((h // 4, w // 4)), origin="upper")
        plotting.draw_matches(ax, pred, truth, (ip, it), legend=False)
    handles, names = axes[1].get_legend_handles_labels()
    names = [n.split(" (")[0] for n in names]  # the counts differ between the two panels
    handles.append(plt.Line2D([], [], color="k", ls="--", lw=0.8))
    names.append(f"KDE = threshold {threshold:g}")
    fig.legend(handles, names, loc="outside lower center", ncol=5, fontsize=9)
    fig.suptitle(f"i0 = {photons:.0f} photons, {int(n_emitters)} emitters, threshold {threshold:g}, "
                 f"refine = {refine}", fontsize=10)
    return fig


def deepstorm_explorer(model, static: bool | None = None, **defaults):
    """Sliders for photons, number of emitters, seed, detection threshold and refinement,
    redrawing `deepstorm_figure` for the network `model`. Precomputed (see `core.use_static`):
    18 states over photons, emitters and threshold; seed and refinement fixed."""
    d = dict(photons=I0, n_emitters=COUNT, seed=0, threshold=0.3, refine="quadratic")
    d.update(defaults)
    labels = dict(photons="photons i0", n_emitters="emitters", threshold="threshold (peak)",
                  seed="seed", refine="refine")

    def controls():
        return dict(
            photons=_slider(float, d["photons"], 20, 2000, 0.05, labels["photons"], log=True),
            n_emitters=_slider(int, d["n_emitters"], 1, 20, 1, labels["n_emitters"]),
            threshold=_slider(float, d["threshold"], 0.05, 0.9, 0.05, labels["threshold"]),
            seed=_int_text(d["seed"], labels["seed"]),
            refine=_dropdown(["quadratic", "centroid", "none"], d["refine"], labels["refine"]),
        )

    grid = dict(photons=near([50.0, I0, 1000.0], d["photons"]),
                n_emitters=near([COUNT, 2 * COUNT], d["n_emitters"]),
                threshold=near([0.1, 0.3, 0.6], d["threshold"]))
    fixed = {k: d[k] for k in ("seed", "refine")}
    return make_explorer(functools.partial(deepstorm_figure, model), controls, grid,
                         title="DeepSTORM explorer", labels=labels,
                         defaults={k: d[k] for k in grid}, fixed=fixed, static=static, colors=128)


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


def mcmc_explorer(static: bool | None = None, **defaults):
    """Sliders for the tempering β and the proposal variance (log scales), a switch for the
    adaptive proposal, photons and seed, redrawing `mcmc_figure`. `defaults` set the starting
    values of those controls; other `mcmc_figure` arguments (n_chains, n_iter, burn_in, device)
    are passed on fixed. Precomputed (see `core.use_static`): 18 states over β, the proposal
    variance and the switch; photons and seed fixed."""
    d = dict(beta=0.2, proposal_var=0.05, adapt=False, photons=I0, seed=0)
    fixed_args = {k: defaults.pop(k) for k in ("n_chains", "n_iter", "burn_in", "device")
                  if k in defaults}
    unknown = set(defaults) - set(d)
    if unknown:
        raise TypeError(f"mcmc_explorer got unexpected arguments {sorted(unknown)}")
    d.update(defaults)
    labels = dict(beta="tempering β", proposal_var="proposal σ² (px²)",
                  adapt="tune proposal in burn-in", photons="photons i0", seed="seed")

    def controls():
        return dict(
            beta=_slider(float, d["beta"], 0.02, 1.0, 0.05, labels["beta"], log=True),
            proposal_var=_slider(float, d["proposal_var"], 1e-4, 1.0, 0.1, labels["proposal_var"],
                                 log=True),
            adapt=_checkbox(d["adapt"], labels["adapt"]),
            photons=_slider(float, d["photons"], 50, 5000, 0.05, labels["photons"], log=True),
            seed=_int_text(d["seed"], labels["seed"]),
        )

    grid = dict(beta=near([0.05, 0.2, 1.0], d["beta"]),
                proposal_var=near([0.005, 0.05, 0.5], d["proposal_var"]),
                adapt=[False, True])
    fixed = {k: d[k] for k in ("photons", "seed")}
    return make_explorer(functools.partial(mcmc_figure, **fixed_args), controls, grid,
                         title="Metropolis–Hastings explorer", labels=labels,
                         defaults={k: d[k] for k in grid}, fixed=fixed, static=static,
                         dpi=64, colors=128)  # noisy traces: smaller PNGs keep the page < 600 kB
