"""Batched maximum-likelihood fitting of isolated emitters (x, y, photons, background) under the
Poisson approximation, by Levenberg–Marquardt on the Fisher-scoring Hessian."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .camera import Camera
from .defaults import I0, SIGMA_X
from .likelihood import nll_poisson
from .psf import _axis_profiles, expected_frame


@dataclass
class FitResult:
    """theta (B, 1, 2) in pixels, photons (B,), background (B,) in photons/pixel,
    nll (B,) at the optimum, converged (B,) bool, iterations run."""

    theta: torch.Tensor
    photons: torch.Tensor
    background: torch.Tensor
    nll: torch.Tensor
    converged: torch.Tensor
    iterations: int


def _model(p, sigma, shape, excess):
    """ω' (B, H·W) and its Jacobian (B, H·W, 4) for p = (x, y, photons, background)."""
    theta = p[:, None, :2]
    ex, dex, ey, dey = _axis_profiles(theta, sigma, shape)
    ex, dex, ey, dey = ex[:, 0], dex[:, 0], ey[:, 0], dey[:, 0]
    a = p[:, 2, None, None]
    psf = ey[:, :, None] * ex[:, None, :]
    jac = torch.stack((a * ey[:, :, None] * dex[:, None, :], a * dey[:, :, None] * ex[:, None, :],
                       psf, torch.ones_like(psf)), dim=-1)
    rate = (a * psf + p[:, 3, None, None]).flatten(1) + excess
    return rate, jac.flatten(1, 2)


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


def fit_mle(x, camera: Camera = Camera(), sigma: float = SIGMA_X, n_iter: int = 50,
            init=None, tol: float = 1e-6, dtype=torch.float64) -> FitResult:
    """Fit one Gaussian emitter per frame x (B, H, W) in ADU by maximum likelihood.

    Levenberg–Marquardt with the expected (Fisher) Hessian JᵀW J, a per-frame damping that
    shrinks after a step lowers the NLL and grows after one that does not; positions stay in
    the frame, photons > 0 and ω' > 0. `init` (B, 4) overrides the centroid initial guess.
    Computes in float64 by default: the NLL differences near the optimum are tiny.
    """
    x = checks.as_tensor(x, "x")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, H, W), got {tuple(x.shape)}")
    sigma_t = checks.positive(sigma, "sigma", dtype=dtype, device=x.device)
    x = x.to(dtype)
    bsz, h, w = x.shape
    excess = torch.broadcast_to(camera.excess(x), (h, w)).reshape(-1)
    n = camera.to_photons(x).clamp(min=0.0)
    p = _initial_guess(n, excess.reshape(h, w)) if init is None else checks.as_tensor(
        init, "init", dtype=dtype, device=x.device).clone()
    if p.shape != (bsz, 4):
        raise ValueError(f"init must have shape (B, 4) = ({bsz}, 4), got {tuple(p.shape)}")
    n = n.reshape(bsz, -1)
    lo = torch.tensor([-0.5, -0.5, 1e-3, -float(excess.min()) + 1e-6], dtype=dtype, device=x.device)
    hi = torch.tensor([w - 0.5, h - 0.5, float("inf"), float("inf")], dtype=dtype, device=x.device)
    p = torch.maximum(torch.minimum(p, hi), lo)
    lam = torch.full((bsz,), 1e-3, dtype=dtype, device=x.device)
    rate, jac = _model(p, sigma_t, (h, w), excess)
    cur = _nll(rate, n)
    done = torch.zeros(bsz, dtype=torch.bool, device=x.device)
    eye = torch.eye(4, dtype=dtype, device=x.device)
    it = 0
    for it in range(1, n_iter + 1):
        grad = torch.einsum("bkp,bk->bp", jac, 1.0 - n / rate)
        hess = torch.einsum("bkp,bk,bkq->bpq", jac, 1.0 / rate, jac)
        damped = hess + lam[:, None, None] * torch.diagonal(hess, dim1=1, dim2=2)[:, :, None] * eye
        step = torch.linalg.solve(damped, -grad[..., None])[..., 0]
        trial = torch.maximum(torch.minimum(p + step, hi), lo)
        t_rate, t_jac = _model(trial, sigma_t, (h, w), excess)
        t_nll = _nll(t_rate, n)
        better = (t_nll < cur) & ~done
        small = (cur - t_nll).abs() < tol * cur.abs().clamp(min=1.0)
        p = torch.where(better[:, None], trial, p)
        rate = torch.where(better[:, None], t_rate, rate)
        jac = torch.where(better[:, None, None], t_jac, jac)
        done = done | (small & (better | (lam > 1e6)))
        cur = torch.where(better, t_nll, cur)
        lam = torch.where(better, (lam / 10).clamp(min=1e-7), lam * 10)
        if bool(done.all()):
            break
    return FitResult(theta=p[:, None, :2], photons=p[:, 2], background=p[:, 3],
                     nll=cur, converged=done, iterations=it)


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

