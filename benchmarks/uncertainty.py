"""Benchmark of chapter 6, "Is the uncertainty right?": every uncertainty method against MCMC
(isolated emitters) and against the truth (dense frames), under the same metrics.

Methods: the diffusion samplers of `ualm.uncertainty.SAMPLER_TABLE` (less the guided start at
t0 = T, which chapter 5 shows is a slower twin of t0 = 25) with Ψ conditioned on ŷ
(`diffusion_quick`, the paper) and on (ŷ, x) (`diffusion_frame_quick`); Monte-Carlo dropout on
φ (`deepstorm_ens0`, trained with dropout 0.1); a deep ensemble of the five `deepstorm_ens<k>`.

Isolated part (--isolated frames, one emitter within ±0.5 px of the centre, i0 = 200, the
paper's camera): the reference is MCMC at β = 1 with x, y, the photons and the background
sampled (the network never sees i0), mapped to KDE moments (`kde_moments`); the paper's β = 0.2
maps (x, y only, its fixed proposal) are scored the same way. Per frame: the ratio of total std
√ΣVar of a method to MCMC's, and the Pearson correlation of the two std maps over the pixels
where either mean exceeds 0.05.

Dense part (--dense frames of the training distribution: 1–20 emitters, i0 uniform in
[100, 400], held-out seed): `ualm.calibration.calibration` over pixels where the truth or the
mean exceeds 0.05 (coverage of central intervals at 50/80/90/95 %, z-statistics), a reliability
curve, a histogram of z, the same split by the number of emitters in the frame, and per emitter
the position spread across samples against its actual error (z) and its CRLB (as if isolated,
with its own photons). Also the fidelity row of chapter 5 (MSE, detection on the mean).

Results are saved after each method, so an interrupted run keeps what it finished;
--resume skips the methods already in the JSON (same weights and protocol).

    python benchmarks/uncertainty.py [--isolated 50] [--dense 200] [--threads 2] [--resume]
    python benchmarks/uncertainty.py --isolated 4 --dense 4 --out /tmp/u.json   # smoke run
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

import ualm  # noqa: E402
from ualm import calibration as cal  # noqa: E402
from ualm import mcmc, pretrained  # noqa: E402
from ualm.defaults import I0  # noqa: E402
from ualm.models.deepstorm import training_sim_config  # noqa: E402
from ualm.posterior import kde_moments  # noqa: E402
from ualm.uncertainty import (SAMPLER_TABLE, ensemble_map, evals_per_sample, fidelity, mc_dropout_map,  # noqa: E402
                              significant_pixels, uncertainty_map)

ISOLATED_SEED = 20261129  # held out: not the training stream, its validation set, nor chapter 5's
DENSE_SEED = 20261128
SLOW = 50  # samplers with more network evaluations than this run on fewer frames and samples
DENSITY_BINS = ((1, 5), (6, 10), (11, 15), (16, 20))
Z_EDGES = np.linspace(-6, 6, 49)
ENSEMBLE = [f"deepstorm_ens{k}" for k in range(5)]
PSI = {"Ψ(ŷ)": "diffusion_quick", "Ψ(ŷ, x)": "diffusion_frame_quick"}
LABELS = [k for k in SAMPLER_TABLE if k != "guided start, t0 = T"]


def method_table() -> dict:
    """name -> (kind, weights, sampler label)."""
    out = {f"{tag}: {label}": ("diffusion", w, label) for tag, w in PSI.items() for label in LABELS}
    out["MC dropout (φ, p = 0.1)"] = ("dropout", ENSEMBLE[0], None)
    out[f"deep ensemble ({len(ENSEMBLE)} φ)"] = ("ensemble", ENSEMBLE, None)
    return out


def is_slow(kind, label) -> bool:
    if kind != "diffusion":
        return False
    return evals_per_sample(SAMPLER_TABLE[label]) > SLOW


def run_method(kind, weights, label, x, k, seed, cache):
    """SampleResult of one method on frames x with K = k samples (ensemble: its size)."""
    def net(name):
        if name not in cache:
            cache[name] = pretrained.load(name, device="cpu")
        return cache[name]
    if kind == "diffusion":
        return uncertainty_map(x, net(weights), net("deepstorm_quick"), k, SAMPLER_TABLE[label], seed=seed,
                               progress=True)
    if kind == "dropout":
        return mc_dropout_map(x, net(weights), k, seed=seed)
    return ensemble_map(x, [net(w) for w in weights])


def total_std(var: torch.Tensor) -> torch.Tensor:
    return var.double().sum((-2, -1)).sqrt()


def map_correlation(std_a, std_b, mask) -> np.ndarray:
    """Pearson correlation of two std maps per frame over the masked pixels."""
    out = []
    for a, b, m in zip(std_a.double(), std_b.double(), mask):
        a, b = a[m], b[m]
        ok = len(a) > 2 and float(a.std()) > 0 and float(b.std()) > 0
        out.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if ok else float("nan"))
    return np.asarray(out)


def quartiles(v) -> dict:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "n": 0}
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75), "n": int(len(v))}


def isolated_reference(n, seed, iters, threads):
    cfg = ualm.SimConfig(layout="isolated", count=1)
    sim = ualm.simulate_batch(n, cfg, generator=ualm.make_generator(seed), dtype=torch.float32)
    t0 = time.perf_counter()
    post = mcmc.sample_posterior(sim["x"].double(), params=("x", "y", "photons", "background"),
                                 n_chains=4, n_iter=iters, burn_in=iters // 3, seed=seed + 1,
                                 num_threads=threads)
    mean1, var1 = kde_moments(post)
    sec1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    paper = mcmc.sample_posterior(sim["x"].double(), beta=0.2, proposal=0.05, adapt=False,
                                  n_chains=4, n_iter=iters, burn_in=iters // 3, seed=seed + 2,
                                  num_threads=threads)
    mean02, var02 = kde_moments(paper)
    sec02 = time.perf_counter() - t0
    return sim, {"mean": mean1.float(), "var": var1.float(), "seconds": sec1,
                 "rhat_max": float(post.rhat().max()), "accept": float(post.acceptance.mean()),
                 "beta02": {"mean": mean02.float(), "var": var02.float(), "seconds": sec02}}


def isolated_scores(mean, var, ref) -> dict:
    sig = significant_pixels(ref["mean"], mean)
    ratio = (total_std(var) / total_std(ref["var"])).numpy()
    corr = map_correlation(var.sqrt(), ref["var"].sqrt(), sig)
    return {"std_ratio": quartiles(ratio), "corr": quartiles(corr),
            "per_frame": {"std_ratio": ratio.tolist(), "corr": corr.tolist()}}


def dense_scores(res, sim) -> dict:
    y, theta, mask = sim["y"], sim["theta"], sim["mask"]
    mean, std = res.mean(), res.std()
    sig = significant_pixels(y, mean)
    c = cal.calibration(res.samples, y, sig)
    levels, rel = cal.reliability_curve(res.samples, y, sig)
    z = cal.zscores(y, mean, std, sig).numpy()
    counts = mask.sum(1)
    by_density = []
    for lo, hi in DENSITY_BINS:
        f = (counts >= lo) & (counts <= hi)
        if not bool(f.any()):
            continue
        cb = cal.calibration(res.samples[f], y[f], sig[f])
        by_density.append({"emitters": [lo, hi], "frames": int(f.sum()), "n_pixels": cb.n_pixels,
                           "coverage_90": cb.at(0.9), "mean_abs_z": cb.mean_abs_z})
    em = cal.emitter_zscores(mean, res.samples, theta, mask)
    i0 = torch.stack([sim["i0"][f][mask[f]][e] for f, e in zip(em["frame"], em["emitter"])]) \
        if len(em["frame"]) else torch.zeros(0)
    true_xy = torch.stack([theta[f][mask[f]][e] for f, e in zip(em["frame"], em["emitter"])]) \
        if len(em["frame"]) else torch.zeros(0, 2)
    cfg = training_sim_config()
    bound = (ualm.crlb(true_xy[:, None].double(), i0[:, None].double(), cfg.sigma, cfg.background, cfg.camera,
                       cfg.shape).numpy() if len(i0) else np.zeros((0, 2)))
    spread = em["spread"]
    ok = np.isfinite(spread).all(1)
    emitter = {"matched": int(len(em["error"])), "with_spread": int(ok.sum()),
               "z_std": float(np.std(em["z"])) if len(em["z"]) > 1 else float("nan"),
               "median_abs_z": float(np.median(np.abs(em["z"]))) if len(em["z"]) else float("nan"),
               "rmse_px": float(np.sqrt(np.mean(em["error"] ** 2))) if len(em["error"]) else float("nan"),
               "median_spread_px": float(np.median(spread[ok])) if ok.any() else float("nan"),
               "median_crlb_px": float(np.median(bound)) if len(bound) else float("nan"),
               "spread_over_crlb_median": float(np.median(spread[ok] / bound[ok])) if ok.any() else float("nan")}
    return {"calibration": c.as_row(), "reliability": {"levels": levels.tolist(), "coverage": rel.tolist()},
            "z_hist": {"edges": Z_EDGES.tolist(), "counts": np.histogram(np.clip(z, -6, 6), Z_EDGES)[0].tolist(),
                       "n": int(len(z))},
            "by_density": by_density, "emitter": emitter}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isolated", type=int, default=50)
    ap.add_argument("--dense", type=int, default=200)
    ap.add_argument("--samples-isolated", type=int, default=16, help="K on isolated frames")
    ap.add_argument("--samples", type=int, default=8, help="K on dense frames")
    ap.add_argument("--slow-frames", type=int, default=50, help=f"frames for samplers with > {SLOW} evaluations")
    ap.add_argument("--slow-samples", type=int, default=4)
    ap.add_argument("--mcmc-iters", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=None, help="methods whose name contains one of these")
    ap.add_argument("--resume", action="store_true", help="keep the methods already in the JSON")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = Path(args.out) if args.out else common.RESULTS / "uncertainty.json"

    table = {k: v for k, v in method_table().items() if args.only is None or any(o in k for o in args.only)}
    weights = sorted({w for _, ws, _ in table.values() for w in ([ws] if isinstance(ws, str) else ws)}
                     | {"deepstorm_quick"})
    shas = {w: pretrained.manifest(w)["sha256"] for w in weights}
    protocol = {"isolated": {"frames": args.isolated, "seed": ISOLATED_SEED, "i0": I0,
                             "samples": args.samples_isolated, "mcmc_iters": args.mcmc_iters,
                             "mcmc_params": ["x", "y", "photons", "background"], "mcmc_chains": 4},
                "dense": {"frames": args.dense, "seed": DENSE_SEED, "count": [1, 20], "i0": [100.0, 400.0],
                          "samples": args.samples, "significant_level": 0.05},
                "slow": {"frames": args.slow_frames, "samples": args.slow_samples, "evals_over": SLOW}}
    methods = {}
    if args.resume and path.exists():
        old = json.loads(path.read_text())
        if old.get("protocol") == protocol:
            methods = {k: v for k, v in old.get("methods", {}).items()
                       if all(old.get("weights_sha256", {}).get(w) == shas.get(w) for w in v.get("weights", []))}
            print(f"resuming: {len(methods)} methods kept from {path}")

    sim_iso, ref = isolated_reference(args.isolated, ISOLATED_SEED, args.mcmc_iters, args.threads)
    dense = ualm.simulate_batch(args.dense, training_sim_config(), generator=ualm.make_generator(DENSE_SEED),
                                dtype=torch.float32)
    mcmc_rows = {"beta1": {"seconds": ref["seconds"], "rhat_max": ref["rhat_max"], "accept": ref["accept"],
                           "total_std": quartiles(total_std(ref["var"]).numpy())},
                 "beta02": {"seconds": ref["beta02"]["seconds"],
                            **isolated_scores(ref["beta02"]["mean"], ref["beta02"]["var"], ref)}}
    print("MCMC β = 0.2 vs β = 1: std ratio", mcmc_rows["beta02"]["std_ratio"])
    yhat_fid = fidelity("ŷ = φ(x)", pretrained.load("deepstorm_quick").predict(dense["x"]), dense["y"],
                        dense["theta"], dense["mask"]).as_row()

    def save():
        payload = {"protocol": protocol, "weights_sha256": shas, "mcmc": mcmc_rows, "yhat": yhat_fid,
                   "methods": methods,
                   "command": shlex.join(["python", "benchmarks/uncertainty.py", *sys.argv[1:]])}
        common.save("uncertainty", payload, path)

    cache = {}
    for name, (kind, ws, label) in table.items():
        if name in methods:
            continue
        slow = is_slow(kind, label)
        row = {"kind": kind, "weights": [ws] if isinstance(ws, str) else list(ws), "sampler": label}
        n_iso = min(args.isolated, args.slow_frames) if slow else args.isolated
        n_den = min(args.dense, args.slow_frames) if slow else args.dense
        k_iso = args.slow_samples if slow else args.samples_isolated
        k_den = args.slow_samples if slow else args.samples
        print(f"== {name}: isolated {n_iso} frames K={k_iso}, dense {n_den} frames K={k_den}")
        res = run_method(kind, ws, label, sim_iso["x"][:n_iso], k_iso, 1, cache)
        sub = {k: v[:n_iso] for k, v in ref.items() if isinstance(v, torch.Tensor)}
        row["isolated"] = {"frames": n_iso, "samples": res.samples.shape[1],
                           **isolated_scores(res.mean(), res.var(), sub)}
        t0 = time.perf_counter()
        res = run_method(kind, ws, label, dense["x"][:n_den], k_den, 2, cache)
        sec = time.perf_counter() - t0
        d = {k: v[:n_den] for k, v in dense.items()}
        row["dense"] = {"frames": n_den, "samples": res.samples.shape[1], **dense_scores(res, d)}
        row["fidelity"] = fidelity(name, res.mean(), d["y"], d["theta"], d["mask"], std=res.std(),
                                   n_samples=res.samples.shape[1], evals=res.info["evals_per_sample"],
                                   seconds=sec).as_row()
        row["evals_per_sample"] = res.info["evals_per_sample"]
        row["seconds_per_frame"] = sec / n_den
        methods[name] = row
        c = row["dense"]["calibration"]
        print(f"   std ratio {row['isolated']['std_ratio']['median']:.2f}  corr {row['isolated']['corr']['median']:.2f}"
              f"  cov90 {c['coverage_90']:.3f}  mean|z| {c['mean_abs_z']:.2f}  {sec / n_den:.2f} s/frame")
        save()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
