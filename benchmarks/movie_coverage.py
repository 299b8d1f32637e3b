"""Does the default uncertainty map cover the truth on a movie, over many frames?

Chapter 7 scores one frame of its movie. This script scores `--frames` frames of a movie made
the same way (filaments, blinking, an sCMOS camera, chapter 7's quick size) but from a seed of
its own: the frames are spread evenly over those with at least one emitter on, Ψ runs on
overlapping 20 × 20 tiles (`tiled_map`) of each frame after the median background is taken off
(`median_background`, `to_reference`, as chapter 7 does), and the central intervals of the
stitched maps, mean ± factor·std with `central_interval`'s factor t_{K−1}·√(1 + 1/K)
(`interval_factor`), are checked against the true KDE on the significant pixels (truth or mean
above 0.05), raw and with the stored calibration, with bootstrap 95 % intervals over frames.

The movie is not the training distribution (filaments instead of a disc, its own camera's read
noise, a background taken off by a median): chapter 6's guarantee does not cover it, and this is
the measurement of how far off it is. The true camera maps are used, so that the camera
calibration's own error (chapter 7 measures it) does not mix in. No choice is made on these
frames.

    python benchmarks/movie_coverage.py [--frames 16] [--samples 32] [--size 36] [--threads 2]
Writes benchmarks/results/movie_coverage.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

import ualm  # noqa: E402
from ualm import movie, pretrained  # noqa: E402
from ualm.calibration import LEVELS, interval_factor  # noqa: E402
from ualm.localize import median_background, to_reference  # noqa: E402
from ualm.uncertainty import DEFAULT_PSI, significant_pixels, tiled_map  # noqa: E402

MOVIE_SEED = 20261213  # this benchmark's movie only
SAMPLE_SEED = 7


def chosen_frames(events: dict, n_frames: int, n: int) -> np.ndarray:
    """n frame indices spread evenly over the frames where at least one emitter is on."""
    lit = np.flatnonzero(np.bincount(events["frame"], minlength=n_frames) > 0)
    if len(lit) < n:
        raise SystemExit(f"only {len(lit)} frames have an emitter on; ask for fewer --frames")
    return lit[np.linspace(0, len(lit) - 1, n).round().astype(int)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16, help="frames scored")
    ap.add_argument("--samples", type=int, default=32, help="Ψ samples per tile")
    ap.add_argument("--size", type=int, default=36, help="frame side, px (36: 2 × 2 tiles of 20)")
    ap.add_argument("--movie-frames", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = movie.MovieConfig(shape=(args.size, args.size), frames=args.movie_frames, dark_frames=1,
                            n_structures=3, length=0.9 * args.size)
    truth = movie.simulate_movie(cfg, generator=ualm.make_generator(MOVIE_SEED))
    ev = truth.events
    picked = chosen_frames(ev, cfg.frames, args.frames)
    bg = median_background(truth.frames, truth.camera)
    ref = to_reference(truth.frames[picked], truth.camera, background=bg)
    y = torch.stack([ualm.kde(torch.as_tensor(np.stack((ev["x"][ev["frame"] == f], ev["y"][ev["frame"] == f]), 1)),
                              shape=(args.size, args.size)) for f in picked]).double()
    maps, seconds = {}, {}
    for kind, calibrate in (("calibrated", None), ("raw", False)):
        start = time.perf_counter()
        mean, var = tiled_map(ref, n_samples=args.samples, seed=SAMPLE_SEED, calibrate=calibrate, progress=True)
        maps[kind], seconds[kind] = (mean.double(), var.double()), time.perf_counter() - start
    # the same pixels for both: truth or the calibrated mean above the significance level
    mask = significant_pixels(y, maps["calibrated"][0])
    total = mask.sum((1, 2)).numpy()
    out = {}
    for kind, (mean, var) in maps.items():
        err, std = (y - mean).abs(), var.clamp(min=0).sqrt()
        inside = {lv: ((err <= interval_factor(lv, args.samples) * std) & mask).sum((1, 2)).numpy()
                  for lv in LEVELS}
        out[kind] = {str(lv): common.boot(n_in, total) for lv, n_in in inside.items()}
        out[kind]["zero_std_share"] = float((std[mask] == 0).double().mean())
        print(kind, {lv: round(v["value"], 3) for lv, v in out[kind].items() if lv != "zero_std_share"},
              flush=True)
    on = np.bincount(ev["frame"], minlength=cfg.frames)[picked]
    payload = {"protocol": {"movie": {"seed": MOVIE_SEED, "shape": list(cfg.shape), "frames": cfg.frames,
                                      "n_structures": cfg.n_structures, "length": cfg.length,
                                      "i0": list(cfg.i0), "background": cfg.background},
                            "frames_scored": picked.tolist(), "emitters_on": on.tolist(), "samples": args.samples,
                            "sample_seed": SAMPLE_SEED, "tile": 20, "overlap": 4,
                            "camera": "the simulator's true maps; background: the movie's per-pixel median",
                            "mask": "significant_pixels(true KDE, calibrated mean)",
                            "intervals": "mean ± interval_factor(level, K)·std of the stitched maps"},
               "weights_sha256": {DEFAULT_PSI: pretrained.manifest(DEFAULT_PSI)["sha256"]},
               "calibration_sha256": {DEFAULT_PSI: pretrained.manifest(DEFAULT_PSI)["calibration"]["sha256"]},
               "pixels": int(total.sum()), "coverage": out, "seconds": seconds,
               "command": shlex.join(["python", "benchmarks/movie_coverage.py", *sys.argv[1:]])}
    common.save("movie_coverage", payload, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
