"""Training profiles: the settings of each network in the 'quick' profile (CPU, bundled
weights) and the 'full' profile (GPU, paper scale), and the call that trains it with the
generic loop of `ualm.train`. The command line `python -m ualm train deepstorm|diffusion` calls
`train_deepstorm` or `train_diffusion`."""
from __future__ import annotations

import os

import torch

from .device import pick_device
from .diffusion import DiffusionLoss, DiffusionSource, schedule
from .models.deepstorm import DeepSTORM, DeepSTORMConfig, deepstorm_loss, training_sim_config
from .models.unet import PRESETS, UNet, UNetConfig
from .pretrained import load_deepstorm
from .train import SimSource, TrainConfig, train

__all__ = ["deepstorm_settings", "train_deepstorm", "diffusion_settings", "train_diffusion"]


def env_overrides() -> dict:
    """Training overrides from the environment: UALM_TRAIN_STEPS caps the number of steps (for
    smoke runs of the full profile, e.g. benchmarks/gpu_check.sh); explicit overrides win."""
    steps = os.environ.get("UALM_TRAIN_STEPS")
    if not steps:
        return {}
    if not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"UALM_TRAIN_STEPS must be a positive integer, got {steps!r}")
    return {"steps": int(steps)}


def deepstorm_settings(profile: str) -> dict:
    """Model ('model': DeepSTORMConfig) and optimisation ('train': TrainConfig) settings of φ."""
    if profile == "quick":
        return dict(model=DeepSTORMConfig(width=32, hr_width=16),
                    train=TrainConfig(steps=1600, batch_size=16, lr=2e-3, warmup=50,
                                      val_every=100, val_batches=4, ckpt_every=50))
    if profile == "full":
        return dict(model=DeepSTORMConfig(width=64, hr_width=32),
                    train=TrainConfig(steps=30000, batch_size=64, lr=1e-3, warmup=500,
                                      val_every=1000, val_batches=16, ckpt_every=1000))
    raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")


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
    """Ψ's 'quick' (2-core CPU, the bundled weights) and 'full' (GPU, the paper's U-Net) runs."""
    if profile == "quick":
        return dict(model=PRESETS["small"],
                    train=TrainConfig(steps=8000, batch_size=16, lr=1e-3, warmup=100,
                                      val_every=200, val_batches=8, ckpt_every=100))
    if profile == "full":
        return dict(model=PRESETS["paper"],
                    train=TrainConfig(steps=100_000, batch_size=32, lr=1e-4, warmup=1000,
                                      val_every=2000, val_batches=16, ckpt_every=1000))
    raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")


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
