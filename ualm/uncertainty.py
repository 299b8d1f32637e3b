"""Uncertainty maps from the guided diffusion model: frames in ADU -> φ -> K samples of Ψ ->
per-pixel mean, variance and standard deviation, in the units of `kde(normalize="peak")` (one
isolated emitter peaks at 1), the units of `kde_moments`' MCMC maps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .diffusion import SAMPLERS, condition, sample, schedule


@dataclass
class SampleResult:
    """K samples per frame of the KDE posterior surrogate p_Ψ(y | φ(x)).

    samples: (F, K, uH, uW) in KDE units; yhat: φ(x), (F, uH, uW); info: how they were drawn
    (sampler, steps, network evaluations per sample, seed, seconds)."""

    samples: torch.Tensor
    yhat: torch.Tensor
    info: dict = field(default_factory=dict)

    def mean(self) -> torch.Tensor:
        """Per-pixel sample mean (F, uH, uW)."""
        return self.samples.mean(1)

    def var(self) -> torch.Tensor:
        """Per-pixel sample variance with the K − 1 denominator (F, uH, uW)."""
        return self.samples.var(1, unbiased=True)

    def std(self) -> torch.Tensor:
        return self.var().sqrt()

    def __len__(self) -> int:
        return self.samples.shape[0]


def _frames(frames, expected_hw) -> tuple[torch.Tensor, bool]:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a tensor or array of camera frames in ADU, got {type(frames).__name__}")
    single = frames.ndim == 2
    x = frames[None] if single else frames
    if x.ndim != 3 or (expected_hw is not None and tuple(x.shape[1:]) != tuple(expected_hw)):
        want = f"(F, {expected_hw[0]}, {expected_hw[1]})" if expected_hw else "(F, H, W)"
        raise ValueError(f"frames must have shape {want} or one frame (H, W), got {tuple(frames.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("frames contain NaN or infinite values")
    return x, single


def uncertainty_map(frames, psi=None, phi=None, n_samples: int = 32, sampler: str = "ddim", *,
                    seed: int = 0, batch_size: int = 256, progress: bool = True, shape=(20, 20),
                    **overrides) -> SampleResult:
    """One call from camera frames to samples and their per-pixel moments.

    frames: (F, H, W) or (H, W) in ADU. psi, phi: the networks (default: the bundled
    "diffusion_quick" and "deepstorm_quick"). sampler: a name from `ualm.diffusion.SAMPLERS`
    ("paper", "guided", "ddim"); `overrides` (t0, steps, eta, clip) change its settings.
    n_samples K >= 2. Same seed, same samples, whatever `batch_size`.
    Returns a SampleResult: .samples (F, K, uH, uW), .mean(), .var(), .std(), .yhat.
    """
    import time

    from .pretrained import load
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 for a variance, got {n_samples!r}")
    x, _ = _frames(frames, shape)
    psi = psi if psi is not None else load("diffusion_quick")
    phi = phi if phi is not None else load("deepstorm_quick")
    device = next(psi.parameters()).device
    x = x.to(device)
    settings = {**SAMPLERS[sampler], **overrides}
    sched = schedule(psi.config.schedule)
    t_start = time.perf_counter()
    with torch.no_grad():
        yhat = phi.predict(x)
        cond = condition(phi, x, psi.config.cond, yhat=yhat.to(device))
    samples = sample(psi, cond, sched, n_samples, seed=seed, batch_size=batch_size,
                     progress=progress, **settings)
    seconds = time.perf_counter() - t_start
    t0 = settings.get("t0") or sched.T
    evals = settings.get("steps") if settings["method"] == "ddim" else t0
    info = {"sampler": sampler, **settings, "t0": t0, "evals_per_sample": int(evals),
            "n_samples": n_samples, "seed": seed, "seconds": seconds}
    return SampleResult(samples=samples, yhat=yhat, info=info)
