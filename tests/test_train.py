import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ualm
from ualm.models import DeepSTORM, deepstorm_loss
from ualm.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from ualm.sources import SimSource
from ualm.train import TrainConfig, train

TINY = dict(width=4, hr_width=2, dilations=(1, 2))
CFG = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup=1, val_every=2, val_batches=1,
                  ckpt_every=2, log_every=1, seed=3)


def _source():
    return SimSource(ualm.SimConfig(count=(1, 4)), batch_size=2, seed=5)


def _model():
    torch.manual_seed(0)
    return DeepSTORM(**TINY)


def test_sim_source_is_a_function_of_step():
    s = _source()
    a, b = s.batch(7), s.batch(7)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(s.batch(8)["x"], a["x"])
    assert not torch.equal(s.batch(7, rank=1)["x"], a["x"])


def _drop_model():
    torch.manual_seed(0)
    return DeepSTORM(**TINY, dropout=0.3)  # dropout: resuming must also restore the RNG stream


def test_resume_equals_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    n = 5
    cfg = CFG.replace(steps=n, ckpt_every=1)
    full = train(_drop_model(), deepstorm_loss, _source(), cfg, tmp_path / "a", progress=False)
    assert full.step == n
    part = train(_drop_model(), deepstorm_loss, _source(), cfg, tmp_path / "b", progress=False,
                 stop_after=2)
    assert part.step == 2 and load_checkpoint(tmp_path / "b")["step"] == 2
    # something else draws from the global RNG between the two calls: must not matter
    torch.rand(1000)
    # resume into a freshly built model (other initial weights): everything comes from the checkpoint
    torch.manual_seed(123)
    resumed = train(DeepSTORM(**TINY, dropout=0.3), deepstorm_loss, _source(), cfg, tmp_path / "b",
                    progress=False)
    assert resumed.step == n
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, v in a["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, b["optimizer"]["state"][k][name]), (k, name)
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] == n
    def hist(ck):
        return [(h["step"], h["loss"], h.get("val_loss")) for h in ck["history"]]
    assert hist(a) == hist(b)
    # the log mirrors the history: no duplicated steps after the resume
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [h["step"] for h in b["history"]]
    # dropout really is active: without the per-step seeding the runs would differ
    c = train(_drop_model(), deepstorm_loss, _source(), cfg.replace(seed=4), None, progress=False)
    assert not all(torch.equal(a["model"][k], c.model.state_dict()[k]) for k in a["model"])


def test_train_leaves_the_global_rng_alone(tmp_path):
    model = _drop_model()
    torch.manual_seed(42)
    state = torch.get_rng_state()
    train(model, deepstorm_loss, _source(), CFG.replace(steps=2), None, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_train_deepstorm_initial_weights_depend_only_on_seed(tmp_path):
    from ualm.profiles import train_deepstorm
    kw = dict(device="cpu", model_overrides=dict(TINY), progress=False,
              train_overrides=dict(steps=0, batch_size=2, val_batches=0))
    torch.manual_seed(1)
    m1, _ = train_deepstorm("quick", None, **kw)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    m2, _ = train_deepstorm("quick", None, **kw)
    assert torch.equal(torch.get_rng_state(), state)  # nothing seeded globally
    for (k, v), w in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v, w), k
    m3, _ = train_deepstorm("quick", None, **{**kw, "train_overrides": {**kw["train_overrides"], "seed": 9}})
    assert not torch.equal(m1.stem[0].weight, m3.stem[0].weight)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    torch.set_num_threads(1)
    train(_model(), deepstorm_loss, _source(), CFG, tmp_path / "r", progress=False, stop_after=1,
          extra={"model_config": {"width": 4}})
    with pytest.raises(CheckpointError, match="batch_size.*seed|seed.*batch_size") as err:
        train(_model(), deepstorm_loss, _source(), CFG.replace(batch_size=3, seed=4), tmp_path / "r",
              progress=False, extra={"model_config": {"width": 4}})
    assert "batch_size" in str(err.value) and "seed" in str(err.value)
    with pytest.raises(CheckpointError, match="model_config"):
        train(_model(), deepstorm_loss, _source(), CFG, tmp_path / "r", progress=False,
              extra={"model_config": {"width": 8}})
    # a model of another width, without metadata to compare: still a CheckpointError
    with pytest.raises(CheckpointError, match="does not fit"):
        train(DeepSTORM(width=6, hr_width=2, dilations=(1, 2)), deepstorm_loss, _source(), CFG,
              tmp_path / "r", progress=False)
    # the CLI path: same directory, other width
    from ualm.cli import main
    args = ["train", "deepstorm", "--profile", "quick", "--out", str(tmp_path / "c"), "--device", "cpu",
            "--width", "4", "--hr-width", "2", "--batch-size", "2", "--steps", "2", "--no-progress"]
    assert main(args) == 0
    with pytest.raises(SystemExit) as stop:  # one line on stderr, exit status 2
        main([a if a != "4" else "6" for a in args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "belongs to a different run" in err and "width" in err and "Traceback" not in err
    # --no-resume starts afresh, with a fresh log (not appended to the old run's)
    assert main([a if a != "4" else "6" for a in args] + ["--no-resume"]) == 0
    log = [json.loads(line) for line in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2]
    assert load_checkpoint(tmp_path / "c")["extra"]["model_config"]["width"] == 6


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a ualm training checkpoint"):
        load_checkpoint(other)
    # a truncated real checkpoint, where train() would resume from it
    train(_model(), deepstorm_loss, _source(), CFG.replace(steps=1), tmp_path / "run", progress=False)
    ck = tmp_path / "run" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(_model(), deepstorm_loss, _source(), CFG, tmp_path / "run", progress=False)


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"a": torch.ones(3)})
    save_checkpoint(tmp_path / "c.pt", {"a": torch.zeros(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["a"], torch.zeros(3))


DDP_SCRIPT = textwrap.dedent('''
    import os, sys, torch, ualm
    import torch.distributed as dist
    from ualm.models import DeepSTORM, deepstorm_loss
    from ualm.sources import SimSource
    from ualm.train import TrainConfig, train
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = sys.argv[1]
    model = DeepSTORM(width=4, hr_width=2, dilations=(1,))
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, val_every=2, val_batches=1, ckpt_every=2)
    res = train(model, deepstorm_loss, SimSource(ualm.SimConfig(count=2), 2, seed=1), cfg, out,
                progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank = dist.get_rank()
    torch.save({"params": flat, "world": dist.get_world_size(), "step": res.step},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()
''')


def test_ddp_gloo_two_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ualm.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "out" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "out" / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 2
    assert torch.equal(r0["params"], r1["params"])  # gradients were all-reduced
    ck = load_checkpoint(tmp_path / "out")
    assert ck["world_size"] == 2 and ck["step"] == 2


def test_cli_trains_resumes_and_exports(tmp_path, capsys):
    from ualm import pretrained
    from ualm.cli import main
    args = ["train", "deepstorm", "--profile", "quick", "--out", str(tmp_path / "run"), "--device", "cpu",
            "--width", "4", "--hr-width", "2", "--batch-size", "2", "--steps", "2", "--no-progress"]
    assert main(args + ["--stop-after", "1"]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 1
    assert main(args + ["--export", "tiny", "--export-dir", str(tmp_path / "w")]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 2
    info = pretrained.manifest("tiny", tmp_path / "w")
    assert info["command"].startswith("python -m ualm train deepstorm") and info["steps"] == 2
    model = pretrained.load_deepstorm("tiny", device="cpu", directory=tmp_path / "w")
    assert model.config.width == 4
    with pytest.raises(SystemExit):
        main(["train", "unet", "--out", str(tmp_path)])
