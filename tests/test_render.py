"""Rendering localizations and Fourier ring correlation (ualm.render)."""
import numpy as np
import pytest

from ualm.render import frc, render_locs


def test_render_keeps_the_weight_and_the_centre():
    img = render_locs([10.0], [5.0], (16, 20), zoom=4, sigma=0.3)
    assert img.shape == (64, 80)
    assert abs(img.sum() - 1) < 1e-9
    rows, cols = np.indices(img.shape)
    cy, cx = (rows * img).sum(), (cols * img).sum()
    assert abs((cx + 0.5) / 4 - 0.5 - 10.0) < 1e-6 and abs((cy + 0.5) / 4 - 0.5 - 5.0) < 1e-6
    with pytest.raises(ValueError, match="sigma"):
        render_locs([1.0], [1.0], (4, 4), sigma=0.0)


def two_halves(blur_px, n=4000, seed=0):
    """Two renders of one structure (points on a circle and a line) from independent localizations
    with Gaussian error blur_px (camera px)."""
    g = np.random.default_rng(seed)
    t = g.uniform(0, 2 * np.pi, 2 * n)
    xs = np.where(np.arange(2 * n) % 2, 16 + 8 * np.cos(t), 4 + 24 * t / (2 * np.pi))
    ys = np.where(np.arange(2 * n) % 2, 16 + 8 * np.sin(t), 6 + 0 * t)
    xs, ys = xs + blur_px * g.standard_normal(2 * n), ys + blur_px * g.standard_normal(2 * n)
    half = g.permutation(2 * n) % 2 == 0
    return [render_locs(xs[h], ys[h], (32, 32), zoom=8) for h in (half, ~half)]


def test_frc_is_one_for_identical_images_and_resolves_less_with_more_blur():
    a, b = two_halves(0.1)
    same = frc(a, a, pixel_nm=100 / 8)
    assert np.allclose(same["frc"][1:], 1) and np.isnan(same["resolution_nm"])
    sharp = frc(a, b, pixel_nm=100 / 8)["resolution_nm"]
    blurred = frc(*two_halves(0.4), pixel_nm=100 / 8)["resolution_nm"]
    assert np.isfinite(sharp) and np.isfinite(blurred) and blurred > 1.5 * sharp
    noise = np.random.default_rng(1).random((2, 64, 64))
    assert abs(frc(noise[0], noise[1])["frc"][5:].mean()) < 0.05
    with pytest.raises(ValueError, match="square"):
        frc(np.zeros((4, 5)), np.zeros((4, 5)))
