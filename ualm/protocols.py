"""Protocols: simulate frames, run a method on them, measure it against the truth or the CRLB.

The chapters and the benchmarks call these, so that a number in the book and the same number
in `benchmarks/results` come from one function. Each returns a small frozen result; `as_row()`
gives its scalars as a JSON-ready dict, and `ualm.tables.markdown_table` shows a list of them.

- `mle_vs_crlb`: `fit_mle` on isolated emitters against the 4-parameter CRLB (`CRLBCheck`).
- `simulate_and_predict`: seeded frames of a `SimConfig`, and φ(x) on them.
- `detection_protocol`: the paper's metrics table, φ with and without sub-pixel refinement and
  the oracle rows (`DetectionResult`, one `MethodResult` per key: "network_subpixel",
  "network_grid", "oracle_3", "oracle_1.5", ...); `density_sweep` repeats it per emitter count.
- `detector_sweep`: the same detector at other LoG settings (`min_sigma`, `overlap`) on given
  KDEs, e.g. the oracle's: how much a "ceiling" owes to the detector.
- `isolated_vs_crlb`: lateral RMSE of φ on isolated emitters against the lateral CRLB
  (`IsolatedResult`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .camera import Camera
from .seeding import make_generator
from .defaults import I0, PIXEL_NM, SIGMA_X
from .detect import LocalizationMetrics, evaluate_kdes, oracle_kdes
from .fisher import crlb
from .mle import fit_mle
from .psf import expected_frame
from .simulate import SimConfig, isolated_emitters, simulate_batch
from .progress import show_progress

__all__ = ["CRLBCheck", "mle_vs_crlb", "simulate_and_predict", "lateral_crlb", "MethodResult",
           "DetectionResult", "detection_protocol", "density_sweep", "detector_sweep",
           "IsolatedResult", "isolated_vs_crlb", "method_key", "rows_by_key"]


# ----------------------------------------------------------------------------- MLE vs CRLB

@dataclass(frozen=True, eq=False)
class CRLBCheck:
    """`fit_mle` against the CRLB on `n_fits` isolated emitters (see `mle_vs_crlb`).

    Per axis (x, y) in px: rmse_px, crlb_px (RMS of the bound at the true positions), ratio,
    bias_px. For the photon count: rmse_photons, crlb_photons, ratio_photons. converged: the
    fraction of fits that reported convergence; fits_per_s: speed of `fit_mle`. theta (B, 1, 2)
    true positions, errors (B, 2) fitted - true, bounds (B, 4): CRLB of (x, y, photons,
    background) per fit."""

    i0: float
    background: float
    n_fits: int
    rmse_px: torch.Tensor
    crlb_px: torch.Tensor
    ratio: torch.Tensor
    rmse_photons: float
    crlb_photons: float
    ratio_photons: float
    bias_px: torch.Tensor
    converged: float
    iterations: int
    fits_per_s: float
    theta: torch.Tensor
    errors: torch.Tensor
    bounds: torch.Tensor

    @property
    def pooled_rmse_px(self) -> float:
        """RMSE per coordinate, pooled over x and y."""
        return float(self.rmse_px.pow(2).mean().sqrt())

    @property
    def pooled_crlb_px(self) -> float:
        """RMS CRLB per coordinate, pooled over x and y."""
        return float(self.crlb_px.pow(2).mean().sqrt())

    @property
    def pooled_ratio(self) -> float:
        return self.pooled_rmse_px / self.pooled_crlb_px

    @property
    def ratio_half_width(self) -> float:
        """Relative 95 % half-width of `pooled_ratio`: an RMSE of m = 2·n_fits errors has a
        relative standard error of 1/sqrt(2m)."""
        return 1.96 / (4 * self.n_fits) ** 0.5

    @property
    def max_bias_px(self) -> float:
        return float(self.bias_px.abs().max())

    def as_row(self) -> dict:
        """Scalars per axis; rmse_nm and crlb_nm are the means of the x and y values."""
        return {"i0": self.i0, "background": self.background, "fits": self.n_fits,
                "rmse_x_px": float(self.rmse_px[0]), "rmse_y_px": float(self.rmse_px[1]),
                "crlb_x_px": float(self.crlb_px[0]), "crlb_y_px": float(self.crlb_px[1]),
                "ratio_x": float(self.ratio[0]), "ratio_y": float(self.ratio[1]),
                "rmse_nm": float(self.rmse_px.mean() * PIXEL_NM),
                "crlb_nm": float(self.crlb_px.mean() * PIXEL_NM),
                "ratio_photons": self.ratio_photons, "converged": self.converged,
                "iterations": self.iterations, "fits_per_s": self.fits_per_s}


def mle_vs_crlb(i0: float = I0, background: float = 0.0, n_fits: int = 2000,
                camera: Camera = Camera(), sigma: float = SIGMA_X, shape=(11, 11), seed: int = 0,
                device=None, dtype=torch.float64) -> CRLBCheck:
    """Monte Carlo check of `fit_mle` against the Cramér–Rao bound on isolated emitters.

    Simulates `n_fits` frames (emitter within ±½ px of the centre), fits all of them, and
    compares the RMSE over ALL fits (non-converged ones included, so nothing flatters the
    ratio) with the RMS of the 4-parameter CRLB at the true positions.
    """
    gen = make_generator(seed, device or "cpu")
    th, _ = isolated_emitters(n_fits, shape, generator=gen, device=gen.device, dtype=dtype)
    frames = camera.sample(expected_frame(th, i0, sigma, background, shape), generator=gen)
    if th.device.type == "cuda":
        torch.cuda.synchronize(th.device)
    t0 = time.perf_counter()
    fit = fit_mle(frames, camera, sigma=sigma)
    if th.device.type == "cuda":
        torch.cuda.synchronize(th.device)
    elapsed = time.perf_counter() - t0
    err = (fit.theta - th)[:, 0]
    bound = crlb(th, i0, sigma, background, camera, shape, params=("x", "y", "photons", "background"))
    rmse, rms_bound = err.pow(2).mean(0).sqrt(), bound[:, :2].pow(2).mean(0).sqrt()
    rmse_n = (fit.photons - i0).pow(2).mean().sqrt()
    crlb_n = bound[:, 2].pow(2).mean().sqrt()
    return CRLBCheck(i0=i0, background=background, n_fits=n_fits, rmse_px=rmse, crlb_px=rms_bound,
                     ratio=rmse / rms_bound, rmse_photons=float(rmse_n), crlb_photons=float(crlb_n),
                     ratio_photons=float(rmse_n / crlb_n), bias_px=err.mean(0),
                     converged=float(fit.converged.double().mean()), iterations=fit.iterations,
                     fits_per_s=n_fits / elapsed, theta=th, errors=err, bounds=bound)


# ----------------------------------------------------------------------------- φ on simulated frames

def simulate_and_predict(model, config: SimConfig, n_frames: int, seed: int,
                         batch_size: int = 250, device=None) -> dict:
    """Simulate n_frames with `config` (seeded) and run φ on them in batches.
    Returns the simulated dict (CPU, float32) plus 'y_hat' (n, 80, 80) unless model is None."""
    gen = make_generator(seed)
    parts = [simulate_batch(min(batch_size, n_frames - i), config, generator=gen, dtype=torch.float32)
             for i in range(0, n_frames, batch_size)]
    data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if model is not None:
        if device is not None:
            model = model.to(device)
        data["y_hat"] = model.predict(data["x"], batch_size=batch_size).float().cpu()
    return data


def lateral_crlb(theta, i0, config: SimConfig) -> torch.Tensor:
    """Per-emitter lateral CRLB sqrt(CRLB_x² + CRLB_y²) in px for single emitters θ (B, 1, 2)."""
    c = crlb(theta.double(), torch.as_tensor(i0).double(), config.sigma, config.background,
             config.camera, config.shape)
    return torch.sqrt((c ** 2).sum(-1)).reshape(-1)


# ----------------------------------------------------------------------------- detection metrics

_LABELS = {"network_subpixel": "φ (DeepSTORM), sub-pixel", "network_grid": "φ (DeepSTORM), KDE grid"}


def _oracle_label(sigma_y: float) -> str:
    return f"oracle y, σ_y = {sigma_y:g}"


@dataclass(frozen=True, eq=False)
class MethodResult:
    """One row of a detection table: `key` names it in code, `method` is its display label."""

    key: str
    method: str
    sigma_y: float
    refine: str
    metrics: LocalizationMetrics

    def as_row(self) -> dict:
        return {"method": self.method, "sigma_y": self.sigma_y, "refine": self.refine,
                **self.metrics.as_row()}


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """The rows of `detection_protocol` by key, in table order, and the data they were measured
    on: the simulated dict (x, y, theta, mask, i0, omega) and 'y_hat'."""

    methods: dict
    data: dict

    def __getitem__(self, key: str) -> MethodResult:
        return self.methods[key]

    def rows(self) -> list[dict]:
        return [m.as_row() for m in self.methods.values()]


def method_key(row: dict) -> str:
    """The key of a table row given as a dict (`MethodResult.as_row()`, e.g. read from JSON)."""
    for key, label in _LABELS.items():
        if row["method"] == label:
            return key
    if row["method"] == _oracle_label(row["sigma_y"]):
        return f"oracle_{row['sigma_y']:g}"
    raise ValueError(f"unknown method {row['method']!r}")


def rows_by_key(rows) -> dict:
    """Table rows (dicts, e.g. a benchmark's JSON table) keyed like `DetectionResult`."""
    return {method_key(r): r for r in rows}


def detection_protocol(model, config: SimConfig, n_frames: int = 1000, seed: int = 2024,
                       oracle_sigmas=(3.0, 1.5), threshold: float = 0.3,
                       progress: bool = False) -> DetectionResult:
    """The metrics table of the paper's protocol (default config: 10 emitters on the disc,
    i0 = 200): φ with and without sub-pixel refinement ("network_subpixel", "network_grid";
    none when model is None), and the oracle rows "oracle_<σ_y>" (the same detector on the true
    KDE y at each σ_y in oracle_sigmas)."""
    data = simulate_and_predict(model, config, n_frames, seed)
    jobs = []
    if model is not None:
        jobs += [("network_subpixel", data["y_hat"], config.sigma_y, "quadratic"),
                 ("network_grid", data["y_hat"], config.sigma_y, None)]
    for s in oracle_sigmas:
        jobs.append((f"oracle_{s:g}", oracle_kdes(data["theta"], data["mask"], s, config.shape,
                                                   config.upsample), s, "quadratic"))
    methods = {}
    for key, kdes, s, refine in tqdm(jobs, desc="detect", disable=not show_progress(progress)):
        m = evaluate_kdes(kdes, data["theta"], data["mask"], sigma_y=s, refine=refine,
                          threshold=threshold, upsample=config.upsample)
        label = _LABELS.get(key) or _oracle_label(s)
        methods[key] = MethodResult(key, label, s, refine or "none", m)
    return DetectionResult(methods, data)


def density_sweep(model, config: SimConfig, counts, n_frames: int, seed: int,
                  oracle_sigmas=(3.0, 1.5), progress: bool = False) -> dict:
    """`detection_protocol` at each emitter count (frames seeded with seed + k for the k-th
    count). Returns {count: DetectionResult}."""
    return {c: detection_protocol(model, config.replace(count=c), n_frames, seed=seed + k,
                                  oracle_sigmas=oracle_sigmas)
            for k, c in enumerate(tqdm(counts, desc="density", disable=not show_progress(progress)))}


def detector_sweep(kdes, theta, mask, sigma_y: float, min_sigmas, overlaps,
                   threshold: float = 0.3, refine: str | None = "quadratic",
                   upsample: int = 4, progress: bool = False) -> list[dict]:
    """`evaluate_kdes` on the same KDEs for every LoG setting (min_sigma, overlap) of the grid
    min_sigmas × overlaps, other settings as in `detection_protocol`. min_sigma is the smallest
    LoG scale in KDE px (the default is σ_y/2), overlap the largest fraction by which two blobs
    may overlap before the smaller is dropped (default 0.5; 1 keeps both). Returns one row per
    setting: min_sigma, overlap, default (True for σ_y/2 and 0.5) and the metrics' `as_row()`."""
    grid = [(float(ms), float(ov)) for ms in min_sigmas for ov in overlaps]
    if not grid:
        raise ValueError("min_sigmas and overlaps must each hold at least one value")
    for ms, ov in grid:
        if ms <= 0 or not 0 <= ov <= 1:
            raise ValueError(f"min_sigmas must be > 0 and overlaps in [0, 1], got {ms}, {ov}")
    rows = []
    for ms, ov in tqdm(grid, desc="detector settings", disable=not show_progress(progress)):
        m = evaluate_kdes(kdes, theta, mask, sigma_y=sigma_y, refine=refine, threshold=threshold,
                          upsample=upsample, min_sigma=ms, overlap=ov)
        rows.append({"min_sigma": ms, "overlap": ov,
                     "default": ms == sigma_y / 2 and ov == 0.5, **m.as_row()})
    return rows


# ----------------------------------------------------------------------------- isolated emitters

@dataclass(frozen=True, eq=False)
class IsolatedResult:
    """φ on isolated emitters against the lateral CRLB (see `isolated_vs_crlb`). methods:
    "network_subpixel", "network_grid" and "oracle_grid" (the true KDE read on the KDE grid:
    the rounding error alone) → `LocalizationMetrics`; crlb_lateral_px: RMS over emitters."""

    n_frames: int
    i0: float | tuple
    crlb_lateral_px: float
    methods: dict
    data: dict

    def __getitem__(self, key: str) -> LocalizationMetrics:
        return self.methods[key]

    def rmse_over_crlb(self, key: str) -> float:
        return self.methods[key].rmse_px / self.crlb_lateral_px

    def as_dict(self) -> dict:
        """JSON-ready: the CRLB, and per method its scalar metrics, RMSE/CRLB and biases."""
        out = {"frames": self.n_frames, "i0": self.i0, "crlb_lateral_px": self.crlb_lateral_px,
               "crlb_lateral_nm": self.crlb_lateral_px * PIXEL_NM}
        for key, m in self.methods.items():
            out[key] = {**m.as_row(), "rmse_over_crlb": self.rmse_over_crlb(key),
                        "bias_x_px": m.bias_x_px, "bias_y_px": m.bias_y_px}
        return out


def isolated_vs_crlb(model, config: SimConfig, n_frames: int, seed: int) -> IsolatedResult:
    """φ on n_frames single emitters (`config` with layout "isolated": within ±½ px of the frame
    centre), read with and without sub-pixel refinement, against the lateral CRLB."""
    config = config.replace(layout="isolated")
    data = simulate_and_predict(model, config, n_frames, seed=seed)
    c = lateral_crlb(data["theta"], data["i0"], config)
    crlb_rms = float(torch.sqrt((c ** 2).mean()))
    truth = data["theta"], data["mask"]
    oracle = oracle_kdes(*truth, config.sigma_y, config.shape, config.upsample)
    methods = {key: evaluate_kdes(kdes, *truth, sigma_y=config.sigma_y, refine=refine,
                                  upsample=config.upsample)
               for key, kdes, refine in (("network_subpixel", data["y_hat"], "quadratic"),
                                         ("network_grid", data["y_hat"], None),
                                         ("oracle_grid", oracle, None))}
    return IsolatedResult(n_frames, config.i0, crlb_rms, methods, data)
