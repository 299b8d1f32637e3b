"""Convergence diagnostics of Markov chains after Vehtari, Gelman, Simpson, Carpenter & Bürkner
(2021): split chains, rank normalisation, R-hat, effective sample size (Geyer's initial
monotone sequence) and autocorrelation. Draws have shape (..., chains, draws).
"""
from __future__ import annotations

import math
import warnings

import torch

from . import checks


def _chains(samples, name="samples") -> torch.Tensor:
    s = checks.as_tensor(samples, name)
    if s.ndim < 2:
        raise ValueError(f"{name} must have shape (..., chains, draws), got {tuple(s.shape)}")
    if s.shape[-1] < 4:
        raise ValueError(f"{name} needs at least 4 draws per chain, got {s.shape[-1]}")
    return s.to(torch.float64)


def split_chains(samples) -> torch.Tensor:
    """Cut every chain in two halves: (..., C, D) -> (..., 2C, D // 2) (a middle draw of an odd
    D is dropped). Split chains expose a drift within a chain to R-hat."""
    s = _chains(samples)
    h = s.shape[-1] // 2
    return torch.cat((s[..., :h], s[..., s.shape[-1] - h:]), dim=-2)


def _rank_normalize(samples) -> torch.Tensor:
    """Normal scores of the pooled ranks over (chains, draws): Φ⁻¹((r − 3/8)/(S + 1/4)), with
    average ranks for ties (a Metropolis chain repeats itself on every rejection)."""
    s = _chains(samples)
    shape = s.shape
    flat = s.flatten(-2)
    srt = flat.sort(dim=-1).values.contiguous()
    lo = torch.searchsorted(srt, flat.contiguous(), right=False)
    hi = torch.searchsorted(srt, flat.contiguous(), right=True)
    r = (lo + hi + 1).to(s.dtype) / 2
    z = torch.special.ndtri((r - 0.375) / (flat.shape[-1] + 0.25))
    return z.reshape(shape)


rank_normalize = _rank_normalize


def _rhat_basic(s):
    n = s.shape[-1]
    means = s.mean(-1)
    w = s.var(-1).mean(-1)
    b_over_n = means.var(-1) if s.shape[-2] > 1 else torch.zeros_like(w)
    var_plus = (n - 1) / n * w + b_over_n
    return torch.sqrt(var_plus / w)


def rhat(samples, rank_normalize: bool = True) -> torch.Tensor:
    """Potential scale reduction R-hat of draws (..., chains, draws) -> (...).

    rank_normalize=True (default): the rank-normalised split R-hat of Vehtari et al. (2021), the
    larger of the bulk value and the tail value (on |draw − median|). False: the classic split
    R-hat of Gelman et al. (BDA3). Values near 1 (< 1.01) mean the chains agree. NaN where all
    draws are equal."""
    s = split_chains(samples)
    if not rank_normalize:
        return _rhat_basic(s)
    bulk = _rhat_basic(_rank_normalize(s))
    med = s.flatten(-2).median(-1).values[..., None, None]
    tail = _rhat_basic(_rank_normalize((s - med).abs()))
    return torch.maximum(bulk, tail)


def _autocov(s, max_elements: int = 1 << 25):
    """Autocovariance of every chain at lags 0..D-1 (biased, divided by D), by FFT, in chunks
    of the leading dims so that the padded transforms stay below `max_elements` values."""
    n = s.shape[-1]
    nfft = 1 << (2 * n - 1).bit_length()
    flat = s.reshape(-1, n)
    step = max(1, max_elements // nfft)
    out = torch.empty_like(flat)
    for i in range(0, flat.shape[0], step):
        d = flat[i:i + step] - flat[i:i + step].mean(-1, keepdim=True)
        f = torch.fft.rfft(d, n=nfft)
        out[i:i + step] = torch.fft.irfft(f * f.conj(), n=nfft)[..., :n] / n
    return out.reshape(s.shape)


def autocorrelation(samples) -> torch.Tensor:
    """Autocorrelation of every chain, (..., C, D) -> (..., C, D), lag 0 first."""
    s = _chains(samples)
    acov = _autocov(s)
    return acov / acov[..., :1]


def _ess_basic(s):
    m, n = s.shape[-2:]
    acov = _autocov(s)
    mean_var = acov[..., 0].mean(-1) * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + s.mean(-1).var(-1)
    rho = 1.0 - (mean_var[..., None] - acov.mean(-2)) / var_plus[..., None]
    rho[..., 0] = 1.0
    k = n // 2
    pairs = rho[..., : 2 * k].reshape(*rho.shape[:-1], k, 2).sum(-1)  # ρ_2t + ρ_2t+1
    keep = torch.cumprod((pairs > 0).to(s.dtype), dim=-1)  # up to the first non-positive pair
    mono = torch.cummin(torch.where(keep > 0, pairs, torch.zeros_like(pairs)), dim=-1).values
    tau = -1.0 + 2.0 * (mono * keep).sum(-1)
    # Stan's floor 1/log10(S) on τ would allow up to S·log10(S) draws for antithetic chains;
    # we never report more effective draws than draws.
    return m * n / tau.clamp(min=1.0)


def ess(samples, rank_normalize: bool = True) -> torch.Tensor:
    """Effective sample size of draws (..., chains, draws) -> (...), all chains together.

    Split chains, the multi-chain autocorrelation ρ_t = 1 − (W − mean autocovariance_t)/var⁺,
    and Geyer's initial monotone sequence (pairs ρ_2t + ρ_2t+1 summed until the first negative
    pair, made non-increasing): ESS = C·D / τ with τ = −1 + 2 Σ pairs (Vehtari et al. 2021).
    rank_normalize=True gives the bulk ESS (on normal scores of ranks), False the classic one.
    For an AR(1) chain with coefficient ρ, ESS ≈ C·D (1 − ρ)/(1 + ρ). The ESS is capped at
    C·D, the number of draws (Stan allows up to C·D·log10(C·D) for antithetic chains). Where
    all draws are equal (a stuck sampler, or a parameter that is not sampled) there is no
    variance to estimate from: NaN, with a RuntimeWarning, as in the `posterior` R package."""
    s = split_chains(samples)
    flat = s.flatten(-2)
    constant = flat.amax(-1) == flat.amin(-1)
    if rank_normalize:
        s = _rank_normalize(s)
    out = _ess_basic(s)
    if bool(constant.any()):
        warnings.warn(f"ess: all draws are equal in {int(constant.sum())} of "
                      f"{constant.numel()} chain sets (a stuck sampler?); their ESS is NaN",
                      RuntimeWarning, stacklevel=2)
        out = torch.where(constant, torch.full_like(out, math.nan), out)
    return out
