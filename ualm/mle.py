"""Batched maximum-likelihood fitting of isolated emitters (x, y, photons, background) under the
Poisson approximation, by Levenberg–Marquardt (Fisher scoring, then Newton near the optimum),
with what a user needs to filter the fits: convergence, bounds, standard errors and a
goodness of fit (`FitResult`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from . import checks
from .camera import Camera
from .defaults import I0, SIGMA_X
from .likelihood import nll_poisson
from .psf import _axis_profiles, expected_frame
from .threads import cpu_threads, small_op_threads


@dataclass
class FitResult:
    """One emitter fitted per frame. theta (B, 1, 2) in pixels, photons (B,), background (B,)
    in photons/pixel, nll (B,) at the optimum (eq. 13 without its constant log n!), iterations
    run.

    What a user needs to filter fits:

    - converged (B,) bool: the fit reached an interior maximum of the likelihood: the Newton
      decrement gᵀ I⁻¹ g (twice the NLL that one more Newton step would gain) fell below
      `tol`, and no parameter ended on a bound. A fit that stalls, runs out of iterations or
      ends on a bound is not converged.
    - at_bound (B, 4) bool: which of (x, y, photons, background) ended on its bound (a frame
      edge, photons = 1e-3, background = −w²/g²): photons on the bound mean the frame shows no
      emitter.
    - std (B, 4): the CRLB of (x, y, photons, background) at the fitted values, sqrt of the
      diagonal of the inverse Fisher information: the fit's standard errors. photons/std[:, 2]
      below about 3 means the frame shows no significant emitter.
    - chi2 (B,): Pearson's goodness of fit Σ_k (n_k − ω'_k)²/v_k at the fit, in photon units,
      with v_k = ω_k + w²/g² the variance of n_k (ω_k taken ≥ 0). If the frame holds one
      emitter as modelled, chi2 has mean chi2_mean (H·W pixels minus the 4 fitted parameters)
      and std chi2_std = (Σ_k 2 + ω_k/v_k²)^½, from the camera's first four moments (exact for
      Poisson shot noise plus Gaussian read noise, where the Poisson approximation's own
      deviance has no simple expectation). `chi2_z` is the standardised value: several units
      above 0 flag two emitters, a clipped spot or a wrong camera model; several below, a
      frame with too little noise, such as a saturated (flat) one.
    - llr (B,): the likelihood-ratio statistic 2 (NLL of the best background-only model − nll)
      for "one emitter" against "background only" (as Smith et al. 2010 and Huang et al. 2011
      test detections); `p_value` turns it into a significance. On pure background the fit
      still finds an interior optimum with some photons about half the time: filter on
      p_value, not on `converged`.
    """

    theta: torch.Tensor
    photons: torch.Tensor
    background: torch.Tensor
    nll: torch.Tensor
    converged: torch.Tensor
    iterations: int
    at_bound: torch.Tensor
    std: torch.Tensor
    chi2: torch.Tensor
    chi2_mean: torch.Tensor
    chi2_std: torch.Tensor
    llr: torch.Tensor

    @property
    def p_value(self) -> torch.Tensor:
        """P-value (B,) of "an emitter is there" against background only, from `llr` and the χ²
        law with 4 degrees of freedom, exp(−L/2)(1 + L/2). The emitter's position is searched
        over the window, so the null law is wider than the χ²₁ of one known position; χ²₄ was
        measured to be conservative on 11×11 windows of pure background (2.8–3.5 % of 2,000
        below 0.05 at 2, 10 and 50 photons per pixel; χ²₃ gives 5.7–7 %). Larger windows
        search more positions: check the rate on your own empty windows."""
        half = self.llr / 2
        return torch.exp(-half) * (1 + half)

    @property
    def chi2_z(self) -> torch.Tensor:
        """(chi2 − chi2_mean) / chi2_std: about N(0, 1) for good fits."""
        return (self.chi2 - self.chi2_mean) / self.chi2_std


CPU_CHUNK = 8192  # frames per chunk on the CPU (benchmarks/mle_accuracy.py times it)


def _model(p, sigma, shape, excess):
    """ω' (B, H·W) and its Jacobian, transposed: (B, 4, H·W), for p = (x, y, photons, background)."""
    ex, dex, ey, dey = (t[:, 0] for t in _axis_profiles(p[:, None, :2], sigma, shape))
    a = p[:, 2, None]
    # one (B, 4, H, W) block filled in place (a stack along the last dimension cost more than the
    # arithmetic); ω is separable, so every row is an outer product of 1-D profiles; the last
    # row (background) is ones
    jac = torch.ones((len(p), 4) + tuple(shape), dtype=p.dtype, device=p.device)
    torch.mul(ey[:, :, None], (a * dex)[:, None, :], out=jac[:, 0])
    torch.mul((a * dey)[:, :, None], ex[:, None, :], out=jac[:, 1])
    torch.mul(ey[:, :, None], ex[:, None, :], out=jac[:, 2])
    jac = jac.flatten(2)
    rate = torch.addcmul(p[:, 3, None] + excess, a, jac[:, 2])
    return rate, jac


def _weighted(jac, weights):
    """Σ_k weights_k ∂ω_k ∂ω_kᵀ (B, 4, 4) for weights (B, H·W): each row of the Jacobian scaled
    on its own (one broadcast product over all four ran slower)."""
    scaled = torch.empty_like(jac)
    for i in range(jac.shape[1]):
        torch.mul(jac[:, i], weights, out=scaled[:, i])
    return scaled @ jac.mT


def _nll(rate, n):
    return (rate - n * torch.log(rate)).sum(-1)


def _initial_guess(n, excess):
    """Background from the frame border, photons from the excess sum, position from the
    centroid of the background-subtracted frame."""
    b, h, w = n.shape
    border = torch.cat((n[:, 0], n[:, -1], n[:, 1:-1, 0], n[:, 1:-1, -1]), dim=1)
    bg = (border.mean(1) - excess.mean()).clamp(min=0.1)
    sig = (n - excess - bg[:, None, None]).clamp(min=0.0)
    total = sig.sum((1, 2)).clamp(min=1.0)
    ys = torch.arange(h, dtype=n.dtype, device=n.device)
    xs = torch.arange(w, dtype=n.dtype, device=n.device)
    cx = (sig.sum(1) * xs).sum(1) / total
    cy = (sig.sum(2) * ys).sum(1) / total
    return torch.stack((cx, cy, total, bg), dim=1)


def _second_derivatives(theta, sigma, shape):
    """∂²ΔE/∂μ² of the 1-D pixel integrals along x (B, W) and y (B, H): the derivative of
    (e_a − e_b)/(√(2π) σ), e = exp(−(u ∓ ½ − μ)²/(2σ²))."""
    out = []
    for axis, size in ((0, shape[1]), (1, shape[0])):
        u = torch.arange(size, dtype=theta.dtype, device=theta.device)
        da, db = u - 0.5 - theta[:, axis, None], u + 0.5 - theta[:, axis, None]
        s2 = sigma * sigma
        out.append((da * torch.exp(-0.5 * da * da / s2) - db * torch.exp(-0.5 * db * db / s2))
                   / (math.sqrt(2 * math.pi) * sigma * s2))
    return out


def _scoring(p, rate, jac, n, lo, hi):
    """Gradient of the NLL, Fisher information Σ_k ∂ω_k ∂ω_kᵀ / ω'_k (unmasked, and masked:
    the parameters held on a bound, those on it whose gradient points outwards, taken out),
    the mask of free parameters and the Newton decrement gᵀ I⁻¹ g."""
    inv = 1.0 / rate
    grad = (jac @ (1.0 - n * inv)[..., None])[..., 0]
    info = _weighted(jac, inv)
    held = ((p <= lo) & (grad > 0)) | ((p >= hi) & (grad < 0))
    free = (~held).to(p.dtype)
    grad = grad * free
    masked = _mask(info, free)
    dec = (grad[:, None, :] @ torch.linalg.solve(masked, grad[..., None]))[:, 0, 0]
    return grad, info, masked, free, dec


def _mask(hess, free):
    """The Hessian with the held parameters' rows and columns replaced by the identity."""
    eye = torch.eye(free.shape[-1], dtype=free.dtype, device=free.device)
    return hess * free[:, :, None] * free[:, None, :] + eye * (1.0 - free)[:, :, None]


def _observed(p, rate, jac, n, sigma, shape):
    """Observed Hessian of the NLL: Σ_k n_k/ω'_k² ∂ω_k ∂ω_kᵀ + Σ_k (1 − n_k/ω'_k) ∂²ω_k; ω is
    separable, so the second derivatives are a few 1-D profiles."""
    h, w = shape
    hess = _weighted(jac, n / rate**2)
    ex, dex, ey, dey = (t[:, 0] for t in _axis_profiles(p[:, None, :2], sigma, shape))
    d2ex, d2ey = _second_derivatives(p[:, :2], sigma, shape)
    r = (1.0 - n / rate).reshape(-1, h, w)
    # f[i, j] = Σ_hw (y-profile i)_h r_hw (x-profile j)_w for the profiles (e, e', e'')
    f = torch.stack((ey, dey, d2ey), 1) @ (r @ torch.stack((ex, dex, d2ex), -1))
    amp = p[:, 2]
    curv = torch.zeros_like(hess)
    curv[:, 0, 0], curv[:, 1, 1] = amp * f[:, 0, 2], amp * f[:, 2, 0]
    curv[:, 0, 1] = curv[:, 1, 0] = amp * f[:, 1, 1]
    curv[:, 0, 2] = curv[:, 2, 0] = f[:, 0, 1]
    curv[:, 1, 2] = curv[:, 2, 1] = f[:, 1, 0]
    return hess + curv


def fit_mle(x, camera: Camera = Camera(), sigma: float = SIGMA_X, n_iter: int = 50,
            init=None, tol: float = 1e-6, dtype=torch.float64,
            num_threads: int | None = None) -> FitResult:
    """Fit one Gaussian emitter per frame x (B, H, W) in ADU by maximum likelihood.

    Levenberg–Marquardt: Fisher scoring (the expected Hessian JᵀW J), and Newton on the
    observed Hessian near the optimum where scoring converges slowly, with a per-frame damping
    that shrinks after a step lowers the NLL and grows after one that does not; positions stay
    in the frame, photons ≥ 1e-3 and background ≥ −w²/g² (so ω' > 0); a parameter pressed
    against its bound is held there. A frame stops when its Newton decrement is below `tol`
    (NLL units), when no step lowers its NLL any more, or after `n_iter` iterations; see
    `FitResult` for what `converged`, `at_bound`, `std` and `chi2` report. `init` (B, 4)
    overrides the centroid initial guess. Computes in `dtype` (float64 by default: the NLL
    differences near the optimum are tiny).

    On the CPU the fit runs in chunks of `CPU_CHUNK` frames, each with `num_threads` torch
    threads. By default (`threads.small_op_threads`) that is 1 where OpenMP's threads sleep
    between operations, as after `import ualm`, else torch's setting less the cores that other
    processes keep busy at the time: the fit is many small operations, and threads that must be
    woken, or wait for a core, after every one of them cost more than they bring. The previous
    setting is restored afterwards.
    """
    x = checks.as_tensor(x, "x")
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (B, H, W) with B >= 1, got {tuple(x.shape)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    n_iter = checks.as_int(n_iter, "n_iter", 1)
    tol = float(checks.positive(tol, "tol"))
    if num_threads is not None:
        num_threads = checks.as_int(num_threads, "num_threads", 1)
    sigma_t = checks.positive(sigma, "sigma", dtype=dtype, device=x.device)
    if init is not None:
        init = checks.as_tensor(init, "init", dtype=dtype, device=x.device)
        if init.shape != (len(x), 4):
            raise ValueError(f"init must have shape (B, 4) = ({len(x)}, 4), got {tuple(init.shape)}")
    if x.device.type != "cpu":
        return _fit(x, camera, sigma_t, n_iter, init, tol, dtype)
    # on the CPU in chunks: in one call each fit got slower past a few thousand windows (most
    # likely as the (B, 4, H·W) Jacobians outgrow the caches); each chunk picks its threads anew
    parts = []
    for s in range(0, len(x), CPU_CHUNK):
        with cpu_threads(small_op_threads() if num_threads is None else num_threads):
            parts.append(_fit(x[s:s + CPU_CHUNK], camera, sigma_t, n_iter,
                              None if init is None else init[s:s + CPU_CHUNK], tol, dtype))
    if len(parts) == 1:
        return parts[0]
    return FitResult(**{f.name: (max(getattr(r, f.name) for r in parts) if f.name == "iterations"
                                 else torch.cat([getattr(r, f.name) for r in parts]))
                        for f in dataclasses.fields(FitResult)})


def _fit(x, camera, sigma_t, n_iter, init, tol, dtype) -> FitResult:
    x = x.to(dtype)
    bsz, h, w = x.shape
    excess = torch.broadcast_to(camera.excess(x), (h, w)).reshape(-1)
    n = camera.to_photons(x)  # as it is: clamping at 0 biases the background up
    p = _initial_guess(n, excess.reshape(h, w)) if init is None else init.clone()
    n = n.reshape(bsz, -1)
    lo = torch.tensor([-0.5, -0.5, 1e-3, -float(excess.min()) + 1e-6], dtype=dtype, device=x.device)
    hi = torch.tensor([w - 0.5, h - 0.5, float("inf"), float("inf")], dtype=dtype, device=x.device)
    p = torch.maximum(torch.minimum(p, hi), lo)
    lam = torch.full((bsz,), 1e-3, dtype=dtype, device=x.device)
    rate, jac = _model(p, sigma_t, (h, w), excess)
    cur = _nll(rate, n)
    active = torch.ones(bsz, dtype=torch.bool, device=x.device)
    stationary = torch.zeros_like(active)
    last = torch.full_like(cur, math.inf)  # the decrement one iteration earlier
    eye = torch.eye(4, dtype=dtype, device=x.device)
    it = 0
    while True:
        # only the fits still running are computed: at few photons a handful need 3x the
        # iterations of the rest, and the whole batch used to wait on them
        a = torch.nonzero(active)[:, 0]
        every = len(a) == bsz  # all still running: no copies of the (B, H·W, 4) Jacobian
        grad, _, hess, free, dec = _scoring(*((p, rate, jac, n) if every else (p[a], rate[a], jac[a], n[a])),
                                            lo, hi)
        now = dec < tol
        stationary[a[now]] = True
        go = ~now & (lam[a] < 1e10)
        active[a[~go]] = False
        if it == n_iter or not bool(go.any()):
            break
        it += 1
        a, grad, hess, free, dec = a[go], grad[go], hess[go], free[go], dec[go]
        # Fisher scoring, damped by λ·diag(I). Near the optimum (decrement < 1) where it
        # converges slowly (the decrement fell less than 10× in the last iteration, as with
        # few photons, where the expected Hessian is a poor guess), Newton on the observed
        # Hessian instead, where that is positive definite.
        damp = lam[a, None, None] * torch.diagonal(hess, dim1=1, dim2=2)[:, :, None] * eye
        slow = torch.nonzero((dec < 1.0) & (dec > 0.1 * last[a]))[:, 0]
        if len(slow):
            rows = a[slow]
            obs = _mask(_observed(p[rows], rate[rows], jac[rows], n[rows], sigma_t, (h, w)), free[slow])
            pd = torch.linalg.cholesky_ex(obs + damp[slow])[1] == 0
            hess = hess.index_put((slow,), torch.where(pd[:, None, None], obs, hess[slow]))
        last[a] = dec
        step = torch.linalg.solve(hess + damp, -grad[..., None])[..., 0]
        trial = torch.maximum(torch.minimum(p[a] + step, hi), lo)
        t_rate, t_jac = _model(trial, sigma_t, (h, w), excess)
        t_nll = _nll(t_rate, n if len(a) == bsz else n[a])
        better = t_nll < cur[a]
        b = a[better]
        if len(b) == bsz:  # every trial better: take them whole
            p, rate, jac, cur = trial, t_rate, t_jac, t_nll
        else:
            p[b], rate[b], jac[b], cur[b] = trial[better], t_rate[better], t_jac[better], t_nll[better]
        lam[a] = torch.where(better, (lam[a] / 10).clamp(min=1e-7), lam[a] * 10)
    info = _scoring(p, rate, jac, n, lo, hi)[1]  # at the final values of every fit
    at_bound = (p <= lo) | (p >= hi)
    inv, bad = torch.linalg.inv_ex(info)
    std = torch.diagonal(inv, dim1=1, dim2=2).clamp(min=0.0).sqrt()
    std = torch.where((bad == 0)[:, None], std, torch.full_like(std, math.nan))
    omega = (rate - excess).clamp(min=0.0)  # a fitted background may dip below 0 photons
    var = (omega + excess).clamp(min=torch.finfo(dtype).tiny)  # Var n = ω + w²/g²
    chi2 = ((n - rate) ** 2 / var).sum(-1)
    chi2_std = (2.0 + omega / var ** 2).sum(-1).sqrt()
    llr = (2.0 * (_background_nll(n, excess) - cur)).clamp(min=0.0)
    return FitResult(theta=p[:, None, :2], photons=p[:, 2], background=p[:, 3], nll=cur,
                     converged=stationary & ~at_bound.any(-1), iterations=it, at_bound=at_bound,
                     std=std, chi2=chi2, chi2_mean=torch.full_like(chi2, h * w - 4.0),
                     chi2_std=chi2_std, llr=llr)


def _background_nll(n, excess, n_iter: int = 30):
    """The NLL (B,) of the best background-only model ω'_k = b + w_k²/g_k² (no emitter), by
    Newton's method on the one convex parameter b ≥ −min w²/g²."""
    low = -float(excess.min()) + 1e-6
    b = (n - excess).mean(1).clamp(min=low)  # the exact optimum when w²/g² is the same everywhere
    if bool((excess == excess[0]).all()):
        n_iter = 0
    for _ in range(n_iter):
        rate = b[:, None] + excess
        grad, curv = (1.0 - n / rate).sum(1), (n / rate**2).sum(1)
        step = grad / curv.clamp(min=1e-12)
        b = (b - step).clamp(min=low)
        if float(step.abs().max()) < 1e-12 * max(1.0, float(b.abs().max())):
            break
    return _nll(b[:, None] + excess, n)


def fit_position(x, theta0, i0=I0, camera: Camera = Camera(), sigma: float = SIGMA_X,
                 background=0.0, nll=None, n_iter: int = 5, tol: float = 1e-9):
    """Maximum-likelihood positions (B, 1, 2) with photons and background known, by Newton's
    method on any NLL(x, ω, camera), e.g. `nll_poisson_gaussian` for the exact likelihood
    (default: `nll_poisson`). Derivatives come from autograd, so it is slower than `fit_mle`
    but works for any likelihood. Start from `theta0` (B, 1, 2), e.g. `fit_mle(x).theta`.
    Returns (theta, converged) where converged says the last step was below `tol` px."""
    nll = nll or nll_poisson
    x = checks.as_tensor(x, "x")
    th = checks.theta(theta0, "theta0", dtype=x.dtype, device=x.device).detach().clone()
    if x.ndim != 3 or th.shape != (x.shape[0], 1, 2):
        raise ValueError(f"x must be (B, H, W) and theta0 (B, 1, 2), got {tuple(x.shape)}, {tuple(th.shape)}")
    shape = tuple(x.shape[-2:])
    step = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    for _ in range(n_iter):
        th.requires_grad_(True)
        value = nll(x, expected_frame(th, i0, sigma, background, shape), camera).sum()
        (grad,) = torch.autograd.grad(value, th, create_graph=True)
        grad = grad[:, 0]  # frames are independent: the Hessian is block-diagonal, (B, 2, 2)
        hess = torch.stack([torch.autograd.grad(grad[:, c].sum(), th, retain_graph=True)[0][:, 0]
                            for c in range(2)], dim=1)
        delta = torch.linalg.solve(hess.detach(), grad.detach()[..., None])[..., 0]
        th = th.detach() - delta[:, None, :]
        step = delta.abs().amax(-1)
    return th, step < tol

