"""ualm beside Picasso (picassosr), the usual CPU pipeline for DNA-PAINT/SMLM, on one simulated
movie with ground truth (issue 19 item 6), in one run:

1. a seeded `ualm.movie` movie; the camera calibrated from its dark frames (offset, read
   noise) and a photon-transfer curve on flat stacks of the same camera (gain);
2. Picasso (net-gradient identification in 7×7 boxes, then its Gaussian least-squares and its
   Gaussian MLE fit, camera given as the scalar medians of the calibrated maps) and ualm
   (`ualm.localize.localize`), each timed in frames per second;
3. each table scored against the true events frame by frame (recall, precision, Jaccard within
   1 px, one-to-one, `ualm.localize.score_table`), the RMSE of the matched positions in nm and
   RMSE/CRLB, the CRLB of each matched true emitter from `ualm.fisher.crlb`;
4. FRC resolution (`ualm.render.frc`) of each table and of the truth, halves = even/odd frames;
5. ualm's table written for Picasso (`ualm.export.write_picasso`) and read back with
   `picasso.io.load_locs`, and ualm's ThunderSTORM CSV read with `picasso.io.import_ts`;
6. isolated emitters: fits per second and RMSE/CRLB of `ualm.fit_mle` and Picasso's Gaussian
   MLE on the same spots, at 1 and 2 threads, idle and beside a busy neighbour process.

    python benchmarks/peer_picasso.py [--frames N] [--size S] [--seed K] [--threads T] [--quick] [--out DIR]

Run it with the environment that has picassosr installed (`.venv-picasso/bin/python`), on an
otherwise idle machine: the timings are only meaningful there.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ualm  # before torch: ualm chooses OpenMP's wait policy before torch starts it

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from busy_neighbour import Neighbour  # noqa: E402

from ualm.camera import Camera, dark_calibration, photon_transfer  # noqa: E402
from ualm.export import write_picasso, write_thunderstorm  # noqa: E402
from ualm.fisher import crlb  # noqa: E402
from ualm.localize import localize, score_table  # noqa: E402
from ualm.movie import MovieConfig, flat_stacks, simulate_movie, to_adu  # noqa: E402
from ualm.render import frc, render_locs  # noqa: E402
from ualm.threads import small_op_threads  # noqa: E402

import picasso  # noqa: E402
from picasso import io as pio  # noqa: E402
from picasso import localize as ploc  # noqa: E402

BOX = 7  # Picasso's box (identification and fit), and ualm's fit box
TOLERANCE_PX = 1.0  # matching radius for recall / precision
MLE_I0 = (100.0, 200.0, 500.0, 2000.0)  # photons, isolated-emitter comparison
MLE_BG = 10.0  # photons/px, as in the movie
FOUR = ("x", "y", "photons", "background")  # what fit_mle estimates: its CRLB
ISOLATED_PX = 4.0  # a true emitter with no other on within this distance counts as isolated


def loadavg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def in_threads(fn, parts: list, threads: int) -> list:
    """fn on each part, in `threads` threads (Picasso's kernels are numba `nogil`)."""
    if threads <= 1:
        return [fn(p) for p in parts]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, parts))


def split(n: int, k: int) -> list[slice]:
    """k contiguous slices covering range(n)."""
    edges = np.linspace(0, n, k + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


# ----------------------------------------------------------------------------- 1. movie and camera

def make_movie(args):
    """The movie, the camera calibrated as a user would, and a record of how."""
    cfg = MovieConfig(shape=(args.size, args.size), frames=args.frames, dark_frames=args.dark_frames)
    movie = simulate_movie(cfg, generator=ualm.make_generator(args.seed))
    offset, read_var = dark_calibration(movie.dark)
    flats = flat_stacks(movie.camera, frames=args.flat_frames, generator=ualm.make_generator(args.seed + 1))
    ptc = photon_transfer(flats, offset, read_var)
    camera = Camera(gain=ptc["gain"], offset=offset, read_var=read_var)
    record = {"gain_source": f"photon_transfer on flat_stacks of the true camera (5 levels x {args.flat_frames} "
                             f"frames), per-pixel map",
              "offset_read_var_source": f"dark_calibration on {args.dark_frames} dark frames",
              "median_gain": ptc["median_gain"], "true_median_gain": float(movie.camera.gain.median()),
              "median_offset": float(offset.median()), "median_read_var": float(read_var.median()),
              "true_median_read_var": float(movie.camera.read_var.median())}
    return movie, camera, record


def picasso_camera(camera: Camera, pixel_nm: float) -> dict:
    """Picasso's camera_info from our calibration: Baseline = offset (ADU), Sensitivity =
    photoelectrons per ADU = 1/gain, Gain = the EM gain (1 for sCMOS), Qe unused since 0.6."""
    return {"Baseline": float(torch.as_tensor(camera.offset).median()),
            "Sensitivity": 1.0 / float(torch.as_tensor(camera.gain).median()),
            "Gain": 1, "Qe": 1, "Pixelsize": float(pixel_nm)}


# ----------------------------------------------------------------------------- 2. localization

def picasso_identify(frames: np.ndarray, min_ng: float, threads: int):
    """Net-gradient identification, each thread on a contiguous run of frames."""
    def one(s: slice):
        ids, _ = ploc.identify(frames[s], min_ng, BOX, threaded=False)  # threaded=True writes user settings
        ids["frame"] += s.start
        return ids

    return pd.concat(in_threads(one, split(len(frames), threads), threads), ignore_index=True)


def picasso_fit(spots: np.ndarray, mle: bool, threads: int) -> np.ndarray:
    """Picasso's CPU Gaussian fit ([photons, x, y, sx, sy, bg] per spot), spots split over threads."""
    parts = [spots[s] for s in split(len(spots), threads)] or [spots]
    return np.concatenate(in_threads(lambda p: ploc.fit_spots_gauss(p, mle=mle), parts, threads))


def run_picasso(frames, info: dict, min_ng: float, mle: bool, threads: int) -> tuple[dict, float]:
    """Picasso's pipeline (identify, cut spots in photons, fit, localizations); wall seconds."""
    t0 = time.perf_counter()
    ids = picasso_identify(frames, min_ng, threads)
    spots = ploc.get_spots(frames, ids, BOX, info)
    theta = picasso_fit(spots, mle, threads)
    locs = ploc.locs_from_fits_gauss(ids, theta, BOX, em=False, mle=mle)
    seconds = time.perf_counter() - t0
    return {c: locs[c].to_numpy() for c in ("frame", "x", "y", "photons", "bg", "sx", "sy", "lpx", "lpy")}, seconds


def run_ualm(frames, camera: Camera, threads: int) -> tuple[dict, float]:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    table = localize(frames, camera, box=BOX, progress=False)
    return table, time.perf_counter() - t0


def warm_up(frames, camera, info, min_ng) -> None:
    """Compile Picasso's numba kernels and load φ once, outside the timings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mle in (False, True):
            run_picasso(frames[:4], info, min_ng, mle, 1)
        run_ualm(frames[:4], camera, 1)


# ----------------------------------------------------------------------------- 3. scores

def emitter_crlb(x, y, photons, background: float, camera: Camera, sigma: float) -> np.ndarray:
    """(M, 2) CRLB of x and y (px) of isolated emitters at their true photons, on an 11×11
    window at their sub-pixel position, for the 4-parameter model fit_mle estimates."""
    frac = np.stack((x - np.rint(x), y - np.rint(y)), 1)
    theta = torch.as_tensor(5.0 + frac)[:, None, :]
    i0 = torch.as_tensor(np.asarray(photons, dtype=float))[:, None]
    return crlb(theta, i0, sigma, background, camera, (11, 11), params=FOUR)[:, :2].numpy()


def nearest_other(events: dict) -> np.ndarray:
    """Each true event's distance (px) to the nearest other emitter on in the same frame."""
    out = np.full(len(events["x"]), np.inf)
    for f in np.unique(events["frame"]):
        i = np.flatnonzero(events["frame"] == f)
        if len(i) > 1:
            d = np.hypot(events["x"][i, None] - events["x"][i], events["y"][i, None] - events["y"][i])
            np.fill_diagonal(d, np.inf)
            out[i] = d.min(1)
    return out


def score(table: dict, movie, size: int, interior: bool = False) -> dict:
    """Detection and position scores against the true events. interior: only truth and
    localizations at least BOX px from every edge (Picasso identifies no maximum within
    BOX//2 + 1 px of the frame's edge, so this is the score without that handicap)."""
    events = movie.events
    finite = np.isfinite(table["x"]) & np.isfinite(table["y"])
    keep = finite.copy()
    if interior:
        inside = lambda x, y: (x >= BOX) & (x <= size - 1 - BOX) & (y >= BOX) & (y <= size - 1 - BOX)  # noqa: E731
        keep &= inside(np.nan_to_num(table["x"]), np.nan_to_num(table["y"]))
        sel = inside(events["x"], events["y"])
        events = {k: v[sel] for k, v in events.items()}
    s = score_table(table, events, TOLERANCE_PX, keep=keep)
    r, e = s["rows"], s["events"]
    out = {k: s[k] for k in ("recall", "precision", "jaccard", "n_found", "n_true", "n_matched")}
    out["n_nonfinite"] = int((~finite).sum())
    if not len(r):
        return out
    px = movie.config.pixel_nm
    err = np.stack((table["x"][r] - events["x"][e], table["y"][r] - events["y"][e]), 1)
    bound = emitter_crlb(events["x"][e], events["y"][e], events["photons"][e], movie.config.background,
                         camera_scalar(movie.camera), movie.config.sigma)  # the data as simulated
    ratio = lambda m: float(np.sqrt(np.mean(err[m] ** 2) / np.mean(bound[m] ** 2)))  # noqa: E731
    # crowding: overlapping emitters (the CRLB is that of an isolated one) dominate the RMSE
    alone = nearest_other(events)[e] > ISOLATED_PX
    out.update(rmse_lateral_nm=float(np.sqrt(np.mean(np.sum(err ** 2, 1)))) * px,
               rmse_per_axis_nm=float(np.sqrt(np.mean(err ** 2))) * px,
               crlb_per_axis_nm=float(np.sqrt(np.mean(bound ** 2))) * px,
               rmse_over_crlb=ratio(slice(None)),
               n_matched_isolated=int(alone.sum()),
               rmse_over_crlb_isolated=ratio(alone) if alone.any() else float("nan"),
               bias_px=err.mean(0).tolist(),
               reported_lp_nm=float(np.sqrt(np.nanmean(table["lpx"][r] ** 2 + table["lpy"][r] ** 2) / 2)) * px,
               photons_over_true_median=float(np.nanmedian(table["photons"][r] / events["photons"][e])),
               bg_median=float(np.nanmedian(table["bg"][r])))
    return out


def camera_scalar(camera: Camera) -> Camera:
    """The camera's medians as scalars (for bounds on windows anywhere in the frame)."""
    med = lambda v: float(torch.as_tensor(v).median())  # noqa: E731
    return Camera(gain=med(camera.gain), offset=med(camera.offset), read_var=med(camera.read_var))


# ----------------------------------------------------------------------------- 4. FRC

def frc_halves(x, y, frame, size: int, pixel_nm: float, zoom: int) -> float:
    """FRC resolution (nm) of two renders, from the even and the odd frames."""
    halves = [frame % 2 == k for k in (0, 1)]
    images = [render_locs(x[h], y[h], (size, size), zoom=zoom) for h in halves]
    return frc(*images, pixel_nm=pixel_nm / zoom)["resolution_nm"]


# ----------------------------------------------------------------------------- 5. files

def export_checks(table: dict, movie) -> dict:
    """Picasso opens ualm's files: load_locs on write_picasso's HDF5, import_ts on the CSV."""
    h, w = movie.config.shape
    px = movie.config.pixel_nm
    # load_locs keeps rows with finite values, 0 <= x < Width, 0 <= y < Height and lp, photons,
    # sx, sy >= 0 (picasso.lib.ensure_sanity): what it should return
    t = {k: np.asarray(v, dtype=float) for k, v in table.items()}
    sane = np.all([np.isfinite(t[k]) for k in ("x", "y", "photons", "sx", "sy", "bg", "lpx", "lpy")], 0)
    sane &= (t["x"] >= 0) & (t["x"] < w) & (t["y"] >= 0) & (t["y"] < h)
    sane &= np.all([np.nan_to_num(t[k], nan=-1) >= 0 for k in ("lpx", "lpy", "photons", "sx", "sy")], 0)
    out = {"n_table": len(t["x"]), "n_expected_after_picasso_sanity": int(sane.sum())}
    with tempfile.TemporaryDirectory() as d:
        try:
            path, _ = write_picasso(Path(d) / "ualm_locs", table, width=w, height=h, frames=movie.config.frames,
                                    pixel_nm=px)
            locs, info = pio.load_locs(str(path))
            out["load_locs_n"] = len(locs)
            out["load_locs_same_n"] = len(locs) == out["n_table"]
            out["load_locs_n_as_expected"] = len(locs) == out["n_expected_after_picasso_sanity"]
        except Exception as err:  # record, do not stop the benchmark
            out["load_locs_error"] = repr(err)
        try:
            csv = write_thunderstorm(Path(d) / "ualm_locs.csv", table, px)
            ts, _ = pio.import_ts(str(csv), px)
            out["import_ts_n"] = len(ts)
            out["import_ts_same_n"] = len(ts) == out["n_table"]
            # import_ts divides ThunderSTORM's nm by the pixel size without taking off the half
            # pixel of ImageJ's convention: its positions sit +0.5 px from ours
            out["import_ts_mean_shift_px"] = [float(ts["x"].mean() - t["x"].mean()),
                                              float(ts["y"].mean() - t["y"].mean())]
        except Exception as err:
            out["import_ts_error"] = repr(err)
    return out


# ----------------------------------------------------------------------------- 6. isolated emitters

def isolated_spots(i0: float, n: int, box: int, camera: Camera, sigma: float, seed: int):
    """n box × box frames in uint16 ADU, one emitter within ±½ px of the centre each."""
    gen = ualm.make_generator(seed)
    theta, _ = ualm.isolated_emitters(n, (box, box), generator=gen, dtype=torch.float64)
    omega = ualm.expected_frame(theta, i0, sigma, MLE_BG, (box, box))
    return theta[:, 0].numpy(), to_adu(camera.sample(omega, generator=gen))


UALM_THREADS = []  # what fit_mle's thread choice returned just before each call (it asks again)


def fit_ualm_spots(adu, camera, sigma, threads) -> np.ndarray:
    """fit_mle as a user calls it after torch.set_num_threads(threads): it may use fewer."""
    torch.set_num_threads(threads)
    UALM_THREADS.append(small_op_threads())
    fit = ualm.fit_mle(torch.as_tensor(adu.astype(np.float64)), camera, sigma=sigma)
    return fit.theta[:, 0].numpy()


def fit_picasso_spots(adu, info, threads) -> np.ndarray:
    """Picasso's MLE on each frame as one spot: its photon conversion, fit and CRLB."""
    n, box = len(adu), adu.shape[-1]
    ids = pd.DataFrame({"frame": np.arange(n), "x": box // 2, "y": box // 2, "net_gradient": 0.0})
    spots = ploc.get_spots(adu, ids, box, info)
    theta = picasso_fit(spots, True, threads)
    locs = ploc.locs_from_fits_gauss(ids, theta, box, em=False, mle=True).sort_index()
    return np.stack((locs["x"].to_numpy(), locs["y"].to_numpy()), 1).astype(float)


def accuracy(xy: np.ndarray, truth: np.ndarray, bound: np.ndarray, box: int) -> dict:
    """Per-axis RMSE / RMS CRLB over the fits that stayed in the box (both fitters get the same
    rule; a fit outside it has failed), and how many did not."""
    ok = np.isfinite(xy).all(1) & (np.abs(xy - (box - 1) / 2) <= box / 2).all(1)
    err = xy[ok] - truth[ok]
    rmse = float(np.sqrt(np.mean(err ** 2)))
    rms_bound = float(np.sqrt(np.mean(bound[ok] ** 2)))
    return {"rmse_px": rmse, "crlb_px": rms_bound, "rmse_over_crlb": rmse / rms_bound,
            "failed": int((~ok).sum())}


def rates(fns: dict, n: int, rounds: int) -> dict:
    """Median fits per second of each function over `rounds` calls, the functions taking turns
    (and turns about who goes first), so that both meet the same moments of a shared machine."""
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: n / float(np.median(t)) for k, t in times.items()}


def mle_comparison(args) -> list[dict]:
    """fit_mle vs Picasso's MLE on the same isolated spots: accuracy once per i0, speed at 1
    and 2 threads, idle and beside a busy neighbour."""
    cfg = MovieConfig()
    camera = Camera(gain=cfg.camera.gain, offset=cfg.camera.offset, read_var=cfg.camera.read_var)
    info = picasso_camera(camera, cfg.pixel_nm)
    box, sigma = args.mle_box, cfg.sigma
    data = {}
    for k, i0 in enumerate(MLE_I0):
        truth, adu = isolated_spots(i0, args.spots, box, camera, sigma, args.seed + 10 + k)
        bound = crlb(torch.as_tensor(truth)[:, None, :], i0, sigma, MLE_BG, camera, (box, box), params=FOUR)
        data[i0] = (truth, adu, bound[:, :2].numpy())
    fit_ualm_spots(data[MLE_I0[0]][1][:50], camera, sigma, 1)  # warm-up
    fit_picasso_spots(data[MLE_I0[0]][1][:50], info, 1)
    rows = []
    for load in ("idle", "busy"):
        with Neighbour() if load == "busy" else contextlib.nullcontext():
            for threads in (1, 2):
                for i0 in MLE_I0:
                    truth, adu, bound = data[i0]
                    row = {"load": load, "threads": threads, "i0": i0, "background": MLE_BG, "box": box,
                           "spots": len(adu), "loadavg_before": loadavg()}
                    UALM_THREADS.clear()
                    r = rates({"ualm": lambda: fit_ualm_spots(adu, camera, sigma, threads),
                               "picasso": lambda: fit_picasso_spots(adu, info, threads)}, len(adu), args.rounds)
                    row["ualm_fits_per_s"], row["picasso_fits_per_s"] = r["ualm"], r["picasso"]
                    row["ualm_threads_seen"] = list(UALM_THREADS)
                    if load == "idle" and threads == 1:  # the fits do not depend on threads or load
                        row["ualm"] = accuracy(fit_ualm_spots(adu, camera, sigma, 1), truth, bound, box)
                        row["picasso"] = accuracy(fit_picasso_spots(adu, info, 1), truth, bound, box)
                    rows.append(row)
                    print_mle_row(row)
    return rows


def print_mle_row(r: dict) -> None:
    acc = ""
    if "ualm" in r:
        acc = (f"  RMSE/CRLB ualm {r['ualm']['rmse_over_crlb']:.3f} ({r['ualm']['failed']} failed), "
               f"Picasso {r['picasso']['rmse_over_crlb']:.3f} ({r['picasso']['failed']} failed)")
    print(f"{r['load']:4s} {r['threads']:2d} thr  i0 {r['i0']:6.0f}: fits/s ualm {r['ualm_fits_per_s']:8.0f}  "
          f"Picasso {r['picasso_fits_per_s']:8.0f}   load {r['loadavg_before'][0]:.2f}{acc}", flush=True)


# ----------------------------------------------------------------------------- main

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, help="movie frames (2000; --quick 100)")
    p.add_argument("--size", type=int, help="frame side, px (64; --quick 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="threads for the movie timings (torch and Picasso)")
    p.add_argument("--quick", action="store_true", help="a small movie and few isolated spots: a smoke test")
    p.add_argument("--min-ng", type=float, default=300.0,
                   help="Picasso's minimum net gradient, ADU (set for gain 2 ADU/photon, 100-400 photons)")
    p.add_argument("--spots", type=int, help="isolated spots per i0 (4000; --quick 200)")
    p.add_argument("--mle-box", type=int, default=BOX, help="window of the isolated spots, px")
    p.add_argument("--rounds", type=int, help="timed calls per isolated-spot rate, median, ualm and Picasso "
                   "in turn (7; --quick 1)")
    p.add_argument("--zoom", type=int, default=8, help="render zoom for the FRC")
    p.add_argument("--out", type=Path, default=None, help="directory for peer_picasso.json (benchmarks/results)")
    args = p.parse_args(argv)
    full = dict(frames=2000, size=64, spots=4000, rounds=7, dark_frames=1000, flat_frames=500)
    quick = dict(frames=100, size=32, spots=200, rounds=1, dark_frames=200, flat_frames=100)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse(argv)
    stages, t0 = {}, time.perf_counter()  # wall seconds per stage: what a full run costs
    movie, camera, calibration = make_movie(args)
    px, size = movie.config.pixel_nm, args.size
    info = picasso_camera(camera, px)
    print(f"movie {args.frames} frames of {size}x{size} px, {len(movie.events['x'])} true localizations; "
          f"gain {calibration['median_gain']:.3f} (true {calibration['true_median_gain']:.3f})", flush=True)
    warm_up(movie.frames, camera, info, args.min_ng)
    stages["movie_calibration_warm_up"], t0 = time.perf_counter() - t0, time.perf_counter()

    tables, timing = {}, {}
    runs = {"ualm": lambda: run_ualm(movie.frames, camera, args.threads),
            "picasso_lq": lambda: run_picasso(movie.frames, info, args.min_ng, False, args.threads),
            "picasso_mle": lambda: run_picasso(movie.frames, info, args.min_ng, True, args.threads)}
    for name, run in runs.items():
        before = loadavg()
        tables[name], seconds = run()
        timing[name] = {"seconds": seconds, "frames_per_s": args.frames / seconds, "loadavg_before": before}
    stages["localize"], t0 = time.perf_counter() - t0, time.perf_counter()

    rows = []
    for name, table in tables.items():
        row = {"method": name, **timing[name], "all": score(table, movie, size),
               "interior": score(table, movie, size, interior=True),
               "frc_nm": frc_halves(table["x"], table["y"], table["frame"], size, px, args.zoom)}
        rows.append(row)
    ev = movie.events
    truth_frc = frc_halves(ev["x"], ev["y"], ev["frame"], size, px, args.zoom)
    nyquist = 2 * px / args.zoom  # the truth repeats its labels exactly: its FRC may never fall below 1/7
    print_movie_table(rows, truth_frc, nyquist)
    stages["score_frc"], t0 = time.perf_counter() - t0, time.perf_counter()

    exports = export_checks(tables["ualm"], movie)
    print("export: " + ", ".join(f"{k} {v}" for k, v in exports.items()), flush=True)

    print("\nisolated emitters, background %g photons/px, %dx%d windows, %d spots per i0"
          % (MLE_BG, args.mle_box, args.mle_box, args.spots), flush=True)
    mle_rows = mle_comparison(args)
    stages["isolated_mle"] = time.perf_counter() - t0
    torch.set_num_threads(args.threads)  # as the movie timings ran, for the machine record

    import numba
    versions = {"picasso": picasso.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "numba": numba.__version__, "ualm": ualm.__version__}
    payload = {
        "issue": "19 item 6", "interpreter": sys.executable, "versions": versions,
        "stage_seconds": stages, "quick": args.quick, "seed": args.seed,
        "movie": {"frames": args.frames, "shape": [size, size], "pixel_nm": px, "n_true": len(ev["x"]),
                  "background": movie.config.background, "i0": list(movie.config.i0), "sigma_px": movie.config.sigma},
        "calibration": calibration,
        "picasso_settings": {"camera_info": info, "box": BOX, "min_net_gradient_adu": args.min_ng,
                             "identify": "picasso.localize.identify (threaded=False), one call per thread's frames",
                             "fits": "picasso.localize.fit_spots_gauss (elliptic Gaussian, free sx and sy, "
                                     "evaluated at pixel centres), spots split over threads; "
                                     "locs_from_fits_gauss; no per-pixel camera_calibration",
                             "lq": "mle=False (least squares)", "mle": "mle=True (Poisson MLE)"},
        "ualm_settings": {"call": "ualm.localize.localize(frames, camera, box=7)", "threshold": 0.3,
                          "background": "median"},
        "threads": args.threads,
        "scoring": {"tolerance_px": TOLERANCE_PX, "matching": "ualm.localize.score_table (detect.match, "
                    "Hungarian, one-to-one per frame)",
                    "rmse_lateral_nm": "sqrt(mean(dx^2 + dy^2))", "rmse_per_axis_nm": "sqrt(mean of dx^2, dy^2)",
                    "crlb": "ualm.fisher.crlb of each matched true emitter at its true photons and the movie's "
                            "background, 4 parameters (x, y, photons, background), sigma fixed, 11x11 window, "
                            "median true gain and read variance; RMS per axis",
                    "interior": f"truth and localizations >= {BOX} px from every edge",
                    "reported_lp_nm": "RMS of the method's own lpx, lpy over the matched rows"},
        "frc": {"halves": "even / odd frames", "zoom": args.zoom, "render": "ualm.render.render_locs, sigma = half a "
                "fine pixel", "truth_resolution_nm": truth_frc, "nyquist_nm": nyquist,
                "note": "NaN: the curve never fell below 1/7 (finer than the render resolves)"},
        "localization": rows, "export": exports,
        "mle": {"camera": "gain 2, offset 100, read variance 5 (scalar: the movie camera's medians)",
                "sigma_px": movie.config.sigma, "background": MLE_BG, "box": args.mle_box, "spots": args.spots,
                "rounds": args.rounds, "crlb": "4-parameter (x, y, photons, background), sigma fixed; RMS over "
                "the fits kept", "picasso_fit": "fit_spots_gauss(mle=True): 6 parameters (free sx, sy)",
                "neighbour": "benchmarks/busy_neighbour.py's 2-thread torch loop",
                "threads": "ualm: torch.set_num_threads(T), then fit_mle, which picks its own count "
                           "(threads.small_op_threads: 1 where OpenMP's threads sleep between operations, "
                           "as after import ualm, else the cores other processes leave free; "
                           "ualm_threads_seen: what it returned just before each timed call); "
                           "Picasso: the spots split over T Python threads",
                "rows": mle_rows},
    }
    common.save("peer_picasso", payload, None if args.out is None else Path(args.out) / "peer_picasso.json")


def print_movie_table(rows: list[dict], truth_frc: float, nyquist_nm: float) -> None:
    print(f"\n{'method':12s} {'frames/s':>9s} {'recall':>7s} {'prec':>6s} {'Jacc':>6s} {'Jacc in':>8s} "
          f"{'RMSE nm':>8s} {'RMSE/CRLB':>10s} {'(isol.)':>8s} {'lp nm':>6s} {'N/N0':>5s} {'bg':>5s} {'FRC nm':>7s}")
    for r in rows:
        a, i = r["all"], r["interior"]
        g = lambda k: a.get(k, np.nan)  # noqa: E731  (absent when nothing matched)
        print(f"{r['method']:12s} {r['frames_per_s']:9.1f} {a['recall']:7.3f} {a['precision']:6.3f} "
              f"{a['jaccard']:6.3f} {i['jaccard']:8.3f} {g('rmse_lateral_nm'):8.1f} {g('rmse_over_crlb'):10.3f} "
              f"{g('rmse_over_crlb_isolated'):8.3f} {g('reported_lp_nm'):6.1f} {g('photons_over_true_median'):5.2f} "
              f"{g('bg_median'):5.1f} {r['frc_nm']:7.1f}")
    truth = f"{truth_frc:.1f}" if np.isfinite(truth_frc) else f"< {nyquist_nm:.0f} (the render's Nyquist limit)"
    print(f"truth FRC: {truth}", flush=True)


if __name__ == "__main__":
    main()
