"""The diffusion training path (source, loss, resume) and the one-call uncertainty map."""
import numpy as np
import pytest
import torch
from torch import nn

import ualm
from ualm import diffusion as D
from ualm.models import DeepSTORM
from ualm.models.unet import UNet, UNetConfig
from ualm.train import TrainConfig, load_checkpoint, train
from ualm.uncertainty import SampleResult, uncertainty_map

SIM = ualm.SimConfig(count=(1, 4))


def _phi():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return DeepSTORM(width=4, hr_width=2, dilations=(1, 2)).eval()


def _psi(cond=("yhat",), dropout=0.0):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(UNetConfig(width=8, mults=(1, 2, 2, 2), groups=4, cond=cond, dropout=dropout))
    for p in net.head.parameters():  # leave the zero-initialised head: samples then differ
        nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(2))
    return net


def test_diffusion_source_is_a_function_of_step_and_holds_eq9_inputs():
    src = D.DiffusionSource(_phi(), SIM, D.schedule("paper"), batch_size=3, seed=4,
                            cond=("yhat", "frame"))
    a, b = src.batch(5), src.batch(5)
    assert set(a) == {"y", "cond", "t", "eps"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["cond"].shape == (3, 2, 80, 80) and a["y"].shape == (3, 80, 80)
    assert int(a["t"].min()) >= 1 and int(a["t"].max()) <= 100
    assert not torch.equal(src.batch(6)["eps"], a["eps"])
    # channel 0 is ŷ = φ(x) in the network's range
    x = src.sim.batch(5)["x"]
    with torch.no_grad():
        assert torch.allclose(a["cond"][:, 0], D.to_net(_phi()(x)), atol=1e-6)


def test_loss_is_eq9():
    sched = D.schedule("paper")
    src = D.DiffusionSource(_phi(), SIM, sched, batch_size=2, seed=0)
    b = src.batch(0)
    net = _psi()
    y_t = sched.q_sample(D.to_net(b["y"]), b["t"], b["eps"])
    want = ((net(y_t, b["cond"], b["t"]) - b["eps"]) ** 2).mean()
    with torch.no_grad():
        got = D.DiffusionLoss(sched)(net, b)
    assert float(got) == pytest.approx(float(want.detach()), rel=1e-5)


def test_diffusion_training_resume_equals_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    sched = D.schedule("paper")
    src = D.DiffusionSource(_phi(), SIM, sched, batch_size=2, seed=3)
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup=1, val_every=2, val_batches=1,
                      ckpt_every=1, log_every=1, seed=3)
    loss = D.DiffusionLoss(sched)
    train(_psi(dropout=0.2), loss, src, cfg, tmp_path / "a", progress=False)
    train(_psi(dropout=0.2), loss, src, cfg, tmp_path / "b", progress=False, stop_after=2)
    torch.rand(100)  # the global RNG between the calls must not matter
    train(_psi(dropout=0.2), loss, src, cfg, tmp_path / "b", progress=False)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def _frames(n=2, seed=0):
    return ualm.simulate_batch(n, SIM, generator=ualm.make_generator(seed))["x"].float()


@pytest.mark.parametrize("cond", [("yhat",), ("yhat", "frame")])
def test_uncertainty_map_units_shapes_and_seeds(cond):
    x = _frames(2)
    res = uncertainty_map(x, psi=_psi(cond), phi=_phi(), n_samples=4, sampler="ddim", steps=3,
                          seed=1, progress=False)
    assert isinstance(res, SampleResult) and len(res) == 2
    assert res.samples.shape == (2, 4, 80, 80) and res.yhat.shape == (2, 80, 80)
    assert torch.allclose(res.var(), res.samples.var(1, unbiased=True))
    assert torch.allclose(res.std() ** 2, res.var(), atol=1e-7)
    assert float(res.samples.min()) >= -1e-6 and float(res.samples.max()) <= 2.0 + 1e-6  # clipped ŷ_0
    assert res.info["evals_per_sample"] == 3 and res.info["sampler"] == "ddim"
    one = uncertainty_map(x[1].numpy(), psi=_psi(cond), phi=_phi(), n_samples=4, sampler="ddim",
                          steps=3, seed=1, progress=False)
    # a frame's samples depend on its index in the call (first_frame), not on the batch
    again = uncertainty_map(x, psi=_psi(cond), phi=_phi(), n_samples=4, sampler="ddim", steps=3,
                            seed=1, progress=False, batch_size=3)
    assert torch.allclose(again.samples, res.samples, atol=1e-5)
    assert one.samples.shape == (1, 4, 80, 80)
    # alone it draws as frame 0 would; told its index, as it does inside the batch
    assert not torch.allclose(one.samples[0], res.samples[1], atol=1e-3)
    second = uncertainty_map(x[1:], psi=_psi(cond), phi=_phi(), n_samples=4, sampler="ddim", steps=3,
                             seed=1, first_frame=1, progress=False)
    assert torch.allclose(second.samples[0], res.samples[1], atol=1e-5)
    with pytest.raises(ValueError, match="first_frame"):
        uncertainty_map(x, psi=_psi(cond), phi=_phi(), n_samples=4, first_frame=-1, progress=False)


@pytest.mark.parametrize("frames, kw, err, match", [
    (torch.zeros(2, 16, 16) + 100, {}, ValueError, "frames must have shape"),
    (torch.zeros(2, 3, 20, 20), {}, ValueError, "frames must have shape"),
    ([[1.0]], {}, TypeError, "frames"),
    (torch.full((1, 20, 20), float("nan")), {}, ValueError, "NaN"),
    (torch.zeros(1, 20, 20) + 100, dict(n_samples=1), ValueError, "n_samples"),
    (torch.zeros(1, 20, 20) + 100, dict(sampler="euler"), ValueError, "sampler"),
    (torch.zeros(1, 20, 20) + 100, dict(sampler="ddim", steps=200), ValueError, "steps"),
    (torch.zeros(1, 20, 20) + 100, dict(sampler="ddim", eta=2.0), ValueError, "eta"),
])
def test_uncertainty_map_bad_inputs(frames, kw, err, match):
    with pytest.raises(err, match=match):
        uncertainty_map(frames, psi=_psi(), phi=_phi(), progress=False, **kw)


def test_uncertainty_map_refuses_networks_of_the_wrong_kind():
    x = torch.zeros(1, 20, 20) + 100
    with pytest.raises(TypeError, match="psi must be the diffusion U-Net"):
        uncertainty_map(x, psi=_phi(), phi=_phi(), progress=False)
    with pytest.raises(TypeError, match="phi must be the DeepSTORM"):
        uncertainty_map(x, psi=_psi(), phi=_psi(), progress=False)


def test_bundled_diffusion_weights_load_verified():
    psi = ualm.pretrained.load("diffusion_quick")
    assert isinstance(psi, UNet) and not psi.training
    info = ualm.pretrained.manifest("diffusion_quick")
    assert info["model"] == "unet" and info["bytes"] <= 10 * 2**20
    assert "train diffusion --profile quick" in info["command"]
    with pytest.raises(ualm.pretrained.WeightsError, match="DeepSTORM"):
        ualm.pretrained.load_deepstorm("diffusion_quick")


def test_cli_trains_diffusion_and_resumes(tmp_path):
    from ualm.cli import main
    out = tmp_path / "run"
    args = ["train", "diffusion", "--profile", "quick", "--out", str(out), "--device", "cpu",
            "--steps", "2", "--batch-size", "2", "--width", "4", "--no-progress"]
    assert main(args + ["--stop-after", "1"]) == 0
    assert load_checkpoint(out)["step"] == 1
    assert main(args + ["--cond", "yhat,frame", "--no-resume", "--stop-after", "1"]) == 0
    assert load_checkpoint(out)["extra"]["model_config"]["cond"] == ["yhat", "frame"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_sampling_source_and_amp_training(tmp_path):
    dev = torch.device("cuda")
    x = _frames(2).to(dev)
    psi, phi = _psi().to(dev), _phi().to(dev)
    a = uncertainty_map(x, psi, phi, n_samples=4, sampler="ddim", steps=3, seed=1, progress=False)
    b = uncertainty_map(x, psi, phi, n_samples=4, sampler="ddim", steps=3, seed=1, progress=False,
                        batch_size=3)
    assert a.samples.device.type == "cuda" and torch.allclose(a.samples, b.samples, atol=1e-4)
    sched = D.schedule("paper")
    src = D.DiffusionSource(phi, SIM, sched, batch_size=2, seed=0)
    batch = src.batch(0, device=dev)
    assert all(v.device.type == "cuda" for v in batch.values())
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, val_every=1, val_batches=1, ckpt_every=1, amp=True)
    res = train(_psi(), D.DiffusionLoss(sched), src, cfg, tmp_path / "cuda", device=dev, progress=False)
    assert res.step == 2 and np.isfinite(res.history[-1]["val_loss"])


def test_cli_trains_a_deepstorm_ensemble_with_one_command(tmp_path):
    from ualm.cli import main
    from ualm.pretrained import manifest
    args = ["train", "deepstorm", "--profile", "quick", "--out", str(tmp_path / "ens"), "--device", "cpu",
            "--steps", "1", "--batch-size", "2", "--width", "4", "--hr-width", "2", "--no-progress",
            "--members", "2", "--seed", "7", "--export", "ens", "--export-dir", str(tmp_path / "w")]
    assert main(args) == 0
    seeds = [manifest(f"ens{k}", tmp_path / "w")["train_config"]["seed"] for k in range(2)]
    assert seeds == [7, 8]
    assert "--members 2" in manifest("ens1", tmp_path / "w")["command"]


@pytest.mark.parametrize("extra, match", [
    (["diffusion", "--cond", "yhat,truth"], "--cond"),
    (["deepstorm", "--cond", "yhat"], "--cond"),
    (["diffusion", "--members", "3"], "--members"),
])
def test_cli_refuses_bad_conditioning_and_members(tmp_path, capsys, extra, match):
    from ualm.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["train", extra[0], "--out", str(tmp_path / "x"), "--device", "cpu", *extra[1:]])
    assert stop.value.code == 2 and match in capsys.readouterr().err


def test_bundled_frame_conditioned_weights_take_the_frame():
    psi = ualm.pretrained.load("diffusion_frame_quick")
    assert psi.config.cond == ("yhat", "frame")
    res = uncertainty_map(_frames(1), psi=psi, n_samples=2, sampler="ddim", steps=2, progress=False)
    assert res.samples.shape == (1, 2, 80, 80) and torch.isfinite(res.samples).all()


# ----------------------------------------------------------------------------- baselines

def _phi_dropout(seed=1, dropout=0.3):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DeepSTORM(width=4, hr_width=2, dilations=(1, 2), dropout=dropout).eval()
    nn.init.constant_(net.head.bias, 0.5)  # output inside (0, 1), where Hardtanh does not clip
    return net


def test_mc_dropout_map_is_seeded_and_leaves_global_rng_and_mode_alone():
    from ualm.uncertainty import mc_dropout_map
    frames = ualm.simulate_batch(2, SIM, generator=torch.Generator().manual_seed(0))["x"]
    phi = _phi_dropout()
    state = torch.random.get_rng_state()
    a = mc_dropout_map(frames, phi, n_samples=4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not phi.training
    b = mc_dropout_map(frames, phi, n_samples=4, seed=3)
    c = mc_dropout_map(frames, phi, n_samples=4, seed=4)
    assert a.samples.shape == (2, 4, 80, 80) and a.yhat.shape == (2, 80, 80)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert float(a.std().max()) > 0  # the passes differ: dropout was on
    assert torch.allclose(a.yhat, phi.predict(frames))  # .yhat is φ without dropout


def test_mc_dropout_refuses_a_phi_without_dropout_and_ensemble_needs_two():
    from ualm.uncertainty import ensemble_map, mc_dropout_map
    frames = ualm.simulate_batch(1, SIM, generator=torch.Generator().manual_seed(0))["x"]
    with pytest.raises(ValueError, match="dropout > 0"):
        mc_dropout_map(frames, _phi(), n_samples=4)
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_map(frames, [_phi()])
    with pytest.raises(TypeError, match="DeepSTORM"):
        ensemble_map(frames, [_phi(), _psi()])


def test_ensemble_map_stacks_members():
    from ualm.uncertainty import ensemble_map
    frames = ualm.simulate_batch(3, SIM, generator=torch.Generator().manual_seed(0))["x"]
    members = [_phi_dropout(seed=s) for s in (1, 2, 3)]
    r = ensemble_map(frames, members)
    assert r.samples.shape == (3, 3, 80, 80)
    for k, m in enumerate(members):
        assert torch.equal(r.samples[:, k], m.predict(frames))
    assert torch.allclose(r.var(), torch.stack([m.predict(frames) for m in members], 1).var(1))


def test_bundled_ensemble_members_differ_and_carry_dropout():
    from ualm.uncertainty import ensemble_map, mc_dropout_map
    infos = [ualm.pretrained.manifest(f"deepstorm_ens{k}") for k in range(5)]
    assert [i["train_config"]["seed"] for i in infos] == [1, 2, 3, 4, 5]
    assert all(i["model_config"]["dropout"] == 0.1 for i in infos)
    assert len({i["sha256"] for i in infos}) == 5
    members = [ualm.pretrained.load(f"deepstorm_ens{k}") for k in range(5)]
    x = _frames(2)
    ens = ensemble_map(x, members)
    assert ens.samples.shape == (2, 5, 80, 80) and float(ens.std().max()) > 0
    drop = mc_dropout_map(x, members[0], n_samples=3, seed=0)
    assert float(drop.std().max()) > 0


def test_a_conformal_calibration_scales_the_spread_and_raw_undoes_it():
    from ualm.calibration import Conformal
    x = _frames(2)
    conf = Conformal(levels=(0.5, 0.9), classes=((0, None),), scales=((1.5, 2.0),), frames=(10,), samples=4)
    kw = dict(psi=_psi(), phi=_phi(), n_samples=4, sampler="ddim", steps=3, seed=1, progress=False)
    raw = uncertainty_map(x, calibrate=False, **kw)
    got = uncertainty_map(x, calibrate=conf, **kw)
    assert not raw.info["calibrated"] and got.info["calibrated"]
    torch.testing.assert_close(got.mean(), raw.mean())
    torch.testing.assert_close(got.std(), 2.0 * raw.std())  # λ at the 0.9 level
    torch.testing.assert_close(got.raw(), raw.samples)
    lo, hi = got.interval(0.5)
    rlo, rhi = raw.interval(0.5)
    torch.testing.assert_close(hi - lo, 1.5 * (rhi - rlo))
    with pytest.raises(ValueError, match="no stored calibration"):
        uncertainty_map(x, calibrate=True, **kw)  # other networks than the bundled ones
    with pytest.raises(TypeError, match="calibrate"):
        uncertainty_map(x, calibrate="yes", **kw)


def test_a_stored_calibration_is_checksummed(tmp_path):
    import json
    import shutil
    from ualm import pretrained
    from ualm.pretrained import WeightsError
    shutil.copy(pretrained.HERE / "deepstorm_quick.json", tmp_path / "w.json")
    sha = pretrained.manifest("w", tmp_path)["sha256"]
    info = json.loads((tmp_path / "w.json").read_text())
    info.pop("calibration", None)
    (tmp_path / "w.json").write_text(json.dumps(info))
    assert pretrained.stored_calibration("w", tmp_path) is None
    with pytest.raises(WeightsError, match="fitted on weights"):
        pretrained.record_calibration("w", "0" * 64, {"sampler": "ancestral"}, tmp_path)
    pretrained.record_calibration("w", sha, {"sampler": "ancestral", "overrides": {}}, tmp_path)
    assert pretrained.stored_calibration("w", tmp_path)["sampler"] == "ancestral"
    info = json.loads((tmp_path / "w.json").read_text())
    info["calibration"]["sampler"] = "ddim"
    (tmp_path / "w.json").write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="edited"):
        pretrained.stored_calibration("w", tmp_path)


def test_the_default_map_uses_the_bundled_calibration():
    from ualm import pretrained
    from ualm.calibration import Conformal, LEVELS
    from ualm.sampling import SAMPLERS
    from ualm.uncertainty import CALIBRATED_LEVEL, DEFAULT_PSI
    stored = pretrained.stored_calibration(DEFAULT_PSI)  # verifies both checksums
    assert stored is not None and stored["sampler"] in SAMPLERS
    by_k = {int(k): Conformal.from_dict(v) for k, v in stored["conformal"].items()}
    assert 8 in by_k and 32 in by_k  # the default map's K and a small K
    for k, conf in by_k.items():
        assert conf.samples == k and conf.levels == LEVELS and min(conf.frames) >= 20
        assert all(0.2 < v < 5 for row in conf.scales for v in row)  # a scale, not a failed fit
    x = ualm.simulate_batch(1, SIM, generator=ualm.make_generator(3))["x"]
    res = uncertainty_map(x, n_samples=2, progress=False)  # K = 2: the calibration fitted nearest, K = 8
    assert res.info["calibrated"] and res.info["sampler"] == stored["sampler"]
    assert float(res.scale[0]) == float(by_k[8].scale(res.counts, CALIBRATED_LEVEL)[0])
    raw = uncertainty_map(x, n_samples=2, progress=False, calibrate=False)
    torch.testing.assert_close(res.raw(), raw.samples)
