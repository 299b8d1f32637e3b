import math

import numpy as np
import pytest
import torch

import ualm
from ualm import detect as D


def _iso(n=30, seed=0):
    return ualm.simulate_batch(n, ualm.SimConfig(layout="isolated"), generator=ualm.make_generator(seed),
                               dtype=torch.float64)


@pytest.mark.parametrize("sigma_y", [3.0, 1.5])
def test_oracle_isolated_subpixel_refinement_is_exact(sigma_y):
    b = _iso()
    y = D.oracle_kdes(b["theta"], b["mask"], sigma_y=sigma_y)
    m = D.evaluate_kdes(y, b["theta"], b["mask"], sigma_y=sigma_y, refine="quadratic")
    assert (m.tp, m.fp, m.fn) == (30, 0, 0)
    assert m.rmse_px < 1e-3
    grid = D.evaluate_kdes(y, b["theta"], b["mask"], sigma_y=sigma_y, refine=None)
    # without refinement the error is the KDE-pixel rounding: at most half a KDE px per axis
    assert np.abs(grid.errors_px).max() <= 0.125 + 1e-9
    assert 0.05 < grid.rmse_px < 0.15  # ~ sqrt(2/12)/4 = 0.102 px for uniform positions


def test_detect_shapes_and_coordinates():
    theta = torch.tensor([[[5.3, 12.7], [14.0, 4.2]]], dtype=torch.float64)
    y = D.oracle_kdes(theta)
    single = D.detect(y[0])
    batch = D.detect(y)
    assert isinstance(single, np.ndarray) and single.shape == (2, 2)
    assert isinstance(batch, list) and len(batch) == 1
    got = single[np.argsort(single[:, 0])]
    np.testing.assert_allclose(got, theta[0].numpy(), atol=1e-3)  # (x, y) order, low-res px
    assert D.detect(torch.zeros(80, 80)).shape == (0, 2)


def test_threshold_is_peak_height():
    y = D.oracle_kdes(torch.tensor([[[9.6, 9.6]]], dtype=torch.float64))[0]
    assert len(D.detect(0.5 * y, threshold=0.4)) == 1
    assert len(D.detect(0.2 * y, threshold=0.4)) == 0


def test_hungarian_beats_greedy():
    truth = np.array([[0.0, 0.0], [1.0, 0.0]])
    pred = np.array([[0.45, 0.0], [-0.6, 0.0]])  # greedy nearest would give p0 -> t0, p1 unmatched
    ip, it, d = D.match(pred, truth)
    assert len(ip) == 2
    assert dict(zip(ip.tolist(), it.tolist())) == {0: 1, 1: 0}


def test_nearest_matching_counts_one_emitter_twice():
    # the paper code's matching: both detections claim the emitter at the origin
    truth = np.array([[[0.0, 0.0], [5.0, 5.0]]])
    pred = [np.array([[0.1, 0.0], [-0.1, 0.0]])]
    assert D.nearest_match_metrics(pred, truth) == (1.0, 1.0)
    m = D.localization_metrics(pred, truth)
    assert (m.precision, m.recall) == (0.5, 0.5)


def test_one_to_one_and_tolerance():
    truth = np.array([[5.0, 5.0]])
    pred = np.array([[5.1, 5.0], [4.9, 5.0], [9.0, 9.0]])
    m = D.localization_metrics([pred], truth[None])
    assert (m.tp, m.fp, m.fn) == (1, 2, 0)
    assert m.precision == pytest.approx(1 / 3) and m.recall == 1.0
    assert m.jaccard == pytest.approx(1 / 3)
    assert m.rmse_px == pytest.approx(0.1) and m.rmse_nm == pytest.approx(10.8)
    # 5 KDE px = 1.25 low-res px tolerance
    assert len(D.match([[6.24, 5.0]], truth)[0]) == 1
    assert len(D.match([[6.26, 5.0]], truth)[0]) == 0


def test_metrics_with_mask_and_empty_frames():
    theta = torch.tensor([[[3.0, 3.0], [0.0, 0.0]], [[7.0, 7.0], [8.0, 12.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    preds = [np.zeros((0, 2)), np.array([[7.0, 7.0]])]
    m = D.localization_metrics(preds, theta, mask)
    assert (m.tp, m.fp, m.fn) == (1, 0, 2)
    assert m.errors_px.shape == (1, 2) and m.frame.tolist() == [1]
    with pytest.raises(ValueError, match="frames"):
        D.localization_metrics(preds[:1], theta, mask)


def test_efficiency_definition():
    assert D.efficiency(1.0, 0.0) == 100.0
    assert D.efficiency(0.5, 0.0) == pytest.approx(50.0)
    assert D.efficiency(1.0, 30.0) == pytest.approx(70.0)
    assert D.efficiency(0.9, 10.0) == pytest.approx(100 - math.sqrt(200))


def test_bad_input():
    with pytest.raises(ValueError, match="kdes"):
        D.detect(torch.zeros(80))
    with pytest.raises(ValueError, match="refine"):
        D.detect(torch.zeros(80, 80), refine="spline")
    with pytest.raises(ValueError, match="NaN"):
        D.detect(torch.full((1, 80, 80), float("nan")))


def test_oracle_merges_more_at_wide_kernel():
    b = ualm.simulate_batch(20, ualm.SimConfig(), generator=ualm.make_generator(3), dtype=torch.float64)
    r = {s: D.evaluate_kdes(D.oracle_kdes(b["theta"], b["mask"], sigma_y=s), b["theta"], b["mask"],
                            sigma_y=s).recall for s in (3.0, 1.5)}
    assert r[1.5] > r[3.0]
    assert r[3.0] < 0.95  # the KDE width itself merges close emitters: the oracle is the ceiling


def test_detection_protocol_respects_the_config_upsampling():
    # a KDE at upsample 2 must be detected and matched in its own units (regression: the metrics
    # used the default upsample 4, so every detection missed its emitter and recall was 0)
    from ualm.protocols import detection_protocol
    cfg = ualm.SimConfig(upsample=2, sigma_y=1.5, layout="isolated")
    res = detection_protocol(None, cfg, 20, seed=0, oracle_sigmas=(1.5,))
    assert list(res.methods) == ["oracle_1.5"]
    m = res["oracle_1.5"].metrics
    assert m.recall == 1.0 and m.precision == 1.0
    assert m.rmse_px < 0.1
    data = ualm.simulate_batch(5, cfg, generator=ualm.make_generator(1))
    k = D.oracle_kdes(data["theta"], data["mask"], 1.5, cfg.shape, upsample=2)
    assert D.evaluate_kdes(k, data["theta"], data["mask"], sigma_y=1.5, upsample=2).recall == 1.0
