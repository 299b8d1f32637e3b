"""Fisher information (eq. 3/14) under the Poisson approximation, the Cramér–Rao lower bound,
and Mortensen's closed form for comparison.

Parameters are ordered emitter by emitter, (x, y) or (x, y, photons), then one shared
background if asked for: see `ualm.likelihood.param_names`.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .camera import Camera
from .defaults import I0, SHAPE, SIGMA_X
from .likelihood import check_params
from .psf import _expected_frame, _prepare, expected_frame_jacobian


def _jacobian_analytic(theta, i0, sigma, shape, params):
    d_x, d_y, d_i0 = expected_frame_jacobian(theta, i0, sigma, shape)
    per = [d for p, d in (("x", d_x), ("y", d_y), ("photons", d_i0)) if p in params]
    jac = torch.stack(per, dim=-3)  # (..., N, k, H, W)
    jac = jac.flatten(-4, -3).flatten(-2, -1)  # (..., N·k, H·W)
    if "background" in params:
        ones = torch.ones_like(jac[..., :1, :])
        jac = torch.cat((jac, ones), dim=-2)
    return jac.transpose(-1, -2)  # (..., H·W, P)


def _jacobian_autograd(theta, i0, sigma, background, shape, params):
    """∂ω/∂params by forward-mode autodiff, vectorised over the batch."""
    batch = theta.shape[:-2]
    n = theta.shape[-2]
    use_i0, use_bg = "photons" in params, "background" in params
    th = theta.reshape(-1, n, 2)
    a = i0.reshape(-1, n)
    s = sigma.reshape(-1, n)
    bg = torch.broadcast_to(background, batch + background.shape[-2:]).reshape(-1, *background.shape[-2:])

    per = torch.cat((th, a[..., None]), dim=-1) if use_i0 else th
    vecs = per.reshape(per.shape[0], -1)
    if use_bg:
        vecs = torch.cat((vecs, bg.reshape(bg.shape[0], -1).mean(-1, keepdim=True)), dim=-1)

    def omega_of(vec, ai, si, b):
        k = 2 + use_i0
        per = vec[: n * k].reshape(n, k)
        t = per[:, :2]
        amp = per[:, 2] if use_i0 else ai
        bb = b - b.mean() + vec[-1] if use_bg else b
        return _expected_frame(t, amp, si, bb, shape).reshape(-1)

    jac_fn = torch.func.vmap(torch.func.jacfwd(omega_of), in_dims=(0, 0, 0, 0))
    jac = jac_fn(vecs, a, s, bg)
    return jac.reshape(*batch, *jac.shape[-2:])


def fisher_information(theta, i0=I0, sigma=SIGMA_X, background=0.0, camera: Camera = Camera(),
                       shape=SHAPE, params=("x", "y"), method: str = "analytic") -> torch.Tensor:
    """Fisher information matrix (..., P, P) for emitters θ (..., N, 2) under the Poisson
    approximation: I = Σ_k ∂ω_k ∂ω_kᵀ / (ω_k + w²/g²), with ω in photons.

    method="analytic" uses the closed-form PSF derivatives, method="autograd" differentiates
    the expected image with torch.func; the two agree to rounding.
    """
    params = check_params(params)
    if method not in ("analytic", "autograd"):
        raise ValueError(f"method must be 'analytic' or 'autograd', got {method!r}")
    th, a, s, bg, shape = _prepare(theta, i0, sigma, background, shape, None)
    omega = _expected_frame(th, a, s, bg, shape)
    rate = (omega + camera.excess(omega)).flatten(-2, -1)
    if (rate <= 0).any():
        raise ValueError("omega + read_var/gain² must be > 0 in every pixel for the Fisher information")
    if method == "analytic":
        jac = _jacobian_analytic(th, a, s, shape, params)
    else:
        jac = _jacobian_autograd(th, a, s, bg, shape, params)
    jac = torch.broadcast_to(jac, rate.shape[:-1] + jac.shape[-2:]) if jac.ndim < rate.ndim + 1 else jac
    return torch.einsum("...kp,...k,...kq->...pq", jac, 1.0 / rate, jac)


def crlb(theta, i0=I0, sigma=SIGMA_X, background=0.0, camera: Camera = Camera(),
         shape=SHAPE, params=("x", "y"), method: str = "analytic") -> torch.Tensor:
    """Cramér–Rao lower bound on the standard deviation of each parameter, (..., P):
    sqrt(diag(I⁻¹)), in the parameters' own units (pixels for x and y)."""
    info = fisher_information(theta, i0, sigma, background, camera, shape, params, method)
    if (torch.linalg.cholesky_ex(info)[1] != 0).any():
        raise ValueError("the Fisher information is singular, so some parameter cannot be "
                         "estimated: check i0 (> 0 for every emitter) and theta (no two emitters "
                         "on the same spot)")
    return torch.sqrt(torch.diagonal(torch.linalg.inv(info), dim1=-2, dim2=-1))


def mortensen_std(photons, background, sigma=SIGMA_X, pixel: float = 1.0, exact: bool = False):
    """Mortensen et al. (2010) MLE localization std (per axis), no read noise. Closed form:
    var = σa²/N · (1 + 4τ + sqrt(2τ/(1 + 4τ))), σa² = σ² + a²/12, τ = 2πσa²b/(N a²); with
    exact=True his integral form var = σa²/N / (1 + ∫₀¹ ln t / (1 + t/τ) dt) instead.
    photons N, background b (photons per pixel) and sigma in the units of `pixel`."""
    n = checks.positive(photons, "photons", dtype=torch.float64)
    b = checks.nonnegative(background, "background", dtype=torch.float64, device=n.device)
    sigma = float(checks.positive(sigma, "sigma"))
    pixel = float(checks.positive(pixel, "pixel"))
    try:
        n, b = torch.broadcast_tensors(n, b)
    except RuntimeError as err:
        raise ValueError(f"photons {tuple(n.shape)} and background {tuple(b.shape)} do not "
                         "broadcast") from err
    sa2 = sigma**2 + pixel**2 / 12.0
    tau = 2 * math.pi * sa2 * b / (n * pixel**2)
    if not exact:
        return torch.sqrt(sa2 / n * (1 + 4 * tau + torch.sqrt(2 * tau / (1 + 4 * tau))))
    from scipy.integrate import quad  # here: importing it costs `import ualm` ~0.6 s

    def integral(t):
        return quad(lambda u: math.log(u) / (1 + u / t), 0, 1)[0] if t > 0 else 0.0

    corr = torch.tensor([integral(float(t)) for t in tau.reshape(-1)], dtype=torch.float64,
                        device=tau.device)
    return torch.sqrt(sa2 / n / (1 + corr.reshape(tau.shape)))
