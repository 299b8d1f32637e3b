"""The posterior over KDEs (paper eq. 5): the per-pixel mean and variance of y(θ) for θ drawn
from p(θ | x), the reference that the diffusion model's uncertainty map is compared with.

Units: y(θ) is `ualm.kde(θ, normalize="peak")` by default, the normalisation used for training,
where one isolated emitter peaks at 1 (eq. 4 divided by `kde_peak(sigma_y)`); the variance is
then in those units squared. normalize="sum" gives eq. 4 as written (each emitter sums to 1).
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from . import checks
from .defaults import SHAPE, SIGMA_Y, UPSAMPLE
from .mcmc_result import MCMCResult
from .psf import pixel_integral
from .simulate import kde, kde_peak, to_kde_coords
from .progress import show_progress


def kde_moments(samples, shape=SHAPE, sigma_y: float = SIGMA_Y, upsample: int = UPSAMPLE,
                normalize: str = "peak", batch_size: int = 4096, max_samples: int | None = None,
                method: str = "separable", progress: bool = False):
    """Per-pixel posterior mean and variance of the KDE y(θ) (eq. 5).

    samples: an `MCMCResult` (its emitter positions, all chains pooled) or positions θ of shape
    (..., S, N, 2) in low-res pixels: S posterior draws of N emitters for every leading index
    (frame). `max_samples` keeps that many evenly spaced draws.

    method="separable" (default) uses that each emitter's KDE is an outer product of two 1-D
    pixel integrals, y = c Σ_n e_y,n ⊗ e_x,n: E[y] and E[y²] are then matrix products over the
    draws, summed in float64 `batch_size` draws at a time, with no image rendered per draw.
    method="render" renders every y(θ) with `ualm.kde` (`batch_size` images at a time) and
    merges the moments exactly (Chan et al.); the two agree to rounding (tests).

    Returns (mean, var), each (..., u·H, u·W) on the device of the samples: the mean and the
    sample variance (divided by S − 1) of y(θ) in the units of ``kde(..., normalize)``; by
    default "peak", where an isolated emitter's KDE peaks at 1.
    """
    if isinstance(samples, MCMCResult):
        theta = samples.positions()
        if "shape" in samples.info and tuple(shape) == SHAPE:
            shape = samples.info["shape"]
    else:
        theta = checks.theta(samples, "samples")
        if theta.ndim < 3:
            raise ValueError(f"samples must have shape (..., S, N, 2), got {tuple(theta.shape)}")
    if method not in ("separable", "render"):
        raise ValueError(f"method must be 'separable' or 'render', got {method!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    h, w = checks.shape2d(shape)
    sig = float(checks.positive(sigma_y, "sigma_y"))
    if not isinstance(upsample, int) or upsample < 1:
        raise ValueError(f"upsample must be a positive int, got {upsample!r}")
    if normalize not in ("peak", "sum"):
        raise ValueError(f"normalize must be 'peak' or 'sum', got {normalize!r}")
    s = theta.shape[-3]
    if max_samples is not None:
        if not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"max_samples must be an int >= 2, got {max_samples!r}")
        if s > max_samples:
            idx = torch.linspace(0, s - 1, max_samples, device=theta.device).round().long()
            theta, s = theta[..., idx, :, :], max_samples
    if s < 2:
        raise ValueError(f"need at least 2 samples for a variance, got {s}")
    lead = theta.shape[:-3]
    chunk = max(1, batch_size // max(1, math.prod(lead)))
    steps = trange(0, s, chunk, disable=not show_progress(progress), desc="KDE moments", leave=False)
    if method == "render":
        return _render_moments(theta, steps, chunk, (h, w), sig, upsample, normalize)

    dt = torch.float64
    weight = 1.0 / kde_peak(sig) if normalize == "peak" else 1.0
    cols = torch.arange(w * upsample, dtype=dt, device=theta.device)
    rows = torch.arange(h * upsample, dtype=dt, device=theta.device)
    sig_t = torch.tensor(sig, dtype=dt, device=theta.device)
    sum1 = sum2 = 0.0
    for start in steps:
        c = to_kde_coords(theta[..., start:start + chunk, :, :].to(dt), upsample)
        ex = pixel_integral(cols, c[..., 0:1], sig_t)  # (..., s, N, uW)
        ey = pixel_integral(rows, c[..., 1:2], sig_t)  # (..., s, N, uH)
        sum1 = sum1 + torch.einsum("...snh,...snw->...hw", ey, ex)
        ey2 = (ey[..., :, None, :] * ey[..., None, :, :]).flatten(-3, -2)  # pairs of emitters
        ex2 = (ex[..., :, None, :] * ex[..., None, :, :]).flatten(-3, -2)
        sum2 = sum2 + torch.einsum("...snh,...snw->...hw", ey2, ex2)
    mean = weight * sum1 / s
    var = (weight * weight * sum2 - s * mean * mean) / (s - 1)
    return mean.to(theta.dtype), var.clamp(min=0.0).to(theta.dtype)


def _render_moments(theta, steps, chunk, shape, sigma_y, upsample, normalize):
    count, mean, m2 = 0, None, None
    for start in steps:
        y = kde(theta[..., start:start + chunk, :, :], shape, sigma_y, upsample, normalize=normalize)
        k = y.shape[-3]
        c_mean = y.mean(-3)
        c_m2 = ((y - c_mean[..., None, :, :]) ** 2).sum(-3)
        if mean is None:
            count, mean, m2 = k, c_mean, c_m2
            continue
        tot = count + k
        delta = c_mean - mean
        mean = mean + delta * (k / tot)
        m2 = m2 + c_m2 + delta * delta * (count * k / tot)
        count = tot
    return mean, m2 / (count - 1)
