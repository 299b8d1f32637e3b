import math

import pytest
import torch

import ualm
from ualm.psf import pixel_integral, pixel_integral_grads


def test_pixel_integral_matches_cdf_difference():
    u = torch.arange(-6, 7.0)
    val = pixel_integral(u, torch.tensor(0.3), torch.tensor(0.92))
    normal = torch.distributions.Normal(0.3, 0.92)
    ref = normal.cdf(u + 0.5) - normal.cdf(u - 0.5)
    assert torch.allclose(val, ref, atol=1e-14)
    assert math.isclose(float(val.sum()), 1.0, abs_tol=1e-9)


def test_pixel_integral_keeps_tail_precision():
    # 12 sigma away a plain erf difference is 0; the erfc form keeps the value (~1e-33).
    val = pixel_integral(torch.tensor(12.0), torch.tensor(0.0), torch.tensor(1.0))
    assert 0 < float(val) < 1e-30


def test_pixel_integral_grads_match_finite_differences():
    u, mu, s = torch.arange(-4, 5.0), torch.tensor(0.21), torch.tensor(0.92)
    _, d_mu, d_s = pixel_integral_grads(u, mu, s)
    h = 1e-6
    fd_mu = (pixel_integral(u, mu + h, s) - pixel_integral(u, mu - h, s)) / (2 * h)
    fd_s = (pixel_integral(u, mu, s + h) - pixel_integral(u, mu, s - h)) / (2 * h)
    assert torch.allclose(d_mu, fd_mu, atol=1e-8)
    assert torch.allclose(d_s, fd_s, atol=1e-8)


def test_expected_frame_sums_to_photons_and_orientation():
    theta = torch.tensor([[[6.0, 13.0]]])  # x = 6 (column), y = 13 (row)
    omega = ualm.expected_frame(theta, 200.0, 0.92, 0.0, (20, 20))
    assert omega.shape == (1, 20, 20)
    assert math.isclose(float(omega.sum()), 200.0, rel_tol=1e-10)
    row, col = divmod(int(omega[0].argmax()), 20)
    assert (row, col) == (13, 6)


def test_expected_frame_background_forms_and_mask():
    theta = torch.tensor([[[5.0, 5.0], [14.0, 14.0]], [[5.0, 5.0], [14.0, 14.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    om = ualm.expected_frame(theta, 100.0, 1.0, torch.tensor([1.0, 2.0]), (20, 20), mask=mask)
    assert math.isclose(float(om[0].sum()), 100 + 400 * 1.0, rel_tol=1e-7)
    assert math.isclose(float(om[1].sum()), 200 + 400 * 2.0, rel_tol=1e-7)
    bmap = torch.linspace(0, 1, 400).reshape(20, 20)
    om2 = ualm.expected_frame(theta[:1, :1], 100.0, 1.0, bmap, (20, 20))
    assert torch.allclose(om2[0] - bmap, ualm.expected_frame(theta[:1, :1], 100.0, 1.0)[0])


@pytest.mark.parametrize("x, y", [(9.5, 9.5), (9.3, 10.1), (4.0, 15.77)])
def test_kde_centroid_maps_back_to_theta(x, y):
    theta = torch.tensor([[x, y]])
    kde = ualm.kde(theta, (20, 20), sigma_y=3.0)
    assert kde.shape == (80, 80)
    c = ualm.kde_centres(80)
    m = kde.sum()
    cx, cy = (kde.sum(0) * c).sum() / m, (kde.sum(1) * c).sum() / m
    assert abs(float(cx) - x) < 0.01 and abs(float(cy) - y) < 0.01


def test_kde_normalisations_and_grid_convention():
    # An emitter at low-res (0, 0) sits on the centre of KDE pixel (1.5, 1.5): it spreads
    # equally over KDE pixels 1 and 2 in each axis.
    assert torch.allclose(ualm.to_kde_coords(torch.tensor([0.0, -0.5])), torch.tensor([1.5, -0.5]))
    assert torch.allclose(ualm.from_kde_coords(ualm.to_kde_coords(torch.tensor(3.3))), torch.tensor(3.3))
    on_centre = ualm.kde(ualm.from_kde_coords(torch.tensor([[40.0, 40.0]])), (20, 20), 3.0)
    assert math.isclose(float(on_centre.max()), 1.0, rel_tol=1e-12)
    summed = ualm.kde(torch.tensor([[9.5, 9.5]]), (20, 20), 3.0, normalize="sum")
    assert math.isclose(float(summed.sum()), 1.0, rel_tol=1e-9)
    assert ualm.kde(torch.tensor([[9.5, 9.5]]), (20, 20), 1.5, upsample=2).shape == (40, 40)


def test_camera_moments_match_model():
    gen = ualm.make_generator(0)
    cam = ualm.Camera(gain=2.0, offset=100.0, read_var=5.0)
    omega = ualm.expected_frame(torch.tensor([[[4.5, 4.2]]]), 300.0, 1.0, 3.0, (10, 10))[0]
    draws = cam.sample(omega.expand(20000, 10, 10), generator=gen)
    mean, var = draws.mean(0), draws.var(0)
    # Standard errors: mean se = sqrt(var/n); var se ≈ var*sqrt(2/n) (+ kurtosis, small).
    exp_mean, exp_var = 2.0 * omega + 100.0, 4.0 * omega + 5.0
    assert ((mean - exp_mean).abs() < 5 * (exp_var / 20000).sqrt()).all()
    assert ((var - exp_var).abs() < 6 * exp_var * math.sqrt(2 / 20000)).all()


def test_camera_per_pixel_maps():
    gen = ualm.make_generator(1)
    gain = torch.full((8, 8), 1.0)
    gain[:, 4:] = 3.0
    cam = ualm.Camera(gain=gain, offset=torch.full((8, 8), 50.0), read_var=torch.zeros(8, 8))
    x = cam.sample(torch.full((5000, 8, 8), 10.0), generator=gen)
    assert abs(float(x[..., :4].mean()) - 60.0) < 0.2
    assert abs(float(x[..., 4:].mean()) - 80.0) < 0.5


def test_simulation_is_seeded_and_shaped():
    cfg = ualm.SimConfig(count=(1, 5))
    a = ualm.simulate_batch(6, cfg, generator=ualm.make_generator(3))
    b = ualm.simulate_batch(6, cfg, generator=ualm.make_generator(3))
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["theta"], b["theta"])
    assert a["x"].shape == (6, 20, 20) and a["y"].shape == (6, 80, 80)
    assert a["theta"].shape == (6, 5, 2) and a["mask"].shape == (6, 5)
    counts = a["mask"].sum(1)
    assert ((counts >= 1) & (counts <= 5)).all()
    r = (a["theta"] - 9.5).norm(dim=-1)
    assert (r[a["mask"]] <= 7.0).all()
    # Padded emitters carry no photons and no KDE mass.
    assert torch.all(a["i0"][~a["mask"]] == 0)
    assert torch.allclose(a["omega"].sum((1, 2)), 200.0 * counts, rtol=1e-3)


def test_disc_is_uniform():
    theta, _ = ualm.disc_emitters(20000, 1, radius=7.0, generator=ualm.make_generator(4))
    r = (theta[:, 0] - 9.5).norm(dim=-1)
    # For a uniform disc, P(r < R/√2) = 1/2.
    assert abs(float((r < 7 / math.sqrt(2)).double().mean()) - 0.5) < 0.015


def test_dataset_reproducible():
    ds = ualm.SMLMDataset(ualm.SimConfig(layout="isolated"), batch_size=4, n_batches=3, seed=7)
    first = [b["x"] for b in ds]
    second = [b["x"] for b in ds]
    assert len(first) == 3 and all(torch.equal(p, q) for p, q in zip(first, second))
    assert not torch.equal(first[0], first[1])
    # with worker processes: tests/test_seeding.py


def test_generator_on_another_device_is_refused():
    gen = ualm.make_generator(0, "cpu")
    with pytest.raises(ValueError, match="generator"):
        ualm.simulate_batch(2, ualm.SimConfig(), generator=gen, device="meta")


def test_edge_integrals_match_pixel_integral_even_in_far_tails():
    from ualm.psf import edge_integrals
    mu = torch.linspace(-8.0, 28.0, 37)[:, None]
    ref = pixel_integral(torch.arange(20.0), mu, torch.tensor(0.92))
    got = edge_integrals(torch.arange(21.0) - 0.5, mu, torch.tensor(0.92))
    assert ref.min() < 1e-100  # the far tails are in the test
    assert ((got - ref).abs() <= 1e-12 * ref).all()
