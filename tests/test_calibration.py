"""Calibration metrics on cases with a known answer: a Gaussian predictive whose samples have the
right, halved or doubled spread gives coverage at, below or above nominal."""
import json

import numpy as np
import pytest
import torch

from ualm import calibration as cal
from ualm.simulate import kde


def _gaussian_case(scale: float, k: int = 8, f: int = 400, seed: int = 0):
    """Truth y and K samples drawn from N(μ, σ²) per pixel, samples with spread scale·σ."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(f, 6, 6, generator=g, dtype=torch.float64)
    sigma = 0.05 + 0.2 * torch.rand(f, 6, 6, generator=g, dtype=torch.float64)
    y = mu + sigma * torch.randn(f, 6, 6, generator=g, dtype=torch.float64)
    samples = mu[:, None] + scale * sigma[:, None] * torch.randn(f, k, 6, 6, generator=g, dtype=torch.float64)
    return samples, y


@pytest.mark.parametrize("kind", cal.KINDS)
def test_coverage_nominal_low_high(kind):
    levels = (0.5, 0.8, 0.9, 0.95)
    k = 8
    right = cal.coverage(*_gaussian_case(1.0, k), levels=levels, kind=kind)
    half = cal.coverage(*_gaussian_case(0.5, k), levels=levels, kind=kind)
    double = cal.coverage(*_gaussian_case(2.0, k), levels=levels, kind=kind)
    # 14 400 pixels: binomial standard error ≤ 0.005
    expected = cal.expected_coverage(np.asarray(levels), k, kind)
    # the quantile form is exact only at integer order-statistic positions (see its docstring)
    np.testing.assert_allclose(right, expected, atol=0.02 if kind == "gaussian" else 0.03)
    assert np.all(half < expected - 0.1)
    assert np.all(double > expected + 0.03)


def test_expected_coverage_closed_forms():
    assert cal.expected_coverage(0.9, 8, "gaussian") == 0.9
    assert cal.expected_coverage(0.9, 8, "quantile") == pytest.approx(0.9 * 7 / 9)


def test_quantile_intervals_of_few_samples_undercover_as_predicted():
    # [min, max] of K draws holds one more draw with probability (K − 1)/(K + 1)
    k = 4
    samples, y = _gaussian_case(1.0, k=k, f=2000, seed=3)
    lo, hi = samples.min(1).values, samples.max(1).values
    inside = ((y >= lo) & (y <= hi)).double().mean()
    assert abs(float(inside) - (k - 1) / (k + 1)) < 0.01


def test_reliability_curve_on_diagonal_and_mask_respected():
    samples, y = _gaussian_case(1.0)
    levels, cov = cal.reliability_curve(samples, y, n_levels=9)
    np.testing.assert_allclose(levels, np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(cov, levels, atol=0.02)
    # a mask selecting pixels where the truth is shifted far away: nothing covered
    y_bad = y.clone()
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, :3] = True
    y_bad[mask] += 10.0
    assert np.all(cal.coverage(samples, y_bad, mask) == 0.0)
    assert np.all(cal.coverage(samples, y_bad, ~mask) > 0.45)


def test_zscores_and_calibration_summary():
    samples, y = _gaussian_case(1.0, k=32)
    c = cal.calibration(samples, y)
    assert c.n_pixels == y.numel()
    assert abs(c.mean_abs_z - cal.expected_abs_z(32)) < 0.03
    # std of √(1 + 1/K) t_{K−1}: √((1 + 1/K)(K − 1)/(K − 3)) = 1.05 for K = 32
    assert abs(c.z_std - np.sqrt((1 + 1 / 32) * 31 / 29)) < 0.03
    assert c.zero_std == 0.0
    half = cal.calibration(*_gaussian_case(0.5, k=32))
    assert half.mean_abs_z > 1.5 and half.at(0.9) < 0.7
    row = c.as_row()
    assert {"coverage_90", "coverage_quantile_95", "mean_abs_z"} <= set(row)


def test_zero_std_pixels_are_counted_not_scored():
    y = torch.tensor([[0.5, 0.0]])
    mean = torch.tensor([[0.0, 0.0]])
    std = torch.tensor([[0.0, 0.1]])
    z = cal.zscores(y, mean, std)
    assert z.tolist() == [0.0]
    assert cal.zero_std_fraction(std) == 0.5


def test_bad_inputs():
    samples, y = _gaussian_case(1.0, f=2)
    with pytest.raises(ValueError, match="K >= 2"):
        cal.coverage(samples[:, :1], y)
    with pytest.raises(ValueError, match="y must have shape"):
        cal.coverage(samples, y[:, :3])
    with pytest.raises(ValueError, match="mask"):
        cal.coverage(samples, y, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        cal.coverage(samples, y, levels=(0.9, 1.0))
    with pytest.raises(ValueError, match="kind"):
        cal.coverage(samples, y, kind="normal")
    with pytest.raises(ValueError, match="one shape"):
        cal.zscores(y, y[:, :2], y)


def _blob_frames(theta, k, jitter, seed=0):
    """KDE samples of emitters at θ with every sample's positions jittered by N(0, jitter²)."""
    g = torch.Generator().manual_seed(seed)
    th = theta[:, None] + jitter * torch.randn(theta.shape[0], k, *theta.shape[1:], generator=g,
                                               dtype=theta.dtype)
    samples = kde(th.reshape(-1, *theta.shape[1:]), normalize="peak").reshape(theta.shape[0], k, 80, 80)
    return samples


def test_position_spread_recovers_the_jitter():
    theta = torch.tensor([[[6.3, 7.1], [13.6, 12.4]]], dtype=torch.float64).repeat(30, 1, 1)
    samples = _blob_frames(theta, k=16, jitter=0.1)
    means = samples.mean(1)
    out = cal.emitter_zscores(means, samples, theta)
    assert len(out["error"]) == 60 and (out["hits"] == 16).all()
    # the spread of positions found by LoG + quadratic refinement tracks the true jitter
    assert 0.07 < float(np.median(out["spread"])) < 0.13
    # the mean's error is ~ jitter/√K, so z = error/spread has std ≈ 1/√K
    assert float(np.std(out["z"])) < 0.5


def test_position_spread_of_an_empty_frame():
    samples = torch.zeros(4, 80, 80)
    pos, spread, hits = cal.position_spread(samples.mean(0), samples)
    assert pos.shape == (0, 2) and spread.shape == (0, 2) and hits.shape == (0,)


def test_emitter_zscores_index_the_truth():
    theta = torch.tensor([[[6.3, 7.1], [13.6, 12.4], [0.0, 0.0]]], dtype=torch.float64).repeat(3, 1, 1)
    mask = torch.tensor([[True, True, False]]).repeat(3, 1)
    samples = _blob_frames(theta[:, :2], k=4, jitter=0.05)
    out = cal.emitter_zscores(samples.mean(1), samples, theta, mask)
    assert sorted(zip(out["frame"].tolist(), out["emitter"].tolist())) == [(f, e) for f in range(3) for e in range(2)]
    truth = theta[out["frame"], out["emitter"]].numpy()
    assert np.abs(out["error"]).max() < 0.2 and np.allclose(truth.shape, (6, 2))


@pytest.mark.parametrize("k", [4, 8, 32])
def test_expected_abs_z_matches_monte_carlo(k):
    samples, y = _gaussian_case(1.0, k=k, f=1000, seed=k)
    z = cal.zscores(y, samples.mean(1), samples.std(1))
    # 36 000 pixels: the standard error of mean |z| is below 0.01 for K >= 4
    assert abs(float(z.abs().mean()) - cal.expected_abs_z(k)) < 0.03
    assert cal.expected_abs_z(10_000) == pytest.approx(np.sqrt(2 / np.pi), abs=1e-3)
    if k >= 8:  # the std of z converges slowly for small K (heavy tails)
        assert abs(float(z.std()) - cal.expected_z_std(k)) < 0.04


def test_expected_z_std_values():
    assert cal.expected_z_std(8) == pytest.approx(1.255, abs=1e-3)
    assert cal.expected_z_std(10_000) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="K >= 4"):
        cal.expected_z_std(3)
    with pytest.raises(ValueError, match="K >= 3"):
        cal.expected_abs_z(2)


# ----------------------------------------------------------------------------- conformal scales

def _too_narrow_frames(n, seed, width=0.5, k=8, hw=(6, 6)):
    """Frames whose truth is a N(0, 1) draw per pixel but whose K samples have std `width`,
    with a per-frame offset so pixels of a frame are dependent, as in real frames."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(n, 1, 1, generator=g) * 0.3
    y = centre + torch.randn(n, *hw, generator=g)
    samples = centre[:, None] + width * torch.randn(n, k, *hw, generator=g)
    return samples, y


def test_risk_control_scale_is_the_finite_sample_quantile():
    # one pixel per frame: conformal risk control is split conformal, λ = the ⌈(n+1)·level⌉-th score
    scores = [torch.tensor([float(v)]) for v in range(1, 20)]  # n = 19
    assert cal.risk_control_scale(scores, 0.9) == 18.0
    assert cal.risk_control_scale(scores, 0.5) == 10.0
    with pytest.raises(ValueError, match="cannot control"):
        cal.risk_control_scale(scores[:5], 0.9)


@pytest.mark.parametrize("level", cal.LEVELS)
def test_conformal_fixes_intervals_that_are_too_narrow(level):
    s_cal, y_cal = _too_narrow_frames(400, 1)
    s_test, y_test = _too_narrow_frames(400, 2)
    counts = torch.zeros(400, dtype=torch.long)
    raw = float(cal.coverage(s_test, y_test, levels=(level,))[0])
    conf = cal.fit_conformal(s_cal, y_cal, None, counts, levels=(level,), classes=((0, None),))
    fixed = cal.apply_conformal(s_test, conf, counts, level)
    got = float(cal.coverage(fixed, y_test, levels=(level,))[0])
    assert raw < level - 0.1  # the raw spread is half the truth's
    assert level - 0.02 <= got <= level + 0.03, (level, raw, got)
    assert conf.scales[0][0] > 1.5  # about 1/width = 2
    torch.testing.assert_close(fixed.mean(1), s_test.mean(1))


def test_conformal_scales_per_class_and_round_trip():
    s1, y1 = _too_narrow_frames(100, 3, width=0.5)
    s2, y2 = _too_narrow_frames(100, 4, width=2.0)
    counts = torch.cat([torch.full((100,), 2), torch.full((100,), 12)])
    conf = cal.fit_conformal(torch.cat([s1, s2]), torch.cat([y1, y2]), None, counts, levels=(0.9,),
                             classes=((0, 5), (6, None)))
    assert cal.merge_classes(counts, ((0, 5), (6, 10), (11, None)), min_frames=40) == ((0, 10), (11, None))
    assert cal.merge_classes(counts[:100], ((0, 5), (6, None)), min_frames=40) == ((0, None),)
    lam = conf.scale(torch.tensor([0, 7]), 0.9)
    assert lam[0] > 1.5 and lam[1] < 0.7
    assert conf.frames == (100, 100)
    assert cal.Conformal.from_dict(json.loads(json.dumps(conf.to_dict()))) == conf


def test_conformal_bad_inputs():
    s, y = _too_narrow_frames(30, 5)
    with pytest.raises(ValueError, match="cannot control"):
        cal.fit_conformal(s[:5], y[:5], None, torch.zeros(5, dtype=torch.long), levels=(0.9,), classes=((0, None),))
    with pytest.raises(ValueError, match="no class"):
        cal.class_index(torch.tensor([3]), ((5, None),))
    conf = cal.fit_conformal(s, y, None, torch.zeros(30, dtype=torch.long), levels=(0.9,), classes=((0, None),))
    with pytest.raises(ValueError, match="calibrated levels"):
        conf.scale(torch.tensor([1]), 0.8)


def test_nearest_k_is_the_closest_on_a_log_scale():
    assert cal.nearest_k([8, 16, 32], 32) == 32
    assert cal.nearest_k(["8", "16", "32"], 2) == 8
    assert cal.nearest_k([8, 16, 32], 23) == 32  # |log(23/32)| < |log(23/16)|
    assert cal.nearest_k([8, 16, 32], 11) == 8
    assert cal.nearest_k([8, 32], 16) == 32  # a tie on the log scale: the larger K
    assert cal.nearest_k([8, 16, 32], 500) == 32
    with pytest.raises(ValueError, match="no calibrated"):
        cal.nearest_k([], 8)


def test_lone_emitters_are_a_class_of_their_own():
    idx = cal.class_index(torch.tensor([0, 1, 2, 5, 6, 16, 40]))
    assert idx.tolist() == [0, 0, 1, 1, 2, 4, 4]


def test_interval_factor_is_the_half_width_of_the_gaussian_interval_in_stds():
    s = torch.randn(3, 16, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lo, hi = cal.central_interval(s, 0.9)
    torch.testing.assert_close((hi - lo) / 2, cal.interval_factor(0.9, 16) * s.std(1))
    assert 1.80 < cal.interval_factor(0.9, 16) < 1.82 and abs(cal.interval_factor(0.9, 10**6) - 1.645) < 1e-3
    with pytest.raises(ValueError, match="K >= 2"):
        cal.interval_factor(0.9, 1)
