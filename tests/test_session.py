"""A chapter's run (`ualm.start`): profiles, sizes, smoke runs, where runs are kept, the time
it announces, and the budgeted training of the gpu/full profiles that keeps the better weights
(issue 17)."""
import json

import pytest
import torch

import ualm
from ualm import device as D
from ualm import profiles, session
from ualm.diffusion import amp_dtype, schedule
from ualm.sampling import sample
from ualm.models.unet import UNet, UNetConfig


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("UALM_PROFILE", "UALM_DEVICE", "UALM_SMOKE", "UALM_RUNS_DIR", "UALM_TRAIN_MINUTES",
                "UALM_TRAIN_STEPS"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_profile_defaults_to_gpu_on_cuda_and_quick_on_cpu(clean_env):
    assert D.pick_profile(device=torch.device("cpu")) == "quick"
    assert D.pick_profile(device=torch.device("cuda")) == "gpu"
    assert D.pick_profile("full") == "full"
    clean_env.setenv("UALM_PROFILE", "gpu")
    assert D.pick_profile(device=torch.device("cpu")) == "gpu"
    with pytest.raises(ValueError, match="profile"):
        D.pick_profile("huge")


def test_start_sizes_and_summary(clean_env, capsys):
    run = ualm.start("05_diffusion", device="cpu")
    text = capsys.readouterr().out
    assert "05_diffusion" in text and "profile quick" in text and "bundled weights diffusion_quick" in text
    assert run.quick and not run.trains and run.checks and not run.smoke
    assert run.size(6, 64) == 6
    gpu = ualm.start("05_diffusion", device="cpu", profile="gpu", quiet=True)
    assert gpu.trains and gpu.size(6, 64) == 64 and gpu.out("diffusion").name == "diffusion_gpu"
    assert "at most 5 min" in gpu.summary() and "beats the bundled diffusion_quick" in gpu.summary()


def test_smoke_runs_the_profile_at_quick_sizes_without_checks(clean_env, capsys):
    clean_env.setenv("UALM_SMOKE", "1")
    run = ualm.start("04_deepstorm", device="cpu", profile="full")
    assert run.trains and run.smoke and not run.checks and run.size(200, 1000) == 200
    assert run.skip_checks() and "quality checks skipped" in capsys.readouterr().out
    assert run.runs.name.startswith("ualm-smoke-runs-")  # never a real run's directory
    over = profiles.env_overrides()
    assert over["steps"] == 2 and over["batch_size"] == 2
    clean_env.setenv("UALM_SMOKE", "yes")
    with pytest.raises(ValueError, match="UALM_SMOKE"):
        D.smoke()


def test_runs_dir_follows_env_then_drive(clean_env, tmp_path):
    assert D.runs_dir() == D.Path("runs") or D.runs_dir() == D.DRIVE / "ualm-runs"
    clean_env.setenv("UALM_RUNS_DIR", str(tmp_path))
    assert D.runs_dir() == tmp_path
    clean_env.delenv("UALM_RUNS_DIR")
    clean_env.setattr(D, "DRIVE", tmp_path)  # as if Google Drive were mounted
    assert D.runs_dir() == tmp_path / "ualm-runs"


def test_env_overrides_checked(clean_env):
    clean_env.setenv("UALM_TRAIN_MINUTES", "0.5")
    assert profiles.env_overrides() == {"minutes": 0.5}
    clean_env.setenv("UALM_TRAIN_MINUTES", "soon")
    with pytest.raises(ValueError, match="UALM_TRAIN_MINUTES"):
        profiles.env_overrides()


def test_estimate_line_says_measured_or_estimated(clean_env, tmp_path):
    table = {"chapters": {"05_diffusion": {
        "quick/cpu": {"seconds": 66.0, "kind": "measured", "device": "a 2-core CPU"},
        "gpu/T4": {"seconds": 540.0, "kind": "estimate", "device": "a T4 (estimate)"}}}}
    path = tmp_path / "estimates.json"
    path.write_text(json.dumps(table))
    clean_env.setattr(session, "ESTIMATES", path)
    line = session.chapter_estimate("05_diffusion", "quick", torch.device("cpu"))
    assert line == "takes about 66 s (measured on a 2-core CPU)"
    assert session.chapter_estimate("05_diffusion", "gpu", torch.device("cpu")) is None
    assert session.chapter_estimate("01_image_formation", "quick", torch.device("cpu")) is None
    assert session.gpu_class("Tesla T4") == "T4" and session.gpu_class("NVIDIA H200") == "H200"
    assert session.gpu_class("Some GPU") is None


def test_bundled_estimates_cover_every_chapter():
    """The table `ualm.start` reads ships with the package and names every numbered chapter."""
    table = session.load_estimates()
    chapters = table.get("chapters", {})
    for name in ("01_image_formation", "02_fisher_crlb", "03_mcmc", "04_deepstorm",
                 "05_diffusion", "06_calibration"):
        assert "quick/cpu" in chapters.get(name, {}), name
        assert chapters[name]["gpu/T4"]["seconds"] <= 10 * 60 * 1.05, (name, chapters[name]["gpu/T4"])


@pytest.mark.parametrize("kind", ["deepstorm", "diffusion"])
def test_best_trained_keeps_the_better_weights_and_resumes(kind, clean_env, tmp_path):
    """Two smoke steps cannot beat the bundled weights: the report says so, and the bundled
    network comes back; calling again resumes the finished run instead of training anew."""
    torch.set_num_threads(1)
    clean_env.setenv("UALM_SMOKE", "1")
    model, report = profiles.best_trained(kind, "gpu", tmp_path / kind, device="cpu",
                                          progress=False)
    assert report["used"] == "bundled" and report["step"] == 2 and report["stopped"] is None
    assert report["val_loss"]["bundled"] < report["val_loss"]["trained"]
    bundled = ualm.pretrained.load(f"{kind}_quick")
    for a, b in zip(model.state_dict().values(), bundled.state_dict().values()):
        assert torch.equal(a, b)
    assert "using the bundled weights" in profiles.report_line(report)
    again, report2 = profiles.best_trained(kind, "gpu", tmp_path / kind, device="cpu",
                                           progress=False)
    assert report2["step"] == 2 and report2["seconds"] < report["seconds"] + 60
    with pytest.raises(ValueError, match="kind"):
        profiles.best_trained("unet", "gpu", tmp_path)


def test_sampling_precision_on_the_cpu_is_full():
    """Autocast is for CUDA only: on the CPU `amp` changes nothing."""
    assert amp_dtype("cpu") is None
    torch.manual_seed(0)
    psi = UNet(UNetConfig(width=4, mults=(1, 2), blocks=1, attention=(), groups=2)).float()
    cond = torch.rand(1, 1, 16, 16) * 2 - 1
    sched = schedule("paper")
    a = sample(psi, cond, sched, 2, method="ddim", steps=3, eta=1.0, progress=False)
    b = sample(psi, cond, sched, 2, method="ddim", steps=3, eta=1.0, progress=False, amp=True)
    assert torch.equal(a, b)
