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
    top = float(torch.maximum(omega.detach().max(), n.detach().max()).clamp(min=0.0))
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


def pixel_densities(omega: float, s2: float):
    """One pixel in photon units, z = s + N(0, s²) with s ~ Poisson(ω) (eq. 1 with g = 1; a
    camera with gain g has s² = w²/g²), tabulated on a fine grid of z by FFT convolution.

    Returns (z, dz, p, dp, q): the exact density p(z), its derivative ∂p/∂ω, and the
    Poisson-approximation density q(z) ∝ Poisson(z + s²; ω + s²) normalised on the grid. The
    grid resolves the comb of photon counts (at least 6 points per read-noise std).
    """
    if omega <= 0 or s2 <= 0:
        raise ValueError(f"omega and s2 must be > 0, got {omega}, {s2}")
    s = math.sqrt(s2)
    per_photon = max(10, math.ceil(6 / s))
    dz = 1.0 / per_photon
    q_top = int(omega + 12 * math.sqrt(omega) + 15)
    pad = math.ceil(9 * s + 2)
    z = torch.arange(-pad * per_photon, (q_top + pad) * per_photon + 1, dtype=torch.float64) * dz
    q = torch.arange(q_top + 1.0, dtype=torch.float64)
    pois = torch.exp(q * math.log(omega) - omega - torch.lgamma(q + 1))
    comb, dcomb = torch.zeros_like(z), torch.zeros_like(z)
    at = ((pad + q) * per_photon).long()
    comb[at], dcomb[at] = pois, pois * (q / omega - 1)
    half = math.ceil(9 * s * per_photon)
    t = torch.arange(-half, half + 1, dtype=torch.float64) * dz
    kernel = torch.exp(-0.5 * t**2 / s2) / math.sqrt(2 * math.pi * s2)
    size = len(z) + len(kernel) - 1
    spectrum = torch.fft.rfft(kernel, size)

    def conv(a):
        return torch.fft.irfft(torch.fft.rfft(a, size) * spectrum, size)[half:half + len(z)]

    p, dp = conv(comb).clamp(min=0.0), conv(dcomb)
    n, rate = z + s2, omega + s2
    log_q = n * math.log(rate) - rate - torch.lgamma(n.clamp(min=0.0) + 1)
    qd = torch.where(n >= 0, torch.exp(log_q), torch.zeros_like(z))
    return z, dz, p, dp, qd / (qd.sum() * dz)


def approximation_quality(omega: float, s2: float) -> tuple[float, float]:
    """How good the Poisson approximation is for one pixel with mean ω photons and read-noise
    variance s² (photons²): the total-variation distance between the exact and approximate
    densities, and the efficiency η = I_exact⁻¹ / I_approx⁻¹ ≤ 1 — the share of the exact
    Fisher information about ω that the approximate likelihood's bound accounts for."""
    z, dz, p, dp, q = pixel_densities(omega, s2)
    tv = 0.5 * float((p - q).abs().sum() * dz)
    keep = p > 1e-14 * p.max()  # below this the FFT result is rounding noise
    fisher = float((dp[keep] ** 2 / p[keep]).sum() * dz)
    return tv, 1.0 / ((omega + s2) * fisher)
