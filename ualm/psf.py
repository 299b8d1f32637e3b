"""The pixel-integrated Gaussian PSF (paper eq. 2/12) and the expected photon image ω (eq. 11).

Convention: pixel k covers [k - 1/2, k + 1/2], so its centre is the integer k. Images are
indexed [row = y, column = x]; θ has shape (..., N, 2) holding (x, y) in pixels.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .defaults import I0, SHAPE, SIGMA_X

_SQRT2 = math.sqrt(2.0)


def pixel_integral(u, mu, sigma) -> torch.Tensor:
    """ΔE(u; μ, σ) = ∫ N(t; μ, σ²) dt over the unit pixel [u - 1/2, u + 1/2] (eq. 12).

    u, mu, sigma: numbers or tensors that broadcast (on one device); σ > 0. Written with erfc
    on the side of the pixel away from μ so that far tails keep their relative precision (a
    plain erf difference cancels to 0 there).
    """
    u = checks.as_tensor(u, "u")
    mu = checks.as_tensor(mu, "mu", device=u.device)
    sigma = checks.positive(sigma, "sigma", device=u.device)
    try:
        torch.broadcast_shapes(u.shape, mu.shape, sigma.shape)
    except RuntimeError as err:
        raise ValueError(f"u {tuple(u.shape)}, mu {tuple(mu.shape)} and sigma "
                         f"{tuple(sigma.shape)} do not broadcast") from err
    return _pixel_integral(u, mu, sigma)


def _pixel_integral(u, mu, sigma):
    """`pixel_integral` without input checks (inner loops)."""
    d = u - mu
    s = torch.sign(d)
    s = torch.where(s == 0, torch.ones_like(s), s)
    # Mirror to the side where both arguments are >= 0 in magnitude, then use erfc.
    lo = (s * d - 0.5) / (_SQRT2 * sigma)
    hi = (s * d + 0.5) / (_SQRT2 * sigma)
    return 0.5 * (torch.erfc(lo) - torch.erfc(hi))


def edge_integrals(edges: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ΔE of the pixels between consecutive `edges` (..., K+1) -> (..., K): the values of
    `pixel_integral`, with one erfc per pixel edge instead of two per pixel.

    t is the Gaussian tail mass beyond an edge, away from μ: the upper tail ½ erfc(z) at edges
    with z >= 0, the lower tail ½ erfc(-z) below. A pixel right of μ holds t_left - t_right,
    one left of μ t_right - t_left, the one holding μ 1 - t_left - t_right: exact identities
    that keep the far tails' relative precision. The sign is a fixed choice per edge (not |z|)
    so that autograd gets the right derivative when μ sits exactly on an edge.
    """
    z = (edges - mu) / (_SQRT2 * sigma)
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    t = 0.5 * torch.erfc(sign * z)
    ta, tb = t[..., :-1], t[..., 1:]
    left = z[..., 1:] < 0
    right = z[..., :-1] >= 0
    return torch.where(left, tb - ta, torch.where(right, ta - tb, 1.0 - ta - tb))


def pixel_integral_grads(u: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor):
    """(ΔE, ∂ΔE/∂μ, ∂ΔE/∂σ) for the unit pixel centred at u."""
    val = _pixel_integral(u, mu, sigma)
    za = (u - 0.5 - mu) / (_SQRT2 * sigma)
    zb = (u + 0.5 - mu) / (_SQRT2 * sigma)
    ea, eb = torch.exp(-za * za), torch.exp(-zb * zb)
    d_mu = (ea - eb) / (math.sqrt(2.0 * math.pi) * sigma)
    d_sigma = -(zb * eb - za * ea) / (math.sqrt(math.pi) * sigma)
    return val, d_mu, d_sigma


def _axis_profiles(theta, sigma, shape, grads=True):
    """Per-emitter 1-D pixel integrals along x (..., N, W) and y (..., N, H), with their
    μ-derivatives when `grads` (else those are None)."""
    h, w = shape
    cols = torch.arange(w, dtype=theta.dtype, device=theta.device)
    rows = torch.arange(h, dtype=theta.dtype, device=theta.device)
    sig = sigma[..., None]
    if not grads:
        return (edge_integrals(torch.cat((cols - 0.5, cols[-1:] + 0.5)), theta[..., 0:1], sig), None,
                edge_integrals(torch.cat((rows - 0.5, rows[-1:] + 0.5)), theta[..., 1:2], sig), None)
    ex, dex, _ = pixel_integral_grads(cols, theta[..., 0:1], sig)
    ey, dey, _ = pixel_integral_grads(rows, theta[..., 1:2], sig)
    return ex, dex, ey, dey


def _expected_frame(theta, i0, sigma, background, shape):
    """ω without input checks (used inside autograd/vmap). i0, sigma broadcast to (..., N)."""
    ex, _, ey, _ = _axis_profiles(theta, sigma, shape, grads=False)
    omega = torch.einsum("...nh,...nw->...hw", i0[..., None] * ey, ex)
    return omega + background


def _prepare(theta, i0, sigma, background, shape, mask):
    th = checks.theta(theta)
    kw = dict(dtype=th.dtype, device=th.device)
    i0 = checks.nonnegative(i0, "i0", **kw)
    sigma = checks.positive(sigma, "sigma", **kw)
    background = checks.nonnegative(background, "background", **kw)
    shape = checks.shape2d(shape)
    batch_n = th.shape[:-1]
    try:
        i0 = torch.broadcast_to(i0, batch_n)
        sigma = torch.broadcast_to(sigma, batch_n)
    except RuntimeError as err:
        raise ValueError(
            f"i0 and sigma must broadcast to theta's (..., N) = {tuple(batch_n)}"
        ) from err
    if mask is not None:
        mask = torch.as_tensor(mask, device=th.device)
        if mask.shape != batch_n:
            raise ValueError(f"mask must have shape {tuple(batch_n)}, got {tuple(mask.shape)}")
        i0 = i0 * mask.to(i0.dtype)
    if background.ndim > 0:
        is_map = background.ndim >= 2 and tuple(background.shape[-2:]) == shape
        lead = background.shape[:-2] if is_map else background.shape
        try:
            ok = torch.broadcast_shapes(lead, th.shape[:-2]) == th.shape[:-2]
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"background must be a number, per-frame values (...,) or an "
                             f"(..., H, W) = (..., {shape[0]}, {shape[1]}) map whose leading "
                             f"axes fit theta's frames {tuple(th.shape[:-2])}, got "
                             f"{tuple(background.shape)}")
        if not is_map:
            background = background[..., None, None]  # per-frame values given as (...,)
    return th, i0, sigma, background, shape


def expected_frame(theta, i0=I0, sigma=SIGMA_X, background=0.0, shape=SHAPE, mask=None):
    """Expected photon counts ω (..., H, W) for emitters θ (..., N, 2).

    i0 (photons per emitter) and sigma (PSF std in pixels) are scalars or (..., N) tensors;
    background (photons per pixel) is a scalar, a per-frame (...,) tensor or an (..., H, W) map.
    `mask` (..., N) bool switches padded emitters off. An emitter far from the edges
    contributes exactly i0 photons in total.
    """
    th, i0, sigma, background, shape = _prepare(theta, i0, sigma, background, shape, mask)
    return _expected_frame(th, i0, sigma, background, shape)


def expected_frame_jacobian(theta, i0=I0, sigma=SIGMA_X, shape=SHAPE):
    """Analytic derivatives of ω with respect to each emitter's x, y and photons.

    Returns (d_x, d_y, d_i0), each of shape (..., N, H, W); ∂ω/∂background is 1.
    """
    th, i0, sigma, _, shape = _prepare(theta, i0, sigma, 0.0, shape, None)
    ex, dex, ey, dey = _axis_profiles(th, sigma, shape)
    a = i0[..., None, None]
    d_x = a * ey[..., :, None] * dex[..., None, :]
    d_y = a * dey[..., :, None] * ex[..., None, :]
    d_i0 = ey[..., :, None] * ex[..., None, :]
    return d_x, d_y, d_i0
