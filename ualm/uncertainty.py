"""Uncertainty maps from the guided diffusion model: frames in ADU -> φ -> K samples of Ψ ->
per-pixel mean, variance and standard deviation, in the units of `kde(normalize="peak")` (one
isolated emitter peaks at 1), the units of `kde_moments`' MCMC maps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr

from .calibration import Conformal, apply_conformal, detected_counts, nearest_k, scaled_interval
from .detect import evaluate_kdes
from .diffusion import condition, schedule, step_path
from .sampling import SAMPLERS, Sampler, get_sampler, sample_with_path
from .models.deepstorm import DeepSTORM
from .models.unet import UNet
from .pretrained import load, stored_calibration
from .seeding import CHAINS, step_seed


@dataclass
class SampleResult:
    """K samples per frame of the KDE posterior surrogate p_Ψ(y | φ(x)).

    samples: (F, K, uH, uW) in KDE units; yhat: φ(x), (F, uH, uW); info: how they were drawn
    (sampler, steps, network evaluations per sample, seed, seconds)."""

    samples: torch.Tensor
    yhat: torch.Tensor
    info: dict = field(default_factory=dict)
    path: torch.Tensor | None = None  # ŷ_0 after every step (F, K, steps, uH, uW) if kept
    conformal: Conformal | None = None  # the calibration applied to .samples, if any
    counts: torch.Tensor | None = None  # emitters detected in ŷ per frame: the calibration class

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

    @property
    def scale(self) -> torch.Tensor | None:
        """The calibration's λ per frame (F,) at CALIBRATED_LEVEL, the one applied to .samples."""
        return None if self.conformal is None else self.conformal.scale(self.counts, CALIBRATED_LEVEL)

    def raw(self) -> torch.Tensor:
        """The samples as the sampler drew them (before the conformal scale, if one was applied)."""
        if self.conformal is None:
            return self.samples
        lam = self.scale.to(self.samples.device, self.samples.dtype)[:, None, None, None]
        mean = self.samples.mean(1, keepdim=True)
        return mean + (self.samples - mean) / lam

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel central interval (lo, hi) at `level`: the Gaussian prediction interval of the
        raw samples, scaled by the calibration's λ at that level when one was applied."""
        lam = None if self.conformal is None else self.conformal.scale(self.counts, level)
        return scaled_interval(self.raw(), level, lam)


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
    if x.shape[0] == 0:
        raise ValueError("frames is an empty batch (0 frames): give at least one frame")
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("frames contain NaN or infinite values")
    return x, single


def _eval_steps(settings: dict, T: int) -> list:
    """The steps t at which a sampler with these settings evaluates the network."""
    return step_path(settings.get("t0") or T, settings["method"], settings.get("steps"))[:-1]


def evals_per_sample(sampler, T: int = 100, **overrides) -> int:
    """Network evaluations per sample of `sampler` (a `Sampler` or a name of SAMPLERS) with
    `overrides`."""
    return len(_eval_steps(get_sampler(sampler).settings(**overrides), T))


DEFAULT_PSI = "diffusion_v"  # cosine schedule (reaches noise), v-prediction; its calibration is stored with it
CALIBRATED_LEVEL = 0.9  # the level whose conformal scale is applied to the samples (and so to .std())


def _default_calibration(sampler, overrides) -> tuple[str, dict, dict | None]:
    """The sampler, its settings and the stored calibration for the bundled networks."""
    stored = stored_calibration(DEFAULT_PSI)
    if sampler is None:
        sampler, overrides = (stored["sampler"], {**stored["overrides"], **overrides}) if stored \
            else ("ancestral", overrides)
    s = get_sampler(sampler)
    fits = stored is not None and stored["sampler"] == s.name and \
        SAMPLERS[stored["sampler"]].settings(**stored["overrides"]) == s.settings(**overrides)
    return sampler, overrides, stored if fits else None


def stored_conformal(stored: dict, n_samples: int) -> Conformal:
    """The stored calibration fitted with the K nearest to n_samples (`nearest_k`): the stored
    one holds a `Conformal` per K, fitted on the first K of the same calibration samples."""
    by_k = stored["conformal"]
    return Conformal.from_dict(by_k[str(nearest_k(by_k, n_samples))])


def uncertainty_map(frames, psi=None, phi=None, n_samples: int = 32, sampler: str | Sampler | None = None, *,
                    calibrate: bool | Conformal | None = None, seed: int = 0, first_frame: int = 0,
                    batch_size: int | None = None, progress: bool = True, shape=(20, 20), keep_path: bool = False,
                    channels_last: bool | None = None, **overrides) -> SampleResult:
    """One call from camera frames to samples and their per-pixel moments.

    frames: (F, H, W) or (H, W) in ADU. psi, phi: the networks (default: the bundled
    DEFAULT_PSI and "deepstorm_quick"). sampler: a `ualm.sampling.Sampler` or its name in `SAMPLERS`;
    default: the one the bundled calibration was fitted with (for the bundled networks), else
    "ancestral" on a schedule that reaches noise and "ddim" on the paper's. `overrides` (t0,
    steps, eta, clip) change its settings. n_samples K >= 2. Same seed, same samples, whatever
    `batch_size`; frame f draws as frame first_frame + f would (a part of a batch of frames
    gets the chains the whole batch would give it). keep_path: also keep the network's ŷ_0
    after every step (`.path`). channels_last: Ψ's memory layout while sampling (default: channels
    last on the CPU, where it is faster; `ualm.sampling.channels_last_layout`).

    calibrate: None applies the conformal calibration stored with the bundled weights when
    both networks are the bundled ones and the sampler is the one it was fitted with (else the
    samples stay raw); True requires it; False keeps the raw samples; a `Conformal` applies that
    one. The stored one is the `Conformal` fitted with the number of samples nearest
    n_samples (`stored_conformal`). A calibrated result's samples are spread about their mean by
    λ (at CALIBRATED_LEVEL, per class of emitters detected in ŷ), so .std() is the calibrated std; .raw() undoes it
    and .interval(level) uses the calibrated λ of each level.
    Returns a SampleResult: .samples (F, K, uH, uW), .mean(), .var(), .std(), .yhat.
    """
    bundled = psi is None and phi is None
    stored = None
    if bundled:
        sampler, overrides, stored = _default_calibration(sampler, overrides)
    elif sampler is None:
        sampler = "ancestral" if isinstance(psi, UNet) and psi.config.schedule != "paper" else "ddim"
    sampler = get_sampler(sampler)  # a Sampler, or a ValueError naming the registry
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 for a variance, got {n_samples!r}")
    if not isinstance(first_frame, int) or first_frame < 0:
        raise ValueError(f"first_frame must be an int >= 0, got {first_frame!r}")
    if isinstance(calibrate, Conformal):
        conformal = calibrate
    elif calibrate is False:
        conformal = None
    elif calibrate in (None, True):
        conformal = stored_conformal(stored, n_samples) if stored else None
        if calibrate is True and conformal is None:
            raise ValueError("no stored calibration fits this call: it needs the bundled networks (psi and phi "
                             "left None) and the sampler the calibration was fitted with; pass a Conformal "
                             "(ualm.calibration.fit_conformal) for other networks")
    else:
        raise TypeError(f"calibrate must be None, True, False or a Conformal, got {type(calibrate).__name__}")
    x, _ = _frames(frames, shape)
    psi = psi if psi is not None else load(DEFAULT_PSI)
    phi = phi if phi is not None else load("deepstorm_quick")
    if not isinstance(psi, UNet):
        raise TypeError(f"psi must be the diffusion U-Net Ψ (ualm.models.unet.UNet), got {type(psi).__name__}")
    if not isinstance(phi, DeepSTORM):
        raise TypeError(f"phi must be the DeepSTORM network φ, got {type(phi).__name__}")
    device = next(psi.parameters()).device
    x = x.to(device)
    settings = sampler.settings(**overrides)
    sched = schedule(psi.config.schedule)
    t_start = time.perf_counter()
    with torch.no_grad():
        yhat = phi.predict(x)
        cond = condition(phi, x, psi.config.cond, yhat=yhat.to(device))
    samples, path = sample_with_path(psi, cond, sched, n_samples, seed=seed, first_frame=first_frame,
                                     batch_size=batch_size, channels_last=channels_last,
                                     progress=progress, keep_path=keep_path, **settings)
    seconds = time.perf_counter() - t_start
    t0 = settings.get("t0") or sched.T
    path_t = _eval_steps(settings, sched.T)
    info = {"sampler": sampler.name, "label": sampler.label, **settings, "t0": t0,
            "evals_per_sample": len(path_t), "path_t": path_t, "n_samples": n_samples, "seed": seed,
            "seconds": seconds, "calibrated": conformal is not None}
    counts = None
    if conformal is not None:
        counts = detected_counts(yhat)
        samples = apply_conformal(samples, conformal, counts, CALIBRATED_LEVEL)
        info["seconds"] = time.perf_counter() - t_start
    return SampleResult(samples=samples, yhat=yhat, info=info, path=path, conformal=conformal, counts=counts)


def tiled_map(frames, n_samples: int = 32, *, tile: int = 20, overlap: int = 4, seed: int = 0, batch: int = 16,
              progress: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`uncertainty_map` on frames larger than the networks' patches (F, H, W) or (H, W), in the
    networks' camera units (`ualm.localize.to_reference`): overlapping tiles stitched by
    `ualm.tiles.tiled_moments`. Returns the mean and variance maps (F, uH, uW). Each batch of
    tiles draws its chains from seed + its first tile's index, so no two tiles share noise."""
    from .tiles import tiled_moments

    done = [0]

    def fn(tiles):
        res = uncertainty_map(tiles, n_samples=n_samples, seed=seed + done[0], progress=False,
                              shape=(tile, tile), **kwargs)
        done[0] += len(tiles)
        return res.mean(), res.var()
    return tiled_moments(frames, fn, tile=tile, overlap=overlap, batch=batch, progress=progress)


# ----------------------------------------------------------------------------- baselines

def _phi_list(phis) -> list:
    phis = list(phis) if isinstance(phis, (list, tuple)) else [phis]
    for p in phis:
        if not isinstance(p, DeepSTORM):
            raise TypeError(f"expected DeepSTORM networks φ, got {type(p).__name__}")
    return phis


def mc_dropout_map(frames, phi: DeepSTORM, n_samples: int = 32, *, seed: int = 0,
                   shape=(20, 20)) -> SampleResult:
    """Monte-Carlo dropout (Gal & Ghahramani 2016): K passes of φ with its dropout layers on.
    φ must have been trained with dropout > 0. Pass k draws its masks from
    step_seed(seed, k, stream=CHAINS), so the same seed and frames give the same samples; the
    global RNG is left untouched. Returns a SampleResult; .yhat is φ in eval mode."""
    (phi,) = _phi_list(phi)
    if phi.config.dropout <= 0:
        raise ValueError("MC dropout needs a φ trained with dropout > 0; this one has dropout = 0")
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 for a variance, got {n_samples!r}")
    x, _ = _frames(frames, shape)
    dev = next(phi.parameters()).device
    x = x.to(dev)
    was_training = phi.training
    t_start = time.perf_counter()
    passes = []
    try:
        with torch.no_grad():
            yhat = phi.predict(x)
            phi.enable_dropout()
            for k in range(n_samples):
                with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                    torch.manual_seed(step_seed(seed, k, 0, CHAINS))
                    passes.append(phi(x))
    finally:
        phi.train(was_training)
    info = {"sampler": "mc_dropout", "dropout": phi.config.dropout, "evals_per_sample": 1,
            "n_samples": n_samples, "seed": seed, "seconds": time.perf_counter() - t_start}
    return SampleResult(samples=torch.stack(passes, 1), yhat=yhat, info=info)


def ensemble_map(frames, phis, shape=(20, 20)) -> SampleResult:
    """A deep ensemble (Lakshminarayanan et al. 2017): one φ(x) per member, trained from different
    seeds, as K = len(phis) samples. .yhat is the first member's estimate."""
    phis = _phi_list(phis)
    if len(phis) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(phis)}")
    x, _ = _frames(frames, shape)
    t_start = time.perf_counter()
    samples = torch.stack([p.predict(x).to(x.device) for p in phis], 1)
    info = {"sampler": "ensemble", "members": len(phis), "evals_per_sample": 1,
            "n_samples": len(phis), "seconds": time.perf_counter() - t_start}
    return SampleResult(samples=samples, yhat=samples[:, 0], info=info)


# ----------------------------------------------------------------------------- fidelity of a sampler

SIGNIFICANT = 0.05  # pixels where the truth or the estimate exceeds 5 % of one emitter's peak


def significant_pixels(y: torch.Tensor, estimate: torch.Tensor, level: float = SIGNIFICANT) -> torch.Tensor:
    """Bool mask of the pixels where the truth or the estimate exceeds `level` (KDE units)."""
    return (y > level) | (estimate > level)


@dataclass(frozen=True)
class Fidelity:
    """How well K samples per frame reconstruct the truth, pooled over frames.

    mse: mean squared error of the estimate (sample mean, or ŷ) to the true KDE, over all
    pixels; precision/recall/jaccard: LoG detection on the estimate, one-to-one matching;
    spearman: rank correlation of the per-pixel std with the per-pixel error |mean − y| over the
    significant pixels; mean_std: the mean per-pixel std over those pixels (KDE units)."""

    method: str
    n_frames: int
    n_samples: int
    evals: int
    seconds_per_frame: float
    mse: float
    precision: float
    recall: float
    jaccard: float
    spearman: float
    mean_std: float

    def as_row(self) -> dict:
        return dict(self.__dict__)


def fidelity(method: str, estimate: torch.Tensor, y: torch.Tensor, theta, mask, std=None,
             n_samples: int = 0, evals: int = 0, seconds: float = float("nan")) -> Fidelity:
    """Score an estimate (F, uH, uW) of the true KDEs y, with its per-pixel std when it has one."""
    est, y = estimate.detach().float().cpu(), y.detach().float().cpu()
    det = evaluate_kdes(est, theta, mask)
    rho = mean_std = float("nan")
    if std is not None:
        sig = significant_pixels(y, est)
        s = std.detach().float().cpu()[sig]
        err = (est - y).abs()[sig]
        rho = float(spearmanr(s.numpy(), err.numpy()).statistic) if len(s) > 2 else float("nan")
        mean_std = float(s.mean())
    return Fidelity(method=method, n_frames=len(y), n_samples=n_samples, evals=evals,
                    seconds_per_frame=seconds / max(len(y), 1), mse=float(((est - y) ** 2).mean()),
                    precision=det.precision, recall=det.recall, jaccard=det.jaccard,
                    spearman=rho, mean_std=mean_std)


# the samplers compared in chapter 5 and benchmarks/diffusion.py, by label
SAMPLER_TABLE: dict[str, Sampler] = {s.label: s for s in (
    SAMPLERS["paper"],
    SAMPLERS["guided"],
    SAMPLERS["guided"].variant("guided start, t0 = 25", "t₀ = 25", t0=25),
    # t0 = 10: the largest start whose sample mean beat ŷ on validation frames by 2 %
    # (benchmarks/diffusion_t0.py, results/diffusion_t0.json; not the held-out frames)
    SAMPLERS["guided"].variant("guided start, t0 = 10", "t₀ = 10", t0=10),
    SAMPLERS["ddim"],
    SAMPLERS["ddim"].variant("DDIM 10 steps, η = 0", "DDIM η = 0", eta=0.0),
)}
