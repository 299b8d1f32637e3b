"""Posteriors p(θ | x) by random-walk Metropolis–Hastings, batched over chains and frames.

Paper appendix A.2: a uniform prior, the Poisson-approximation likelihood (eq. 13), a Gaussian
random-walk proposal θ' = θ + ξ, ξ ~ N(0, σ² I) with σ² = 0.05, and the acceptance probability
α = exp(β(ℓ(θ) − ℓ(θ'))) with ℓ the negative log-likelihood. The paper tempers with β = 0.2 to
reach 50 % acceptance; that samples p(x | θ)^β p(θ), whose variance is about 1/β times the
posterior's (design notes, "Known flaws" 1). Use β = 1 and a tuned proposal (`adapt=True`).

- `rwmh`: the generic sampler for any batched log density; `sample_posterior`: the emitter
  posterior (x, y per emitter, optionally photons and a shared background) of camera frames.
- `rhat`, `ess`, `autocorrelation`: diagnostics after Vehtari et al. (2021): split chains,
  rank normalisation, Geyer's initial monotone sequence.

Shapes: a run over frames (B, H, W) with C chains keeps samples (B, C, D, P) (draws D,
parameters P); a single frame (H, W) gives (C, D, P). All arithmetic stays on the device of the
input; randomness comes from a `torch.Generator` on that device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import checks
from .camera import PAPER_CAMERA, Camera, make_generator
from .fisher import fisher_information, param_names
from .psf import edge_integrals

PAPER_PROPOSAL_VAR = 0.05  # σ² of the paper's random-walk proposal (px²)
PAPER_BETA = 0.2
EMITTER_PARAMS = ("x", "y", "photons", "background")
# Near-optimal acceptance rates of random-walk Metropolis on Gaussian targets by dimension
# (Gelman, Roberts & Gilks 1996): 0.44 in 1-D falling towards 0.234.
_TARGET_ACCEPT = {1: 0.44, 2: 0.35, 3: 0.31, 4: 0.28}


def default_target_accept(dim: int) -> float:
    """Acceptance rate the adaptive proposal aims for in `dim` dimensions."""
    return _TARGET_ACCEPT.get(int(dim), 0.25)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class MCMCResult:
    """Draws after burn-in and what is needed to judge them.

    samples (..., chains, draws, params); names of the params (e.g. ['x0', 'y0']);
    acceptance (..., chains): acceptance rate after burn-in; burn_in_acceptance likewise during
    burn-in; log_prob (..., chains, draws): the log target β·log p(x|θ) + log p(θ) of each draw;
    proposal_cov (..., P, P): the proposal covariance used after burn-in (fixed or tuned);
    beta: the tempering, a float or one value per frame.
    Leading dims (...) are the frames of a batched run, absent for a single frame.
    """

    samples: torch.Tensor
    names: list
    acceptance: torch.Tensor
    burn_in_acceptance: torch.Tensor
    log_prob: torch.Tensor
    proposal_cov: torch.Tensor
    beta: float | torch.Tensor = 1.0
    n_iter: int = 0
    burn_in: int = 0
    thin: int = 1
    info: dict = field(default_factory=dict)

    @property
    def n_chains(self) -> int:
        return self.samples.shape[-3]

    @property
    def n_draws(self) -> int:
        return self.samples.shape[-2]

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"name must be one of {self.names}, got {name!r}")
        return self.names.index(name)

    def param(self, name: str) -> torch.Tensor:
        """Draws of one parameter, (..., chains, draws)."""
        return self.samples[..., self.index(name)]

    def flat(self) -> torch.Tensor:
        """All chains pooled: (..., chains·draws, params)."""
        return self.samples.flatten(-3, -2)

    def mean(self) -> torch.Tensor:
        """Posterior mean of each parameter, (..., P), pooled over chains and draws."""
        return self.flat().mean(-2)

    def var(self) -> torch.Tensor:
        """Posterior variance of each parameter, (..., P)."""
        return self.flat().var(-2)

    def std(self) -> torch.Tensor:
        return self.var().sqrt()

    def cov(self) -> torch.Tensor:
        """Posterior covariance (..., P, P)."""
        f = self.flat()
        d = f - f.mean(-2, keepdim=True)
        return d.transpose(-1, -2) @ d / (f.shape[-2] - 1)

    def rhat(self, rank_normalize: bool = True) -> torch.Tensor:
        """Split R-hat per parameter, (..., P); see `rhat`."""
        return rhat(self.samples.movedim(-1, 0), rank_normalize).movedim(0, -1)

    def ess(self, rank_normalize: bool = True) -> torch.Tensor:
        """Effective sample size per parameter (all chains together), (..., P); see `ess`."""
        return ess(self.samples.movedim(-1, 0), rank_normalize).movedim(0, -1)

    def positions(self) -> torch.Tensor:
        """Emitter positions of every draw, (..., chains·draws, N, 2), for KDEs (eq. 5)."""
        n = sum(1 for nm in self.names if nm.startswith("x") and nm[1:].isdigit())
        if n == 0:
            raise ValueError("these samples hold no emitter positions (names x0, y0, ...)")
        idx = [self.index(f"{a}{k}") for k in range(n) for a in ("x", "y")]
        flat = self.flat()[..., idx]
        return flat.reshape(*flat.shape[:-1], n, 2)

    def summary(self) -> str:
        """A small table: mean, std, R-hat, bulk ESS per parameter and the acceptance rate.
        For a batched run each number is the average over frames (R-hat: the largest)."""
        lead = self.samples.ndim - 3
        dims = tuple(range(lead))

        def avg(t):
            return t.float().mean(dims) if lead else t

        mean, std, ess_ = avg(self.mean()), avg(self.std()), avg(self.ess())
        rh = self.rhat().amax(dims) if lead else self.rhat()
        rows = [f"{'param':>10} {'mean':>10} {'std':>10} {'R-hat':>7} {'ESS':>8}"]
        for i, nm in enumerate(self.names):
            rows.append(f"{nm:>10} {float(mean[i]):10.4f} {float(std[i]):10.4f} "
                        f"{float(rh[i]):7.4f} {float(ess_[i]):8.0f}")
        rows.append(f"acceptance {float(self.acceptance.float().mean()):.3f} "
                    f"(beta={_beta_str(self.beta)}, {self.n_chains} chains x {self.n_draws} draws"
                    + (f", {math.prod(self.samples.shape[:lead])} frames)" if lead else ")"))
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (f"MCMCResult(samples={tuple(self.samples.shape)}, names={self.names}, "
                f"acceptance={float(self.acceptance.float().mean()):.3f}, beta={_beta_str(self.beta)})")


def _beta_str(beta) -> str:
    if isinstance(beta, torch.Tensor):
        return "per frame" if beta.numel() > 1 else f"{float(beta):g}"
    return f"{beta:g}"


# --------------------------------------------------------------------------------------------
# Generic batched random-walk Metropolis–Hastings
# --------------------------------------------------------------------------------------------


def _as_int(value, name, lo):
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an int, got {value!r}") from None
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _full_device(device) -> torch.device:
    """The device with its index: "cuda" -> "cuda:<current>" (a tensor's device always has one)."""
    device = torch.device(device)
    if device.index is None and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _generator(generator, seed, device, what: str) -> torch.Generator:
    """The generator to draw from: `generator`, checked to be a torch.Generator on `device`
    itself (cuda:1 is not cuda:0), else a fresh one on `device` seeded with `seed`."""
    if generator is None:
        return make_generator(seed, device)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if _full_device(generator.device) != _full_device(device):
        raise ValueError(f"generator is on {generator.device} but {what} is on {device}")
    return generator


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
    times slower on a busy machine); the previous setting is restored afterwards.
    """
    init = checks.as_tensor(init, "init")
    if init.ndim < 2:
        raise ValueError(f"init must have shape (..., chains, params), got {tuple(init.shape)}")
    n_iter = _as_int(n_iter, "n_iter", 1)
    burn_in = _as_int(burn_in, "burn_in", 0)
    thin = _as_int(thin, "thin", 1)
    if burn_in >= n_iter:
        raise ValueError(f"burn_in ({burn_in}) must be smaller than n_iter ({n_iter})")
    n_keep = (n_iter - burn_in) // thin
    if n_keep < 1:
        raise ValueError(f"no draws kept: (n_iter - burn_in) // thin = 0 for n_iter={n_iter}, "
                         f"burn_in={burn_in}, thin={thin}")
    device, dtype = init.device, init.dtype
    batch, (c, p) = init.shape[:-2], init.shape[-2:]
    generator = _generator(generator, seed, device, "init")
    if target_accept is None:
        target_accept = default_target_accept(p)
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    names = list(names) if names is not None else [f"p{i}" for i in range(p)]
    if len(names) != p:
        raise ValueError(f"names must have {p} entries, got {len(names)}")

    cov = _proposal_cov(proposal, batch, p, dtype, device)
    if num_threads is None:
        num_threads = 1 if math.prod(batch) * c < 4096 else torch.get_num_threads()
    num_threads = _as_int(num_threads, "num_threads", 1)
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and num_threads != old_threads:
        torch.set_num_threads(num_threads)
    try:
        return _rwmh_loop(log_prob, init, cov, n_iter, burn_in, thin, n_keep, adapt,
                          float(target_accept), generator, names, beta, progress, desc)
    finally:
        if torch.get_num_threads() != old_threads:
            torch.set_num_threads(old_threads)


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
    for t in trange(n_iter, disable=not progress, desc=desc, mininterval=0.5, leave=False):
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


class EmitterLikelihood:
    """log p(x | θ) under the Poisson approximation (eq. 13) for frames x (B, H, W) in ADU, as a
    batched function of parameter vectors (B, C, P).

    Parameters per emitter: x, y (px) and, if "photons" is in `params`, its photon count; then
    one shared "background" (photons/pixel) if asked for. What is not sampled is fixed at
    `i0` (scalar, (B,) or (B, N)), `background` (scalar, (B,) or an (H, W)/(B, H, W) map) and
    `sigma` (PSF std in px, scalar or (B,)). A sampled background is the whole background,
    not an excess over a fixed one: with "background" in `params`, `background` must stay 0
    (ValueError otherwise), so that the support "background ≥ 0" is the physical one. The
    value equals ``-nll_poisson(x, ω(θ), camera)`` exactly (constants included); it is evaluated without input checks for speed. The support
    (where the flat prior lives) is the frame, x in [-½, W-½], y in [-½, H-½], photons > 0 and
    background ≥ 0; outside it the log-likelihood is -inf.
    """

    def __init__(self, x, camera: Camera = PAPER_CAMERA, n_emitters: int = 1,
                 params=("x", "y"), i0=200.0, sigma=0.92, background=0.0, dtype=None):
        x = checks.as_tensor(x, "x", dtype=dtype)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"x must be a frame (H, W) or frames (B, H, W), got {tuple(x.shape)}")
        if not isinstance(camera, Camera):
            raise TypeError(f"camera must be a ualm.Camera, got {type(camera).__name__}")
        self.n_emitters = _as_int(n_emitters, "n_emitters", 1)
        params = tuple(params)
        bad = [q for q in params if q not in EMITTER_PARAMS]
        if bad or "x" not in params or "y" not in params or len(set(params)) != len(params):
            raise ValueError(f"params must contain 'x' and 'y' and be taken from {EMITTER_PARAMS}, "
                             f"got {params}")
        self.params = tuple(q for q in EMITTER_PARAMS if q in params)
        self.names = param_names(self.n_emitters, self.params)
        self.sample_photons = "photons" in self.params
        self.sample_background = "background" in self.params
        b, h, w = x.shape
        self.shape = (h, w)
        kw = dict(dtype=x.dtype, device=x.device)
        self.x = x
        self.camera = camera
        n = camera.to_photons(x).clamp(min=0.0)
        self.n_flat = n.reshape(b, h * w, 1)
        self.excess = torch.broadcast_to(camera.excess(x), (h, w))
        self.log_const = -torch.lgamma(n + 1.0).sum((-2, -1))  # (B,)
        nn = self.n_emitters
        try:
            self.i0 = torch.broadcast_to(_per_frame(checks.positive(i0, "i0", **kw), b, 1), (b, nn))
        except RuntimeError as err:
            raise ValueError(f"i0 must be a number, (B,) or (B, N) = ({b}, {nn})") from err
        sig = _per_frame(checks.positive(sigma, "sigma", **kw), b, 0)
        self.sigma = torch.broadcast_to(sig, (b,))[:, None, None, None]  # (B, 1, 1, 1)
        bg = checks.nonnegative(background, "background", **kw)
        if self.sample_background and bool((bg != 0).any()):
            raise ValueError("background is sampled (\"background\" in params), so the sampled "
                             "value is the whole background; the fixed background must be 0, "
                             f"got {float(bg.max()):g} (drop it, or drop \"background\" from params)")
        if bg.ndim >= 2:
            if tuple(bg.shape[-2:]) != (h, w) or bg.ndim > 3:
                raise ValueError(f"background map must be (H, W) or (B, H, W), got {tuple(bg.shape)}")
            bg = torch.broadcast_to(bg, (b, h, w))
        else:
            bg = torch.broadcast_to(_per_frame(bg, b, 0), (b,))[:, None, None]
        self.background = bg  # (B, 1, 1) or (B, H, W), photons/pixel
        self.rate0 = (self.background + self.excess)[:, None]  # (B, 1, H|1, W|1)
        self.rate0_sum = torch.broadcast_to(self.rate0, (b, 1, h, w)).sum((-3, -2, -1))  # (B,)
        # Rates can reach 0 (log 0) only without read noise and background.
        self.clamp = bool((self.rate0 <= 0).any())
        self._extent = torch.tensor([w, h], **kw)  # x + ½ ∈ [0, W], y + ½ ∈ [0, H]
        # Pixel edges along x (row 0) and y (row 1), padded to the longer side.
        self.edges = (torch.arange(max(h, w) + 1, **kw) - 0.5).expand(2, -1).contiguous()
        self.tiny = torch.finfo(x.dtype).tiny
        per = 2 + self.sample_photons
        self._ix = [k * per for k in range(nn)]
        self._iy = [k * per + 1 for k in range(nn)]
        self._ii = [k * per + 2 for k in range(nn)] if self.sample_photons else []
        self._ib = nn * per if self.sample_background else None
        self.dim = len(self.names)

    @property
    def n_frames(self) -> int:
        return self.x.shape[0]

    def unpack(self, p):
        """θ (B, C, N, 2), photons (B, C, N), background (B, C, 1, 1) or None (fixed); views
        into p where possible."""
        per = 2 + self.sample_photons
        em = p[..., : per * self.n_emitters].unflatten(-1, (self.n_emitters, per))
        theta = em[..., :2]
        i0 = em[..., 2] if self.sample_photons else self.i0[:, None, :].expand(
            p.shape[0], p.shape[1], -1)
        bg = p[..., self._ib, None, None] if self.sample_background else None
        return theta, i0, bg

    def _support(self, theta, i0, bg):
        u = theta + 0.5
        ok = ((u >= 0) & (u <= self._extent)).flatten(-2).all(-1)
        if self.sample_photons:
            ok = ok & (i0 > 0).all(-1)
        if bg is not None:
            ok = ok & (bg[..., 0, 0] >= 0)
        return ok

    def _profiles(self, p):
        """θ (B, C, N, 2), per-emitter 1-D pixel integrals ex (B, C, N, W) and i0·ey
        (B, C, N, H), the photons i0 (B, C, N) and a sampled background (B, C, 1, 1) or None."""
        theta, i0, bg = self.unpack(p)
        h, w = self.shape
        # Both axes in one go: edges (2, L) against θ (B, C, N, 2, 1).
        prof = edge_integrals(self.edges, theta[..., None], self.sigma[..., None])
        ex = prof[..., 0, :w]
        ey = prof[..., 1, :h] * i0[..., None]
        return theta, ex, ey, i0, bg

    def _rate(self, ex, ey, bg, out=None):
        if self.n_emitters == 1:
            rate = torch.mul(ey[..., 0, :, None], ex[..., 0, None, :], out=out)
        else:
            rate = torch.matmul(ey.transpose(-1, -2), ex, out=out)
        rate.add_(self.rate0)
        if bg is not None:
            rate.add_(bg)
        return rate

    def _workspace(self, shape, like):
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buf = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def __call__(self, p) -> torch.Tensor:
        """log p(x | θ) = Σ_k n_k log ω'_k − ω'_k − log n_k! for parameters p (B, C, P); -inf
        outside the support."""
        h, w = self.shape
        theta, ex, ey, i0, bg = self._profiles(p)
        # Σ_k ω'_k is separable: Σ_n (Σ_w ex)(Σ_h i0·ey) + Σ (background + w²/g²).
        total = (ex.sum(-1) * ey.sum(-1)).sum(-1) + self.rate0_sum[:, None]
        if bg is not None:
            total = total + (h * w) * bg[..., 0, 0]
        # One reused work buffer: fresh (B, C, H, W) temporaries cost page faults on CPU.
        rate = self._rate(ex, ey, bg, out=self._workspace(p.shape[:-1] + (h, w), p))
        if self.clamp:
            rate.clamp_min_(self.tiny)
        logs = rate.log_().flatten(-2)  # (B, C, H·W), in place
        ll = (logs @ self.n_flat)[..., 0] - total + self.log_const[:, None]
        return torch.where(self._support(theta, i0, bg), ll, -math.inf)

    def fisher_laplace(self, p) -> torch.Tensor:
        """Inverse expected Fisher information (B, P, P) at parameters p (B, P): the Laplace
        approximation of the posterior covariance, used to scale the initial proposal."""
        theta, i0, bg = self.unpack(p[:, None])
        background = self.background if bg is None else bg[:, 0]  # sampled: the whole background
        if background.shape[-2:] == (1, 1):
            background = background[:, 0, 0]  # per-frame values (B,)
        info = fisher_information(theta[:, 0], i0[:, 0], self.sigma[:, 0, 0, 0, None], background,
                                  self.camera, self.shape, self.params)
        eye = torch.eye(self.dim, dtype=p.dtype, device=p.device)
        info = info + 1e-9 * torch.diagonal(info, dim1=-2, dim2=-1).mean(-1)[:, None, None] * eye
        return torch.linalg.inv(info)


def _per_frame(t: torch.Tensor, b: int, extra: int) -> torch.Tensor:
    """Scalar -> as is; a (B,) vector -> shaped to broadcast against (B, <extra dims>)."""
    if t.ndim == 0:
        return t
    if t.shape[0] != b:
        raise ValueError(f"per-frame values must have B = {b} entries, got shape {tuple(t.shape)}")
    return t.reshape(b, *t.shape[1:], *([1] * max(0, extra - (t.ndim - 1))))


def _mle_start(like: EmitterLikelihood, camera: Camera) -> torch.Tensor:
    """One starting point (B, P) per frame from the maximum-likelihood fit of one emitter."""
    from .mle import fit_mle

    sig = float(like.sigma.mean())
    fit = fit_mle(like.x.to(torch.float64), camera, sigma=sig)
    cols = [fit.theta[:, 0, 0], fit.theta[:, 0, 1]]
    if like.sample_photons:
        cols.append(fit.photons.clamp(min=1.0))
    if like.sample_background:
        cols.append(fit.background.clamp(min=0.0))
    return torch.stack(cols, dim=-1).to(like.x.dtype)


def _into_support(like: EmitterLikelihood, p: torch.Tensor) -> torch.Tensor:
    h, w = like.shape
    p = p.clone()
    p[..., like._ix] = p[..., like._ix].clamp(-0.5, w - 0.5)
    p[..., like._iy] = p[..., like._iy].clamp(-0.5, h - 0.5)
    if like.sample_photons:
        p[..., like._ii] = p[..., like._ii].abs().clamp(min=1e-3)
    if like.sample_background:
        p[..., like._ib] = p[..., like._ib].abs()
    return p


def sample_posterior(x, camera: Camera = PAPER_CAMERA, *, n_emitters: int = 1, params=("x", "y"),
                     i0=200.0, sigma: float = 0.92, background=0.0, beta=1.0,
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
    (C, P)), else the MLE (`fit_mle`, one emitter). The jitter is `init_scale` times the Laplace
    std, so that chains start over-dispersed, as R-hat needs. Computes in `dtype` (float64) on
    the device of x; seeded by `generator` or `seed`; `num_threads` as in `rwmh`. Returns an
    `MCMCResult` with samples (B, C, D, P), or (C, D, P) for a single frame.
    """
    xt = checks.as_tensor(x, "x")
    single = xt.ndim == 2
    beta_t = checks.positive(beta, "beta", dtype=torch.float64)
    if (beta_t > 1.0).any():
        raise ValueError(f"beta must lie in (0, 1], got max {float(beta_t.max()):g}")
    if log_prior is not None and not callable(log_prior):
        raise TypeError(f"log_prior must be a callable p -> log density, got {type(log_prior).__name__}")
    n_chains = _as_int(n_chains, "n_chains", 1)
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
    generator = _generator(generator, seed, device, "x")

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
    centre = start if start.ndim == 2 else start.mean(1)
    laplace = like.fisher_laplace(_into_support(like, centre)) / beta_mat  # (B, P, P)
    lap_chol, info = torch.linalg.cholesky_ex(laplace)
    fallback = torch.eye(p, dtype=dtype, device=device) * 0.01
    lap_chol = torch.where((info == 0)[:, None, None], lap_chol, fallback)
    if jitter:
        z = torch.randn((b, n_chains, p), generator=generator, dtype=dtype, device=device)
        start = start[:, None, :] + init_scale * z @ lap_chol.transpose(-1, -2)
    start = _into_support(like, start)

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


# --------------------------------------------------------------------------------------------
# Diagnostics (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021)
# --------------------------------------------------------------------------------------------


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
    tau = tau.clamp(min=1.0 / math.log10(m * n))
    return m * n / tau


def ess(samples, rank_normalize: bool = True) -> torch.Tensor:
    """Effective sample size of draws (..., chains, draws) -> (...), all chains together.

    Split chains, the multi-chain autocorrelation ρ_t = 1 − (W − mean autocovariance_t)/var⁺,
    and Geyer's initial monotone sequence (pairs ρ_2t + ρ_2t+1 summed until the first negative
    pair, made non-increasing): ESS = C·D / τ with τ = −1 + 2 Σ pairs (Vehtari et al. 2021).
    rank_normalize=True gives the bulk ESS (on normal scores of ranks), False the classic one.
    For an AR(1) chain with coefficient ρ, ESS ≈ C·D (1 − ρ)/(1 + ρ)."""
    s = split_chains(samples)
    if rank_normalize:
        s = _rank_normalize(s)
    return _ess_basic(s)
