"""Training on a wall-clock budget (issue 17): a run with `TrainConfig.minutes` stops at a step
boundary within its budget plus one step, leaves a checkpoint that verifies, and resuming it
gives the same weights as a run that was never stopped."""
import time

import pytest
import torch

import ualm
from ualm import cli
from ualm.checkpoints import load_checkpoint
from ualm.models import DeepSTORM, deepstorm_loss
from ualm.sources import SimSource
from ualm.train import TrainConfig, train

TINY = dict(width=4, hr_width=2, dilations=(1, 2))
CFG = TrainConfig(steps=400, batch_size=2, lr=1e-2, warmup=1, val_every=1000, val_batches=1,
                  ckpt_every=1000, log_every=1, seed=3)


class SlowSource(SimSource):
    """A data source whose batches take a known time, so that a step's length is known."""

    def __init__(self, delay: float):
        super().__init__(ualm.SimConfig(count=(1, 4)), batch_size=2, seed=5)
        self.delay = delay

    def batch(self, step, rank=0, device="cpu"):
        time.sleep(self.delay)
        return super().batch(step, rank, device)


def _model():
    torch.manual_seed(0)
    return DeepSTORM(**TINY)


def test_budget_stops_in_time_with_a_checkpoint_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    delay, budget = 0.05, 2.5  # seconds per batch (at least), seconds of budget
    start = time.monotonic()
    r = train(_model(), deepstorm_loss, SlowSource(delay), CFG.replace(minutes=budget / 60),
              tmp_path / "budget", progress=False)
    elapsed = time.monotonic() - start
    assert r.stopped == "budget" and 0 < r.step < CFG.steps, (r.stopped, r.step)
    step_time = elapsed / r.step
    assert elapsed <= budget + 3 * step_time + 0.5, (elapsed, step_time)  # + the last step, the checkpoint
    assert r.seconds <= elapsed
    state = load_checkpoint(r.checkpoint)  # verifies the checksum and finiteness
    assert state["step"] == r.step

    # the rest of the run, without a budget, from the checkpoint ...
    done = train(_model(), deepstorm_loss, SlowSource(0.0), CFG, tmp_path / "budget", progress=False)
    assert done.stopped is None and done.step == CFG.steps
    # ... equals one uninterrupted run
    ref = train(_model(), deepstorm_loss, SlowSource(0.0), CFG, tmp_path / "ref", progress=False)
    for (k, a), b in zip(done.model.state_dict().items(), ref.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_budget_is_not_part_of_the_run_identity(tmp_path):
    """A resumed run may get another budget; a finished run reports no stop."""
    torch.set_num_threads(1)
    cfg = CFG.replace(steps=3)
    first = train(_model(), deepstorm_loss, SlowSource(0.0), cfg, tmp_path, progress=False,
                  stop_after=1)
    assert first.stopped == "stop_after"
    again = train(_model(), deepstorm_loss, SlowSource(0.0), cfg.replace(minutes=5.0), tmp_path,
                  progress=False)
    assert again.stopped is None and again.step == 3


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_bad_budget_is_refused(bad):
    with pytest.raises(ValueError, match="minutes"):
        TrainConfig(minutes=bad)


def test_cli_minutes(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "deepstorm", "--out", str(tmp_path), "--minutes", "0"])
    assert e.value.code == 2
    assert "--minutes" in capsys.readouterr().err
