"""The conditional DDPM: network shapes, schedules against closed forms, the forward process,
samplers driven by the analytic ε of Gaussian data, seeding, training resume, bad inputs."""
import math

import pytest
import torch
from torch import nn

from ualm import diffusion as D
from ualm import sampling as SP
from ualm.models.unet import PRESETS, UNet, UNetConfig


def tiny_unet(**kw):
    cfg = UNetConfig(width=8, mults=(1, 2, 2, 2), blocks=1, attention=(3,), groups=4, **kw)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(cfg)


# ----------------------------------------------------------------------------- network

@pytest.mark.parametrize("cond", [("yhat",), ("yhat", "frame")])
def test_unet_shapes_and_conditioning(cond):
    net = tiny_unet(cond=cond)
    y = torch.randn(3, 80, 80)
    c = torch.randn(3, len(cond), 80, 80)
    t = torch.tensor([1, 50, 100])
    assert net(y, c, t).shape == (3, 80, 80)
    assert net(y[:, None], c, t).shape == (3, 1, 80, 80)
    # zero-initialised head: the untrained network predicts ε̂ = 0
    assert torch.count_nonzero(net(y, c, t)) == 0


def test_unet_uses_condition_and_step_once_trained_a_bit():
    net = tiny_unet()
    for p in net.head.parameters():
        nn.init.normal_(p, std=0.1)
    y, c = torch.randn(2, 80, 80), torch.randn(2, 1, 80, 80)
    t = torch.tensor([10, 10])
    base = net(y, c, t)
    assert not torch.allclose(base, net(y, c + 1, t))
    assert not torch.allclose(base, net(y, c, t + 40))


def test_paper_preset_has_five_levels_and_attention_at_10x10():
    cfg = PRESETS["paper"]
    assert cfg.mults == (1, 2, 4, 8, 8) and cfg.attention == (3,)
    assert 80 // 2 ** 3 == 10  # level 3 of an 80×80 KDE
    small = UNet(cfg.replace(width=4, groups=4, dropout=0.0))
    out = small(torch.zeros(1, 80, 80), torch.zeros(1, 1, 80, 80), torch.tensor([5]))
    assert out.shape == (1, 80, 80)


def test_unet_config_is_frozen_and_strict():
    cfg = UNetConfig()
    with pytest.raises(Exception):
        cfg.width = 3
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown UNetConfig keys.*wdith"):
        UNetConfig.from_dict({"wdith": 3})
    with pytest.raises(ValueError, match="cond"):
        UNetConfig(cond=("truth",))
    with pytest.raises(ValueError, match="attention"):
        UNetConfig(attention=(7,))


def test_unet_refuses_wrong_shapes():
    net = tiny_unet()
    with pytest.raises(ValueError, match="cond must have shape"):
        net(torch.zeros(2, 80, 80), torch.zeros(2, 2, 80, 80), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 20, 20), torch.zeros(1, 1, 20, 20), torch.tensor([1]))


# ----------------------------------------------------------------------------- schedules

def test_paper_schedule_against_closed_forms():
    s = D.schedule("paper")
    assert s.T == 100
    betas = torch.linspace(1e-4, 1e-2, 100, dtype=torch.float64)
    gamma_T = float(torch.prod(1 - betas))
    assert s.describe()["gamma_T"] == pytest.approx(gamma_T, rel=1e-12)
    assert gamma_T == pytest.approx(0.6025, abs=5e-4)
    g = s.table("gammas")
    assert g.dtype == torch.float64 and g[0] == 1.0
    t = 37
    gp, gt, bt = float(g[t - 1]), float(g[t]), float(betas[t - 1])
    assert float(s.table("post_var")[t]) == pytest.approx(bt * (1 - gp) / (1 - gt), rel=1e-12)
    assert float(s.table("post_c0")[t]) == pytest.approx(bt * math.sqrt(gp) / (1 - gt), rel=1e-12)
    assert float(s.table("post_ct")[t]) == pytest.approx((1 - gp) * math.sqrt(1 - bt) / (1 - gt), rel=1e-12)


def test_cosine_schedule_reaches_noise():
    s = D.schedule("cosine")
    assert s.describe()["gamma_T"] < 1e-3
    assert bool((s.table("gammas")[1:] < s.table("gammas")[:-1]).all())


def test_posterior_mean_is_consistent_with_forward_process():
    # q(y_{t−1} | y_t, y_0) with y_t = √γ_t y_0 (no noise) must have mean √γ_{t−1} y_0
    s = D.schedule("paper")
    y0 = torch.linspace(-1, 1, 11, dtype=torch.float64)
    for t in (1, 2, 50, 100):
        yt = s.q_sample(y0, t, torch.zeros_like(y0))
        mean, _ = s.posterior(y0, yt, t)
        assert torch.allclose(mean, s.table("sqrt_gammas")[t - 1] * y0, atol=1e-12)


def test_gather_casts_to_dtype_and_shape():
    s = D.schedule("paper")
    like = torch.zeros(4, 1, 8, 8, dtype=torch.float32)
    v = s.gather("gammas", torch.tensor([1, 2, 3, 100]), like)
    assert v.shape == (4, 1, 1, 1) and v.dtype == torch.float32


def test_forward_process_moments_monte_carlo():
    s = D.schedule("paper")
    gen = torch.Generator().manual_seed(0)
    y0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    for t in (10, 100):
        yt = s.q_sample(y0, t, torch.randn(y0.shape, generator=gen, dtype=torch.float64))
        g = float(s.table("gammas")[t])
        se_mean = math.sqrt((1 - g) / len(y0))
        assert abs(float(yt.mean()) - math.sqrt(g) * 0.7) < 5 * se_mean
        assert float(yt.var()) == pytest.approx(1 - g, rel=0.02)


def test_bad_schedules():
    with pytest.raises(ValueError, match="schedule"):
        D.schedule("quadratic")
    with pytest.raises(ValueError, match="T must"):
        D.linear_schedule(T=0)


# ----------------------------------------------------------------------------- samplers on Gaussian data

from ualm.oracle import EMITTER_S, PIXEL_S, GaussianOracle, std_ratio  # noqa: E402

MU, S = 0.3, 0.5


def gaussian_samples(sched, **kw):
    oracle = GaussianOracle(sched, S)
    cond = torch.full((1, 1, 80, 80), MU, dtype=torch.float64)
    kw.setdefault("n_samples", 16)
    z = SP.sample(oracle, cond, sched, clip=False, progress=False, **kw)
    return D.to_net(z)  # back to the network's range, where y_0 ~ N(μ, s²)


@pytest.mark.parametrize("kw", [
    dict(method="ancestral", start="noise"),
    dict(method="ddim", start="noise", steps=250, eta=0.0),  # coarse η = 0 jumps shrink the variance
    dict(method="ddim", start="noise", steps=250, eta=1.0),
])
def test_samplers_reproduce_gaussian_data(kw):
    # a schedule that reaches noise, so that N(0, I) is the right start; 16 × 6400 draws
    z = gaussian_samples(D.linear_schedule(T=1000, beta_1=1e-4, beta_T=0.02), **kw)
    assert float(z.mean()) == pytest.approx(MU, abs=0.01)
    assert float(z.std()) == pytest.approx(S, rel=0.03)


def test_paper_schedule_start_from_noise_is_biased_and_guided_start_is_not():
    # γ_T ≈ 0.60: starting eq. 10 from N(0, I) leaves part of the start in the sample
    sched = D.schedule("paper")
    z = gaussian_samples(sched, method="ancestral", start="noise")
    assert float(z.mean()) < MU - 0.05
    # with s → the guide is the exact mean, the guided start has the right mean
    zg = gaussian_samples(sched, method="ancestral", start="guided")
    assert float(zg.mean()) == pytest.approx(MU, abs=0.01)


def test_ddim_eta0_is_deterministic_given_the_start():
    sched = D.schedule("paper")
    oracle = GaussianOracle(sched, S)
    y = torch.randn(2, 80, 80, dtype=torch.float64)
    cond = torch.full((2, 1, 80, 80), MU, dtype=torch.float64)
    path = D.ddim_steps(sched.T, 10)
    outs = []
    for _ in range(2):
        z = y.clone()
        for t, s in zip(path[:-1], path[1:]):
            eps, y0 = D.predict(oracle, sched, z, t, cond)
            z = D.ddim_step(sched, z, t, s, eps, y0, 0.0, None)
        outs.append(z)
    assert torch.equal(outs[0], outs[1])
    a = gaussian_samples(sched, method="ddim", start="guided", steps=10, eta=0.0, seed=3)
    b = gaussian_samples(sched, method="ddim", start="guided", steps=10, eta=0.0, seed=3)
    assert torch.equal(a, b)


def test_ancestral_step_is_eq10():
    sched = D.schedule("paper")
    y, eps, xi = torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    t = 40
    b, g = float(sched.betas[t]), float(sched.table("gammas")[t])
    score = -eps / math.sqrt(1 - g)
    want = (y + b * score) / math.sqrt(1 - b) + math.sqrt(b) * xi
    assert torch.allclose(D.ancestral_step(sched, y, t, eps, xi), want, atol=1e-6)


def test_samples_do_not_depend_on_batch_size():
    net = tiny_unet()
    for p in net.head.parameters():
        nn.init.normal_(p, std=0.05)
    cond = torch.rand(3, 1, 80, 80) * 2 - 1
    kw = dict(method="ddim", start="guided", steps=4, eta=1.0, seed=5, progress=False)
    a = SP.sample(net, cond, D.schedule("paper"), 4, batch_size=12, **kw)
    b = SP.sample(net, cond, D.schedule("paper"), 4, batch_size=5, **kw)
    c = SP.sample(net, cond[1:2], D.schedule("paper"), 4, batch_size=3, first_frame=1, **kw)
    assert a.shape == (3, 4, 80, 80)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[1:2], c, atol=1e-5)
    d = SP.sample(net, cond, D.schedule("paper"), 4, batch_size=12, **{**kw, "seed": 6})
    assert not torch.allclose(a, d)


def test_channels_last_changes_only_rounding_and_gives_the_layout_back():
    net = tiny_unet()
    for p in net.head.parameters():
        nn.init.normal_(p, std=0.05)
    cond = torch.rand(2, 1, 80, 80, generator=torch.Generator().manual_seed(2)) * 2 - 1
    kw = dict(method="ddim", start="guided", steps=3, eta=1.0, seed=5, progress=False)
    a = SP.sample(net, cond, D.schedule("paper"), 3, channels_last=False, **kw)
    b = SP.sample(net, cond, D.schedule("paper"), 3, channels_last=True, **kw)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    weights = [p for p in net.parameters() if p.dim() == 4]
    assert all(p.is_contiguous() for p in weights)
    with SP.channels_last_layout(net):
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        with SP.channels_last_layout(net):  # already in that layout: left alone, not undone early
            pass
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(p.is_contiguous() for p in weights)


def test_the_path_and_the_step_iterator_agree_with_sample():
    """sample_with_path keeps ŷ_0 after every step; sample_steps yields one state per network
    evaluation and batch, and its last states are sample's samples, whatever the batching."""
    net = tiny_unet()
    cond = torch.rand(2, 1, 80, 80, generator=torch.Generator().manual_seed(4)) * 2 - 1
    kw = dict(method="ancestral", start="guided", t0=5, seed=3)
    s, path = SP.sample_with_path(net, cond, D.schedule("paper"), 2, progress=False, **kw)
    assert s.shape == (2, 2, 80, 80) and path.shape == (2, 2, 5, 80, 80)
    torch.testing.assert_close(SP.sample(net, cond, D.schedule("paper"), 2, progress=False, **kw), s)
    steps = list(SP.sample_steps(net, cond, D.schedule("paper"), 2, batch_size=3, **kw))
    assert [st.t for st in steps[:5]] == [5, 4, 3, 2, 1] and sum(st.last for st in steps) == 2
    last = torch.cat([st.y for st in steps if st.last])
    torch.testing.assert_close(D.from_net(last).reshape(2, 2, 80, 80), s)
    with pytest.raises(TypeError):
        SP.sample(net, cond, D.schedule("paper"), 2, keep_path=True, **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(method="ddim", steps=101), "steps"),
    (dict(method="ddim", steps=0), "steps"),
    (dict(method="ddim", steps=10, eta=1.5), "eta"),
    (dict(method="ddim", steps=10, eta=-0.1), "eta"),
    (dict(method="ancestral", t0=101), "t0"),
    (dict(method="leapfrog"), "method"),
    (dict(start="zeros"), "start"),
    (dict(n_samples=0), "n_samples"),
])
def test_sampler_bad_inputs(kw, match):
    net = tiny_unet()
    with pytest.raises(ValueError, match=match):
        SP.sample(net, torch.zeros(1, 1, 80, 80), D.schedule("paper"), **{"n_samples": 2, **kw})


def test_sampler_refuses_nan_condition():
    with pytest.raises(ValueError, match="cond"):
        SP.sample(tiny_unet(), torch.full((1, 1, 80, 80), float("nan")), D.schedule("paper"), 2)


# ----------------------------------------------------------------------------- samplers tested on their spread

@pytest.mark.parametrize("name", sorted(SP.POSTERIOR_SAMPLERS))
@pytest.mark.parametrize("s", [PIXEL_S, 0.3, EMITTER_S, 2.0])
def test_posterior_samplers_reproduce_the_true_std(name, s):
    # a sampler offered as a posterior sampler, fed the exact ε̂, on the schedule it is offered
    # with (one that reaches noise), at its own step count: std within 5 % of the truth
    sched = D.schedule("cosine")
    ratio = std_ratio(sched, s, **SP.SAMPLERS[name].settings())
    assert ratio == pytest.approx(1.0, abs=0.05), (name, s, ratio)


def test_the_sdedit_start_is_narrow_by_construction():
    # the paper's schedule, an emitter-like spread: starting at t0 from q(y_t0 | y_0 = ŷ) lacks
    # γ_t0·Var(y_0 | ŷ), and the chain cannot add it back (benchmarks/oracle_spread.py)
    sched = D.schedule("paper")
    r = {t0: std_ratio(sched, EMITTER_S, method="ancestral", start="guided", t0=t0) for t0 in (10, 25, 100)}
    assert r[10] < 0.15 and r[25] < 0.3 and r[100] < 0.85, r
    assert r[10] < r[25] < r[100]
    # DDIM's coarse jumps replace y_0 by its mean: narrow at 10 steps on either schedule
    for name in ("paper", "cosine"):
        start = "noise" if name == "cosine" else "guided"
        ratio = std_ratio(D.schedule(name), EMITTER_S, method="ddim", start=start, steps=10, eta=1.0)
        assert ratio < 0.9, (name, ratio)
    assert not {"guided", "ddim"} & set(SP.POSTERIOR_SAMPLERS)


def test_oracle_is_checked():
    with pytest.raises(ValueError, match="s must be"):
        GaussianOracle(D.schedule("paper"), 0.0)


def test_sampler_registry_is_typed_and_labelled():
    """One registry: each Sampler knows its settings, whether it is a posterior sampler, and its
    labels; chapter 5's variants are Samplers too, and uncertainty_map takes either form."""
    from ualm.uncertainty import SAMPLER_TABLE, evals_per_sample
    assert all(isinstance(s, SP.Sampler) and s.name == k and s.label and s.short for k, s in SP.SAMPLERS.items())
    assert SP.SAMPLERS["ddim"].settings() == {"method": "ddim", "start": "guided", "steps": 10, "eta": 1.0}
    assert SP.SAMPLERS["ddim"].settings(steps=20)["steps"] == 20
    t10 = SAMPLER_TABLE["guided start, t0 = 10"]
    assert t10.name == "guided" and t10.settings()["t0"] == 10 and evals_per_sample(t10) == 10
    assert all(label == s.label for label, s in SAMPLER_TABLE.items())
    assert len({s.short for s in SAMPLER_TABLE.values()}) == len(SAMPLER_TABLE)
    assert SP.get_sampler("ancestral") is SP.SAMPLERS["ancestral"] and SP.get_sampler(t10) is t10
    with pytest.raises(ValueError, match="one of"):
        SP.get_sampler("nope")
    with pytest.raises(ValueError, match="unknown method"):
        SP.Sampler("x", method="euler")
