"""A generic training loop shared by every network of the project.

It is built from three pieces, so that the diffusion model reuses it unchanged:

- a model (any `torch.nn.Module`);
- a loss function `loss_fn(model, batch) -> scalar tensor`, where `batch` is a dict of tensors
  already on the training device (e.g. the output of `ualm.simulate_batch`);
- a data source with a method `batch(step, rank, device) -> dict` (`ualm.sources`). `SimSource` simulates frames on
  the fly: batch `step` of process `rank` is drawn from a generator seeded with
  `ualm.seeding.step_seed(seed, step, rank, DATA)`, so the data stream is a pure function of the
  step and a resumed run sees exactly the batches an uninterrupted run would have seen.

`train` runs AdamW with a linear warm-up and cosine decay, shows a `tqdm` progress bar, evaluates
the loss on a fixed seeded validation set every `val_every` steps, and writes a checkpoint
atomically (temporary file, then `os.replace`) every `ckpt_every` steps and at the end. A
checkpoint holds the model, optimizer, scheduler, AMP scaler, step, the training configuration,
the world size and the history, and a checksum of all of it (`ualm.checkpoints`): a checkpoint
whose contents changed after it was written, or whose weights or optimizer state are not
finite, is refused. Calling `train` again with the same `out` directory resumes from the last
checkpoint, after checking that it belongs to the same run (`check_resume`). SIGINT (Ctrl-C)
or SIGTERM during training finish the current step, write a checkpoint and raise
`TrainingInterrupted` (a KeyboardInterrupt) naming it; a second Ctrl-C stops at once. On CUDA it
uses automatic mixed precision. Launched under `torchrun` (the environment variable
WORLD_SIZE > 1) it trains data-parallel with DistributedDataParallel (NCCL on CUDA with device
cuda:LOCAL_RANK, gloo on CPU); rank 0 alone writes checkpoints and logs.

Randomness: nothing is seeded globally. `train` runs inside `torch.random.fork_rng`, so the
caller's global RNG state is the same after it returns, and before every step it seeds the
(forked) torch RNG with `step_seed(seed, step, rank, MODEL)`: the model's random numbers
(dropout) are, like the data, a pure function of the step and the rank, so a resumed run, on
any rank, repeats an uninterrupted one without storing RNG states.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .config import Config
from .checkpoints import (CHECKPOINT_NAME, FORMAT, CheckpointError, StopSignals, TrainingInterrupted,
                          load_checkpoint, save_checkpoint)
from .seeding import MODEL, step_seed
from .progress import show_progress

_CKPT_KEYS = ("format", "model", "optimizer", "scheduler", "step", "config")
# TrainConfig fields that must agree between a checkpoint and the run resuming from it (the
# logging/checkpointing cadences may change; a different `steps` changes the LR schedule).
RESUME_KEYS = ("steps", "batch_size", "lr", "weight_decay", "warmup", "min_lr_factor",
               "grad_clip", "seed", "amp")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation settings (frozen: change them with `replace`). lr is the peak learning rate
    reached after `warmup` steps; it then decays along a cosine to lr * min_lr_factor at
    `steps`."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    min_lr_factor: float = 0.02
    grad_clip: float | None = 1.0
    val_every: int = 100
    val_batches: int = 4
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0
    amp: bool = True  # only used on CUDA
    # wall-clock budget of one call of `train`, in minutes (None: none). At the first step
    # boundary past it the run writes a checkpoint and returns; calling again resumes. Not part
    # of the run's identity (RESUME_KEYS): a resumed run may get another budget.
    minutes: float | None = None

    def __post_init__(self):
        ints = dict(steps=0, batch_size=1, warmup=0, val_every=1, val_batches=0, ckpt_every=1,
                    log_every=1)  # field -> smallest allowed value
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"TrainConfig.{name} must be an int >= {low}, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.min_lr_factor, (int, float)) and 0 <= self.min_lr_factor <= 1):
            raise ValueError(f"TrainConfig.min_lr_factor must lie in [0, 1], got {self.min_lr_factor!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float))
                                               and self.grad_clip > 0):
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.minutes is not None and not (isinstance(self.minutes, (int, float))
                                             and not isinstance(self.minutes, bool)
                                             and math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"TrainConfig.minutes must be None or a finite number > 0, "
                             f"got {self.minutes!r}")



@dataclass
class TrainResult:
    model: nn.Module
    step: int
    history: list = field(default_factory=list)
    checkpoint: Path | None = None
    # why this call ended before config.steps: "budget" (config.minutes), "stop_after"; None
    # when the run is complete
    stopped: str | None = None
    seconds: float = 0.0  # wall-clock time of this call


# ----------------------------------------------------------------------------- distributed

def dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the torchrun environment (0, 0, 1 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _setup_distributed(device: torch.device):
    rank, local_rank, world = dist_info()
    if world <= 1:
        return rank, world, False
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, True


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup > 0 and step < cfg.warmup:
            return (step + 1) / cfg.warmup
        span = max(cfg.steps - cfg.warmup, 1)
        t = min(max(step - cfg.warmup, 0) / span, 1.0)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def check_resume(state: dict, config: "TrainConfig", extra: dict | None, world: int, path=None):
    """Raise CheckpointError naming every field where checkpoint `state` differs from the run
    that wants to resume from it (TrainConfig's RESUME_KEYS, the `extra` metadata such as the
    model config, and the world size)."""
    bad = []
    saved = state.get("config", {})
    cur = asdict(config)
    for k in RESUME_KEYS:
        if k in saved and saved[k] != cur[k]:
            bad.append(f"{k}: checkpoint {saved[k]!r} != run {cur[k]!r}")
    saved_extra = state.get("extra") or {}
    for k, v in (extra or {}).items():
        if k in saved_extra and saved_extra[k] != v:
            bad.append(f"extra[{k!r}]: checkpoint {saved_extra[k]!r} != run {v!r}")
    if "world_size" in state and int(state["world_size"]) != world:
        bad.append(f"world_size: checkpoint {state['world_size']} != run {world}")
    if bad:
        raise CheckpointError(f"checkpoint {path or ''} belongs to a different run; mismatched: "
                              + "; ".join(bad) + " (use another --out or --no-resume)")


def _seed_step(seed: int, device: torch.device):
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn, batches) -> float:
    """Mean loss over fixed batches, in eval mode."""
    was = model.training
    model.eval()
    total = sum(float(loss_fn(model, b)) for b in batches) / max(len(batches), 1)
    model.train(was)
    return total


# ----------------------------------------------------------------------------- the loop

def train(model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor], data,
          config: TrainConfig = TrainConfig(), out=None, *, val_data=None, device=None,
          resume: bool = True, progress: bool = True, extra: dict | None = None,
          metrics_fn: Callable[[nn.Module], dict] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train `model` on batches from `data` (a source with .batch(step, rank, device)).

    out: directory for `checkpoint.pt` and `log.jsonl` (None: keep nothing on disk).
    val_data: source of the fixed validation set (default: `data` with seed + 10_000);
      `config.val_batches` batches of it are simulated once and reused.
    resume: continue from `out/checkpoint.pt` when present (same step, optimizer, scheduler;
      the RNG is re-seeded per step). The checkpoint must come from the same run: RESUME_KEYS
      of the config, `extra` (e.g. the model config) and the world size are compared, and a
      mismatch, or weights that do not fit `model`, raise CheckpointError. resume=False starts
      afresh and rewrites `log.jsonl`.
    device: the training device; under torchrun on CUDA it is cuda:LOCAL_RANK whatever is given.
    extra: JSON-able metadata stored in the checkpoint (e.g. the model's config).
    metrics_fn(model) -> dict: optional extra validation metrics, logged with the loss.
    stop_after: stop (after checkpointing) once this many steps ran in this call; for tests
      that simulate an interruption.
    config.minutes: stop (after checkpointing) at the first step boundary once this call has
      run that long, setup included; `TrainResult.stopped` says "budget". Under DDP rank 0's
      clock decides, so that every rank stops at the same step.
    On SIGINT or SIGTERM (main thread only; the caller's handlers are restored on return) the
    current step finishes, rank 0 writes the checkpoint and every rank raises
    `TrainingInterrupted` naming the step and the file; resume by calling `train` again.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if dist_info()[2] > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info()[1])  # under torchrun: one GPU per local rank
    # fork the global RNG: the caller's RNG state is unchanged when train returns
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _train(model, loss_fn, data, config, out, val_data=val_data, device=device,
                      resume=resume, progress=progress, extra=extra, metrics_fn=metrics_fn,
                      stop_after=stop_after)


def _train(model, loss_fn, data, config, out, *, val_data, device, resume, progress, extra,
           metrics_fn, stop_after) -> TrainResult:
    started = time.monotonic()  # the budget (config.minutes) counts from here, setup included
    deadline = started + 60.0 * config.minutes if config.minutes is not None else None
    rank, world, distributed = _setup_distributed(device)
    model.to(device)
    net = model
    if distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    use_amp = bool(config.amp) and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    out = Path(out) if out is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    step, history = 0, []
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        check_resume(state, config, extra, world, ckpt_path)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit this model/optimizer "
                                  f"({type(err).__name__}: {str(err)[:300]})") from err
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        step, history = int(state["step"]), list(state.get("history", []))

    val_src = val_data if val_data is not None else validation_source(data)
    val_batches = [val_src.batch(k, 0, device) for k in range(config.val_batches)] \
        if val_src is not None and config.val_batches > 0 else []

    def checkpoint():
        if ckpt_path is None or rank != 0:
            return None
        return save_checkpoint(ckpt_path, {
            "format": FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "step": step, "config": asdict(config),
            "extra": extra or {}, "history": history, "world_size": world,
        })

    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = None
    if out is not None and rank == 0:
        # the log mirrors the history: rewritten on every start, so a resumed run drops the
        # entries logged after its checkpoint and a fresh run (resume=False) starts a new log
        log = open(out / "log.jsonl", "w")
        for record in history:
            log.write(json.dumps(record) + "\n")
        log.flush()
    bar = tqdm(total=config.steps, initial=step, disable=not show_progress(progress) or rank != 0,
               desc="train", dynamic_ncols=True)
    net.train()
    # wall-clock time in the history is cumulative over resumed runs
    t0 = time.time() - (history[-1]["time"] if history and "time" in history[-1] else 0.0)
    ran, last_loss, stopped = 0, float("nan"), None
    try:
        with StopSignals() as stopper:  # SIGINT/SIGTERM: checkpoint, then TrainingInterrupted
            while step < config.steps:
                signum = _stop_requested(stopper, distributed, device)
                if signum:  # rank 0 writes the checkpoint, every rank stops at this step
                    raise TrainingInterrupted(signum, step,
                                              checkpoint() if rank == 0 else ckpt_path)
                if stop_after is not None and ran >= stop_after:
                    checkpoint()
                    stopped = "stop_after"
                    break
                if deadline is not None and _past(deadline, distributed, device):
                    checkpoint()
                    stopped = "budget"
                    break
                last_loss = _step(net, model, loss_fn, data.batch(step, rank, device), opt, sched,
                                  scaler, config, step, rank, device, use_amp, amp_dtype)
                step += 1
                ran += 1
                bar.update(1)
                record = None
                if step % config.log_every == 0 or step == config.steps:
                    record = {"step": step, "loss": last_loss, "lr": sched.get_last_lr()[0],
                              "time": time.time() - t0}
                if val_batches and (step % config.val_every == 0 or step == config.steps):
                    record = record or {"step": step, "loss": last_loss,
                                        "lr": sched.get_last_lr()[0], "time": time.time() - t0}
                    record["val_loss"] = evaluate(model, loss_fn, val_batches)
                    if metrics_fn is not None and rank == 0:
                        record.update(metrics_fn(model))
                if record is not None:
                    history.append(record)
                    bar.set_postfix(loss=f"{last_loss:.2e}", **(
                        {"val": f"{record['val_loss']:.2e}"} if "val_loss" in record else {}))
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                if step % config.ckpt_every == 0 or step == config.steps:
                    checkpoint()
    finally:
        bar.close()
        if log is not None:
            log.close()
    written = ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None
    return TrainResult(model=model, step=step, history=history, checkpoint=written,
                       stopped=stopped if step < config.steps else None,
                       seconds=time.monotonic() - started)


def _step(net, model, loss_fn, batch, opt, sched, scaler, config, step, rank, device, use_amp,
          amp_dtype) -> float:
    """One optimizer step on `batch`; returns the loss."""
    _seed_step(step_seed(config.seed, step, rank, MODEL), device)  # dropout etc.
    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        loss = loss_fn(net, batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {float(loss)} at step {step}")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return float(loss.detach())


def _stop_requested(stopper: StopSignals, distributed: bool, device) -> int:
    """The signal number that asked to stop (0: none). Under DDP every rank stops at the same
    step: the largest signal number over the ranks wins (one small all-reduce per step)."""
    signum = int(stopper.received or 0)
    if distributed:
        flag = torch.tensor([signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())
    return signum


def _past(deadline: float, distributed: bool, device) -> bool:
    """Whether the wall-clock budget is spent; under DDP rank 0's clock decides for all."""
    flag = time.monotonic() >= deadline
    if distributed:
        t = torch.tensor([int(flag)], device=device)
        dist.broadcast(t, src=0)
        flag = bool(t.item())
    return flag


def validation_source(data, offset: int = 10_000):
    """The source of `data`'s validation batches: the same kind of data with the seed shifted by
    `offset` (None when the source cannot be reseeded)."""
    return data.shifted(offset) if hasattr(data, "shifted") else None
