"""Explorers of chapters 5 (the reverse process) and 6 (uncertainty against MCMC and the truth)."""
from __future__ import annotations

import functools

from .. import plotting
from .core import _dropdown, _slider, make_explorer
from .static import MAX_STATES


# --------------------------------------------------------------------------- chapter 5 (diffusion)

def diffusion_figure(result, truth=None, step: int = -1, sample: int = 0, frame: int = 0):
    """The reverse process of one chain of a `SampleResult` kept with keep_path=True: the
    network's ŷ_0 of chain `sample` after step `step`, how that chain differs from the mean of
    the K chains, the spread (std over the chains) at that step, and the truth (if given, else
    the condition ŷ). KDE units; the difference and the std keep one colour scale over all steps,
    so that moving the sliders shows what changes."""
    if result.path is None:
        raise ValueError("result has no path: call uncertainty_map(..., keep_path=True)")
    path = result.path[frame].float().cpu()  # (K, S, H, W)
    n_samples, n_steps = path.shape[:2]
    step = int(step) % n_steps
    sample = int(sample)
    if not 0 <= sample < n_samples:
        raise ValueError(f"sample must be in [0, {n_samples}), got {sample}")
    t = result.info["path_t"][step]
    dev = path - path.mean(0, keepdim=True)
    dev_max = float(dev.abs().max()) or 1.0
    std_max = float(path.std(0).max()) or 1.0
    last = (truth.float().cpu(), "truth y") if truth is not None else \
        (result.yhat[frame].float().cpu(), "condition ŷ = φ(x)")
    fig, axes = plotting.subplots(2, 2, width=3.3, height=3.0)
    axes = axes.reshape(-1)
    plotting.show_kde(axes[0], path[sample, step], title=f"chain {sample}: ŷ_0 at t = {t}",
                      label="KDE units", vmin=0, vmax=1)
    plotting.show_kde(axes[1], dev[sample, step], title=f"chain {sample} − mean of {n_samples}",
                      label="KDE units", vmin=-dev_max, vmax=dev_max, cmap="RdBu_r")
    plotting.show_kde(axes[2], path[:, step].std(0), title=f"std over {n_samples} chains",
                      label="std (KDE units)", vmin=0, vmax=std_max, cmap="magma")
    plotting.show_kde(axes[3], last[0], title=last[1], label="KDE units", vmin=0, vmax=1)
    for ax in axes:
        ax.title.set_fontsize(10)
    fig.suptitle(f"{result.info.get('label') or result.info['sampler']}, step {step + 1} of {n_steps}, t = {t} "
                 f"({result.info['evals_per_sample']} network evaluations per sample)", fontsize=10)
    return fig


def diffusion_explorer(result, truth=None, static: bool | None = None):
    """Sliders over the steps and the chains of a SampleResult kept with keep_path=True;
    nothing is resampled, the figure is redrawn from the stored path. Precomputed (see
    `core.use_static`): up to 6 steps, evenly spaced and ending with the last, × 2 chains."""
    if result.path is None:
        raise ValueError("result has no path: call uncertainty_map(..., keep_path=True)")
    n_samples, n_steps = result.path.shape[1:3]
    labels = dict(step="step", sample="chain")

    def controls():
        return dict(step=_slider(int, n_steps - 1, 0, n_steps - 1, 1, labels["step"]),
                    sample=_slider(int, 0, 0, n_samples - 1, 1, labels["sample"]))

    n_show = min(n_steps, 6)
    steps = sorted({round(i * (n_steps - 1) / max(n_show - 1, 1)) for i in range(n_show)})
    path_t = result.info.get("path_t") if result.info else None
    formats = dict(step=lambda s: f"{s + 1} of {n_steps}"
                   + (f" (t = {path_t[s]})" if path_t is not None else ""))
    grid = dict(step=steps, sample=list(range(min(n_samples, 2))))  # 12 states, ~0.5 MB
    return make_explorer(functools.partial(diffusion_figure, result, truth), controls, grid,
                         title="reverse-process explorer", labels=labels,
                         defaults=dict(step=n_steps - 1, sample=0), formats=formats, static=static)


# --------------------------------------------------------------------------- chapter 6 (calibration)

def uncertainty_figure(maps: dict, reference=None, truth=None, method: str | None = None, frame: int = 0):
    """One frame under one uncertainty method: its sample mean and std map and, when given, the
    MCMC reference std map (`reference` = (mean, var), each (F, uH, uW)) and the actual error
    |mean − truth| (`truth` (F, uH, uW)). The std panels and the error share one colour scale.
    maps: method name -> SampleResult on the same frames. KDE units."""
    if not maps:
        raise ValueError("maps is empty: give at least one method -> SampleResult")
    method = method if method is not None else next(iter(maps))
    if method not in maps:
        raise ValueError(f"method must be one of {list(maps)}, got {method!r}")
    res = maps[method]
    frame = int(frame)
    if not 0 <= frame < len(res):
        raise ValueError(f"frame must be in [0, {len(res)}), got {frame}")
    mean, std = res.mean()[frame].float().cpu(), res.std()[frame].float().cpu()
    panels = [(mean, f"mean of {res.samples.shape[1]}", "KDE units"), (std, "std", "std (KDE units)")]
    title = method
    if reference is not None:
        ref_std = reference[1][frame].float().cpu().clamp_min(0).sqrt()
        panels.append((ref_std, "MCMC std (β = 1)", "std (KDE units)"))
        title += f": total std / MCMC's = {float(std.pow(2).sum().sqrt() / ref_std.pow(2).sum().sqrt()):.2f}"
    if truth is not None:
        panels.append(((mean - truth[frame].float().cpu()).abs(), "|mean − truth|", "KDE units"))
    vmax = max(float(p[0].max()) for p in panels[1:]) or 1.0
    fig, axes = plotting.subplots(len(panels), width=3.0, height=2.9)
    for k, (ax, (img, name, label)) in enumerate(zip(axes, panels)):
        plotting.show_kde(ax, img, title=name, label=label, vmin=0, vmax=1 if k == 0 else vmax,
                          cmap="inferno" if k == 0 else "magma")
    for ax in axes[1:]:
        ax.label_outer()
    fig.suptitle(f"frame {frame}, {title}", fontsize=10)
    return fig


def uncertainty_explorer(maps: dict, reference=None, truth=None, static: bool | None = None):
    """A method menu and a frame slider over precomputed maps (nothing is resampled).
    Precomputed (see `core.use_static`): every method × the first frames, at most 24 states."""
    if not maps:
        raise ValueError("maps is empty: give at least one method -> SampleResult")
    n = len(next(iter(maps.values())))
    labels = dict(method="method", frame="frame")

    def controls():
        return dict(method=_dropdown(list(maps), next(iter(maps)), labels["method"]),
                    frame=_slider(int, 0, 0, n - 1, 1, labels["frame"]))

    grid = dict(method=list(maps), frame=list(range(max(1, min(n, MAX_STATES // len(maps))))))
    return make_explorer(functools.partial(uncertainty_figure, maps, reference, truth), controls,
                         grid, title="uncertainty explorer", labels=labels, static=static)
