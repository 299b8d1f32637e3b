"""From a user's movie to a table of localizations: frames in the units the networks were
trained on, φ on whole frames (it is convolutional), LoG detection on ŷ, and a maximum-likelihood
fit in a small box around each detection for photons, background and the CRLB.

The table is a dict of equal-length NumPy arrays (`COLUMNS`), positions in camera pixels with
the package's convention (pixel k covers [k - 1/2, k + 1/2]; Picasso uses the same centres).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .camera import PAPER_CAMERA, Camera
from .defaults import SIGMA_X
from .detect import detect
from .mle import fit_mle
from .progress import tqdm

COLUMNS = ("frame", "x", "y", "photons", "bg", "sx", "sy", "lpx", "lpy", "p_value", "converged")


def to_reference(frames, camera: Camera, reference: Camera = PAPER_CAMERA, background=None) -> torch.Tensor:
    """Frames (F, H, W) in the user's ADU -> the reference camera's ADU (the networks' training
    camera): photons (x − o)/g, less `background` (photons/px: a number or an (H, W) map) if
    given, times the reference gain plus its offset. The read noise stays the user's."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames).to(torch.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"frames must be (F, H, W) or (H, W), got shape {tuple(x.shape)}")
    g, o, _ = camera.maps(x)
    photons = (x - o) / g
    if background is not None:
        photons = photons - torch.as_tensor(background, dtype=x.dtype)
    rg, ro, _ = reference.maps(x)
    return (rg * photons + ro).to(torch.float32)


def median_background(frames, camera: Camera) -> torch.Tensor:
    """Each pixel's median over the frames, in photons/px: the background of a movie in which any
    one pixel shows an emitter in fewer than half of the frames."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames).to(torch.float64)
    g, o, _ = camera.maps(x)
    return ((x - o) / g).median(0).values


def _boxes(x: torch.Tensor, frames: np.ndarray, xy: np.ndarray, box: int):
    """box × box crops of x (F, H, W) around each detection, kept inside the frame; their origins."""
    h, w = x.shape[-2:]
    half = box // 2
    c0 = np.clip(np.rint(xy[:, 0]).astype(int) - half, 0, w - box)
    r0 = np.clip(np.rint(xy[:, 1]).astype(int) - half, 0, h - box)
    idx = torch.arange(box)
    rows = torch.as_tensor(r0)[:, None] + idx
    cols = torch.as_tensor(c0)[:, None] + idx
    crops = x[torch.as_tensor(frames)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return crops, np.stack((c0, r0), 1)


def localize(frames, camera: Camera = PAPER_CAMERA, phi=None, *, threshold: float = 0.3, box: int = 7,
             sigma: float = SIGMA_X, background="median", first_frame: int = 0, batch: int = 64,
             progress: bool = True) -> dict:
    """Localizations of frames (F, H, W) in the user's ADU, recorded by `camera`: φ (default
    the bundled "deepstorm_quick") on the frames in the reference camera's units less
    `background` (photons/px, for φ only: it was trained without one, and on a background of 10
    photons/px it finds three false emitters for every true one), LoG detection on ŷ at
    `threshold`, then `fit_mle` in a box × box window around each detection (in the reference
    camera's units, with its read noise). background: "median" (the default: each pixel's
    median over the frames given, which is the background where emitters blink rarely), a
    number or an (H, W) map in photons/px, or None. Returns the table: frame (counted from
    `first_frame`), x, y (px), photons, bg (photons/px), sx = sy = the PSF σ, lpx, lpy (the
    CRLB at the fit, px), p_value (emitter vs background only) and converged."""
    from .pretrained import load

    phi = phi if phi is not None else load("deepstorm_quick")
    x = to_reference(frames, camera)
    if isinstance(background, str):
        if background != "median":
            raise ValueError(f"background must be 'median', a number, an (H, W) map or None, got {background!r}")
        background = median_background(frames, camera)
    if box < 3 or box % 2 == 0 or box > min(x.shape[-2:]):
        raise ValueError(f"box must be an odd number >= 3 that fits in the frame, got {box}")
    x_phi = x if background is None else to_reference(frames, camera, background=background)
    parts = []
    for s in tqdm(range(0, len(x), batch), progress=progress, desc="localize", unit="batch"):
        chunk = x[s:s + batch]
        with torch.no_grad():
            yhat = phi.predict(x_phi[s:s + batch])
        found = detect(yhat.cpu(), threshold=threshold)
        f_idx = np.concatenate([np.full(len(d), i) for i, d in enumerate(found)]).astype(int)
        if not len(f_idx):
            continue
        crops, origin = _boxes(chunk, f_idx, np.concatenate(found), box)
        fit = fit_mle(crops, PAPER_CAMERA, sigma=sigma)
        th = fit.theta[:, 0].numpy()
        parts.append({"frame": f_idx + s + first_frame, "x": th[:, 0] + origin[:, 0], "y": th[:, 1] + origin[:, 1],
                      "photons": fit.photons.numpy(), "bg": fit.background.numpy(),
                      "sx": np.full(len(f_idx), sigma), "sy": np.full(len(f_idx), sigma),
                      "lpx": fit.std[:, 0].numpy(), "lpy": fit.std[:, 1].numpy(),
                      "p_value": fit.p_value.numpy(), "converged": fit.converged.numpy()})
    if not parts:
        return {c: np.zeros(0) for c in COLUMNS}
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


def diffusion_sigma(frames_ref, table: dict, n_samples: int = 16, *, tile: int = 20, seed: int = 0,
                    batch: int = 16, progress: bool = True, **kwargs) -> np.ndarray:
    """Per-localization σ (px) from Ψ: for each row of `table`, the tile × tile window of its
    frame (in the reference camera's units, `to_reference`) centred on it, K samples of the
    default (calibrated) map, and the spread of the sample peaks nearest to it
    (`calibration.position_spread`), averaged over x and y. NaN where fewer than 2 samples show
    the emitter. Cost: one Ψ map per localization, so use it on a region or a GPU."""
    from .calibration import position_spread
    from .uncertainty import uncertainty_map

    x = torch.as_tensor(frames_ref)
    n = len(table["x"])
    out = np.full(n, np.nan)
    if not n:
        return out
    crops, origin = _boxes(x, np.asarray(table["frame"]), np.stack((table["x"], table["y"]), 1), tile)
    for s in tqdm(range(0, n, batch), progress=progress, desc="Ψ per localization", unit="batch"):
        res = uncertainty_map(crops[s:s + batch], n_samples=n_samples, seed=seed + s, progress=False,
                              shape=(tile, tile), **kwargs)
        mean, samples = res.mean(), res.samples
        for i in range(len(mean)):
            pos, spread, _ = position_spread(mean[i].cpu(), samples[i].cpu())
            if not len(pos):
                continue
            local = np.array([table["x"][s + i] - origin[s + i, 0], table["y"][s + i] - origin[s + i, 1]])
            j = np.linalg.norm(pos - local, axis=1).argmin()
            if np.linalg.norm(pos[j] - local) <= 1.0:
                out[s + i] = float(np.mean(spread[j]))
    return out


def score_table(table: dict, events: dict, tolerance_px: float = 1.0, keep=None) -> dict:
    """A localization table against the true events (`ualm.movie.Movie.events`), frame by frame:
    one-to-one matches within `tolerance_px` (`detect.match`). Returns recall, precision,
    Jaccard, the lateral RMSE (px; the rms 2-D distance, as `detect.localization_metrics` and
    the SMLM challenge: √2 times a per-axis RMSE), the counts, and the matched pairs' row indices
    ('rows' into the table, 'events' into the events). `keep` (bool per row) filters the table."""
    from .detect import match

    keep = np.ones(len(table["x"]), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    rows, evs, dist = [], [], []
    found_xy = np.stack((table["x"], table["y"]), 1)
    true_xy = np.stack((events["x"], events["y"]), 1)
    frames = np.union1d(np.asarray(table["frame"])[keep], events["frame"]).astype(int)
    by_frame_t = {f: np.flatnonzero(keep & (np.asarray(table["frame"]) == f)) for f in frames}
    by_frame_e = {f: np.flatnonzero(events["frame"] == f) for f in frames}
    for f in frames:
        r, e = by_frame_t[f], by_frame_e[f]
        ip, it, d = match(found_xy[r], true_xy[e], tolerance=tolerance_px, upsample=1)
        rows.append(r[ip])
        evs.append(e[it])
        dist.append(d)
    rows, evs, dist = (np.concatenate(v) if v else np.zeros(0) for v in (rows, evs, dist))
    n_found, n_true, tp = int(keep.sum()), len(events["x"]), len(rows)
    return {"recall": tp / n_true if n_true else float("nan"),
            "precision": tp / n_found if n_found else float("nan"),
            "jaccard": tp / (n_found + n_true - tp) if n_found + n_true - tp else float("nan"),
            "rmse_px": float(np.sqrt(np.mean(dist ** 2))) if tp else float("nan"),
            "n_found": n_found, "n_true": n_true, "n_matched": tp,
            "rows": rows.astype(int), "events": evs.astype(int)}


# ----------------------------------------------------------------------------- whole movies

def _part_path(out, start: int) -> Path:
    return Path(out) / "parts" / f"frames_{start:08d}.npz"


def localize_movie(frames, camera: Camera, out, *, chunk: int = 256, rank: int = 0, world: int = 1,
                   progress: bool = True, **kwargs) -> dict:
    """`localize` over a whole movie in chunks of `chunk` frames, each written to
    out/parts/frames_<first>.npz as soon as it is done (atomically): a chunk already there is
    skipped, so an interrupted run resumes where it stopped. Process `rank` of `world` takes
    chunks rank, rank + world, ... (the background is each pixel's median over the whole movie
    on every rank, so the split does not change the answer). Returns this process's chunks'
    table; `merge_parts` joins everyone's."""
    n = len(frames)
    if kwargs.get("background", "median") == "median":
        kwargs["background"] = median_background(frames, camera)
    starts = list(range(0, n, chunk))[rank::world]
    mine = []
    for s in tqdm(starts, progress=progress, desc=f"movie (rank {rank})" if world > 1 else "movie", unit="chunk"):
        path = _part_path(out, s)
        if not path.exists():
            table = localize(frames[s:s + chunk], camera, first_frame=s, progress=False, **kwargs)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
            np.savez(tmp, **table)
            os.replace(tmp, path)
        with np.load(path) as part:
            mine.append({c: part[c] for c in COLUMNS})
    return _concat(mine)


def _concat(parts: list) -> dict:
    if not parts:
        return {c: np.zeros(0) for c in COLUMNS}
    table = {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}
    order = np.lexsort((table["y"], table["x"], table["frame"]))  # by frame, then x, then y
    return {c: v[order] for c, v in table.items()}


def merge_parts(out, n_frames: int, chunk: int = 256) -> dict:
    """The whole movie's table from out/parts, sorted by frame, then x, then y: the same table
    whatever the number of processes that wrote the parts. Refuses a movie with parts missing."""
    starts = range(0, n_frames, chunk)
    missing = [s for s in starts if not _part_path(out, s).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(starts)} chunks are not localized yet (first: frames "
                                f"{missing[0]}–{missing[0] + chunk - 1}); run the same command again to finish")
    parts = []
    for s in starts:
        with np.load(_part_path(out, s)) as part:
            parts.append({c: part[c] for c in COLUMNS})
    return _concat(parts)
