"""Negative log-likelihoods of a frame x (ADU) given expected photons ω.

- `nll_poisson`: the Poisson approximation (eq. 13) on n = (x - o)/g + w²/g²,
  which is treated as Poisson(ω + w²/g²) (Huang et al. 2013).
- `nll_poisson_gaussian`: the exact convolution of eq. 1, a sum over photon counts q of
  Poisson(q; ω)·N(x; g q + o, w²), evaluated with a streamed log-sum-exp.
Both return the sum over the last two (pixel) axes, shape (...).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .camera import Camera

_LOG_2PI = math.log(2 * math.pi)


def _check_pair(x, omega):
    x = checks.as_tensor(x, "x")
    omega = checks.nonnegative(omega, "omega", dtype=x.dtype, device=x.device)
    if x.ndim < 2 or omega.ndim < 2:
        raise ValueError("x and omega must be images with shape (..., H, W)")
    try:
        torch.broadcast_shapes(x.shape, omega.shape)
    except RuntimeError as err:
        raise ValueError(f"x {tuple(x.shape)} and omega {tuple(omega.shape)} do not broadcast") from err
    return x, omega


def poisson_terms(x, omega, camera: Camera):
    """Per-pixel Poisson-approximation NLL, without input checks (for autograd and MCMC)."""
    excess = camera.excess(x)
    n = torch.clamp(camera.to_photons(x), min=0.0)  # data below the offset count as 0 photons
    rate = omega + excess
    return rate - n * torch.log(rate) + torch.lgamma(n + 1.0)


def nll_poisson(x, omega, camera: Camera = Camera()) -> torch.Tensor:
    """Poisson-approximation NLL (eq. 13), summed over pixels. Constant terms included."""
    x, omega = _check_pair(x, omega)
    if (omega + camera.excess(x) <= 0).any():
        raise ValueError("omega + read_var/gain² must be > 0 in every pixel (add background or read noise)")
    return poisson_terms(x, omega, camera).sum(dim=(-2, -1))


def nll_poisson_gaussian(x, omega, camera: Camera = Camera(), chunk: int = 64,
                         n_std: float = 10.0) -> torch.Tensor:
    """Exact Poisson–Gaussian NLL (eq. 1), summed over pixels.

    The infinite sum over photon counts q is truncated to 0 ≤ q ≤ q_max, where q_max lies n_std
    standard deviations above both the largest ω and the largest (x - o)/g, so the dropped mass
    is far below float precision. Where the read-noise variance is 0 the pixel is pure Poisson
    on (x - o)/g.
    """
    x, omega = _check_pair(x, omega)
    x, omega = torch.broadcast_tensors(x, omega)
    g, o, v = camera.maps(x)
    g, o, v = (torch.broadcast_to(t, x.shape) for t in (g, o, v))
    n = (x - o) / g
    top = float(torch.maximum(omega.max(), n.max()).clamp(min=0.0))
    q_max = int(math.ceil(top + n_std * math.sqrt(top + 1.0) + 10.0))
    gaussian = v > 0
    vv = torch.where(gaussian, v, torch.ones_like(v))
    log_omega = torch.log(omega.clamp(min=torch.finfo(x.dtype).tiny))
    run_max = torch.full_like(x, -math.inf)
    run_sum = torch.zeros_like(x)
    for start in range(0, q_max + 1, chunk):
        q = torch.arange(start, min(start + chunk, q_max + 1), dtype=x.dtype, device=x.device)
        log_pois = q * log_omega[..., None] - omega[..., None] - torch.lgamma(q + 1.0)
        log_pois = torch.where((omega[..., None] == 0) & (q > 0), -math.inf, log_pois)
        resid = x[..., None] - g[..., None] * q - o[..., None]
        log_gauss = -0.5 * (resid * resid / vv[..., None] + torch.log(vv[..., None]) + _LOG_2PI)
        terms = log_pois + log_gauss
        m = torch.maximum(run_max, terms.max(dim=-1).values)
        safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        run_sum = run_sum * torch.exp(run_max - safe) + torch.exp(terms - safe[..., None]).sum(-1)
        run_max = m
    log_p = run_max + torch.log(run_sum)
    # Zero read noise: the density is the Poisson pmf at n (n should then be an integer).
    pmf = n * log_omega - omega - torch.lgamma(n.clamp(min=0.0) + 1.0)
    pmf = torch.where(n < 0, torch.full_like(n, -math.inf), pmf)
    log_p = torch.where(gaussian, log_p, pmf)
    return -log_p.sum(dim=(-2, -1))
