"""No silent wrong answers (issue 10): realistic bad data and bad arguments get a bounded
computation, a flag, a warning or an error that names the argument, never a hang or garbage."""
import math
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import ualm
from ualm import diagnostics
from ualm.models import DeepSTORM


def _brute_nll(x, omega, camera, q_max):
    """−log Σ_q Poisson(q; ω) N(x; g q + o, w²) over every q < q_max, pixel by pixel."""
    g, o, v = (float(t) for t in (camera.gain, camera.offset, camera.read_var))
    q = torch.arange(q_max, dtype=torch.float64)
    om = omega[..., None]
    log_pois = torch.where(om > 0, q * torch.log(om) - om - torch.lgamma(q + 1),
                           torch.where(q == 0, 0.0, -math.inf))
    log_gauss = -0.5 * ((x[..., None] - g * q - o) ** 2 / v + math.log(2 * math.pi * v))
    return -torch.logsumexp(log_pois + log_gauss, -1)


@pytest.mark.parametrize("camera, x, omega", [
    # dark, dim, bright and saturated 16-bit pixels; a pixel far above or below its ω
    (ualm.Camera(2.0, 100.0, 5.0), [99.0, 109.5, 151.0, 262.0, 65535.0, 100.0, 80.0],
     [0.3, 4.0, 25.0, 80.0, 10.0, 0.0, 300.0]),
    # strong read noise on bright pixels: windows wider than max_terms, summed every h-th q
    (ualm.Camera(1.0, 100.0, 1e4), [5100.0, 100.0, 20000.0, 3000.0], [5000.0, 1e3, 1.5e4, 50.0]),
    # almost no read noise: the window must still hold the right integers
    (ualm.Camera(0.5, 100.0, 0.01), [200.3, 100.0, 5100.0], [200.0, 0.0, 1e4]),
])
def test_exact_likelihood_matches_brute_force_everywhere(camera, x, omega):
    x = torch.tensor(x, dtype=torch.float64).reshape(-1, 1, 1)
    omega = torch.tensor(omega, dtype=torch.float64).reshape(-1, 1, 1)
    ours = ualm.nll_poisson_gaussian(x, omega, camera)
    ref = _brute_nll(x[:, 0, 0], omega[:, 0, 0], camera, 80_000)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-9)


def test_exact_likelihood_cost_is_bounded_per_pixel():
    """One saturated pixel, or absurd values, cost no more than an ordinary frame (it used to
    set the summation range of the whole batch: > 100 s, or no end at all)."""
    cam = ualm.PAPER_CAMERA
    theta = torch.tensor([[[9.3, 10.2]]], dtype=torch.float64).expand(100, 1, 2)
    omega = ualm.expected_frame(theta, 200.0, 0.92, 2.0, (20, 20))
    x = cam.sample(omega, generator=ualm.make_generator(0))
    ualm.nll_poisson_gaussian(x, omega, cam)
    t0 = time.perf_counter()
    plain = ualm.nll_poisson_gaussian(x, omega, cam)
    t_plain = time.perf_counter() - t0
    x[0, 3, 3] = 65535.0
    t0 = time.perf_counter()
    sat = ualm.nll_poisson_gaussian(x, omega, cam)
    assert time.perf_counter() - t0 < 3 * t_plain + 1.0
    assert torch.equal(sat[1:], plain[1:]) and sat[0] > plain[0] + 1e5
    x[0, 3, 3], big = 1e8, omega.clone()
    big[1, 3, 3] = 1e12
    out = ualm.nll_poisson_gaussian(x, big, cam)
    assert torch.isfinite(out).all() and out[0] > 1e9 and out[1] > 1e11


# ----------------------------------------------------------------------------- fit_mle flags

def test_fit_mle_reports_bounds_goodness_of_fit_and_honest_convergence():
    cam, shape, b = ualm.PAPER_CAMERA, (11, 11), 400
    gen = ualm.make_generator(5)
    th, _ = ualm.isolated_emitters(b, shape, generator=gen)
    good = ualm.fit_mle(cam.sample(ualm.expected_frame(th, 200.0, 0.92, 2.0, shape), generator=gen))
    assert bool(good.converged.all()) and not bool(good.at_bound.any())
    z = good.chi2_z
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.15  # calibrated
    assert float((good.photons / good.std[:, 2]).min()) > 5
    crlb = ualm.crlb(th, 200.0, 0.92, 2.0, cam, shape, params=("x", "y", "photons", "background"))
    torch.testing.assert_close(good.std.mean(0), crlb.mean(0), rtol=0.05, atol=0)

    # No emitter: many fits end on a bound, none of those says converged, and the converged
    # rest hold no significant photon count.
    empty = ualm.fit_mle(cam.sample(torch.zeros(b, *shape), generator=gen))
    on_bound = empty.at_bound.any(-1)
    assert float(on_bound.double().mean()) > 0.2 and not bool((empty.converged & on_bound).any())
    significant = empty.photons / empty.std[:, 2] > 3
    assert float((empty.converged & significant).double().mean()) < 0.02

    # Two emitters 3 px apart, and a bright emitter clipped at 1000 ADU: the model is wrong.
    pair = torch.tensor([[[4.0, 5.0], [7.0, 5.0]]]).expand(b, 2, 2)
    two = ualm.fit_mle(cam.sample(ualm.expected_frame(pair, 400.0, 0.92, 0.0, shape), generator=gen))
    assert float(two.chi2_z.min()) > 5
    bright = cam.sample(ualm.expected_frame(th, 20000.0, 0.92, 0.0, shape), generator=gen)
    assert float(ualm.fit_mle(bright.clamp(max=1000.0)).chi2_z.min()) > 5
    # A saturated (flat, noiseless) frame fits "too well".
    flat = ualm.fit_mle(torch.full((4, *shape), 65535.0))
    assert float(flat.chi2_z.max()) < -5


# ----------------------------------------------------------------------------- MCMC and diagnostics

def test_sample_posterior_refuses_a_start_outside_the_frame():
    omega = ualm.expected_frame(torch.tensor([[9.3, 10.2]]), 200.0, 0.92, 0.0, (20, 20))
    x = ualm.PAPER_CAMERA.sample(omega, generator=ualm.make_generator(0))
    for init in (torch.tensor([25.0, 5.0]), torch.tensor([[5.0, 5.0], [5.0, -0.6]])):
        with pytest.raises(ValueError, match="init lies outside"):
            ualm.sample_posterior(x, init=init, n_chains=2, n_iter=50, burn_in=10, seed=1)
    with pytest.raises(ValueError, match="init lies outside"):
        ualm.sample_posterior(x, params=("x", "y", "photons"), init=torch.tensor([5.0, 5.0, -1.0]),
                              n_iter=50, burn_in=10, seed=1)
    ok = ualm.sample_posterior(x, init=torch.tensor([19.5, -0.5]), n_iter=50, burn_in=10, seed=1)
    assert ok.samples.shape == (4, 40, 2)


def test_ess_of_constant_chains_is_nan_and_never_above_the_draws():
    with pytest.warns(RuntimeWarning, match="all draws are equal"):
        e = diagnostics.ess(torch.ones(4, 100))
    assert math.isnan(float(e))
    stuck = torch.randn(3, 4, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stuck[1] = 2.5
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        e = diagnostics.ess(stuck, rank_normalize=False)
    assert math.isnan(float(e[1])) and bool(torch.isfinite(e[[0, 2]]).all())
    antithetic = torch.tensor([(-1.0) ** i for i in range(500)], dtype=torch.float64)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(diagnostics.ess(antithetic)) <= 500
        assert bool((diagnostics.ess(stuck[[0, 2]]) <= 2000).all())


# ----------------------------------------------------------------------------- DeepSTORM input

def test_deepstorm_refuses_non_finite_frames_and_warns_on_wrong_units():
    model = DeepSTORM(width=4, hr_width=4).eval()
    x = ualm.simulate_batch(2, generator=ualm.make_generator(0), dtype=torch.float32)["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(x)  # raw ADU: no warning
    bad = x.clone()
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    bad[0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="x contains"):
        model(bad)
    for wrong in (x - 100.0, torch.zeros_like(x)):
        with pytest.warns(UserWarning, match="offset-subtracted"):
            model.predict(wrong)


# ----------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("call, err, match", [
    (lambda: ualm.nll_poisson(torch.full((2, 20, 20), 100.0), torch.ones(20, 20),
                              ualm.Camera(gain=torch.ones(10, 10))), ValueError, "gain"),
    (lambda: ualm.Camera(read_var=torch.ones(20)), ValueError, "read_var"),
    (lambda: ualm.Camera(offset=torch.ones(2, 20, 20)), ValueError, "offset"),
    (lambda: ualm.expected_frame(torch.full((1, 2), 10.0), background=torch.ones(5, 5)),
     ValueError, "background"),
    (lambda: ualm.expected_frame(torch.full((3, 1, 2), 10.0), background=torch.ones(4)),
     ValueError, "background"),
    (lambda: ualm.crlb(torch.tensor([[10.0, 10.0]]), i0=0.0), ValueError, "i0"),
    (lambda: ualm.crlb(torch.tensor([[10.0, 10.0], [10.0, 10.0]])), ValueError, "theta"),
    (lambda: ualm.sample_posterior(torch.full((0, 20, 20), 100.0), n_iter=20, burn_in=2),
     ValueError, "x must hold"),
    (lambda: ualm.fit_mle(torch.full((2, 5, 5), 100.0), dtype=torch.int64), TypeError, "dtype"),
    (lambda: ualm.fit_mle(torch.full((0, 5, 5), 100.0)), ValueError, "x must"),
    (lambda: ualm.pixel_integral(0.0, 0.0, -1.0), ValueError, "sigma"),
    (lambda: ualm.pixel_integral(0.0, float("nan"), 1.0), ValueError, "mu"),
    (lambda: ualm.pixel_integral(torch.zeros(3), torch.zeros(4), 1.0), ValueError, "broadcast"),
    (lambda: ualm.mortensen_std(float("nan"), 1.0), ValueError, "photons"),
    (lambda: ualm.mortensen_std(100.0, 1.0, sigma=-1.0), ValueError, "sigma"),
    (lambda: ualm.disc_emitters(2, centre=(float("nan"), 3.0)), ValueError, "centre"),
    (lambda: ualm.disc_emitters(2, centre=(1.0, 2.0, 3.0)), ValueError, "centre"),
    (lambda: ualm.disc_emitters(2, count=2.5), TypeError, "count"),
    (lambda: ualm.disc_emitters(-1), ValueError, "batch"),
])
def test_bad_arguments_name_themselves(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_numbers_of_numpy_and_python_kinds_are_accepted():
    theta, mask = ualm.disc_emitters(np.int64(2), count=np.int64(3), generator=ualm.make_generator(0))
    assert theta.shape == (2, 3, 2) and bool(mask.all())
    theta, _ = ualm.disc_emitters(2, count=(np.int32(1), 4), generator=ualm.make_generator(0))
    assert theta.shape == (2, 4, 2)
    assert abs(float(ualm.pixel_integral(0.0, 0.0, 1.0)) - math.erf(0.5 / math.sqrt(2))) < 1e-12
    # sCMOS maps of the frame's size work, per-frame backgrounds and (H, W) maps too
    cam = ualm.Camera(gain=torch.full((20, 20), 2.0), read_var=torch.full((20, 20), 3.0))
    assert ualm.nll_poisson(torch.full((2, 20, 20), 110.0), torch.ones(20, 20), cam).shape == (2,)
    th = torch.full((3, 1, 2), 10.0)
    assert ualm.expected_frame(th, background=torch.ones(3)).shape == (3, 20, 20)
    assert ualm.expected_frame(th, background=torch.ones(20, 20)).shape == (3, 20, 20)


# ----------------------------------------------------------------------------- large batches

_PEAK = """
import resource, torch, ualm
torch.set_default_dtype(torch.float32)
ualm.simulate_batch(8, generator=ualm.make_generator(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = ualm.simulate_batch({n}, generator=ualm.make_generator(0))
out = sum(v.numel() * v.element_size() for v in d.values())
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024 / out)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB on Linux")
def test_simulate_batch_needs_little_more_than_its_output():
    """KDEs are drawn in chunks: a large batch costs its output plus a bounded working set
    (it used to need more than twice the output at once)."""
    run = subprocess.run([sys.executable, "-c", _PEAK.format(n=20_000)], capture_output=True,
                         text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 1.6, run.stdout


def test_kde_says_how_much_memory_it_needs(monkeypatch):
    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    theta = torch.zeros(1, 1, 2, dtype=torch.float64).expand(10**6, 1, 2)
    monkeypatch.setattr(torch, "empty", no_memory)
    with pytest.raises(MemoryError, match=r"\(1000000, 80, 80\) need 51.2 GB"):
        ualm.kde(theta)
    monkeypatch.undo()
    small = torch.rand(7, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 19
    mask = torch.tensor([[1, 1, 0]] * 7, dtype=torch.bool)
    ref = torch.stack([ualm.kde(small[i, :2]) for i in range(7)])
    torch.testing.assert_close(ualm.kde(small, mask=mask), ref, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- issue 18, item 25

def test_empty_batch_of_frames_gets_a_clear_error():
    from ualm.uncertainty import uncertainty_map
    with pytest.raises(ValueError, match="empty batch"):
        uncertainty_map(torch.empty(0, 20, 20), n_samples=2, progress=False)


def test_coverage_refuses_nan_in_the_truth():
    from ualm import calibration
    samples = torch.rand(1, 4, 5, 5)
    y = torch.rand(1, 5, 5)
    y[0, 2, 2] = float("nan")  # would count as an uncovered pixel
    with pytest.raises(ValueError, match="truth"):
        calibration.coverage(samples, y)
    samples[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="samples"):
        calibration.coverage(samples, torch.rand(1, 5, 5))


def test_deepstorm_warns_on_frames_far_brighter_than_training():
    from ualm.models import DeepSTORM
    phi = DeepSTORM(width=4, hr_width=2, dilations=(1,))
    x = torch.full((1, 20, 20), 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phi.predict(x + 50)  # ordinary frame: no warning
    x[0, 10, 10] = 1e9
    with pytest.warns(UserWarning, match="far beyond"):
        phi.predict(x)
