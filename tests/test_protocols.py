"""Typed protocol results and the table helper."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import ualm
from ualm import detect as D
from ualm import protocols
from ualm.models import DeepSTORM


def _tiny_model():
    torch.manual_seed(0)
    return DeepSTORM(width=4, hr_width=2, dilations=(1,)).eval()


def test_localization_metrics_are_frozen_rows():
    truth = np.array([[[5.0, 5.0], [9.0, 9.0]]])
    m = D.localization_metrics([np.array([[5.1, 5.0]])], truth)
    assert list(m.as_row()) == list(D.SUMMARY_KEYS)
    assert m.as_row()["tp"] == 1 and m["recall"] == m.recall == 0.5
    assert len(m.detections) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.tp = 2


def test_detection_protocol_keys_and_rows():
    res = protocols.detection_protocol(_tiny_model(), ualm.SimConfig(), n_frames=6, seed=1,
                                       oracle_sigmas=(3.0, 1.5))
    assert list(res.methods) == ["network_subpixel", "network_grid", "oracle_3", "oracle_1.5"]
    rows = res.rows()
    assert list(rows[0])[:3] == ["method", "sigma_y", "refine"]
    assert list(rows[0])[3:] == list(D.SUMMARY_KEYS)
    assert rows[0]["method"] == "φ (DeepSTORM), sub-pixel" and rows[3]["method"] == "oracle y, σ_y = 1.5"
    # rows read back from JSON find their keys again
    back = protocols.rows_by_key(json.loads(json.dumps(rows)))
    assert list(back) == list(res.methods)
    assert back["oracle_3"]["recall"] == res["oracle_3"].metrics.recall
    assert res.data["y_hat"].shape == (6, 80, 80)
    with pytest.raises(ValueError, match="unknown method"):
        protocols.method_key({"method": "something else", "sigma_y": 3.0})


def test_density_sweep_seeds_each_count():
    cfg = ualm.SimConfig()
    sweep = protocols.density_sweep(None, cfg, (1, 3), n_frames=4, seed=10, oracle_sigmas=(3.0,))
    assert list(sweep) == [1, 3]
    one = protocols.detection_protocol(None, cfg.replace(count=3), 4, seed=11, oracle_sigmas=(3.0,))
    assert sweep[3].rows() == one.rows()
    assert int(sweep[1].data["mask"].sum()) == 4


def test_isolated_vs_crlb_as_dict():
    res = protocols.isolated_vs_crlb(_tiny_model(), ualm.SimConfig(), n_frames=5, seed=2)
    d = res.as_dict()
    assert list(d)[:4] == ["frames", "i0", "crlb_lateral_px", "crlb_lateral_nm"]
    assert list(res.methods) == ["network_subpixel", "network_grid", "oracle_grid"]
    assert d["crlb_lateral_nm"] == pytest.approx(res.crlb_lateral_px * ualm.PIXEL_NM)
    orc = d["oracle_grid"]
    assert orc["tp"] == 5 and orc["rmse_over_crlb"] == res.rmse_over_crlb("oracle_grid")
    assert 0.05 < res["oracle_grid"].rmse_px < 0.2  # KDE-grid rounding only


def test_mle_vs_crlb_result():
    r = protocols.mle_vs_crlb(500.0, 0.0, n_fits=50, seed=3)
    row = r.as_row()
    assert list(row)[:3] == ["i0", "background", "fits"] and row["fits"] == 50
    assert row["ratio_x"] == pytest.approx(row["rmse_x_px"] / row["crlb_x_px"])
    assert r.pooled_ratio == pytest.approx(r.pooled_rmse_px / r.pooled_crlb_px)
    assert r.bounds.shape == (50, 4) and r.errors.shape == (50, 2)
    assert r.max_bias_px == pytest.approx(float(r.bias_px.abs().max()))
