"""One seeding rule (ualm.seeding), one generator check (ualm.checks), frozen training configs
and the generic loading of bundled weights (ualm.pretrained.load)."""
import json
import shutil

import pytest
import torch

import ualm
from ualm import checks, pretrained, seeding
from ualm.models import DeepSTORM, DeepSTORMConfig
from ualm.seeding import step_seed
from ualm.sources import SimSource
from ualm.train import TrainConfig


def test_step_seed_keeps_the_seeds_of_the_bundled_weights():
    # The formulas that trained the bundled DeepSTORM: data (SimSource) and dropout (train).
    for seed, step, rank in [(0, 0, 0), (0, 1599, 0), (3, 7, 1), (10_000, 2, 5), (2**40, 9, 0)]:
        data = ((seed * 1_000_003 + step) * 1009 + rank) % (2**63 - 1)
        model = (((seed * 1_000_003 + step) * 1009 + rank) * 7 + 0x9E3779B1) % (2**63 - 1)
        assert step_seed(seed, step, rank, seeding.DATA) == data
        assert step_seed(seed, step, rank, seeding.MODEL) == model
        assert step_seed(seed, step, rank) == data  # the data stream is the default
    assert step_seed(1, 2, 0, 2) != step_seed(1, 2, 0, 1) != step_seed(1, 2, 0, 0)
    with pytest.raises(TypeError):
        step_seed(0.5, 1)
    with pytest.raises(ValueError, match="stream"):
        step_seed(0, 1, 0, -1)


def test_sim_source_and_dataset_share_the_data_stream():
    cfg = ualm.SimConfig(count=(1, 5))
    ds = ualm.SMLMDataset(cfg, batch_size=3, n_batches=4, seed=11)
    src = SimSource(cfg, 3, seed=11)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # SimSource simulates in float32
    try:
        for k in (0, 3):
            a, b = ds.batch(k), src.batch(k, 0, "cpu")
            assert all(torch.equal(a[key], b[key]) for key in a)
    finally:
        torch.set_default_dtype(old)


def test_dataloader_stream_does_not_depend_on_num_workers():
    ds = ualm.SMLMDataset(ualm.SimConfig(count=(1, 6)), batch_size=4, n_batches=5, seed=3)
    runs = {}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        runs[workers] = list(loader)
    assert len(runs[0]) == len(runs[2]) == 5
    for a, b in zip(runs[0], runs[2]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(runs[0][0]["x"], runs[0][1]["x"])
    assert torch.equal(runs[0][4]["x"], ds.batch(4)["x"])  # batch k is batch k, alone too


class _FakeGen(torch.Generator):
    """A CPU generator that reports another device, to test the check without GPUs."""

    def __new__(cls, device):
        gen = super().__new__(cls)
        gen._dev = torch.device(device)
        return gen

    def __init__(self, device):
        super().__init__()

    @property
    def device(self):
        return self._dev


def test_generator_must_be_on_the_same_device():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="generator is on cuda:0 but x is on cpu"):
        checks.generator(_FakeGen("cuda:0"), None, cpu, "x")
    # Same type, different index: refused too (cuda:1 is not cuda:0).
    with pytest.raises(ValueError, match="generator is on cuda:1 but init is on cuda:0"):
        checks.generator(_FakeGen("cuda:1"), None, torch.device("cuda:0"), "init")
    with pytest.raises(TypeError, match="torch.Generator"):
        checks.generator_on(0, cpu)
    assert checks.generator(None, 3, cpu, "x").initial_seed() == 3
    gen = ualm.make_generator(0)
    assert checks.generator(gen, None, "cpu") is gen
    checks.generator_on(None, cpu)  # nothing to check
    assert checks.same_device("cpu", torch.device("cpu"))
    assert not checks.same_device("cpu", "meta")
    with pytest.raises(ValueError, match="generator is on cuda:0 but omega is on cpu"):
        ualm.PAPER_CAMERA.sample(torch.ones(2, 2), generator=_FakeGen("cuda:0"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_cuda_0_are_one_device():
    gen = ualm.make_generator(0, "cuda")
    b = ualm.simulate_batch(2, ualm.SimConfig(), generator=gen, device="cuda")
    assert b["x"].device.type == "cuda"
    assert checks.same_device("cuda", f"cuda:{torch.cuda.current_device()}")


def test_as_int():
    assert checks.as_int(1e4, "n") == 10_000 and checks.as_int(3, "n", 1) == 3
    with pytest.raises(TypeError, match="n must be an int"):
        checks.as_int(2.5, "n")
    with pytest.raises(ValueError, match="n must be >= 1"):
        checks.as_int(0, "n", 1)


def test_train_config_is_frozen_and_strict():
    cfg = TrainConfig(steps=5)
    with pytest.raises(AttributeError):
        cfg.steps = 6
    assert cfg.replace(lr=1.0).lr == 1.0 and cfg.lr == TrainConfig().lr
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys: \['stpes'\]"):
        TrainConfig.from_dict({"stpes": 3})


def test_paper_defaults_in_one_place():
    from ualm import defaults
    cfg = ualm.SimConfig()
    assert (cfg.shape, cfg.sigma, cfg.i0, cfg.sigma_y, cfg.upsample, cfg.count, cfg.radius) == (
        (20, 20), 0.92, 200.0, 3.0, 4, 10, 7.0)
    assert (defaults.SHAPE, defaults.SIGMA_X, defaults.I0, defaults.SIGMA_Y) == (
        cfg.shape, cfg.sigma, cfg.i0, cfg.sigma_y)
    assert ualm.PIXEL_NM == 108.0 and ualm.KDE_PIXEL_NM == 27.0


def _copy_bundled(tmp_path, name="deepstorm_quick"):
    for f in (f"{name}.pt", f"{name}.json"):
        shutil.copy(pretrained.HERE / f, tmp_path / f)
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_load_builds_the_network_named_by_the_manifest(tmp_path):
    model = pretrained.load("deepstorm_quick", device="cpu")
    assert isinstance(model, DeepSTORM) and not model.training
    alias = pretrained.load_deepstorm("deepstorm_quick", device="cpu")
    for (k, a), (_, b) in zip(model.state_dict().items(), alias.state_dict().items()):
        assert torch.equal(a, b), k
    info = _copy_bundled(tmp_path)
    info["model"] = "nonet"
    (tmp_path / "deepstorm_quick.json").write_text(json.dumps(info))
    pretrained.stamp_model_digest("deepstorm_quick", tmp_path)  # a deliberate edit
    with pytest.raises(pretrained.WeightsError, match="'nonet', which is not registered"):
        pretrained.load("deepstorm_quick", directory=tmp_path)

    class Wide(DeepSTORM):
        pass

    class Other(torch.nn.Module):
        def __init__(self, config):
            super().__init__()

        def load_state_dict(self, state, strict=True):
            return None

    pretrained.register_model("nonet", Wide, DeepSTORMConfig)
    try:
        assert type(pretrained.load("deepstorm_quick", "cpu", tmp_path)) is Wide
        pretrained.register_model("nonet", Other, DeepSTORMConfig)
        with pytest.raises(pretrained.WeightsError, match="not DeepSTORM"):
            pretrained.load_deepstorm("deepstorm_quick", "cpu", tmp_path)
    finally:
        pretrained.MODELS.pop("nonet")
    info["model"], info["model_config"]["widht"] = "deepstorm", 3
    (tmp_path / "deepstorm_quick.json").write_text(json.dumps(info))
    pretrained.stamp_model_digest("deepstorm_quick", tmp_path)
    with pytest.raises(pretrained.WeightsError, match="bad model_config"):
        pretrained.load("deepstorm_quick", directory=tmp_path)
    with pytest.raises(TypeError, match="from_dict"):
        pretrained.register_model("x", DeepSTORM, dict)
