"""The posterior sampler of issue 16, chosen, calibrated and scored on three disjoint splits.

    python benchmarks/posterior.py validate    # candidates on validation frames -> the choice
    python benchmarks/posterior.py calibrate   # conformal scales on calibration frames -> manifest
    python benchmarks/posterior.py test        # the choice, raw and calibrated, on held-out frames

Splits (seeds below; none is the training stream, its validation batches or chapter 5/6's):
validation (isolated + dense frames) picks the sampler, calibration (dense frames) fits the
conformal scales, test (the held-out seeds of benchmarks/uncertainty.py) only scores. Isolated
frames: one emitter, i0 = 200, reference MCMC at β = 1 with x, y, photons and background
sampled (`uncertainty.isolated_reference`). Dense frames: the training distribution (1–20
emitters, i0 in [100, 400]); coverage over the significant pixels.
"""
from __future__ import annotations

import argparse
import json
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
import uncertainty as ub  # noqa: E402

import ualm  # noqa: E402
from ualm import calibration as cal  # noqa: E402
from ualm import pretrained  # noqa: E402
from ualm.defaults import UPSAMPLE  # noqa: E402
from ualm.models.deepstorm import training_sim_config  # noqa: E402
from ualm.uncertainty import DEFAULT_PSI, significant_pixels, uncertainty_map  # noqa: E402

SEEDS = {"validation": {"isolated": 20261205, "dense": 20261206},
         "calibration": {"dense": 20261207},
         "test": {"isolated": ub.ISOLATED_SEED, "dense": ub.DENSE_SEED}}
# label -> (weights, sampler, overrides)
CANDIDATES = {
    "Ψ (paper schedule), DDIM 10 from the guided start (before)": ("diffusion_quick", "ddim", {}),
    "Ψ_v, ancestral, 100 steps": ("diffusion_v", "ancestral", {}),
    "Ψ_v, DDIM 50, η = 1": ("diffusion_v", "ddim", {"steps": 50}),
    "Ψ_v, DDIM 20, η = 1": ("diffusion_v", "ddim", {"steps": 20}),
}
STD_BAND = (0.9, 1.1)  # the band for the isolated total-std ratio


def candidate_rows(args) -> dict:
    phi = pretrained.load("deepstorm_quick")
    seeds = SEEDS["validation"]
    sim_iso, ref = ub.isolated_reference(args.isolated, seeds["isolated"], args.mcmc_iters, args.threads)
    dense = ualm.simulate_batch(args.dense, training_sim_config(), generator=ualm.make_generator(seeds["dense"]),
                                dtype=torch.float32)
    yhat_mse = float(((phi.predict(dense["x"]) - dense["y"]) ** 2).mean())
    rows = {}
    for label, (weights, sampler, over) in CANDIDATES.items():
        psi = pretrained.load(weights)
        iso = uncertainty_map(sim_iso["x"], psi, phi, args.samples_isolated, sampler, seed=1, progress=False, **over)
        t0 = time.perf_counter()
        res = uncertainty_map(dense["x"], psi, phi, args.samples, sampler, seed=2, progress=False, **over)
        sec = time.perf_counter() - t0
        sig = significant_pixels(dense["y"], res.mean())
        c = cal.calibration(res.samples, dense["y"], sig)
        rows[label] = {"weights": weights, "sampler": sampler, "overrides": over,
                       "evals_per_sample": res.info["evals_per_sample"],
                       "isolated": ub.isolated_scores(iso.mean(), iso.var(), ref),
                       "dense": c.as_row(), "mse": float(((res.mean() - dense["y"]) ** 2).mean()),
                       "yhat_mse": yhat_mse, "seconds_per_frame": sec / args.dense,
                       "seconds_per_frame_k32": sec / args.dense * 32 / args.samples}
        r = rows[label]
        print(f"{label}: std ratio {r['isolated']['std_ratio']['median']:.3f} corr {r['isolated']['corr']['median']:.3f}"
              f"  cov90 {c.at(0.9):.3f}  MSE/ŷ {r['mse'] / yhat_mse:.3f}  {r['seconds_per_frame_k32']:.1f} s/frame at K=32",
              flush=True)
    return rows


def choose(rows: dict) -> str:
    """The fastest Ψ_v candidate whose isolated median std ratio lies in STD_BAND and whose
    sample mean is no worse than ŷ; else the ancestral reference."""
    ok = [k for k, r in rows.items() if r["weights"] == "diffusion_v"
          and STD_BAND[0] <= r["isolated"]["std_ratio"]["median"] <= STD_BAND[1] and r["mse"] <= r["yhat_mse"]]
    if not ok:
        return "Ψ_v, ancestral, 100 steps"
    return min(ok, key=lambda k: rows[k]["seconds_per_frame"])


def validate(args) -> int:
    rows = candidate_rows(args)
    choice = choose(rows)
    print("choice:", choice)
    payload = {"protocol": {"isolated": args.isolated, "dense": args.dense, "samples_isolated": args.samples_isolated,
                            "samples": args.samples, "mcmc_iters": args.mcmc_iters, "seeds": SEEDS["validation"]},
               "weights_sha256": {w: pretrained.manifest(w)["sha256"] for w in {r["weights"] for r in rows.values()}},
               "candidates": rows, "rule": choose.__doc__.strip(), "choice": choice,
               "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_validation", payload, args.out)
    return 0


def chosen() -> tuple[str, dict]:
    """The sampler and settings that validation chose (results/posterior_validation.json)."""
    val = json.loads((common.RESULTS / "posterior_validation.json").read_text())
    row = val["candidates"][val["choice"]]
    if row["weights"] != DEFAULT_PSI:
        raise SystemExit(f"validation chose {row['weights']}, not {DEFAULT_PSI}")
    return row["sampler"], row["overrides"]


def calibrate(args) -> int:
    sampler, over = chosen()
    phi, psi = pretrained.load("deepstorm_quick"), pretrained.load(DEFAULT_PSI)
    seed = SEEDS["calibration"]["dense"]
    sim = ualm.simulate_batch(args.calibration, training_sim_config(), generator=ualm.make_generator(seed),
                              dtype=torch.float32)
    t0 = time.perf_counter()
    # the samples are kept in runs/, so that a failed fit does not cost the sampling again
    cache = ROOT / "runs" / f"posterior_calibration_{args.calibration}_{args.samples}_{sampler}_{over}.pt"
    key = pretrained.manifest(DEFAULT_PSI)["sha256"]
    got = torch.load(cache, weights_only=True) if cache.is_file() else None
    if got is None or got["sha256"] != key:
        res = uncertainty_map(sim["x"], psi, phi, args.samples, sampler, calibrate=False, seed=3, **over)
        got = {"sha256": key, "samples": res.samples, "yhat": res.yhat}
        cache.parent.mkdir(exist_ok=True)
        torch.save(got, cache)
    samples, counts = got["samples"], cal.detected_counts(got["yhat"])
    conf = cal.fit_conformal(samples, sim["y"], significant_pixels(sim["y"], samples.mean(1)), counts)
    payload = {"sampler": sampler, "overrides": over, "conformal": conf.to_dict(),
               "data": {"frames": args.calibration, "seed": seed, "count": [1, 20], "i0": [100.0, 400.0],
                        "mask": "significant_pixels(y, mean)", "sample_seed": 3},
               "seconds": time.perf_counter() - t0,
               "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    pretrained.record_calibration(DEFAULT_PSI, pretrained.manifest(DEFAULT_PSI)["sha256"], payload)
    for c, row, n in zip(conf.classes, conf.scales, conf.frames):
        print(f"class {c}: {n} frames, λ at {conf.levels} = {[round(v, 3) for v in row]}")
    return 0


def frame_coverage(samples, y, mask, level, lam=None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: covered and scored pixel counts of the (scaled) Gaussian interval."""
    lo, hi = cal.scaled_interval(samples, level, lam)
    yy = y.double()
    inside = ((yy >= lo) & (yy <= hi) & mask).sum((1, 2)).numpy()
    return inside, mask.sum((1, 2)).numpy()


def boot(inside, total, n=2000, seed=0) -> dict:
    """Pooled coverage and its bootstrap 95 % interval over frames."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(total), (n, len(total)))
    reps = inside[idx].sum(1) / np.maximum(total[idx].sum(1), 1)
    return {"value": float(inside.sum() / max(total.sum(), 1)),
            "ci95": [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]}


def coverage_table(res, sim, conf) -> dict:
    """Raw and calibrated coverage at every level, overall and per class of true emitter count."""
    y, raw = sim["y"], res.raw()
    mask = significant_pixels(y, res.mean())
    counts = res.counts if res.counts is not None else cal.detected_counts(res.yhat)
    true_n = sim["mask"].sum(1)
    out = {"levels": list(cal.LEVELS), "raw": {}, "calibrated": {}, "by_density": []}
    parts = {}
    for level in cal.LEVELS:
        parts[("raw", level)] = frame_coverage(raw, y, mask, level)
        parts[("calibrated", level)] = frame_coverage(raw, y, mask, level, conf.scale(counts, level))
        for kind in ("raw", "calibrated"):
            out[kind][str(level)] = boot(*parts[(kind, level)])
    for lo, hi in ub.DENSITY_BINS:
        f = ((true_n >= lo) & (true_n <= hi)).numpy()
        if f.any():
            out["by_density"].append({"emitters": [lo, hi], "frames": int(f.sum()),
                                      **{kind: boot(parts[(kind, 0.9)][0][f], parts[(kind, 0.9)][1][f])
                                         for kind in ("raw", "calibrated")}})
    z = cal.zscores(y, res.mean(), res.std(), mask)
    out["mean_abs_z_calibrated"] = float(z.abs().mean())
    out["mean_abs_z_raw"] = float(cal.zscores(y, raw.mean(1), raw.std(1), mask).abs().mean())
    out["mean_abs_z_ideal"] = cal.expected_abs_z(raw.shape[1])
    out["misses"] = miss_decomposition(res, sim, mask, conf.scale(counts, 0.9))
    return out


def miss_decomposition(res, sim, mask, lam) -> dict:
    """Coverage at 90 % (calibrated) on pixels within 1 px of a true emitter that detection in the
    sample mean misses, versus the rest; and the share of the uncovered pixels near such emitters."""
    from ualm.detect import detect, match
    from ualm.simulate import to_kde_coords
    lo, hi = cal.scaled_interval(res.raw(), 0.9, lam)
    inside = (sim["y"].double() >= lo) & (sim["y"].double() <= hi)
    near = torch.zeros_like(mask)
    h, w = mask.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    for f, det in enumerate(detect(res.mean())):
        truth = sim["theta"][f][sim["mask"][f]].double().numpy()
        _, it, _ = match(np.asarray(det).reshape(-1, 2), truth)
        for e in sorted(set(range(len(truth))) - set(it.tolist())):
            kx, ky = to_kde_coords(torch.tensor(truth[e])).tolist()
            near[f] |= (xx - kx) ** 2 + (yy - ky) ** 2 <= UPSAMPLE ** 2
    near &= mask
    rest = mask & ~near
    missed = mask & ~inside
    return {"coverage_near_missed": float(inside[near].double().mean()) if near.any() else float("nan"),
            "coverage_rest": float(inside[rest].double().mean()),
            "pixels_near_missed": int(near.sum()), "share_of_uncovered_near_missed":
                float((missed & near).sum() / max(int(missed.sum()), 1))}


def test(args) -> int:
    sampler, over = chosen()
    stored = pretrained.stored_calibration(DEFAULT_PSI)
    if stored is None:
        raise SystemExit("no stored calibration: run python benchmarks/posterior.py calibrate first")
    conf = cal.Conformal.from_dict(stored["conformal"])
    out = {"sampler": sampler, "overrides": over, "weights_sha256": pretrained.manifest(DEFAULT_PSI)["sha256"],
           "protocol": {"isolated": args.isolated, "dense": args.dense, "samples": args.samples,
                        "samples_isolated": args.samples_isolated, "seeds": SEEDS["test"], "shift_frames": args.shift}}
    seeds = SEEDS["test"]
    # isolated emitters against β = 1 MCMC, raw and calibrated
    sim_iso, ref = ub.isolated_reference(args.isolated, seeds["isolated"], args.mcmc_iters, args.threads)
    iso = uncertainty_map(sim_iso["x"], n_samples=args.samples_isolated, seed=1, progress=False)
    out["isolated"] = {"calibrated": ub.isolated_scores(iso.mean(), iso.var(), ref),
                       "raw": ub.isolated_scores(iso.raw().mean(1), iso.raw().var(1), ref),
                       "scale": [float(v) for v in iso.scale]}
    print("isolated std ratio raw", out["isolated"]["raw"]["std_ratio"], "calibrated",
          out["isolated"]["calibrated"]["std_ratio"], "corr", out["isolated"]["raw"]["corr"], flush=True)
    # dense held-out frames
    phi = pretrained.load("deepstorm_quick")
    dense = ualm.simulate_batch(args.dense, training_sim_config(), generator=ualm.make_generator(seeds["dense"]),
                                dtype=torch.float32)
    t0 = time.perf_counter()
    res = uncertainty_map(dense["x"], n_samples=args.samples, seed=2, progress=False)
    sec = time.perf_counter() - t0
    out["dense"] = coverage_table(res, dense, conf)
    out["dense"]["mse"] = float(((res.mean() - dense["y"]) ** 2).mean())
    out["dense"]["yhat_mse"] = float(((phi.predict(dense["x"]) - dense["y"]) ** 2).mean())
    out["dense"]["seconds_per_frame"] = sec / args.dense
    print("dense", {k: out["dense"][k] for k in ("raw", "calibrated", "mse", "yhat_mse")}, flush=True)
    # K = 32, as the default map is used: coverage on a subset, and one frame's time
    n32 = min(args.k32_frames, args.dense)
    sub = {k: v[:n32] for k, v in dense.items()}
    t0 = time.perf_counter()
    r32 = uncertainty_map(sub["x"][:1], n_samples=32, seed=4, progress=False)
    one = time.perf_counter() - t0
    r32 = uncertainty_map(sub["x"], n_samples=32, seed=4, progress=False)
    out["dense_k32"] = {"frames": n32, "seconds_one_frame": one,
                        **{k: v for k, v in coverage_table(r32, sub, conf).items() if k in ("raw", "calibrated")}}
    print("K=32", out["dense_k32"], flush=True)
    # shifts away from the training distribution
    shifts = {"i0 in [400, 800] photons (training: [100, 400])": {"i0": (400.0, 800.0)},
              "PSF σ = 1.0 px (training: 0.92)": {"sigma": 1.0},
              "background 5 photons/px (training: 0)": {"background": 5.0}}
    out["shift"] = {}
    for i, (label, change) in enumerate(shifts.items()):
        sim = ualm.simulate_batch(args.shift, training_sim_config().replace(**change),
                                  generator=ualm.make_generator(seeds["dense"] + 100 + i), dtype=torch.float32)
        r = uncertainty_map(sim["x"], n_samples=args.samples, seed=5, progress=False)
        t = coverage_table(r, sim, conf)
        out["shift"][label] = {"raw_90": t["raw"]["0.9"], "calibrated_90": t["calibrated"]["0.9"],
                               "mse": float(((r.mean() - sim["y"]) ** 2).mean()),
                               "yhat_mse": float(((phi.predict(sim["x"]) - sim["y"]) ** 2).mean())}
        print(label, out["shift"][label], flush=True)
    out["command"] = shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])
    common.save("posterior_test", out, args.out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["validate", "calibrate", "test"])
    ap.add_argument("--isolated", type=int, default=16)
    ap.add_argument("--dense", type=int, default=None, help="dense frames (validate 32, test 100)")
    ap.add_argument("--samples-isolated", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--mcmc-iters", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=240, help="calibration frames")
    ap.add_argument("--shift", type=int, default=40, help="frames per shift")
    ap.add_argument("--k32-frames", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dense is None:
        args.dense = 100 if args.what == "test" else 32  # the test split is scored on more frames
    return {"validate": validate, "calibrate": calibrate, "test": test}[args.what](args)


if __name__ == "__main__":
    raise SystemExit(main())
