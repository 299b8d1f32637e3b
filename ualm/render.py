"""Super-resolved images and their resolution.

- `render_locs`: a localization table as an image on a grid `zoom` times finer than the camera's,
  each localization a pixel-integrated Gaussian of its own σ (its precision) or of a fixed σ.
- `frc`: Fourier ring correlation of two images of the same structure from independent halves of
  the data (Nieuwenhuizen et al. 2013); the resolution is the inverse of the spatial frequency
  where the curve first falls below 1/7.
"""
from __future__ import annotations

import numpy as np
import torch

from .psf import expected_frame

FRC_THRESHOLD = 1 / 7


def render_locs(x, y, shape, zoom: int = 8, sigma=None, weights=None, chunk: int = 4096) -> np.ndarray:
    """Image (zoom·H, zoom·W) of localizations at (x, y) in camera px (pixel k covers
    [k − ½, k + ½]). sigma: per-localization σ in camera px (e.g. the CRLB's lpx), a number, or
    None for half a fine pixel. Each localization adds its weight (default 1) in total."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    h, w = shape
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    s = np.full(x.shape, 0.5 / zoom) if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=float), x.shape)
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("sigma must be finite and > 0 for every localization")
    wt = np.ones_like(x) if weights is None else np.broadcast_to(np.asarray(weights, dtype=float), x.shape)
    out = torch.zeros((h * zoom, w * zoom), dtype=torch.float64)
    fine = lambda v: (v + 0.5) * zoom - 0.5  # noqa: E731  camera px -> fine px
    for i in range(0, len(x), chunk):
        th = torch.as_tensor(np.stack((fine(x[i:i + chunk]), fine(y[i:i + chunk])), 1))[None]
        out += expected_frame(th, torch.as_tensor(wt[i:i + chunk])[None], torch.as_tensor(s[i:i + chunk] * zoom)[None],
                              0.0, out.shape)[0]
    return out.numpy()


def _window(n: int) -> np.ndarray:
    """A Tukey window (flat middle, cosine edges over 1/8 of the side): cuts the FFT's edge jump."""
    edge = max(1, n // 8)
    w = np.ones(n)
    ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(edge) + 0.5) / edge))
    w[:edge], w[-edge:] = ramp, ramp[::-1]
    return w


def frc(a, b, pixel_nm: float = 1.0, threshold: float = FRC_THRESHOLD) -> dict:
    """FRC of two square images of the same structure: 'frequency' (1/nm, ring centres),
    'frc' per ring, 'resolution_nm' (1 / the first frequency where the curve falls below
    `threshold`, NaN if it never does) and 'pixel_nm'."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"frc needs two square images of one shape, got {a.shape} and {b.shape}")
    n = a.shape[0]
    win = np.outer(_window(n), _window(n))
    fa, fb = np.fft.fftshift(np.fft.fft2(a * win)), np.fft.fftshift(np.fft.fft2(b * win))
    k = np.arange(n) - n // 2
    ring = np.rint(np.hypot(*np.meshgrid(k, k))).astype(int).ravel()
    keep = ring < n // 2
    rings = lambda v: np.bincount(ring[keep], v.ravel()[keep])  # noqa: E731  sum over each ring
    num = rings((fa * fb.conj()).real)
    den = np.sqrt(rings(abs(fa) ** 2) * rings(abs(fb) ** 2))
    curve = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    freq = np.arange(len(curve)) / (n * pixel_nm)
    below = np.flatnonzero(curve[1:] < threshold)
    if len(below):
        i = below[0] + 1  # interpolate the crossing between ring i - 1 and i
        f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
        cross = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
        res = 1 / cross
    else:
        res = float("nan")
    return {"frequency": freq, "frc": curve, "resolution_nm": float(res), "pixel_nm": float(pixel_nm)}
