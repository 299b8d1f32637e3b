"""Metropolis–Hastings posteriors (ualm.mcmc, ualm.likelihood.EmitterLikelihood), chain
diagnostics (ualm.diagnostics) and the KDE posterior moments (ualm.posterior).

The physics tests follow issue 3: on isolated emitters (i0 = 200, the paper's camera) the β = 1
posterior std of x and y matches the CRLB within 10 %, β = 0.2 inflates the variance 4–6×, and
R-hat < 1.01. Photons and background are known (fixed at the truth) in both the sampler and the
CRLB, so the two treat them alike.
"""
import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

import ualm
from ualm import diagnostics, likelihood, mcmc, posterior

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# The generic sampler on a known target
# --------------------------------------------------------------------------------------------

MU = torch.tensor([[1.0, -2.0], [-3.0, 0.5]], dtype=F64)  # two independent problems
COV = torch.tensor([[[1.0, 0.4], [0.4, 0.25]], [[0.09, -0.05], [-0.05, 0.36]]], dtype=F64)


def _gauss_logp(p):  # p (2, C, 2)
    d = p - MU[:, None, :]
    prec = torch.linalg.inv(COV)
    return -0.5 * torch.einsum("bcp,bpq,bcq->bc", d, prec, d)


@pytest.mark.parametrize("adapt", [True, False])
def test_gaussian_target_mean_and_covariance(adapt):
    init = torch.zeros(2, 16, 2, dtype=F64)
    res = mcmc.rwmh(_gauss_logp, init, n_iter=5000, burn_in=1000, proposal=0.3, adapt=adapt, seed=7)
    assert res.samples.shape == (2, 16, 4000, 2)
    ess = res.ess()
    assert (ess > 1000).all(), ess
    # Monte Carlo error of the mean is sd/sqrt(ESS); allow 5 of those.
    sd = COV.diagonal(dim1=-2, dim2=-1).sqrt()
    assert ((res.mean() - MU).abs() < 5 * sd / ess.sqrt()).all()
    # Covariance entries within 10 % of the scale sd_i·sd_j.
    scale = sd[:, :, None] * sd[:, None, :]
    assert ((res.cov() - COV).abs() / scale < 0.1).all(), res.cov()
    assert (res.rhat() < 1.01).all()


def test_adaptation_reaches_target_acceptance_and_scales_covariance():
    init = torch.zeros(2, 8, 2, dtype=F64)
    res = mcmc.rwmh(_gauss_logp, init, n_iter=3000, burn_in=2000, proposal=1e-4, adapt=True, seed=3)
    target = mcmc.default_target_accept(2)
    assert abs(float(res.acceptance.mean()) - target) < 0.05
    # The tuned proposal is close to 2.38²/d times the target covariance (Gelman et al. 1996).
    ratio = torch.linalg.eigvalsh(torch.linalg.solve(COV, res.proposal_cov))
    assert ((ratio > 0.5 * 2.38**2 / 2) & (ratio < 2.0 * 2.38**2 / 2)).all(), ratio


def test_seed_reproducible():
    init = torch.zeros(2, 4, 2, dtype=F64)
    a = mcmc.rwmh(_gauss_logp, init, n_iter=300, burn_in=100, seed=11, adapt=True)
    b = mcmc.rwmh(_gauss_logp, init, n_iter=300, burn_in=100, seed=11, adapt=True)
    c = mcmc.rwmh(_gauss_logp, init, n_iter=300, burn_in=100, seed=12, adapt=True)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)


def test_thinning_keeps_every_kth_state():
    init = torch.zeros(2, 3, 2, dtype=F64)
    full = mcmc.rwmh(_gauss_logp, init, n_iter=600, burn_in=100, seed=5)
    thin = mcmc.rwmh(_gauss_logp, init, n_iter=600, burn_in=100, thin=5, seed=5)
    assert thin.samples.shape[-2] == 100
    assert torch.equal(thin.samples, full.samples[..., 4::5, :])


# --------------------------------------------------------------------------------------------
# The emitter likelihood
# --------------------------------------------------------------------------------------------


def _frames(n, seed, **cfg):
    config = ualm.SimConfig(layout="isolated", **cfg)
    return ualm.simulate_batch(n, config, generator=ualm.make_generator(seed), dtype=F64)


@pytest.mark.parametrize("params,n_emitters", [(("x", "y"), 1), (("x", "y", "photons", "background"), 1),
                                               (("x", "y", "photons"), 2)])
def test_likelihood_equals_nll_poisson(params, n_emitters):
    sim = _frames(3, 0, background=1.5)
    fixed_bg = 0.0 if "background" in params else 1.5  # a sampled background is the whole one
    like = likelihood.EmitterLikelihood(sim["x"], ualm.PAPER_CAMERA, n_emitters, params,
                                        i0=torch.tensor([150.0, 200.0, 250.0], dtype=F64),
                                        background=fixed_bg)
    g = torch.Generator().manual_seed(0)
    theta = sim["theta"][:, None, :1] + torch.randn(3, 5, n_emitters, 2, generator=g, dtype=F64)
    i0 = 150 + 100 * torch.rand(3, 5, n_emitters, generator=g, dtype=F64)
    bg = 3 * torch.rand(3, 5, generator=g, dtype=F64)
    cols = []
    for k in range(n_emitters):
        cols += [theta[..., k, 0], theta[..., k, 1]] + ([i0[..., k]] if "photons" in params else [])
    if "background" in params:
        cols.append(bg)
    p = torch.stack(cols, -1)
    assert like.names == ualm.param_names(n_emitters, params)
    amp = i0 if "photons" in params else torch.tensor([150.0, 200.0, 250.0], dtype=F64)[:, None, None]
    back = bg if "background" in params else torch.tensor(1.5, dtype=F64)
    omega = ualm.expected_frame(theta, amp.expand(3, 5, n_emitters), 0.92, back)
    ref = -ualm.nll_poisson(sim["x"][:, None], omega, ualm.PAPER_CAMERA)
    torch.testing.assert_close(like(p), ref, rtol=1e-12, atol=1e-9)
    # Outside the support: -inf.
    q = p.clone()
    q[0, 0, 0] = -3.0
    assert like(q)[0, 0] == -math.inf


# --------------------------------------------------------------------------------------------
# The isolated emitter: posterior std against the CRLB, tempering, R-hat
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emitter_runs():
    torch.set_num_threads(1)
    sim = _frames(12, 2024)
    kw = dict(n_chains=4, n_iter=4000, burn_in=1000)
    tuned = mcmc.sample_posterior(sim["x"], beta=1.0, seed=1, **kw)
    paper = mcmc.sample_posterior(sim["x"], beta=0.2, proposal=0.05, adapt=False, seed=2, **kw)
    return sim, tuned, paper


def test_beta_one_posterior_std_matches_crlb(emitter_runs):
    sim, tuned, _ = emitter_runs
    assert tuned.samples.shape == (12, 4, 3000, 2) and tuned.names == ["x0", "y0"]
    bound = ualm.crlb(sim["theta"], 200.0, 0.92, 0.0, ualm.PAPER_CAMERA)  # (12, 2): x, y
    ratio = (tuned.std() / bound).mean(0)
    assert ((ratio - 1).abs() < 0.10).all(), ratio
    # The bound at the posterior mean instead of the truth gives the same comparison.
    at_mean = ualm.crlb(tuned.mean()[:, None, :], 200.0, 0.92, 0.0, ualm.PAPER_CAMERA)
    assert ((at_mean / bound - 1).abs() < 0.02).all()
    # Posterior mean vs truth: errors of the order of the CRLB, no bias.
    err = (tuned.mean() - sim["theta"][:, 0]) / bound
    assert err.abs().max() < 4 and err.mean(0).abs().max() < 1.5


def test_tempering_inflates_variance_by_about_one_over_beta(emitter_runs):
    _, tuned, paper = emitter_runs
    ratio = (paper.var() / tuned.var()).mean(0)
    assert ((ratio > 4) & (ratio < 6)).all(), ratio
    # The paper's proposal σ² = 0.05 at β = 0.2 accepts about half of its moves.
    assert 0.45 < float(paper.acceptance.mean()) < 0.62


def test_rhat_and_ess_of_tuned_runs(emitter_runs):
    _, tuned, paper = emitter_runs
    assert float(tuned.rhat().max()) < 1.01
    assert float(paper.rhat().max()) < 1.02
    assert (tuned.ess() > 800).all()
    assert 0.25 < float(tuned.acceptance.mean()) < 0.45
    assert "R-hat" in tuned.summary()


def test_photons_and_background_sampled_against_four_parameter_crlb():
    sim = _frames(4, 99, background=3.0)
    res = mcmc.sample_posterior(sim["x"], params=("x", "y", "photons", "background"),
                                n_chains=4, n_iter=3000, burn_in=1000, seed=4)
    assert res.names == ["x0", "y0", "photons0", "background"]
    bound = ualm.crlb(sim["theta"], 200.0, 0.92, 3.0, ualm.PAPER_CAMERA,
                      params=("x", "y", "photons", "background"))
    ratio = (res.std() / bound).mean(0)
    assert ((ratio - 1).abs() < 0.15).all(), ratio
    assert float(res.rhat().max()) < 1.02


def test_sampled_background_is_the_whole_background():
    # True background 1 photon/px. The sampled value is the whole background: a fixed
    # background=3 on top of it would truncate the total at >= 3, so it is refused.
    sim = _frames(3, 7, background=1.0)
    all4 = ("x", "y", "photons", "background")
    with pytest.raises(ValueError, match="fixed background must be 0"):
        mcmc.sample_posterior(sim["x"], params=all4, background=3.0, n_iter=50, burn_in=10)
    with pytest.raises(ValueError, match="fixed background must be 0"):
        likelihood.EmitterLikelihood(sim["x"], params=all4, background=torch.full((20, 20), 0.5))
    res = mcmc.sample_posterior(sim["x"], params=all4, n_chains=4, n_iter=1500, burn_in=500, seed=3)
    bg = res.param("background")
    assert float(bg.min()) >= 0.0
    post_mean = bg.mean((-2, -1))
    assert ((post_mean - 1.0).abs() < 0.5).all(), post_mean
    assert (post_mean < 2.0).all()  # nowhere near the truncation at 3 of the old behaviour


def test_gaussian_prior_shrinks_posterior():
    sim = _frames(4, 5)
    bound = float(ualm.crlb(sim["theta"][:1], 200.0, 0.92, 0.0)[0, 0])
    centre = sim["theta"][:, 0, :].clone()

    def log_prior(p):  # N(truth, crlb²) on x only
        return -0.5 * ((p[..., 0] - centre[:, None, 0]) / bound) ** 2

    kw = dict(n_iter=2000, burn_in=500, seed=6)
    flat = mcmc.sample_posterior(sim["x"], **kw)
    prior = mcmc.sample_posterior(sim["x"], log_prior=log_prior, **kw)
    r = (prior.var() / flat.var()).mean(0)
    assert 0.4 < float(r[0]) < 0.62 and 0.85 < float(r[1]) < 1.15, r


def test_single_frame_shapes_and_two_emitters():
    sim = _frames(1, 8)
    res = mcmc.sample_posterior(sim["x"][0], n_chains=3, n_iter=400, burn_in=100, seed=0)
    assert res.samples.shape == (3, 300, 2) and res.acceptance.shape == (3,)
    assert res.positions().shape == (900, 1, 2) and res.rhat().shape == (2,)
    two = torch.tensor([9.0, 9.5, 10.2, 9.5], dtype=F64)
    res2 = mcmc.sample_posterior(sim["x"][0], n_emitters=2, init=two, n_chains=2, n_iter=300,
                                 burn_in=100, seed=0)
    assert res2.names == ["x0", "y0", "x1", "y1"] and res2.positions().shape == (400, 2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_follows_input():
    sim = _frames(2, 1)
    x = sim["x"].cuda()
    res = mcmc.sample_posterior(x, n_iter=500, burn_in=200, seed=0)
    assert res.samples.device.type == "cuda"
    m, v = posterior.kde_moments(res)
    assert m.device.type == "cuda" and v.shape == (2, 80, 80)


# --------------------------------------------------------------------------------------------
# Diagnostics on chains with known answers
# --------------------------------------------------------------------------------------------


def _ar1(rho, chains, n, seed):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, n + 1000)) * math.sqrt(1 - rho**2)
    return torch.from_numpy(lfilter([1.0], [1.0, -rho], e, axis=-1)[:, 1000:])


def test_diagnostics_on_iid_chains():
    s = torch.randn(8, 4000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert abs(float(diagnostics.rhat(s)) - 1) < 0.005
    assert abs(float(diagnostics.rhat(s, rank_normalize=False)) - 1) < 0.005
    for rn in (True, False):
        assert abs(float(diagnostics.ess(s, rn)) / s.numel() - 1) < 0.1


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_of_ar1_matches_closed_form(rho):
    s = _ar1(rho, 8, 10_000, seed=int(rho * 10))
    expect = s.numel() * (1 - rho) / (1 + rho)
    for rn in (True, False):
        assert abs(float(diagnostics.ess(s, rn)) / expect - 1) < 0.15
    acf = diagnostics.autocorrelation(s)
    assert abs(float(acf[:, 1].mean()) - rho) < 0.02
    assert abs(float(acf[:, 2].mean()) - rho**2) < 0.03


def test_rhat_flags_disagreeing_and_drifting_chains():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 2000, generator=g, dtype=F64)
    s[0] += 1.0  # one chain elsewhere
    assert float(diagnostics.rhat(s)) > 1.1
    drift = torch.randn(4, 2000, generator=g, dtype=F64) + torch.linspace(0, 3, 2000, dtype=F64)
    assert float(diagnostics.rhat(drift)) > 1.1  # only split chains see a drift shared by all chains
    wide = torch.randn(4, 2000, generator=g, dtype=F64)
    wide[0] *= 3.0  # same centre, different spread: the tail R-hat catches it
    assert float(diagnostics.rhat(wide)) > 1.05
    # Ties (rejections repeat draws) get average ranks.
    z = diagnostics.rank_normalize(torch.tensor([[0.0, 1.0, 1.0, 2.0]], dtype=F64))
    assert z[0, 1] == z[0, 2] and z[0, 0] == -z[0, 3]


# --------------------------------------------------------------------------------------------
# The posterior over KDEs (eq. 5)
# --------------------------------------------------------------------------------------------


def test_kde_moments_match_rendered_kdes():
    g = torch.Generator().manual_seed(2)
    theta = torch.tensor([9.3, 9.6], dtype=F64) + 0.1 * torch.randn(2, 300, 2, 2, generator=g, dtype=F64)
    for n in (1, 2):
        t = theta[..., :n, :]
        y = ualm.kde(t)  # (2, 300, 80, 80), "peak" normalisation
        mean, var = posterior.kde_moments(t, batch_size=128)
        torch.testing.assert_close(mean, y.mean(1), rtol=0, atol=1e-12)
        torch.testing.assert_close(var, y.var(1), rtol=0, atol=1e-12)
        m2, v2 = posterior.kde_moments(t, method="render", batch_size=70)
        torch.testing.assert_close(m2, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(v2, var, rtol=0, atol=1e-12)


def test_kde_moments_normalisation_and_result_input():
    # All draws at one KDE pixel centre: the mean peaks at exactly 1 ("peak"), the variance is 0.
    at = ualm.from_kde_coords(torch.tensor([40.0, 37.0], dtype=F64))
    mean, var = posterior.kde_moments(at.expand(10, 1, 2))
    assert abs(float(mean.max()) - 1) < 1e-12 and float(var.max()) < 1e-12
    assert mean.argmax() == 37 * 80 + 40  # row = y, column = x
    mean_s, _ = posterior.kde_moments(at.expand(10, 1, 2), normalize="sum")
    assert abs(float(mean_s.sum()) - 1) < 1e-9
    sim = _frames(2, 3)
    res = mcmc.sample_posterior(sim["x"], n_iter=600, burn_in=200, seed=0)
    m, v = posterior.kde_moments(res, max_samples=500)
    assert m.shape == v.shape == (2, 80, 80) and (v >= 0).all()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    sim = _frames(2, 0)
    x = sim["x"]
    cases = [
        (dict(x=x[0, 0]), ValueError, "x must be"),
        (dict(x=x.clone().fill_(float("nan"))), ValueError, "x contains NaN"),
        (dict(beta=0.0), ValueError, "beta"),
        (dict(beta=1.5), ValueError, "beta"),
        (dict(n_iter=100, burn_in=100), ValueError, "burn_in"),
        (dict(n_chains=0), ValueError, "n_chains"),
        (dict(n_iter=10.5), TypeError, "n_iter"),
        (dict(proposal=-0.05), ValueError, "proposal"),
        (dict(proposal=torch.tensor([[1.0, 2.0], [2.0, 1.0]])), ValueError, "positive definite"),
        (dict(proposal=torch.ones(3)), ValueError, "proposal"),
        (dict(params=("x", "photons")), ValueError, "params"),
        (dict(params=("x", "y", "sigma")), ValueError, "params"),
        (dict(n_emitters=2), ValueError, "init is required"),
        (dict(init=torch.zeros(3, 3)), ValueError, "init must have shape"),
        (dict(i0=-5.0), ValueError, "i0"),
        (dict(sigma=0.0), ValueError, "sigma"),
        (dict(log_prior="flat"), TypeError, "log_prior"),
        (dict(log_prior=lambda p: p.sum()), ValueError, "log_prior must return"),
        (dict(camera="paper"), TypeError, "camera"),
        (dict(generator=3), TypeError, "generator"),
        (dict(target_accept=1.2), ValueError, "target_accept"),
    ]
    for kw, err, msg in cases:
        kw = dict(dict(x=x, n_iter=50, burn_in=10), **kw)
        with pytest.raises(err, match=msg):
            mcmc.sample_posterior(kw.pop("x"), **kw)
    with pytest.raises(ValueError, match="init: the log density"):
        mcmc.rwmh(lambda p: torch.full(p.shape[:-1], -math.inf), torch.zeros(1, 2, 2), n_iter=10, burn_in=0)
    with pytest.raises(ValueError, match="log_prob must return"):
        mcmc.rwmh(lambda p: p.sum(), torch.zeros(1, 2, 2), n_iter=10, burn_in=0)
    with pytest.raises(ValueError, match="init must have shape"):
        mcmc.rwmh(lambda p: p.sum(-1), torch.zeros(2), n_iter=10, burn_in=0)
    with pytest.raises(ValueError, match="at least 4 draws"):
        diagnostics.rhat(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="chains, draws"):
        diagnostics.ess(torch.zeros(5))
    with pytest.raises(ValueError, match="samples"):
        posterior.kde_moments(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="method"):
        posterior.kde_moments(torch.zeros(10, 1, 2), method="fast")
    with pytest.raises(ValueError, match="at least 2 samples"):
        posterior.kde_moments(torch.zeros(1, 1, 2))


# --------------------------------------------------------------------------------------------
# The chapter's figure helpers
# --------------------------------------------------------------------------------------------


def test_mcmc_figure_and_plot_helpers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ualm import plotting, widgets

    fig = widgets.mcmc_figure(beta=0.5, proposal_var=0.02, n_iter=300, burn_in=100)
    assert len(fig.axes) >= 3 and "β = 0.5" in fig._suptitle.get_text()
    traces, draws = fig.axes[0], fig.axes[1]
    assert traces.get_ylabel() == "x (px)" and traces.get_xlabel()
    assert draws.get_xlabel() == "x − posterior mean (nm)" and "(nm)" in draws.get_ylabel()
    assert all(ax.get_title() for ax in fig.axes[:3])
    plt.close(fig)
    fig = widgets.mcmc_figure(beta=1.0, adapt=True, n_iter=300, burn_in=100)
    assert "tuned in burn-in" in fig._suptitle.get_text()
    plt.close(fig)
    fig, ax = plt.subplots()
    e = plotting.cov_ellipse(ax, [1.0, 2.0], torch.tensor([[4.0, 0.0], [0.0, 1.0]]), 2.0)
    assert (e.width, e.height) == pytest.approx((8.0, 4.0)) and e.center == pytest.approx((1.0, 2.0))
    plotting.show_traces(ax, torch.zeros(3, 10), truth=0.0, band=0.1)
    assert len(ax.lines) == 4
    with pytest.raises(ValueError, match="chains, draws"):
        plotting.show_traces(ax, torch.zeros(10))
    plt.close(fig)


def test_mcmc_explorer_returns_a_widget():
    import matplotlib

    matplotlib.use("Agg")
    pytest.importorskip("ipywidgets")
    import ipywidgets as W

    from ualm import widgets

    box = widgets.mcmc_explorer(beta=0.5, n_iter=200, burn_in=50, n_chains=2)
    assert isinstance(box, W.VBox)
    sliders = [w for row in box.children if isinstance(row, W.HBox) for w in row.children]
    assert {w.description for w in sliders} >= {"tempering β", "proposal σ² (px²)", "seed"}
    assert next(w for w in sliders if w.description == "tempering β").value == pytest.approx(0.5)
    with pytest.raises(TypeError, match="unexpected"):
        widgets.mcmc_explorer(temperature=1.0)
