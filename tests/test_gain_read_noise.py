"""A camera with gain 4 and read noise (w² = 5 ADU², so w²/g² = 5/16 photons²), where getting
w²/g² wrong, or clamping the shifted data at 0, changes the answer (issue 10). Each reference
here is written out independently of `ualm` (numpy/scipy, constants typed in), so a mistake
shared by the likelihood, the Fisher information, the fitter and the sampler cannot cancel."""
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

import ualm
from ualm.protocols import mle_vs_crlb

CAM = ualm.Camera(gain=4.0, offset=100.0, read_var=5.0)
S2 = 5.0 / 16.0  # read-noise variance in photons², typed in on purpose
SIGMA = 0.92


def _profile(centres, mu, sigma):
    """∫ N(t; μ, σ²) over the unit pixels around `centres`, for each μ: (len(mu), len(centres))."""
    c, m = np.asarray(centres, float)[None, :], np.asarray(mu, float)[:, None]
    return 0.5 * (erf((c + 0.5 - m) / (math.sqrt(2) * sigma)) - erf((c - 0.5 - m) / (math.sqrt(2) * sigma)))


def _frames(theta, i0, bg, shape, n, seed):
    th = torch.tensor(theta, dtype=torch.float64).expand(n, -1, 2)
    omega = ualm.expected_frame(th, i0, SIGMA, bg, shape)
    return CAM.sample(omega, generator=ualm.make_generator(seed)), omega


def test_nll_poisson_by_hand_with_negative_shifted_data():
    x, omega = _frames([[4.3, 5.2]], 150.0, 0.5, (11, 11), 3, seed=1)
    n = ((x - 100.0) / 4.0 + S2).numpy()
    assert (n < 0).any()  # read noise takes some dark pixels below 0: they count as they are
    rate = omega.numpy() + S2
    log_fact = np.array([sum(math.lgamma(max(v, 0.0) + 1.0) for v in f.ravel()) for f in n])
    ref = (rate - n * np.log(rate)).sum((-2, -1)) + log_fact  # log n! taken as 0 below n = 0
    np.testing.assert_allclose(ualm.nll_poisson(x, omega, CAM).numpy(), ref, rtol=1e-12)


def test_score_and_fitted_background_are_unbiased_in_dark_pixels():
    """E[n] = ω + w²/g² only for the unclamped data: clamping at 0 raised the dark mean to
    0.41 photons and the fitted background by +0.1 photons/pixel."""
    x, omega = _frames([[5.0, 5.0]], 200.0, 0.0, (11, 11), 3000, seed=2)
    dark = CAM.to_photons(CAM.sample(torch.zeros(200_000), generator=ualm.make_generator(3)))
    assert abs(float(dark.mean()) - S2) < 4 * math.sqrt(S2 / 200_000)
    om = omega.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(ualm.nll_poisson(x, om, CAM).sum(), om)
    per_frame = score.sum((-2, -1))  # ∂NLL/∂background at the truth
    assert abs(float(per_frame.mean())) < 4 * float(per_frame.std()) / math.sqrt(len(x))
    fit = ualm.fit_mle(x, CAM, SIGMA)
    se = float(fit.background.std()) / math.sqrt(len(x))
    assert abs(float(fit.background.mean())) < 4 * se, (fit.background.mean(), se)
    assert abs(float(fit.photons.mean()) - 200.0) < 4 * float(fit.photons.std()) / math.sqrt(len(x))


def test_fisher_information_by_hand_and_as_score_covariance():
    theta, i0, bg, shape = [[4.3, 5.2]], 150.0, 0.5, (11, 11)
    info = ualm.fisher_information(torch.tensor(theta, dtype=torch.float64), i0, SIGMA, bg, CAM,
                                   shape)
    # By hand: I = Σ ∂ω ∂ωᵀ / (ω + w²/g²), derivatives by central differences of the erf PSF.
    rows, cols = np.arange(shape[0]), np.arange(shape[1])

    def omega(x0, y0):
        return i0 * np.outer(_profile(rows, [y0], SIGMA)[0], _profile(cols, [x0], SIGMA)[0]) + bg

    h = 1e-5
    (x0, y0), = theta
    d = [(omega(x0 + h, y0) - omega(x0 - h, y0)) / (2 * h),
         (omega(x0, y0 + h) - omega(x0, y0 - h)) / (2 * h)]
    rate = omega(x0, y0) + S2
    ref = np.array([[(a * b / rate).sum() for b in d] for a in d])
    np.testing.assert_allclose(info.numpy(), ref, rtol=1e-6)
    # And the information equality I = E[score scoreᵀ], which needs Var n = ω + w²/g².
    th = torch.tensor(theta, dtype=torch.float64).expand(6000, 1, 2).clone().requires_grad_(True)
    om = ualm.expected_frame(th, i0, SIGMA, bg, shape)
    x = CAM.sample(om.detach(), generator=ualm.make_generator(4))
    (scores,) = torch.autograd.grad(ualm.nll_poisson(x, om, CAM).sum(), th)
    scores = scores.reshape(-1, 2)
    emp = (scores.T @ scores / len(scores)).numpy()
    np.testing.assert_allclose(emp, ref, rtol=0.06, atol=0.06 * ref.diagonal().min())


def test_mle_reaches_the_crlb_at_gain_4():
    r = mle_vs_crlb(200.0, 0.0, n_fits=3000, camera=CAM, seed=5)
    assert r.converged == 1.0
    assert abs(r.pooled_ratio - 1) < 2 * r.ratio_half_width, r.pooled_ratio
    assert r.ratio_photons < 1.08


# ----------------------------------------------------------------------------- the posterior

@pytest.fixture(scope="module")
def one_frame_posterior():
    """One frame, the MCMC posterior of (x, y) (photons and background known), and the same
    posterior by grid quadrature of p(x | θ) written out with numpy."""
    shape, i0, bg, truth = (20, 20), 200.0, 0.0, (9.3, 10.2)
    x, _ = _frames([truth], i0, bg, shape, 1, seed=6)
    res = ualm.sample_posterior(x[0], CAM, i0=i0, background=bg, n_chains=8, n_iter=6000,
                                burn_in=1000, seed=7)
    # Grid: ±0.9 px around the truth (> 8 posterior std), 181 points per axis.
    gx = np.linspace(truth[0] - 0.9, truth[0] + 0.9, 181)
    gy = np.linspace(truth[1] - 0.9, truth[1] + 0.9, 181)
    ex = _profile(np.arange(shape[1]), gx, SIGMA)  # (Gx, W)
    ey = _profile(np.arange(shape[0]), gy, SIGMA)  # (Gy, H)
    data = (x[0].numpy() - 100.0) / 4.0 + S2
    rate = i0 * ey[:, None, :, None] * ex[None, :, None, :] + bg + S2  # (Gy, Gx, H, W)
    loglik = (data * np.log(rate) - rate).sum((-2, -1))
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    return res, post, gx, gy


def test_mcmc_matches_grid_quadrature_at_gain_4(one_frame_posterior):
    res, post, gx, gy = one_frame_posterior
    assert max(post[0].max(), post[-1].max(), post[:, 0].max(), post[:, -1].max()) < 1e-12
    px, py = post.sum(0), post.sum(1)
    mean = np.array([px @ gx, py @ gy])
    std = np.sqrt(np.array([px @ gx**2, py @ gy**2]) - mean**2)
    assert (res.rhat() < 1.01).all()
    ess = res.ess().numpy()
    ours_mean, ours_std = res.mean().numpy(), res.std().numpy()
    assert (np.abs(ours_mean - mean) < 4 * std / np.sqrt(ess)).all(), (ours_mean, mean)
    assert (np.abs(ours_std / std - 1) < 4 / np.sqrt(2 * ess)).all(), (ours_std, std)


def test_kde_variance_map_matches_grid_quadrature(one_frame_posterior):
    """Eq. 5 by quadrature: with y(θ) = c·k_y(θ_y) ⊗ k_x(θ_x) on the 80×80 grid (KDE pixel j of
    the 4× grid spans [j − ½, j + ½] in KDE units, θ_kde = 4θ + 3/2, kernel std 3 KDE px, c
    making an emitter on a pixel centre peak at 1), E[y] and E[y²] are products of 1-D sums."""
    res, post, gx, gy = one_frame_posterior
    mean, var = ualm.kde_moments(res)
    c = 1.0 / erf(0.5 / (math.sqrt(2) * 3.0)) ** 2
    kx = _profile(np.arange(80), 4 * gx + 1.5, 3.0)  # (Gx, 80)
    ky = _profile(np.arange(80), 4 * gy + 1.5, 3.0)
    e1 = c * ky.T @ post @ kx
    e2 = c * c * (ky**2).T @ post @ (kx**2)
    ref_var = e2 - e1**2
    np.testing.assert_allclose(mean.numpy(), e1, rtol=0, atol=0.01 * e1.max())
    rel = np.abs(var.numpy() - ref_var).sum() / ref_var.sum()
    assert rel < 0.06, rel
    assert abs(var.numpy().sum() / ref_var.sum() - 1) < 0.06
