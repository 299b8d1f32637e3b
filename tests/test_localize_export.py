"""A movie to a localization table (ualm.localize) and the table to Picasso and ThunderSTORM
files (ualm.export)."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from ualm import PAPER_CAMERA, make_generator, movie
from ualm.export import picasso_locs, read_picasso, read_thunderstorm, write_picasso, write_thunderstorm
from ualm.localize import COLUMNS, localize, score_table, to_reference


def test_to_reference_maps_photons_onto_the_training_camera():
    cam = movie.scmos_camera((6, 5), generator=make_generator(0))
    photons = torch.rand(2, 6, 5, dtype=torch.float64) * 50
    adu = cam.gain * photons + cam.offset
    ref = to_reference(adu, cam)
    torch.testing.assert_close(ref.double(), PAPER_CAMERA.gain * photons + PAPER_CAMERA.offset, rtol=0, atol=1e-4)
    torch.testing.assert_close(to_reference(adu, cam, background=3.0).double(), ref.double() - 3.0, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def sparse_movie():
    cfg = movie.MovieConfig(shape=(32, 32), frames=40, p_on=0.005, n_structures=2, length=25.0, background=2.0,
                            dark_frames=2)
    return movie.simulate_movie(cfg, generator=make_generator(11))


@pytest.fixture(scope="module")
def sparse_table(sparse_movie):
    return localize(sparse_movie.frames, sparse_movie.camera, progress=False, batch=10)


def test_localize_finds_the_emitters_and_reports_the_crlb(sparse_movie, sparse_table):
    m, table = sparse_movie, sparse_table
    assert set(table) == set(COLUMNS)
    keep = table["p_value"] < 1e-3
    matched, errors = 0, []
    for f in range(m.frames.shape[0]):
        sel = m.events["frame"] == f
        truth = np.stack((m.events["x"][sel], m.events["y"][sel]), 1)
        k = keep & (table["frame"] == f)
        found = np.stack((table["x"][k], table["y"][k]), 1)
        if not len(truth) or not len(found):
            continue
        d = np.linalg.norm(found[:, None] - truth[None], axis=-1)
        r, c = linear_sum_assignment(d)
        ok = d[r, c] < 1.0
        matched += ok.sum()
        errors += list(d[r, c][ok])
    n_true = len(m.events["frame"])
    assert n_true > 30 and matched >= 0.85 * n_true  # 48 of 51 when written
    assert matched >= 0.9 * keep.sum()  # few false positives (48 of 49)
    # positions within a few CRLBs: typical lpx ~ 0.1 px at these photon counts
    assert np.median(errors) < 0.25
    assert np.all(table["lpx"][keep] > 0) and np.all(table["frame"] < m.frames.shape[0])


def test_localize_refuses_a_bad_box(sparse_movie):
    with pytest.raises(ValueError, match="box"):
        localize(sparse_movie.frames[:2], sparse_movie.camera, box=4, progress=False)


def table_of(n=5, seed=0):
    g = np.random.default_rng(seed)
    return {"frame": g.integers(0, 10, n), "x": g.uniform(0, 30, n), "y": g.uniform(0, 20, n),
            "photons": g.uniform(100, 400, n), "bg": g.uniform(0, 5, n), "sx": np.full(n, 0.92),
            "sy": np.full(n, 0.92), "lpx": g.uniform(0.05, 0.2, n), "lpy": g.uniform(0.05, 0.2, n),
            "lp_psi": g.uniform(0.05, 0.2, n)}


def test_picasso_files_round_trip(tmp_path):
    t = table_of()
    h5, yml = write_picasso(tmp_path / "locs", t, width=32, height=24, frames=10, pixel_nm=108.0, extra=("lp_psi",))
    assert h5.suffix == ".hdf5" and yml.is_file()
    locs, info = read_picasso(h5)
    order = np.argsort(t["frame"], kind="stable")
    assert locs.dtype["frame"] == np.uint32 and locs.dtype["x"] == np.float32
    np.testing.assert_allclose(locs["x"], t["x"][order], rtol=1e-6)
    np.testing.assert_allclose(locs["lp_psi"], t["lp_psi"][order], rtol=1e-6)
    assert info[0]["Width"] == 32 and info[0]["Height"] == 24 and info[0]["Frames"] == 10
    assert info[0]["Pixelsize"] == 108.0
    with pytest.raises(ValueError, match="lacks"):
        picasso_locs({"frame": [0], "x": [1.0]})
    edge = dict(t, x=np.where(np.arange(len(t["x"])) == 0, -0.2, t["x"]))
    with pytest.warns(UserWarning, match="1 of 5 localizations"):
        write_picasso(tmp_path / "edge", edge, width=32, height=24, frames=10, pixel_nm=108.0)


def test_thunderstorm_csv_round_trip(tmp_path):
    t = table_of(seed=1)
    path = write_thunderstorm(tmp_path / "locs.csv", t, pixel_nm=100.0)
    head = path.read_text().splitlines()[0]
    assert head.startswith("id,frame,x [nm],y [nm]")
    back = read_thunderstorm(path, 100.0)
    order = np.argsort(t["frame"], kind="stable")
    np.testing.assert_allclose(back["x"], t["x"][order], atol=1e-4)
    np.testing.assert_array_equal(back["frame"], t["frame"][order])
    np.testing.assert_allclose(back["lp"], (t["lpx"] + t["lpy"])[order] / 2, atol=1e-4)
    bad = dict(t, x=t["x"][:2])
    with pytest.raises(ValueError, match="length"):
        write_thunderstorm(tmp_path / "bad.csv", bad, 100.0)


def test_psi_on_tiles_and_per_localization(sparse_movie, sparse_table):
    """Ψ on a frame larger than its patches, and σ per localization from its samples. A frame of
    exactly one tile gives uncertainty_map's own moments (same seed)."""
    from ualm.localize import diffusion_sigma
    from ualm.uncertainty import tiled_map, uncertainty_map

    ref = to_reference(sparse_movie.frames[:1], sparse_movie.camera)
    one = ref[:, 6:26, 6:26]
    fast = {"n_samples": 2, "progress": False, "steps": 3}  # a cheap sampler: the plumbing, not the answer
    mean, var = tiled_map(one, **fast)
    res = uncertainty_map(one, **fast)
    torch.testing.assert_close(mean.float(), res.mean().float())
    torch.testing.assert_close(var.float(), res.var().float())
    mean, var = tiled_map(ref[0, :24, :28], **fast)
    assert mean.shape == (96, 112) and torch.isfinite(var).all() and (var >= 0).all()
    table = sparse_table
    keep = np.flatnonzero(table["p_value"] < 1e-3)[:2]
    sigma = diffusion_sigma(to_reference(sparse_movie.frames, sparse_movie.camera),
                            {k: v[keep] for k, v in table.items()}, n_samples=4, progress=False, steps=3)
    assert sigma.shape == (2,) and np.all((sigma > 0) & (sigma < 1))


def test_score_table_counts_matches_within_the_tolerance():
    events = {"frame": np.array([0, 0, 1]), "x": np.array([1.0, 5.0, 2.0]), "y": np.array([1.0, 5.0, 2.0])}
    table = {"frame": np.array([0, 0, 1, 1]), "x": np.array([1.2, 9.0, 2.0, 2.3]), "y": np.array([1.0, 9.0, 2.1, 2.0])}
    s = score_table(table, events, tolerance_px=1.0)
    assert (s["n_matched"], s["n_found"], s["n_true"]) == (2, 4, 3)
    assert s["recall"] == 2 / 3 and s["precision"] == 0.5 and s["jaccard"] == 2 / 5
    assert abs(s["rmse_px"] - np.sqrt((0.2 ** 2 + 0.1 ** 2) / 2)) < 1e-12
    assert sorted(s["events"]) == [0, 2]
    assert score_table(table, events, keep=[True, False, False, False])["precision"] == 1.0


def test_the_median_background_keeps_phi_from_seeing_emitters_in_it():
    """φ was trained without background: on 10 photons/px it finds many false emitters unless the
    per-pixel median is taken off first (the default)."""
    cfg = movie.MovieConfig(shape=(32, 32), frames=30, background=10.0, n_structures=2, length=25.0, dark_frames=2)
    m = movie.simulate_movie(cfg, generator=make_generator(12))
    with_median = score_table(localize(m.frames, m.camera, progress=False), m.events)
    without = score_table(localize(m.frames, m.camera, background=None, progress=False), m.events)
    assert with_median["precision"] > 0.8 and without["precision"] < 0.6, (with_median, without)
    with pytest.raises(ValueError, match="background"):
        localize(m.frames[:2], m.camera, background="mean", progress=False)
