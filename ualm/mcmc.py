"""Posteriors p(θ | x) by random-walk Metropolis–Hastings, batched over chains and frames.

Paper appendix A.2: a uniform prior, the Poisson-approximation likelihood (eq. 13), a Gaussian
random-walk proposal θ' = θ + ξ, ξ ~ N(0, σ² I) with σ² = 0.05, and the acceptance probability
α = exp(β(ℓ(θ) − ℓ(θ'))) with ℓ the negative log-likelihood. The paper tempers with β = 0.2 to
reach 50 % acceptance; that samples p(x | θ)^β p(θ), whose variance is about 1/β times the
posterior's (design notes, "Known flaws" 1). Use β = 1 and a tuned proposal (`adapt=True`).

- `rwmh`: the generic sampler for any batched log density; `sample_posterior`: the emitter
  posterior (x, y per emitter, optionally photons and a shared background) of camera frames,
  with the likelihood `ualm.likelihood.EmitterLikelihood`.
- `MCMCResult` (module `ualm.mcmc_result`): the kept draws and their summaries; the
  diagnostics `rhat`, `ess`, `autocorrelation` are in `ualm.diagnostics`.

Shapes: a run over frames (B, H, W) with C chains keeps samples (B, C, D, P) (draws D,
parameters P); a single frame (H, W) gives (C, D, P). All arithmetic stays on the device of the
input; randomness comes from a `torch.Generator` on that device.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from . import checks
from .camera import PAPER_CAMERA, Camera
from .defaults import I0, SIGMA_X
from .fisher import fisher_information
from .likelihood import EmitterLikelihood
from .mcmc_result import MCMCResult
from .mle import fit_mle
from .progress import show_progress
from .threads import cpu_threads, spare_threads

PAPER_PROPOSAL_VAR = 0.05  # σ² of the paper's random-walk proposal (px²)
PAPER_BETA = 0.2
# Near-optimal acceptance rates of random-walk Metropolis on Gaussian targets by dimension
# (Gelman, Roberts & Gilks 1996): 0.44 in 1-D falling towards 0.234.
_TARGET_ACCEPT = {1: 0.44, 2: 0.35, 3: 0.31, 4: 0.28}


def default_target_accept(dim: int) -> float:
    """Acceptance rate the adaptive proposal aims for in `dim` dimensions."""
    return _TARGET_ACCEPT.get(int(dim), 0.25)


# --------------------------------------------------------------------------------------------
# Generic batched random-walk Metropolis–Hastings
# --------------------------------------------------------------------------------------------


def _proposal_cov(proposal, batch, p, dtype, device):
    """A proposal covariance (..., P, P) from a variance, P variances, or a (..., P, P) matrix."""
    if isinstance(proposal, str):
        raise TypeError(f"proposal must be a variance, a (P,) tensor or a (P, P) matrix, got {proposal!r}")
    cov = checks.as_tensor(proposal, "proposal", dtype=dtype, device=device)
    if cov.ndim < 2:
        cov = checks.positive(cov, "proposal")
    eye = torch.eye(p, dtype=dtype, device=device)
    if cov.ndim == 0:
        cov = cov * eye
    elif cov.ndim == 1:
        if cov.shape[0] != p:
            raise ValueError(f"proposal variances must have {p} entries, got {cov.shape[0]}")
        cov = torch.diag_embed(cov)
    elif cov.shape[-2:] != (p, p):
        raise ValueError(f"proposal covariance must be ({p}, {p}), got {tuple(cov.shape)}")
    try:
        cov = torch.broadcast_to(cov, tuple(batch) + (p, p)).clone()
    except RuntimeError as err:
        raise ValueError(f"proposal of shape {tuple(cov.shape)} does not broadcast to the batch "
                         f"{tuple(batch)}") from err
    _, info = torch.linalg.cholesky_ex(cov)
    if (info != 0).any():
        raise ValueError("proposal covariance must be symmetric positive definite")
    return cov


def _adapt_windows(burn_in: int) -> list[int]:
    """Iterations at which the proposal covariance is re-estimated: doubling windows between
    15 % and 90 % of burn-in (after Stan's warm-up), the first 15 % and last 10 % tune only the
    scale. Empty for a burn-in too short to estimate a covariance."""
    if burn_in < 40:
        return []
    start, end = int(0.15 * burn_in), int(0.9 * burn_in)
    span = end - start
    return sorted({start + int(round(span * f)) for f in (1 / 15, 3 / 15, 7 / 15, 1.0)})


def rwmh(log_prob: Callable[[torch.Tensor], torch.Tensor], init, *, n_iter: int = 10_000,
         burn_in: int = 1_000, proposal=PAPER_PROPOSAL_VAR, adapt: bool = False,
         target_accept: float | None = None, thin: int = 1, generator: torch.Generator | None = None,
         seed: int | None = None, names=None, beta: float | torch.Tensor = 1.0, progress: bool = False,
         desc: str = "MCMC", num_threads: int | None = None) -> MCMCResult:
    """Random-walk Metropolis–Hastings on many chains at once.

    log_prob maps a batch of points (..., C, P) to log densities (..., C) (up to a constant;
    -inf or NaN outside the support: such proposals are rejected). init (..., C, P) holds the
    starting point of every chain; the leading dims (...) are independent problems (frames).

    proposal: the covariance of the Gaussian step ξ: a variance σ² (σ² I, the paper's 0.05), P
    variances, or a (P, P) / (..., P, P) matrix. With adapt=True it is only the starting point:
    during burn-in the step is tuned per problem, pooling its chains: Robbins–Monro on the log
    scale towards `target_accept` (default by dimension: 0.44 in 1-D, 0.35 in 2-D, ... 0.25),
    and at the end of doubling windows the covariance is set to 2.38²/P times the covariance
    of the window's draws (Haario et al. 2001; Gelman et al. 1996), taken within chains (each
    about its own mean, pooled over the chains) so that chains in different modes of a
    multimodal target do not inflate it. The proposal is frozen after burn-in, so the kept
    draws come from a fixed Markov kernel. The first `burn_in` of the `n_iter` iterations are
    discarded; every `thin`-th later state is kept.

    `beta` is only recorded here (temper inside `log_prob`). Randomness: `generator` (on the
    device of `init`), else a fresh one seeded with `seed`. On the CPU the loop runs with
    `num_threads` torch threads, by default 1 for fewer than 4096 chains in all: each step is
    many small tensor operations, for which intra-op threads cost more than they save (several
    times slower on a busy machine); for more, torch's setting less the cores other processes
    keep busy (`threads.spare_threads`). The previous setting is restored afterwards.
    """
    init = checks.as_tensor(init, "init")
    if init.ndim < 2:
        raise ValueError(f"init must have shape (..., chains, params), got {tuple(init.shape)}")
    n_iter = checks.as_int(n_iter, "n_iter", 1)
    burn_in = checks.as_int(burn_in, "burn_in", 0)
    thin = checks.as_int(thin, "thin", 1)
    if burn_in >= n_iter:
        raise ValueError(f"burn_in ({burn_in}) must be smaller than n_iter ({n_iter})")
    n_keep = (n_iter - burn_in) // thin
    if n_keep < 1:
        raise ValueError(f"no draws kept: (n_iter - burn_in) // thin = 0 for n_iter={n_iter}, "
                         f"burn_in={burn_in}, thin={thin}")
    device, dtype = init.device, init.dtype
    batch, (c, p) = init.shape[:-2], init.shape[-2:]
    generator = checks.generator(generator, seed, device, "init")
    if target_accept is None:
        target_accept = default_target_accept(p)
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    names = list(names) if names is not None else [f"p{i}" for i in range(p)]
    if len(names) != p:
        raise ValueError(f"names must have {p} entries, got {len(names)}")

    cov = _proposal_cov(proposal, batch, p, dtype, device)
    if num_threads is None:
        num_threads = 1 if math.prod(batch) * c < 4096 else spare_threads()
    num_threads = checks.as_int(num_threads, "num_threads", 1)
    with cpu_threads(num_threads, device):
        return _rwmh_loop(log_prob, init, cov, n_iter, burn_in, thin, n_keep, adapt,
                          float(target_accept), generator, names, beta, progress, desc)


def _rwmh_loop(log_prob, init, cov, n_iter, burn_in, thin, n_keep, adapt, target_accept,
               generator, names, beta, progress, desc):
    device, dtype = init.device, init.dtype
    batch, (c, p) = init.shape[:-2], init.shape[-2:]
    chol = torch.linalg.cholesky(cov)
    log_scale = torch.zeros(batch, dtype=dtype, device=device)

    cur = init.clone()
    cur_lp = log_prob(cur)
    if not isinstance(cur_lp, torch.Tensor) or cur_lp.shape != cur.shape[:-1]:
        raise ValueError(f"log_prob must return a tensor of shape {tuple(cur.shape[:-1])}, got "
                         f"{getattr(cur_lp, 'shape', type(cur_lp).__name__)}")
    if not torch.isfinite(cur_lp).all():
        raise ValueError("init: the log density is -inf or NaN at some starting points "
                         "(outside the prior's support?)")

    samples = torch.empty(batch + (c, n_keep, p), dtype=dtype, device=device)
    kept_lp = torch.empty(batch + (c, n_keep), dtype=dtype, device=device)
    n_acc = torch.zeros(batch + (c,), dtype=dtype, device=device)
    n_acc_burn = torch.zeros_like(n_acc)
    windows = _adapt_windows(burn_in) if adapt else []
    win_start = int(0.15 * burn_in) if windows else -1
    win_ref = win_s1 = win_s2 = None
    win_n = 0
    rm_t = 0  # Robbins–Monro step counter, restarted at each covariance update

    from tqdm.auto import trange

    block = max(1, min(64, (1 << 22) // max(1, math.prod(batch) * c * (p + 1))))
    for t in trange(n_iter, disable=not show_progress(progress), desc=desc, mininterval=0.5, leave=False):
        j = t % block
        if j == 0:  # random numbers for the next `block` iterations at once
            zs = torch.randn((block,) + batch + (c, p), generator=generator, dtype=dtype, device=device)
            log_us = torch.rand((block,) + batch + (c,), generator=generator, dtype=dtype,
                                device=device).log_()
        step = zs[j] @ chol.transpose(-1, -2)
        if adapt:
            step = step * torch.exp(log_scale)[..., None, None]
        prop = cur + step
        lp = log_prob(prop)
        log_alpha = torch.nan_to_num(lp - cur_lp, nan=-math.inf)
        acc = log_us[j] < log_alpha
        cur = torch.where(acc[..., None], prop, cur)
        cur_lp = torch.where(acc, lp, cur_lp)
        if t < burn_in:
            n_acc_burn += acc
            if adapt:
                rm_t += 1
                a = torch.exp(log_alpha.clamp(max=0.0)).mean(-1)  # mean acceptance probability
                log_scale = log_scale + (a - target_accept) / rm_t ** 0.6
                if t == win_start:
                    win_ref, win_n = cur.clone(), 0
                    win_s1 = torch.zeros(batch + (c, p), dtype=dtype, device=device)
                    win_s2 = torch.zeros(batch + (p, p), dtype=dtype, device=device)
                if win_ref is not None:
                    d = cur - win_ref
                    win_s1 = win_s1 + d
                    win_s2 = win_s2 + d.transpose(-1, -2) @ d
                    win_n += 1
                if windows and t + 1 == windows[0]:
                    windows.pop(0)
                    # Within-chain covariance: each chain about its own mean, pooled over the
                    # chains, so that chains sitting in different modes do not inflate it.
                    m = win_s1 / win_n
                    wcov = (win_s2 - win_n * m.transpose(-1, -2) @ m) / (c * max(win_n - 1, 1))
                    diag = torch.diagonal(wcov, dim1=-2, dim2=-1)
                    new = (2.38 ** 2 / p) * (wcov + 1e-6 * torch.diag_embed(diag + 1e-12))
                    new_chol, info = torch.linalg.cholesky_ex(new)
                    ok = (info == 0) & (diag > 0).all(-1)
                    chol = torch.where(ok[..., None, None], new_chol, chol)
                    log_scale = torch.where(ok, torch.zeros_like(log_scale), log_scale)
                    rm_t = 0
                    win_ref, win_n = cur.clone(), 0
                    win_s1, win_s2 = torch.zeros_like(win_s1), torch.zeros_like(win_s2)
                    if not windows:
                        win_ref = None
        else:
            n_acc += acc
            k, r = divmod(t - burn_in + 1, thin)
            if r == 0 and k <= n_keep:
                samples[..., k - 1, :] = cur
                kept_lp[..., k - 1] = cur_lp
    scale = torch.exp(log_scale)[..., None, None] if adapt else 1.0
    final_chol = chol * scale
    return MCMCResult(
        samples=samples, names=names,
        acceptance=n_acc / (n_iter - burn_in),
        burn_in_acceptance=n_acc_burn / max(burn_in, 1),
        log_prob=kept_lp, proposal_cov=final_chol @ final_chol.transpose(-1, -2),
        beta=beta, n_iter=n_iter, burn_in=burn_in, thin=thin,
        info=dict(adapt=adapt, target_accept=float(target_accept) if adapt else None),
    )


# --------------------------------------------------------------------------------------------
# The emitter posterior
# --------------------------------------------------------------------------------------------

def _mle_start(like: EmitterLikelihood, camera: Camera) -> torch.Tensor:
    """One starting point (B, P) per frame from the maximum-likelihood fit of one emitter."""
    sig = float(like.sigma.mean())
    fit = fit_mle(like.x.to(torch.float64), camera, sigma=sig)
    cols = [fit.theta[:, 0, 0], fit.theta[:, 0, 1]]
    if like.sample_photons:
        cols.append(fit.photons.clamp(min=1.0))
    if like.sample_background:
        cols.append(fit.background.clamp(min=0.0))
    return torch.stack(cols, dim=-1).to(like.x.dtype)


def _laplace_cov(like: EmitterLikelihood, p: torch.Tensor) -> torch.Tensor:
    """Inverse expected Fisher information (B, P, P) at parameters p (B, P): the Laplace
    approximation of the posterior covariance, used to scale the initial proposal."""
    theta, i0, bg = like.unpack(p[:, None])
    background = like.background if bg is None else bg[:, 0]  # sampled: the whole background
    if background.shape[-2:] == (1, 1):
        background = background[:, 0, 0]  # per-frame values (B,)
    info = fisher_information(theta[:, 0], i0[:, 0], like.sigma[:, 0, 0, 0, None], background,
                              like.camera, like.shape, like.params)
    eye = torch.eye(like.dim, dtype=p.dtype, device=p.device)
    info = info + 1e-9 * torch.diagonal(info, dim1=-2, dim2=-1).mean(-1)[:, None, None] * eye
    return torch.linalg.inv(info)


def sample_posterior(x, camera: Camera = PAPER_CAMERA, *, n_emitters: int = 1, params=("x", "y"),
                     i0=I0, sigma: float = SIGMA_X, background=0.0, beta=1.0,
                     log_prior: Callable | None = None, n_chains: int = 4, n_iter: int = 10_000,
                     burn_in: int = 1_000, thin: int = 1, proposal=None, adapt: bool | None = None,
                     target_accept: float | None = None, init=None, init_scale: float = 2.0,
                     generator: torch.Generator | None = None, seed: int | None = None,
                     dtype=torch.float64, progress: bool = False,
                     num_threads: int | None = None) -> MCMCResult:
    """Sample p(θ | x) ∝ p(x | θ)^β p(θ) for one frame (H, W) or a batch (B, H, W) in ADU.

    The likelihood is the Poisson approximation (eq. 13) of `EmitterLikelihood` for
    `n_emitters` emitters (a fixed count); `params` picks what is sampled: ("x", "y") per emitter
    (the paper), optionally "photons" per emitter and one shared "background"; the rest is fixed
    at `i0`, `sigma`, `background`. A sampled "background" is the whole background (photons per
    pixel, ≥ 0), so `background` must then stay 0 (a ValueError otherwise). Prior: flat on
    the support (the frame, photons > 0, background ≥ 0) times exp(log_prior(p)) when a
    callable is given; it receives p (B, C, P) in the order of `result.names` and returns
    (B, C). β (a number, or one per frame) tempers the likelihood only, as in the paper (β = 1
    is the posterior; β < 1 inflates its variance by about 1/β).

    Proposal: `proposal=0.05, adapt=False` is the paper's fixed σ² I step. The default
    (`proposal=None`, adapt on) starts from the Laplace approximation 2.38²/P · I(θ̂)⁻¹/β (expected
    Fisher information at the start) and tunes it during burn-in (`rwmh`). A given proposal with
    adapt=None stays fixed.

    Start: `init` (P,), (B, P) — jittered per chain — or (B, C, P) (a single frame: (P,) or
    (C, P)), else the MLE (`fit_mle`, one emitter); a given start outside the support is
    refused (ValueError), never moved. The jitter is `init_scale` times the Laplace std, so
    that chains start over-dispersed, as R-hat needs (jittered points are kept in the frame).
    Computes in `dtype` (float64) on the device of x; seeded by `generator` or `seed`;
    `num_threads` as in `rwmh`. Returns an `MCMCResult` with samples (B, C, D, P), or (C, D, P)
    for a single frame.
    """
    xt = checks.as_tensor(x, "x")
    single = xt.ndim == 2
    beta_t = checks.positive(beta, "beta", dtype=torch.float64)
    if (beta_t > 1.0).any():
        raise ValueError(f"beta must lie in (0, 1], got max {float(beta_t.max()):g}")
    if log_prior is not None and not callable(log_prior):
        raise TypeError(f"log_prior must be a callable p -> log density, got {type(log_prior).__name__}")
    n_chains = checks.as_int(n_chains, "n_chains", 1)
    init_scale = float(checks.nonnegative(init_scale, "init_scale"))
    like = EmitterLikelihood(xt, camera, n_emitters, params, i0, sigma, background, dtype=dtype)
    b, p = like.n_frames, like.dim
    device = like.x.device
    if beta_t.ndim == 0:
        beta = float(beta_t)
        beta_col = beta_mat = beta
    elif beta_t.shape == (b,) and not single:
        beta = beta_t.to(dtype=dtype, device=device)
        beta_col, beta_mat = beta[:, None], beta[:, None, None]
    else:
        raise ValueError(f"beta must be a number or one value per frame ({b},), got shape "
                         f"{tuple(beta_t.shape)}")
    generator = checks.generator(generator, seed, device, "x")

    # Starting points.
    if init is None:
        if like.n_emitters != 1:
            raise ValueError("init is required for n_emitters > 1 (the MLE start fits one emitter)")
        start, jitter = _mle_start(like, camera), True
    else:
        start = checks.as_tensor(init, "init", dtype=dtype, device=device)
        if single and start.ndim in (1, 2):
            start = start[None]
        elif start.ndim == 1:
            start = start.expand(b, -1)
        if start.shape[-1] != p or start.ndim not in (2, 3) or start.shape[0] != b or (
                start.ndim == 3 and start.shape[1] != n_chains):
            want = f"({p},), ({n_chains}, {p})" if single else f"({p},), ({b}, {p}) or ({b}, {n_chains}, {p})"
            raise ValueError(f"init must have shape {want} for params {like.names}, got "
                             f"{tuple(checks.as_tensor(init, 'init').shape)}")
        jitter = start.ndim == 2
        outside = ~like.in_support(start if start.ndim == 3 else start[:, None])
        if bool(outside.any()):
            h, w = like.shape
            raise ValueError(f"init lies outside the support at {int(outside.sum())} starting "
                             f"point(s): positions must lie in the frame, x in [-0.5, {w - 0.5}] "
                             f"and y in [-0.5, {h - 0.5}], photons > 0 and background >= 0 "
                             f"(params {like.names})")
    centre = start if start.ndim == 2 else start.mean(1)
    laplace = _laplace_cov(like, like.into_support(centre)) / beta_mat  # (B, P, P)
    lap_chol, info = torch.linalg.cholesky_ex(laplace)
    fallback = torch.eye(p, dtype=dtype, device=device) * 0.01
    lap_chol = torch.where((info == 0)[:, None, None], lap_chol, fallback)
    if jitter:
        z = torch.randn((b, n_chains, p), generator=generator, dtype=dtype, device=device)
        start = start[:, None, :] + init_scale * z @ lap_chol.transpose(-1, -2)
    start = like.into_support(start)

    if adapt is None:
        adapt = proposal is None
    if proposal is None:
        proposal = (2.38 ** 2 / p) * lap_chol @ lap_chol.transpose(-1, -2)

    def log_target(q):
        lt = like(q)
        if not isinstance(beta, float) or beta != 1.0:
            lt = beta_col * lt
        if log_prior is not None:
            lp = log_prior(q)
            if not isinstance(lp, torch.Tensor) or lp.shape != lt.shape:
                raise ValueError(f"log_prior must return a tensor of shape {tuple(lt.shape)} "
                                 f"(frames, chains), got {getattr(lp, 'shape', type(lp).__name__)}")
            lt = lt + lp
        return lt

    res = rwmh(log_target, start, n_iter=n_iter, burn_in=burn_in, proposal=proposal, adapt=adapt,
               target_accept=target_accept, thin=thin, generator=generator, names=like.names,
               beta=beta, progress=progress, num_threads=num_threads)
    res.info.update(params=like.params, n_emitters=like.n_emitters, shape=like.shape)
    if single:
        for f in ("samples", "acceptance", "burn_in_acceptance", "log_prob", "proposal_cov"):
            setattr(res, f, getattr(res, f)[0])
    return res
