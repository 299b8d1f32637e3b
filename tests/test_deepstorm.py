import shutil

import pytest
import torch

import ualm
from ualm.models import DeepSTORM, DeepSTORMConfig, deepstorm_loss
from ualm import pretrained


def _frames(n=3, seed=0):
    return ualm.simulate_batch(n, ualm.SimConfig(), generator=ualm.make_generator(seed), dtype=torch.float32)


def test_shapes_and_range():
    m = DeepSTORM(width=8, hr_width=4).eval()
    b = _frames()
    with torch.no_grad():
        y = m(b["x"])
    assert y.shape == (3, 80, 80)
    assert m(b["x"][:, None]).shape == (3, 1, 80, 80)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(deepstorm_loss(m, b))


def test_input_normalisation_uses_offset_and_gain():
    m = DeepSTORM(width=4, offset=100.0, gain=2.0, photon_scale=10.0)
    x = torch.full((1, 20, 20), 140.0)
    assert torch.allclose(m.normalize(x), torch.full_like(x, 2.0))


def test_config_roundtrip_and_validation():
    cfg = DeepSTORMConfig(width=12, hr_width=6, dilations=(1, 2), dropout=0.1)
    assert DeepSTORMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        DeepSTORMConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="dropout"):
        DeepSTORM(dropout=1.5)
    with pytest.raises(ValueError, match="shape"):
        DeepSTORM(width=4)(torch.zeros(20, 20))
    with pytest.raises(TypeError):
        DeepSTORM(width=4)([[0.0]])


def test_dropout_switch():
    torch.manual_seed(0)
    m = DeepSTORM(width=8, hr_width=4, dropout=0.3)
    x = _frames(2)["x"]
    m.eval()
    assert torch.equal(m(x), m(x))
    m.enable_dropout()
    assert not torch.equal(m(x), m(x))
    assert all(not mod.training for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))


def test_bundled_weights_load_and_verify(tmp_path):
    info = pretrained.manifest("deepstorm_quick")
    model = pretrained.load_deepstorm("deepstorm_quick", device="cpu")
    assert not model.training
    y = model(_frames(2)["x"])
    assert y.shape == (2, 80, 80)
    assert (pretrained.HERE / info["file"]).stat().st_size < 5_000_000
    assert info["command"].startswith("python -m ualm train deepstorm")

    # corrupt copy -> checksum error; missing file -> clear error
    for f in ("deepstorm_quick.pt", "deepstorm_quick.json"):
        shutil.copy(pretrained.HERE / f, tmp_path / f)
    data = bytearray((tmp_path / "deepstorm_quick.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "deepstorm_quick.pt").write_bytes(bytes(data))
    with pytest.raises(pretrained.WeightsError, match="corrupt"):
        pretrained.load_deepstorm("deepstorm_quick", device="cpu", directory=tmp_path)
    (tmp_path / "deepstorm_quick.pt").unlink()
    with pytest.raises(pretrained.WeightsError, match="missing"):
        pretrained.load_deepstorm("deepstorm_quick", device="cpu", directory=tmp_path)
    with pytest.raises(pretrained.WeightsError, match="manifest"):
        pretrained.load_deepstorm("nonexistent", device="cpu")
