"""Is a predictive distribution calibrated? Coverage of central intervals, reliability curves
and z-scores, per pixel of a KDE and per detected emitter.

Everything takes K samples per frame, (F, K, H, W) in KDE units (a `SampleResult`'s
`.samples`, MC-dropout passes or ensemble members), the true KDEs y (F, H, W), and a boolean
mask of the pixels to score (usually `significant_pixels(y, mean)`: most pixels of a sparse
frame are zero in the truth and in every sample, and would make any method look calibrated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import t as student_t

from .defaults import SIGMA_Y, UPSAMPLE
from .detect import TOLERANCE_KDE_PX, true_list, detect, match

LEVELS = (0.5, 0.8, 0.9, 0.95)  # nominal coverages reported in chapter 6
KINDS = ("gaussian", "quantile")


def _check(samples: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None):
    if samples.ndim != 4 or samples.shape[1] < 2:
        raise ValueError(f"samples must have shape (F, K, H, W) with K >= 2, got {tuple(samples.shape)}")
    if y.shape != samples.shape[:1] + samples.shape[2:]:
        raise ValueError(f"y must have shape {tuple(samples.shape[:1] + samples.shape[2:])}, got {tuple(y.shape)}")
    if mask is not None and mask.shape != y.shape:
        raise ValueError(f"mask must have the shape of y {tuple(y.shape)}, got {tuple(mask.shape)}")
    # a NaN is never inside an interval: it would be counted as a miss, silently
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y (the truth) contains NaN or infinite values")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or infinite values")
    return (samples.detach().double().cpu(), y.detach().double().cpu(),
            None if mask is None else mask.detach().bool().cpu())


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"a nominal coverage level must be in (0, 1), got {level}")
    return level


def central_interval(samples: torch.Tensor, level: float, kind: str = "gaussian"):
    """Per-pixel central interval (lo, hi), each (F, H, W), at nominal `level` from the K
    samples along dim 1.

    kind="gaussian": mean ± t_{K−1} · s · √(1 + 1/K), the prediction interval of one more draw
    from a Gaussian whose mean and variance are estimated from the K samples. Its coverage is
    exactly `level` when the truth is such a draw, for any K — a fair yardstick with K = 8.
    kind="quantile": the empirical quantiles of the K samples (linear interpolation). No
    Gaussian assumption (KDE values are ≥ 0 and skewed), but with few samples it covers less
    than nominal even for a perfect sampler: level · (K − 1)/(K + 1) (`expected_coverage`)."""
    level = _check_level(level)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if samples.ndim < 2 or samples.shape[1] < 2:
        raise ValueError(f"samples need K >= 2 along dim 1, got shape {tuple(samples.shape)}")
    s = samples.double()
    k = s.shape[1]
    if kind == "gaussian":
        half = interval_factor(level, k) * s.std(1)
        mean = s.mean(1)
        return mean - half, mean + half
    q = torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=s.dtype, device=s.device)
    lo, hi = torch.quantile(s, q, dim=1)
    return lo, hi


def interval_factor(level: float, k: int) -> float:
    """The half width of the Gaussian `central_interval` at `level` in units of the sample std
    of K samples: t_{K−1} quantile · √(1 + 1/K) (1.81 at 90 % and K = 16, → 1.645 as K → ∞).
    For maps that keep only a mean and a variance (e.g. `ualm.uncertainty.tiled_map`)."""
    level = _check_level(level)
    if int(k) < 2:
        raise ValueError(f"an interval needs K >= 2 samples, got K = {k}")
    return float(student_t.ppf(0.5 + level / 2, int(k) - 1)) * (1 + 1 / int(k)) ** 0.5


def scaled_interval(samples: torch.Tensor, level: float, scale=None):
    """The Gaussian `central_interval` at `level` with its half width times `scale` per frame
    ((F,) or None for 1): the calibrated interval of a `Conformal` scale."""
    lo, hi = central_interval(samples, level, "gaussian")
    if scale is None:
        return lo, hi
    lam = torch.as_tensor(scale, dtype=lo.dtype).to(lo.device)[:, None, None]
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    return mid - lam * half, mid + lam * half


def expected_coverage(level, k: int, kind: str = "gaussian"):
    """Coverage of `central_interval` when the truth is one more draw from the samples'
    distribution: `level` for kind="gaussian" (exact for Gaussian draws); about
    level · (K − 1)/(K + 1) for kind="quantile", exact for any continuous distribution when the
    quantile positions fall on order statistics (the j-th of K sorted draws, from 1, has
    expected CDF j/(K + 1)); between them the interpolation makes it approximate (within 0.02
    for Gaussian draws and K = 8)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return level if kind == "gaussian" else level * (k - 1) / (k + 1)


def coverage(samples, y, mask=None, levels=LEVELS, kind: str = "gaussian") -> np.ndarray:
    """Fraction of the masked pixels whose true value lies in the central interval, at each
    nominal level. A calibrated predictive gives coverage ≈ level; below it, the intervals are
    too narrow (overconfident)."""
    s, y, m = _check(samples, y, mask)
    out = []
    for level in levels:
        lo, hi = central_interval(s, level, kind)
        inside = (y >= lo) & (y <= hi)
        out.append(float(inside[m].double().mean()) if m is not None else float(inside.double().mean()))
    return np.asarray(out)


def reliability_curve(samples, y, mask=None, n_levels: int = 19, kind: str = "gaussian"):
    """(nominal levels, observed coverage) on an even grid in (0, 1): the reliability diagram
    of central intervals; a calibrated method lies on the diagonal."""
    levels = np.linspace(0, 1, n_levels + 2)[1:-1]
    return levels, coverage(samples, y, mask, levels, kind)


def zscores(y, mean, std, mask=None) -> torch.Tensor:
    """z = (y − mean) / std over the masked pixels with std > 0 (a 1-D tensor). For a calibrated
    Gaussian predictive z ~ N(0, 1): mean |z| ≈ 0.80 and std(z) ≈ 1; |z| larger means
    overconfident. Pixels with std = 0 (every sample identical) are left out; count them with
    `zero_std_fraction`."""
    y, mean, std = (torch.as_tensor(a).detach().double().cpu() for a in (y, mean, std))
    if not (y.shape == mean.shape == std.shape):
        raise ValueError(f"y, mean and std must have one shape, got {tuple(y.shape)}, "
                         f"{tuple(mean.shape)}, {tuple(std.shape)}")
    keep = std > 0
    if mask is not None:
        keep &= torch.as_tensor(mask).bool().cpu()
    return (y[keep] - mean[keep]) / std[keep]


def expected_abs_z(k: int) -> float:
    """E|z| for a calibrated Gaussian predictive summarised by K samples: z = (y − ȳ)/s is then
    √(1 + 1/K) times a Student t with K − 1 degrees of freedom, so E|z| = √(1 + 1/K) · E|t|
    (0.95 for K = 8, 0.83 for K = 32, → √(2/π) ≈ 0.80 as K → ∞)."""
    if int(k) < 3:
        raise ValueError(f"E|z| is finite for K >= 3 samples, got K = {k}")
    nu = int(k) - 1
    e_abs_t = 2 * math.sqrt(nu) * math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / (
        math.sqrt(math.pi) * (nu - 1))
    return math.sqrt(1 + 1 / int(k)) * e_abs_t


def expected_z_std(k: int) -> float:
    """Std of z for a calibrated Gaussian predictive summarised by K samples (as `expected_abs_z`):
    √(1 + 1/K) · √((K − 1)/(K − 3)), 1.25 for K = 8 and 1.05 for K = 32, not 1."""
    if int(k) < 4:
        raise ValueError(f"the std of z is finite for K >= 4 samples, got K = {k}")
    return math.sqrt((1 + 1 / int(k)) * (int(k) - 1) / (int(k) - 3))


def zero_std_fraction(std, mask=None) -> float:
    std = torch.as_tensor(std).detach().cpu()
    sel = std if mask is None else std[torch.as_tensor(mask).bool().cpu()]
    return float((sel == 0).double().mean()) if sel.numel() else float("nan")


@dataclass(frozen=True)
class Calibration:
    """Pixel-level calibration of K samples per frame against the truth, pooled over frames.
    coverage: observed coverage at each of `levels` (gaussian intervals); coverage_quantile:
    the same with empirical-quantile intervals; z_*: statistics of z over masked pixels with
    std > 0; zero_std: fraction of masked pixels where all samples agree exactly."""

    n_pixels: int
    levels: tuple
    coverage: tuple
    coverage_quantile: tuple
    mean_abs_z: float
    median_abs_z: float
    z_std: float
    zero_std: float

    def at(self, level: float) -> float:
        return self.coverage[self.levels.index(level)]

    def as_row(self) -> dict:
        row = {k: v for k, v in self.__dict__.items() if k not in ("levels", "coverage", "coverage_quantile")}
        row.update({f"coverage_{round(100 * lv)}": c for lv, c in zip(self.levels, self.coverage)})
        row.update({f"coverage_quantile_{round(100 * lv)}": c
                    for lv, c in zip(self.levels, self.coverage_quantile)})
        return row


def calibration(samples, y, mask=None, levels=LEVELS) -> Calibration:
    """Coverage (both kinds of interval) and z-statistics of samples (F, K, H, W) against y."""
    s, y_, m = _check(samples, y, mask)
    mean, std = s.mean(1), s.std(1)
    z = zscores(y_, mean, std, m)
    az = z.abs()
    return Calibration(
        n_pixels=int(m.sum()) if m is not None else y_.numel(), levels=tuple(levels),
        coverage=tuple(coverage(s, y_, m, levels, "gaussian").tolist()),
        coverage_quantile=tuple(coverage(s, y_, m, levels, "quantile").tolist()),
        mean_abs_z=float(az.mean()) if len(z) else float("nan"),
        median_abs_z=float(az.median()) if len(z) else float("nan"),
        z_std=float(z.std()) if len(z) > 1 else float("nan"), zero_std=zero_std_fraction(std, m))


# ----------------------------------------------------------------------------- per emitter

def position_spread(mean, samples, sigma_y: float = SIGMA_Y, tolerance: float = TOLERANCE_KDE_PX,
                    upsample: int = UPSAMPLE, **detect_kw):
    """Detection-level uncertainty of one frame: the emitters detected (LoG) in the sample mean
    (H, W), and for each the standard deviation of its position across the K samples (K, H, W),
    found as the nearest detection in each sample within `tolerance` KDE px.

    Returns (positions (n, 2), spread (n, 2) in low-res px per coordinate, hits (n,) = in how
    many samples it was found). spread is NaN where an emitter was found in fewer than 2."""
    pos = np.asarray(detect(mean, sigma_y=sigma_y, upsample=upsample, **detect_kw)).reshape(-1, 2)
    found = [[] for _ in range(len(pos))]
    for det in detect(samples, sigma_y=sigma_y, upsample=upsample, **detect_kw):
        det = np.asarray(det).reshape(-1, 2)
        if not len(det) or not len(pos):
            continue
        d = np.linalg.norm(pos[:, None] - det[None], axis=-1)
        j = d.argmin(1)
        for i in np.flatnonzero(d[np.arange(len(pos)), j] <= tolerance / upsample):
            found[i].append(det[j[i]])
    spread = np.full(pos.shape, np.nan)
    hits = np.array([len(f) for f in found], dtype=int)
    for i, f in enumerate(found):
        if len(f) >= 2:
            spread[i] = np.std(np.asarray(f), axis=0, ddof=1)
    return pos, spread, hits


def emitter_zscores(means, samples, theta, mask=None, sigma_y: float = SIGMA_Y,
                    tolerance: float = TOLERANCE_KDE_PX, upsample: int = UPSAMPLE) -> dict:
    """Per-emitter position z-scores over frames: detections in each sample mean matched one
    to one to the truth, their error divided by their spread across the samples (x and y).

    means (F, H, W), samples (F, K, H, W), theta (F, N, 2) in low-res px with mask (F, N).
    Returns arrays over the m matched emitters: 'error' (m, 2) detected − true in px, 'spread'
    (m, 2) in px, 'hits' (m,), 'frame' (m,) and 'emitter' (m,) (index among the frame's true
    emitters, mask applied); and 'z' (m', 2) for those with a finite, non-zero spread."""
    truths = true_list(theta, mask)
    parts = {k: [] for k in ("error", "spread", "hits", "frame", "emitter")}
    for f in range(len(truths)):
        pos, spread, h = position_spread(means[f], samples[f], sigma_y, tolerance, upsample)
        ip, it, _ = match(pos, truths[f], tolerance, upsample)
        for k, v in zip(parts, (pos[ip] - truths[f][it], spread[ip], h[ip], np.full(len(ip), f), it)):
            parts[k].append(v)
    out = {k: np.concatenate(v) if v else np.zeros((0, 2) if k in ("error", "spread") else 0)
           for k, v in parts.items()}
    spr = out["spread"]
    ok = np.isfinite(spr).all(1) & (spr > 0).all(1)
    out["z"] = out["error"][ok] / spr[ok]
    return out


# ----------------------------------------------------------------------------- conformal scales

# emitters detected in ŷ: observable at test time. (0, 1) apart, since one lone emitter's spread
# is not that of a crowded frame
CLASSES = ((0, 1), (2, 5), (6, 10), (11, 15), (16, None))


def detected_counts(yhat: torch.Tensor) -> torch.Tensor:
    """Emitters detected (LoG, `detect`) in each estimate ŷ (F, H, W): the class key of `Conformal`."""
    return torch.tensor([len(d) for d in detect(yhat.detach().float().cpu())], dtype=torch.long)


def class_index(counts: torch.Tensor, classes=CLASSES) -> torch.Tensor:
    """Index into `classes` ((lo, hi) inclusive, hi None = no bound) of each count."""
    out = torch.full(counts.shape, -1, dtype=torch.long)
    for i, (lo, hi) in enumerate(classes):
        out[(counts >= lo) & ((counts <= hi) if hi is not None else True)] = i
    if bool((out < 0).any()):
        raise ValueError(f"counts {counts[out < 0].tolist()} fall in no class of {classes}")
    return out


def interval_scores(samples: torch.Tensor, y: torch.Tensor, level: float) -> torch.Tensor:
    """Per pixel, |y − mean| over the half width of the raw Gaussian interval at `level`: the
    pixel is covered by the interval scaled by λ iff its score ≤ λ (0 where both are 0, inf where
    the samples agree but miss)."""
    lo, hi = central_interval(samples, level, "gaussian")
    half = (hi - lo) / 2
    err = (y.double().to(half.device) - (hi + lo) / 2).abs()
    score = err / half
    score[(half == 0) & (err == 0)] = 0.0
    score[(half == 0) & (err > 0)] = math.inf
    return score


def risk_control_scale(scores: list, level: float) -> float:
    """Conformal risk control (Angelopoulos et al. 2022) of the miss rate: `scores` holds one 1-D
    tensor of pixel scores per calibration frame; the loss of a frame at scale λ is the fraction
    of its pixels with score > λ (monotone, ≤ 1). Returns the smallest λ with
    n/(n+1) · mean loss + 1/(n+1) ≤ 1 − level, which guarantees E[loss] ≤ 1 − level on a new
    frame exchangeable with the n calibration frames."""
    level = _check_level(level)
    scores = [s for s in scores if len(s)]
    n = len(scores)
    target = ((1 - level) * (n + 1) - 1) / max(n, 1)
    if n == 0 or target < 0:
        raise ValueError(f"{n} calibration frames cannot control the miss rate at level {level}: "
                         f"need at least {math.ceil(1 / (1 - level))} frames with scored pixels")
    r = torch.cat([s.double().cpu() for s in scores])
    w = torch.cat([torch.full((len(s),), 1.0 / (n * len(s)), dtype=torch.double) for s in scores])
    order = torch.argsort(r)
    r, w = r[order], w[order]
    tail = w.flip(0).cumsum(0).flip(0) - w  # loss at λ = r_j: weight of the scores above position j
    ok = torch.nonzero((tail <= target + 1e-12) & torch.isfinite(r)).flatten()
    if not len(ok):
        raise ValueError("no finite scale reaches the level: too many pixels where all samples agree and miss")
    # tail counts tied scores above j as misses, so the true loss at r_j is no larger
    return float(r[int(ok[0])])


@dataclass(frozen=True)
class Conformal:
    """Per-class scales of the Gaussian central intervals (`central_interval`) that conformal
    risk control fitted on calibration frames: at `levels[l]` and class c (emitters detected in ŷ,
    `classes`), the interval mean ± scales[c][l] · half-width. `frames[c]` calibration frames
    per class. What it guarantees: the expected fraction of covered significant pixels of a new
    frame, exchangeable with the calibration frames of its class, is ≥ level. Not under shift."""

    levels: tuple
    classes: tuple
    scales: tuple
    frames: tuple
    samples: int  # K of the calibration samples

    def scale(self, counts: torch.Tensor, level: float = 0.9) -> torch.Tensor:
        """λ per frame (F,) for detected counts (F,)."""
        if level not in self.levels:
            raise ValueError(f"level must be one of the calibrated levels {self.levels}, got {level}")
        col = torch.tensor([s[self.levels.index(level)] for s in self.scales], dtype=torch.double)
        return col[class_index(counts, self.classes)]

    def to_dict(self) -> dict:
        return {"levels": list(self.levels), "classes": [list(c) for c in self.classes],
                "scales": [list(s) for s in self.scales], "frames": list(self.frames), "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict) -> "Conformal":
        return cls(levels=tuple(d["levels"]), classes=tuple(tuple(c) for c in d["classes"]),
                   scales=tuple(tuple(s) for s in d["scales"]), frames=tuple(d["frames"]), samples=int(d["samples"]))


def merge_classes(counts: torch.Tensor, classes=CLASSES, min_frames: int = 40) -> tuple:
    """`classes` with each one holding fewer than `min_frames` of `counts` merged into its
    neighbour (the one below; the first into the one above), until all hold enough or one is left."""
    classes = [list(c) for c in classes]
    while len(classes) > 1:
        n = [int(((counts >= lo) & ((counts <= hi) if hi is not None else True)).sum()) for lo, hi in classes]
        small = [i for i, k in enumerate(n) if k < min_frames]
        if not small:
            break
        i = small[-1]
        j = i - 1 if i > 0 else 1
        a, b = sorted((i, j))
        classes[a:b + 1] = [[classes[a][0], classes[b][1]]]
    return tuple(tuple(c) for c in classes)


def fit_conformal(samples: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor,
                  levels=LEVELS, classes=CLASSES, min_frames: int = 40) -> Conformal:
    """Fit `Conformal` on calibration frames: samples (F, K, H, W), truth y (F, H, W), the
    pixels to cover `mask` (F, H, W), detected counts (F,). Classes with fewer than `min_frames`
    frames are merged with a neighbour (`merge_classes`) first."""
    s, y_, m = _check(samples, y, mask)
    m = torch.ones_like(y_, dtype=torch.bool) if m is None else m
    counts = torch.as_tensor(counts)
    classes = merge_classes(counts, classes, min_frames)
    cls = class_index(counts, classes)
    scales, frames = [], []
    for c in range(len(classes)):
        idx = torch.nonzero(cls == c).flatten().tolist()
        frames.append(len(idx))
        row = []
        for level in levels:
            sc = interval_scores(s[idx], y_[idx], level) if idx else None
            row.append(risk_control_scale([sc[i][m[f]] for i, f in enumerate(idx)], level) if idx else math.nan)
        scales.append(tuple(row))
    if any(math.isnan(v) for row in scales for v in row):
        empty = [classes[c] for c, n in enumerate(frames) if n == 0]
        raise ValueError(f"no calibration frames in classes {empty}: simulate more frames or merge classes")
    return Conformal(levels=tuple(levels), classes=tuple(classes), scales=tuple(scales),
                     frames=tuple(frames), samples=int(s.shape[1]))


def nearest_k(available, k: int) -> int:
    """The K among `available` closest to k on a log scale (the larger on a tie): the calibration
    to use for k samples, since the width of a K-sample interval depends on K."""
    available = sorted(int(a) for a in available)
    if not available:
        raise ValueError("no calibrated sample counts to choose from")
    return min(available, key=lambda a: (abs(math.log(a / k)), -a))


def apply_conformal(samples: torch.Tensor, conformal: Conformal, counts: torch.Tensor,
                    level: float = 0.9) -> torch.Tensor:
    """Samples (F, K, H, W) spread about their mean by the frame's scale at `level`: their
    Gaussian interval at that level is the calibrated one, their std the calibrated std."""
    lam = conformal.scale(counts, level).to(samples.device, samples.dtype)[:, None, None, None]
    mean = samples.mean(1, keepdim=True)
    return mean + lam * (samples - mean)
