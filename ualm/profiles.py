"""Training profiles: the settings of each network in the 'quick' profile (CPU, bundled
weights), the 'gpu' profile (the bundled architectures trained longer on a GPU, stopped by a
wall-clock budget) and the 'full' profile (the paper's scale: 30k steps of a wider φ, 100k of
the paper's U-Net; hours on a T4, so it runs in budgeted pieces that resume), and the call that
trains each with the generic loop of `ualm.train`. The command line
`python -m ualm train deepstorm|diffusion` calls `train_deepstorm` or `train_diffusion`."""
from __future__ import annotations

import os

import torch

from .device import TRAIN_MINUTES, pick_device, runs_dir, smoke  # noqa: F401 (re-exported)
from .diffusion import DiffusionLoss, DiffusionSource, schedule
from .models.deepstorm import DeepSTORM, DeepSTORMConfig, deepstorm_loss, training_sim_config
from .models.unet import PRESETS, UNet, UNetConfig
from .pretrained import load, load_deepstorm
from .sources import SimSource
from .train import TrainConfig, evaluate, train, validation_source

__all__ = ["deepstorm_settings", "train_deepstorm", "diffusion_settings", "train_diffusion",
           "smoke", "runs_dir", "validation_losses", "best_trained", "TRAIN_MINUTES"]

def env_overrides() -> dict:
    """Training overrides from the environment; explicit overrides win. UALM_TRAIN_STEPS caps the
    number of steps, UALM_TRAIN_MINUTES sets the wall-clock budget of a call, UALM_SMOKE=1 makes
    the run tiny (2 steps of batch 2, one validation batch)."""
    over = {}
    if smoke():
        over.update(steps=2, batch_size=2, warmup=1, val_batches=1, val_every=1, ckpt_every=1)
    steps = os.environ.get("UALM_TRAIN_STEPS")
    if steps:
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"UALM_TRAIN_STEPS must be a positive integer, got {steps!r}")
        over["steps"] = int(steps)
    minutes = os.environ.get("UALM_TRAIN_MINUTES")
    if minutes:
        try:
            over["minutes"] = float(minutes)
        except ValueError:
            raise ValueError(f"UALM_TRAIN_MINUTES must be a number, got {minutes!r}") from None
    return over


def deepstorm_settings(profile: str) -> dict:
    """Model ('model': DeepSTORMConfig) and optimisation ('train': TrainConfig) settings of φ."""
    if profile == "quick":
        return dict(model=DeepSTORMConfig(width=32, hr_width=16),
                    train=TrainConfig(steps=1600, batch_size=16, lr=2e-3, warmup=50,
                                      val_every=100, val_batches=4, ckpt_every=50))
    if profile == "gpu":  # the full-size φ, a third of the full run, stopped by the budget
        return dict(model=DeepSTORMConfig(width=64, hr_width=32),
                    train=TrainConfig(steps=10000, batch_size=64, lr=1e-3, warmup=300,
                                      val_every=500, val_batches=16, ckpt_every=500,
                                      minutes=TRAIN_MINUTES))
    if profile == "full":
        return dict(model=DeepSTORMConfig(width=64, hr_width=32),
                    train=TrainConfig(steps=30000, batch_size=64, lr=1e-3, warmup=500,
                                      val_every=1000, val_batches=16, ckpt_every=1000,
                                      minutes=TRAIN_MINUTES))
    raise ValueError(f"profile must be 'quick', 'gpu' or 'full', got {profile!r}")


def train_deepstorm(profile: str = "quick", out=None, device=None, model_overrides=None,
                    train_overrides=None, sim_config=None, progress=True, resume=True,
                    stop_after=None):
    """Train φ on frames of `sim_config` (default `training_sim_config()`) with the settings of
    `profile`, changed by the overrides. Returns (model, TrainResult)."""
    s = deepstorm_settings(profile)
    mcfg = DeepSTORMConfig.from_dict({**s["model"].to_dict(), **(model_overrides or {})})
    tcfg = s["train"].replace(**{**env_overrides(), **(train_overrides or {})})
    sim = sim_config or training_sim_config()
    device = pick_device(device)
    with torch.random.fork_rng(devices=[]):  # initial weights from tcfg.seed, global RNG untouched
        torch.random.default_generator.manual_seed(tcfg.seed)
        model = DeepSTORM(mcfg)
    data = SimSource(sim, tcfg.batch_size, seed=tcfg.seed)
    result = train(model, deepstorm_loss, data, tcfg, out, device=device, progress=progress,
                   resume=resume, stop_after=stop_after,
                   extra={"model": "deepstorm", "model_config": mcfg.to_dict(), "profile": profile})
    return model, result


def diffusion_settings(profile: str) -> dict:
    """Ψ's 'quick' (2-core CPU, the bundled weights), 'gpu' (the same U-Net, a budgeted GPU run)
    and 'full' (the paper's U-Net, 100k steps) runs."""
    if profile == "quick":
        return dict(model=PRESETS["small"],
                    train=TrainConfig(steps=8000, batch_size=16, lr=1e-3, warmup=100,
                                      val_every=200, val_batches=8, ckpt_every=100))
    if profile == "gpu":  # the bundled architecture, bigger batches, stopped by the budget
        return dict(model=PRESETS["small"],
                    train=TrainConfig(steps=12000, batch_size=64, lr=1e-3, warmup=200,
                                      val_every=500, val_batches=8, ckpt_every=500,
                                      minutes=TRAIN_MINUTES))
    if profile == "full":
        return dict(model=PRESETS["paper"],
                    train=TrainConfig(steps=100_000, batch_size=32, lr=1e-4, warmup=1000,
                                      val_every=2000, val_batches=16, ckpt_every=1000,
                                      minutes=TRAIN_MINUTES))
    raise ValueError(f"profile must be 'quick', 'gpu' or 'full', got {profile!r}")


def train_diffusion(profile: str = "quick", out=None, device=None, model_overrides=None,
                    train_overrides=None, phi_name: str = "deepstorm_quick", progress=True,
                    resume=True, stop_after=None):
    """Train Ψ on pairs (y, φ(x)) of `training_sim_config()` frames, φ frozen (bundled weights
    `phi_name`), with the settings of `profile`. Returns (model, TrainResult)."""
    s = diffusion_settings(profile)
    mcfg = UNetConfig.from_dict({**s["model"].to_dict(), **(model_overrides or {})})
    tcfg = s["train"].replace(**{**env_overrides(), **(train_overrides or {})})
    device = pick_device(device)
    with torch.random.fork_rng(devices=[]):  # initial weights from tcfg.seed, global RNG untouched
        torch.random.default_generator.manual_seed(tcfg.seed)
        model = UNet(mcfg)
    phi = load_deepstorm(phi_name, device=device)
    sched = schedule(mcfg.schedule)
    data = DiffusionSource(phi, training_sim_config(), sched, tcfg.batch_size, tcfg.seed, mcfg.cond)
    result = train(model, DiffusionLoss(sched), data, tcfg, out,
                   device=device, progress=progress, resume=resume, stop_after=stop_after,
                   extra={"model": "unet", "model_config": mcfg.to_dict(), "profile": profile,
                          "phi": phi_name})
    return model, result


def validation_losses(models: dict, loss_fn, source, n_batches: int = 8, device=None) -> dict:
    """The mean loss of each of `models` ({name: module}) on the same `n_batches` validation
    batches of the training source `source` (those `ualm.train.train` validates on), so that
    bundled and newly trained weights can be compared."""
    device = pick_device(device)
    val = validation_source(source)
    batches = [val.batch(k, 0, device) for k in range(n_batches)]
    return {name: evaluate(m, loss_fn, batches) for name, m in models.items()}



def best_trained(kind: str, profile: str, out, device=None, bundled: str | None = None,
                 progress: bool = True):
    """Train φ (kind "deepstorm") or Ψ ("diffusion") in `profile` for one budgeted call (resuming
    from `out`), then return the better of it and the bundled weights on the run's own
    validation batches, with a report: {"used": "trained" or "bundled", "val_loss": {...},
    "step", "steps", "stopped", "seconds", "history", "out", "bundled"}."""
    if kind not in ("deepstorm", "diffusion"):
        raise ValueError(f"kind must be 'deepstorm' or 'diffusion', got {kind!r}")
    bundled = bundled or f"{kind}_quick"
    device = pick_device(device)
    if kind == "deepstorm":
        trained, result = train_deepstorm(profile, out=out, device=device, progress=progress)
        settings = deepstorm_settings(profile)["train"].replace(**env_overrides())
        source, loss = SimSource(training_sim_config(), settings.batch_size, settings.seed), \
            deepstorm_loss
    else:
        trained, result = train_diffusion(profile, out=out, device=device, progress=progress)
        settings = diffusion_settings(profile)["train"].replace(**env_overrides())
        sched = schedule(trained.config.schedule)
        phi = load_deepstorm("deepstorm_quick", device=device)
        source = DiffusionSource(phi, training_sim_config(), sched, settings.batch_size,
                                 settings.seed, trained.config.cond)
        loss = DiffusionLoss(sched)
    trained.eval()
    reference = load(bundled, device=device)
    losses = validation_losses({"trained": trained, "bundled": reference}, loss, source,
                               n_batches=max(settings.val_batches, 1), device=device)
    used = "trained" if losses["trained"] < losses["bundled"] else "bundled"
    report = {"used": used, "val_loss": losses, "step": result.step, "steps": settings.steps,
              "stopped": result.stopped, "seconds": result.seconds, "history": result.history,
              "out": str(out), "bundled": bundled}
    return (trained if used == "trained" else reference), report


def report_line(report: dict) -> str:
    """What `best_trained` did, in two lines for a reader."""
    loss = report["val_loss"]
    done = (f"budget spent at step {report['step']} of {report['steps']}: run again to go on "
            f"(it resumes from {report['out']})" if report["stopped"] == "budget"
            else f"step {report['step']} of {report['steps']}")
    return (f"trained {report['seconds'] / 60:.1f} min here, {done}\n"
            f"validation loss: this run {loss['trained']:.3g}, bundled {report['bundled']} "
            f"{loss['bundled']:.3g}: using the {report['used']} weights")
