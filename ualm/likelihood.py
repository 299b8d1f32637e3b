"""Likelihoods of a frame x (ADU).

- `nll_poisson`: the Poisson approximation (eq. 13) on n = (x - o)/g + w²/g²,
  which is treated as Poisson(ω + w²/g²) (Huang et al. 2013). Read noise makes n negative
  in some dark pixels; n is used as it is, not clamped at 0. Its mean is then exactly
  ω' = ω + w²/g², so the score Σ (n/ω' − 1) ∂ω' is unbiased and the fits of `ualm.mle` and
  the posteriors of `ualm.mcmc` carry no background bias (clamping raised a dark pixel's
  mean from 0.3125 to 0.41 photons at g = 4, w² = 5). The term n log ω' − ω' is finite for
  any n because ω' ≥ w²/g² > 0; only the constant log n! needs n ≥ 0, and is taken as
  log 0! = 0 below it (`log_factorial`), which changes no estimate.
- `nll_poisson_gaussian`: the exact convolution of eq. 1, a sum over photon counts q of
  Poisson(q; ω)·N(x; g q + o, w²), evaluated with a streamed log-sum-exp.
  Both take expected photons ω and return the sum over the last two (pixel) axes, shape (...).
- `EmitterLikelihood`: log p(x | θ) of eq. 13 as a fast batched function of emitter parameter
  vectors (x, y per emitter, optionally photons and a shared background; see `param_names`),
  the target of `ualm.mcmc.sample_posterior`.
- `pixel_densities`, `approximation_quality`: how good the Poisson approximation is per pixel.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .camera import PAPER_CAMERA, Camera
from .defaults import I0, SIGMA_X
from .psf import edge_integrals

_LOG_2PI = math.log(2 * math.pi)
PARAMS = ("x", "y", "photons", "background")


def check_params(params) -> tuple:
    """The parameter kinds to estimate or sample: 'x' and 'y', optionally 'photons' (per
    emitter) and 'background' (one, shared)."""
    params = tuple(params)
    bad = [p for p in params if p not in PARAMS]
    if bad or "x" not in params or "y" not in params:
        raise ValueError(f"params must contain 'x' and 'y' and be taken from {PARAMS}, got {params}")
    return params


def param_names(n_emitters: int, params=("x", "y")) -> list[str]:
    """Names of the parameter vector (and of the Fisher matrix's rows), emitter by emitter,
    then one shared background, e.g. ['x0', 'y0', 'photons0', 'background']."""
    params = check_params(params)
    per = [p for p in ("x", "y", "photons") if p in params]
    names = [f"{p}{n}" for n in range(n_emitters) for p in per]
    return names + (["background"] if "background" in params else [])


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
    """Per-pixel Poisson-approximation NLL, without input checks (for autograd and MCMC).
    n is used as it is, negative values included (see the module notes)."""
    n = camera.to_photons(x)
    rate = omega + camera.excess(x)
    return rate - n * torch.log(rate) + log_factorial(n)


def log_factorial(n: torch.Tensor) -> torch.Tensor:
    """log n! of the shifted data, taken as log 0! = 0 where n < 0: a constant in θ that
    only keeps the NLL finite (see the module notes)."""
    return torch.lgamma(n.clamp(min=0.0) + 1.0)


def nll_poisson(x, omega, camera: Camera = Camera()) -> torch.Tensor:
    """Poisson-approximation NLL (eq. 13), summed over pixels. Constant terms included."""
    x, omega = _check_pair(x, omega)
    if (omega + camera.excess(x) <= 0).any():
        raise ValueError("omega + read_var/gain² must be > 0 in every pixel (add background or read noise)")
    return poisson_terms(x, omega, camera).sum(dim=(-2, -1))


def nll_poisson_gaussian(x, omega, camera: Camera = Camera(), chunk: int = 64,
                         n_std: float = 10.0, max_terms: int = 256) -> torch.Tensor:
    """Exact Poisson–Gaussian NLL (eq. 1), summed over pixels.

    Each pixel's sum over photon counts q of Poisson(q; ω)·N(x; g q + o, w²) runs over its own
    window: the terms are log-concave in q, so around their mode q* (found by bisection) they
    fall faster than a Gaussian of the local width σ; the window spans n_std such widths on
    each side, which leaves out less than e^-50 of the sum. The cost per pixel is therefore
    bounded (at most `max_terms` terms), whatever the frame holds: a saturated pixel or a huge
    ω costs no more than a dark one. Where a window is wider than `max_terms` integers (σ ≳ 12
    photons: bright pixels with strong read noise) the sum is taken every h-th q, times h: for
    a smooth summand this wide the error, of order exp(-2π²σ²/h²), is below float precision
    (Poisson summation). Where the read-noise variance is 0 the pixel is pure Poisson on
    (x - o)/g. Computes in float64 and returns the dtype of x.
    """
    x, omega = _check_pair(x, omega)
    out_dtype = x.dtype
    x, omega = torch.broadcast_tensors(x.double(), omega.double())
    if x.numel() == 0:
        return x.sum(dim=(-2, -1)).to(out_dtype)
    chunk = checks.as_int(chunk, "chunk", 1)
    max_terms = checks.as_int(max_terms, "max_terms", 1)
    n_std = float(checks.positive(n_std, "n_std"))
    g, o, v = (torch.broadcast_to(t, x.shape) for t in camera.maps(x))
    n = (x - o) / g
    gaussian = v > 0
    vv = torch.where(gaussian, v, torch.ones_like(v))
    log_omega = torch.log(omega.clamp(min=torch.finfo(x.dtype).tiny))
    first, step, count = _windows(n, omega, vv / (g * g), n_std, max_terms)
    run_max = torch.full_like(x, -math.inf)
    run_sum = torch.zeros_like(x)
    for start in range(0, int(count.max()), chunk):
        j = torch.arange(start, start + chunk, dtype=x.dtype, device=x.device)
        q = first[..., None] + step[..., None] * j
        log_pois = q * log_omega[..., None] - omega[..., None] - torch.lgamma(q + 1.0)
        log_pois = torch.where((omega[..., None] == 0) & (q > 0), -math.inf, log_pois)
        resid = x[..., None] - g[..., None] * q - o[..., None]
        log_gauss = -0.5 * (resid * resid / vv[..., None] + torch.log(vv[..., None]) + _LOG_2PI)
        terms = torch.where(j < count[..., None], log_pois + log_gauss, -math.inf)
        m = torch.maximum(run_max, terms.max(dim=-1).values)
        safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        run_sum = run_sum * torch.exp(run_max - safe) + torch.exp(terms - safe[..., None]).sum(-1)
        run_max = m
    log_p = run_max + torch.log(run_sum * step)
    # Zero read noise: the density is the Poisson pmf at n (n should then be an integer).
    pmf = n * log_omega - omega - torch.lgamma(n.clamp(min=0.0) + 1.0)
    pmf = torch.where(n < 0, torch.full_like(n, -math.inf), pmf)
    log_p = torch.where(gaussian, log_p, pmf)
    return -log_p.sum(dim=(-2, -1)).to(out_dtype)


@torch.no_grad()
def _windows(n, omega, s2, n_std: float, max_terms: int):
    """Per pixel, the photon counts to sum in `nll_poisson_gaussian`: q = first + step·j for
    j < count. The terms' log, log Poisson(q; ω) − (q − n)²/(2 s²) + const with s² = w²/g², is
    concave in q (q > −1); its mode solves log ω − ψ(q + 1) = (q − n)/s² and lies below
    max(ω, n) + 1. The window reaches n_std local widths σ = (ψ'(q + 1) + 1/s²)^-½ on each
    side, σ taken where it is largest on that side (at q* on the left; beyond the Poisson
    tail on the right)."""
    log_om = torch.where(omega > 0, torch.log(omega.clamp(min=1e-300)), -math.inf)
    lo = torch.zeros_like(n)
    hi = torch.maximum(omega, n).clamp(min=0.0) + 1.0
    for _ in range(64):  # bisection: the slope falls monotonically in q
        mid = 0.5 * (lo + hi)
        up = log_om - torch.digamma(mid + 1.0) > (mid - n) / s2
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    mode = 0.5 * (lo + hi)
    sd_left = torch.rsqrt(torch.polygamma(1, mode + 1.0) + 1.0 / s2)
    far = mode + n_std * torch.sqrt(mode + 1.0) + n_std
    sd_right = torch.rsqrt(torch.polygamma(1, far + 1.0) + 1.0 / s2)
    first = torch.floor(mode - n_std * sd_left - 2.0).clamp(min=0.0)
    span = torch.ceil(mode + n_std * sd_right + 2.0) - first + 1.0
    step = torch.ceil(span / max_terms)
    return first, step, torch.ceil(span / step)


class EmitterLikelihood:
    """log p(x | θ) under the Poisson approximation (eq. 13) for frames x (B, H, W) in ADU, as a
    batched function of parameter vectors (B, C, P).

    Parameters per emitter: x, y (px) and, if "photons" is in `params`, its photon count; then
    one shared "background" (photons/pixel) if asked for. What is not sampled is fixed at
    `i0` (scalar, (B,) or (B, N)), `background` (scalar, (B,) or an (H, W)/(B, H, W) map) and
    `sigma` (PSF std in px, scalar or (B,)). A sampled background is the whole background,
    not an excess over a fixed one: with "background" in `params`, `background` must stay 0
    (ValueError otherwise), so that the support "background ≥ 0" is the physical one. The
    value equals ``-nll_poisson(x, ω(θ), camera)`` exactly (constants included); it is
    evaluated without input checks for speed. The support (where the flat prior lives) is the
    frame, x in [-½, W-½], y in [-½, H-½], photons > 0 and background ≥ 0; outside it the
    log-likelihood is -inf.
    """

    def __init__(self, x, camera: Camera = PAPER_CAMERA, n_emitters: int = 1,
                 params=("x", "y"), i0=I0, sigma=SIGMA_X, background=0.0, dtype=None):
        x = checks.as_tensor(x, "x", dtype=dtype)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"x must be a frame (H, W) or frames (B, H, W), got {tuple(x.shape)}")
        if not isinstance(camera, Camera):
            raise TypeError(f"camera must be a ualm.Camera, got {type(camera).__name__}")
        self.n_emitters = checks.as_int(n_emitters, "n_emitters", 1)
        params = check_params(params)
        if len(set(params)) != len(params):
            raise ValueError(f"params must contain 'x' and 'y' and be taken from {PARAMS} once "
                             f"each, got {params}")
        self.params = tuple(q for q in PARAMS if q in params)
        self.names = param_names(self.n_emitters, self.params)
        self.sample_photons = "photons" in self.params
        self.sample_background = "background" in self.params
        b, h, w = x.shape
        if b == 0 or h == 0 or w == 0:
            raise ValueError(f"x must hold at least one frame of at least one pixel, got shape "
                             f"{tuple(x.shape)}")
        self.shape = (h, w)
        kw = dict(dtype=x.dtype, device=x.device)
        self.x = x
        self.camera = camera
        n = camera.to_photons(x)  # as it is, negative values included
        self.n_flat = n.reshape(b, h * w, 1)
        self.excess = torch.broadcast_to(camera.excess(x), (h, w))
        self.log_const = -log_factorial(n).sum((-2, -1))  # (B,)
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

    def in_support(self, p: torch.Tensor) -> torch.Tensor:
        """Whether parameters p (B, C, P) lie on the support, (B, C) bool."""
        return self._support(*self.unpack(p))

    def into_support(self, p: torch.Tensor) -> torch.Tensor:
        """A copy of parameters p (..., P) moved onto the support: positions clamped to the
        frame, photons and background made positive."""
        h, w = self.shape
        p = p.clone()
        p[..., self._ix] = p[..., self._ix].clamp(-0.5, w - 0.5)
        p[..., self._iy] = p[..., self._iy].clamp(-0.5, h - 0.5)
        if self.sample_photons:
            p[..., self._ii] = p[..., self._ii].abs().clamp(min=1e-3)
        if self.sample_background:
            p[..., self._ib] = p[..., self._ib].abs()
        return p


def _per_frame(t: torch.Tensor, b: int, extra: int) -> torch.Tensor:
    """Scalar -> as is; a (B,) vector -> shaped to broadcast against (B, <extra dims>)."""
    if t.ndim == 0:
        return t
    if t.shape[0] != b:
        raise ValueError(f"per-frame values must have B = {b} entries, got shape {tuple(t.shape)}")
    return t.reshape(b, *t.shape[1:], *([1] * max(0, extra - (t.ndim - 1))))


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
