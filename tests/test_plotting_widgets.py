"""The plotting helpers and the widgets' static figures: they run, draw at the right places and
label every axis. Run with MPLBACKEND=Agg (dev.py sets it)."""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ualm  # noqa: E402
from ualm import plotting, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    monkeypatch.delenv("UALM_STATIC_WIDGETS", raising=False)  # the live explorers are tested here
    yield
    plt.close("all")


def assert_labelled(fig):
    """Every plotting axes has x and y labels; every colourbar has a label."""
    assert isinstance(fig, matplotlib.figure.Figure)
    main = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert main, "figure has no axes"
    for ax in main:
        assert ax.get_xlabel().strip(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel().strip(), f"axes {ax.get_title()!r} has no y label"
    for cb in (ax for ax in fig.axes if ax.get_label() == "<colorbar>"):
        assert (cb.get_ylabel() or cb.get_xlabel()).strip(), "colourbar without label"


def test_ualm_import_does_not_pull_matplotlib():
    code = "import sys, ualm; assert 'matplotlib' not in sys.modules; assert 'ipywidgets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frame_extent_puts_pixel_centres_on_integers():
    assert plotting.frame_extent((20, 30)) == (-0.5, 29.5, 19.5, -0.5)
    assert plotting.frame_extent(torch.zeros(2, 5, 7).shape) == (-0.5, 6.5, 4.5, -0.5)


def test_to_numpy_accepts_tensors_and_arrays():
    t = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    assert plotting.to_numpy(t).shape == (2, 3)
    assert plotting.to_numpy([1, 2]).dtype == float


def test_show_frame_and_kde_share_the_low_res_extent():
    theta = torch.tensor([[[4.3, 7.8], [12.0, 3.5]]])
    x = ualm.expected_frame(theta, 200.0, 0.92, 0.0, (16, 20))[0]
    y = ualm.kde(theta, (16, 20), 3.0)[0]
    fig, axes = plotting.subplots(2)
    im_x = plotting.show_frame(axes[0], x, title="x", label="photons", nm=True)
    im_y = plotting.show_kde(axes[1], y, title="y")
    assert tuple(im_x.get_extent()) == plotting.frame_extent((16, 20))
    assert tuple(im_y.get_extent()) == plotting.frame_extent((16, 20))
    art = plotting.overlay_theta(axes[1], theta)
    np.testing.assert_allclose(art.get_offsets(), theta[0].numpy())
    assert_labelled(fig)
    # the brightest KDE pixel lies under an emitter, in the plotted coordinates
    row, col = np.unravel_index(np.argmax(plotting.to_numpy(y)), y.shape)
    centres = ualm.kde_centres(80).numpy()
    assert min(np.hypot(centres[col] - t[0], centres[row] - t[1]) for t in theta[0].numpy()) < 0.2


def test_overlay_theta_drops_masked_emitters():
    theta = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    fig, ax = plotting.subplots(1)
    art = plotting.overlay_theta(ax, theta, mask)
    assert len(art.get_offsets()) == 2


def test_show_emitters_and_nm_axis():
    gen = ualm.make_generator(0)
    theta, mask = ualm.disc_emitters(1, 10, generator=gen)
    fig, ax = plotting.subplots(1)
    plotting.show_emitters(ax, theta, mask, (20, 20), radius=7.0)
    assert ax.get_xlim() == (-0.5, 19.5)
    assert ax.get_ylim() == (19.5, -0.5)  # rows grow downwards, like the images
    (sec,) = plotting.add_nm_axis(ax, "x")
    assert sec.get_xlabel() == "x (nm)"
    assert_labelled(fig)


def test_plotting_rejects_bad_shapes():
    fig, ax = plotting.subplots(1)
    with pytest.raises(ValueError, match="frame"):
        plotting.show_frame(ax, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="upsample"):
        plotting.show_kde(ax, torch.zeros(10, 10), upsample=4)


def test_image_formation_figure():
    fig = widgets.image_formation_figure(photons=500.0, background=2.0, read_var=10.0,
                                         sigma=1.1, gain=2.0, n_emitters=2, seed=3)
    assert_labelled(fig)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 3


def test_image_formation_figure_is_seeded():
    a = widgets.image_formation_figure(seed=5)
    b = widgets.image_formation_figure(seed=5)
    img_a = a.axes[0].images[0].get_array()
    img_b = b.axes[0].images[0].get_array()
    np.testing.assert_array_equal(img_a, img_b)


def test_image_formation_figure_rejects_no_emitters():
    with pytest.raises(ValueError, match="n_emitters"):
        widgets.image_formation_figure(n_emitters=0)


def test_crlb_figure():
    fig = widgets.crlb_figure(photons=1000.0, background=1.0, n_frames=50, seed=1)
    assert_labelled(fig)
    title = fig.axes[0].get_title()
    assert "CRLB" in title and "nm" in title


def test_explorers_build():
    W = pytest.importorskip("ipywidgets")
    for build in (widgets.image_formation_explorer, widgets.crlb_explorer):
        box = build()
        assert isinstance(box, W.Widget)
        names = {getattr(c, "description", "") for row in box.children
                 for c in getattr(row, "children", ())}
        assert any("photons" in n for n in names)


def test_crlb_figure_shows_the_mle_at_the_bound():
    """The numbers in the figure against physics, not against the code that drew it: with
    almost no read noise the CRLB in the title is Mortensen's closed form (within 3 %), and the
    RMSE of 400 fits matches it within its Monte Carlo error; the legend counts the fits."""
    import re

    fig = widgets.crlb_figure(photons=200.0, background=2.0, read_var=1e-6, n_frames=400, seed=2)
    cr, rmse = (float(v) for v in re.findall(r"= ([\d.]+) nm", fig.axes[0].get_title()))
    ref = float(ualm.mortensen_std(200.0, 2.0, 0.92)) * ualm.PIXEL_NM
    assert abs(cr / ref - 1) < 0.03, (cr, ref)
    assert abs(rmse / cr - 1) < 4 / np.sqrt(2 * 800), (rmse, cr)  # 800 errors (x and y)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("400 fits" in t and "converged" in t for t in labels)


def test_nm_axis_uses_the_package_pixel_size():
    fig, ax = plotting.subplots(1)
    (sec,) = plotting.add_nm_axis(ax, "x")
    assert sec._functions[0](1.0) == pytest.approx(ualm.PIXEL_NM)
    (sec,) = plotting.add_nm_axis(ax, "y", scale=0.25)
    assert sec._functions[0](1.0) == pytest.approx(ualm.KDE_PIXEL_NM)


def _fake_maps():
    from ualm.uncertainty import SampleResult
    g = torch.Generator().manual_seed(0)
    y = ualm.kde(torch.tensor([[[9.5, 9.5]], [[5.0, 12.0]]]), normalize="peak")
    samples = y[:, None] + 0.05 * torch.randn(2, 6, 80, 80, generator=g)
    return {"a": SampleResult(samples=samples, yhat=y), "b": SampleResult(samples=2 * samples, yhat=y)}, y


def test_uncertainty_figure_panels_and_bad_inputs():
    maps, y = _fake_maps()
    ref = (y, torch.full_like(y, 0.05 ** 2))
    fig = widgets.uncertainty_figure(maps, ref, y, method="b", frame=1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["mean of 6", "std", "MCMC std (β = 1)", "|mean − truth|"]
    # the suptitle quotes the ratio of total std to the reference: 2 × 0.05 noise against 0.05
    ratio = float(fig._suptitle.get_text().rsplit("= ", 1)[1])
    assert 1.9 < ratio < 2.1
    plt.close(fig)
    assert len([a for a in widgets.uncertainty_figure(maps).axes if a.get_title()]) == 2
    with pytest.raises(ValueError, match="method"):
        widgets.uncertainty_figure(maps, method="c")
    with pytest.raises(ValueError, match="frame"):
        widgets.uncertainty_figure(maps, frame=2)
    with pytest.raises(ValueError, match="empty"):
        widgets.uncertainty_figure({})
    plt.close("all")


def test_uncertainty_explorer_builds():
    W = pytest.importorskip("ipywidgets")
    maps, y = _fake_maps()
    box = widgets.uncertainty_explorer(maps, truth=y)
    assert isinstance(box, W.VBox)
    plt.close("all")


def test_series_styles_are_distinct():
    from ualm.plotting import series_styles
    styles = series_styles([f"m{i}" for i in range(13)])
    pairs = {(s["color"], s["marker"]) for s in styles.values()}
    assert len({s["color"] for s in styles.values()}) == 13 and len(pairs) == 13
    with pytest.raises(ValueError, match="too many"):
        series_styles(range(21))
