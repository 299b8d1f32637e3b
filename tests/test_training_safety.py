"""Training and weights that lose nothing and accept nothing broken (issue 10, items 8-11):
checksummed checkpoints, a checkpoint on SIGINT/SIGTERM, CLI arguments checked up front, and
the manifest's model part covered by a checksum."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import ualm
from ualm import cli, pretrained
from ualm.checkpoints import state_digest
from ualm.models import DeepSTORM, deepstorm_loss
from ualm.sources import SimSource
from ualm.train import (CheckpointError, TrainConfig, TrainingInterrupted, load_checkpoint, save_checkpoint,
                        train)

TINY = dict(width=4, hr_width=2, dilations=(1, 2))
CFG = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup=1, val_every=2, val_batches=1,
                  ckpt_every=2, log_every=1, seed=3)
EXTRA = {"model": "deepstorm", "model_config": DeepSTORM(**TINY).config.to_dict()}


def _source():
    return SimSource(ualm.SimConfig(count=(1, 4)), batch_size=2, seed=5)


def _model():
    torch.manual_seed(0)
    return DeepSTORM(**TINY)


def _run(out, cfg=CFG, **kw):
    return train(_model(), deepstorm_loss, _source(), cfg, out, progress=False, extra=EXTRA, **kw)


# ----------------------------------------------------------------------------- item 8

def _flip_exponent_bit(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`t` with the top exponent bit flipped in its first element of magnitude in (0.01, 1),
    which becomes huge (~1e38 in float32, ~1e307 in float64): finite and absurd.
    Returns (t, index)."""
    ints, top = {torch.float32: (torch.int32, 30), torch.float64: (torch.int64, 62)}[t.dtype]
    flat = t.detach().clone().contiguous().view(-1)
    i = int(torch.nonzero((flat.abs() > 0.01) & (flat.abs() < 1))[0])
    bits = flat.view(ints)
    bits[i] ^= 1 << top
    return bits.view(t.dtype).view(t.shape), i


def test_checkpoint_with_a_flipped_bit_is_refused_on_resume_and_export(tmp_path):
    torch.set_num_threads(1)
    _run(tmp_path / "run", stop_after=2)
    ck = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    assert state["checksum"] == state_digest(state)
    name = next(k for k, v in state["model"].items() if k.endswith("weight") and v.dim() > 1)
    state["model"][name], i = _flip_exponent_bit(state["model"][name])
    assert 1e30 < abs(float(state["model"][name].view(-1)[i])) < float("inf")
    torch.save(state, ck)  # the bytes change, the stored checksum does not
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="corrupt"):
        _run(tmp_path / "run")  # resume
    with pytest.raises(CheckpointError, match="corrupt"):
        pretrained.export_weights(ck, "bad", tmp_path / "w")
    assert not (tmp_path / "w" / "bad.pt").exists()
    assert load_checkpoint(ck, verify=False)["step"] == 2  # still readable for a post-mortem


def test_non_finite_weights_or_optimizer_state_are_refused(tmp_path):
    torch.set_num_threads(1)
    _run(tmp_path / "run", stop_after=2)
    ck = tmp_path / "run" / "checkpoint.pt"
    good = torch.load(ck, weights_only=True)
    name = next(k for k, v in good["model"].items() if v.is_floating_point())
    # non-finite with a consistent checksum: what a diverged run would have written
    for part, key, field in (("model", name, None), ("optimizer", 0, "exp_avg_sq")):
        state = torch.load(ck, weights_only=True)
        target = state[part][key] if field is None else state[part]["state"][key][field]
        target.view(-1)[0] = float("nan") if field is None else float("inf")
        state["checksum"] = state_digest(state)
        bad = tmp_path / f"bad_{part}.pt"
        torch.save(state, bad)
        with pytest.raises(CheckpointError, match="NaN or inf"):
            load_checkpoint(bad)
        with pytest.raises(CheckpointError, match="NaN or inf"):
            pretrained.export_weights(bad, "bad", tmp_path / "w")
        # ... and writing one is refused, leaving the last good checkpoint in place
        del state["checksum"]
        with pytest.raises(CheckpointError, match="refusing to write"):
            save_checkpoint(ck, state)
        assert load_checkpoint(ck)["step"] == 2
    # a checkpoint without a checksum (older ualm) loads, with a warning
    legacy = {k: v for k, v in good.items() if k != "checksum"}
    torch.save(legacy, tmp_path / "legacy.pt")
    with pytest.warns(UserWarning, match="no checksum"):
        assert load_checkpoint(tmp_path / "legacy.pt")["step"] == 2


# ----------------------------------------------------------------------------- item 9

class _Fallback(Exception):
    """Raised by the test's own SIGTERM/SIGINT handler: what runs when train installs none."""


def _fallback(signum, frame):
    raise _Fallback(signum)


def _signalling_loss(at_call: int, signals):
    calls = []

    def loss(model, batch):
        calls.append(1)
        if len(calls) == at_call:
            for s in signals:
                signal.raise_signal(s)
        return deepstorm_loss(model, batch)
    return loss


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_then_stops(tmp_path, signum):
    torch.set_num_threads(1)
    cfg = CFG.replace(steps=6, ckpt_every=100, val_batches=0)  # no checkpoint before the end
    previous = signal.signal(signum, _fallback)
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            train(_model(), _signalling_loss(3, [signum]), _source(), cfg, tmp_path / "run",
                  progress=False, extra=EXTRA)
        assert signal.getsignal(signum) is _fallback  # the caller's handler is back
    finally:
        signal.signal(signum, previous)
    err = stop.value
    assert err.step == 3 and err.exit_code == 128 + signum
    assert signal.Signals(signum).name in str(err) and str(tmp_path / "run") in str(err)
    assert load_checkpoint(tmp_path / "run")["step"] == 3  # the signalled step is kept
    # resuming ends where an uninterrupted run ends
    resumed = _run(tmp_path / "run", cfg)
    straight = _run(tmp_path / "straight", cfg)
    assert resumed.step == straight.step == 6
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_second_sigint_stops_at_once_and_threads_train_without_handlers(tmp_path):
    torch.set_num_threads(1)
    cfg = CFG.replace(steps=6, ckpt_every=100, val_batches=0)
    with pytest.raises(KeyboardInterrupt) as stop:
        train(_model(), _signalling_loss(2, [signal.SIGINT, signal.SIGINT]), _source(), cfg,
              tmp_path / "run", progress=False)
    assert type(stop.value) is KeyboardInterrupt  # not TrainingInterrupted: no checkpoint
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # signal handlers can only be installed on the main thread: elsewhere train just trains
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=_run(tmp_path / "thread", cfg)))
    worker.start()
    worker.join()
    assert result["r"].step == 6


def test_cli_reports_an_interruption_in_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGINT, 7, tmp_path / "checkpoint.pt")
    monkeypatch.setattr(cli, "train_deepstorm", interrupted)
    code = cli.main(["train", "deepstorm", "--out", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1
    assert "interrupted by SIGINT at step 7" in err and "resume" in err


# ----------------------------------------------------------------------------- item 10

BASE = ["train", "deepstorm", "--profile", "quick", "--device", "cpu", "--width", "4",
        "--hr-width", "2", "--batch-size", "2", "--no-progress"]


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ualm")
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag,value,message", [
    ("--steps", "0", "argument --steps: must be >= 1, got 0"),
    ("--steps", "-5", "argument --steps: must be >= 1, got -5"),
    ("--threads", "-1", "argument --threads: must be >= 1, got -1"),
    ("--threads", "0", "argument --threads: must be >= 1, got 0"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1"),
    ("--lr", "nan", "argument --lr: must lie in"),
    ("--dropout", "1", "argument --dropout: must lie in [0, 1)"),
])
def test_cli_refuses_bad_numbers(tmp_path, capsys, flag, value, message):
    line = _cli_error(capsys, BASE + ["--out", str(tmp_path / "run"), flag, value])
    assert message in line, line
    assert not (tmp_path / "run").exists()


def test_cli_refuses_an_unusable_out(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = _cli_error(capsys, BASE + ["--steps", "1", "--out", str(afile / "run")])
    assert "--out" in line and "Not a directory" in line, line
    line = _cli_error(capsys, BASE + ["--steps", "1", "--out", str(afile)])
    assert "--out" in line and "not a directory" in line, line
    line = _cli_error(capsys, BASE + ["--steps", "1", "--out", str(tmp_path / "r"),
                                      "--export", "x", "--export-dir", str(afile)])
    assert "--export-dir" in line, line
    # a missing or corrupt checkpoint for `ualm export`: one line too
    line = _cli_error(capsys, ["export", str(tmp_path / "nothing.pt"), "x",
                               "--export-dir", str(tmp_path / "w")])
    assert "checkpoint not found" in line, line


def test_cli_bad_arguments_from_a_shell(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ualm.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "ualm", "train", "deepstorm", "--out",
                           str(tmp_path / "run"), "--steps", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "ualm train: error: argument --steps: must be >= 1, got 0"


def test_train_result_names_only_a_written_checkpoint(tmp_path):
    res = train(_model(), deepstorm_loss, _source(), CFG.replace(steps=0), tmp_path / "r",
                progress=False)
    assert res.step == 0 and res.checkpoint is None  # nothing ran, nothing written
    with pytest.raises(ValueError, match="TrainConfig.steps must be an int >= 0"):
        CFG.replace(steps=-1)
    with pytest.raises(ValueError, match="TrainConfig.lr"):
        CFG.replace(lr=0.0)


# ----------------------------------------------------------------------------- item 11

def _copy(tmp_path, name="deepstorm_quick") -> dict:
    for f in (f"{name}.pt", f"{name}.json"):
        shutil.copy(pretrained.HERE / f, tmp_path / f)
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["deepstorm_quick", "diffusion_quick", "diffusion_frame_quick"])
def test_bundled_manifests_cover_their_model_part(name):
    info = pretrained.manifest(name)
    assert info["model_sha256"] == pretrained.model_digest(info)
    assert info["sha256"] == pretrained.sha256(pretrained.HERE / info["file"])


def test_an_edited_model_config_is_refused(tmp_path):
    info = _copy(tmp_path)
    info["model_config"]["offset"] = 90.0  # silently shifts every input by 10 ADU
    (tmp_path / "deepstorm_quick.json").write_text(json.dumps(info))
    with pytest.raises(pretrained.WeightsError, match="was edited"):
        pretrained.load("deepstorm_quick", "cpu", tmp_path)
    # a deliberate edit, stamped, loads and builds what the manifest says
    pretrained.stamp_model_digest("deepstorm_quick", tmp_path)
    assert pretrained.load("deepstorm_quick", "cpu", tmp_path).config.offset == 90.0
    for field in ("model_config", "model", "model_sha256"):
        broken = {k: v for k, v in info.items() if k != field}
        (tmp_path / "deepstorm_quick.json").write_text(json.dumps(broken))
        with pytest.raises(pretrained.WeightsError, match=field):
            pretrained.load("deepstorm_quick", "cpu", tmp_path)


def test_export_writes_the_model_digest_and_needs_the_model(tmp_path):
    torch.set_num_threads(1)
    _run(tmp_path / "run", CFG.replace(steps=1))
    pretrained.export_weights(tmp_path / "run", "tiny", tmp_path / "w")
    info = pretrained.manifest("tiny", tmp_path / "w")
    assert info["model_sha256"] == pretrained.model_digest(info)
    assert pretrained.load("tiny", "cpu", tmp_path / "w").config.width == 4
    train(_model(), deepstorm_loss, _source(), CFG.replace(steps=1), tmp_path / "bare",
          progress=False)  # no extra: the checkpoint does not say which network it holds
    with pytest.raises(CheckpointError, match="model_config"):
        pretrained.export_weights(tmp_path / "bare", "bare", tmp_path / "w")
