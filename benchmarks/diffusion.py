"""Benchmark of the guided diffusion model Ψ with the bundled quick weights.

Writes benchmarks/results/diffusion.json:
- the schedules: γ_T of the paper's (T = 100, β linear 1e-4 → 1e-2) and of the cosine one;
- speed: for each sampler of `ualm.uncertainty.SAMPLER_TABLE`, the wall time and network
  evaluations of an uncertainty map of K = 32 samples of one frame (a full run), on CPU and
  CUDA when present; and the time of one network evaluation for a batch of 16 frames × 32
  samples, from which the 16-frame time is the evaluations times that (measured, not run);
- fidelity at the paper's protocol (10 emitters on the disc, i0 = 200, σ_y = 3) on held-out
  frames: MSE to the true KDE of the sample mean and of ŷ = φ(x), LoG detection on both
  (one-to-one matching), Spearman correlation of the per-pixel std with |mean − y| over pixels
  where the truth or the mean exceeds 0.05, and the mean per-pixel std there;
- the issue's bars, computed from the rows above.

With the bundled weights the summary is recorded in ualm/pretrained/diffusion_quick.json
(`ualm.pretrained.record_metrics`, keyed by the SHA-256 of the weights).

    python benchmarks/diffusion.py [--frames 200] [--samples 8] [--slow-samples 2] [--threads 2]
    python benchmarks/diffusion.py --speed-only   # remeasure the timings, keep the fidelity rows
    python benchmarks/diffusion.py --only "t0 = 10"   # measure one sampler, keep the others' rows
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

import ualm  # noqa: E402
from ualm import diffusion, pretrained  # noqa: E402
from ualm.uncertainty import SAMPLER_TABLE, evals_per_sample, fidelity, uncertainty_map  # noqa: E402

HELD_OUT_SEED = 20261127  # not a seed of the training stream (SimSource) nor of its validation set
SLOW = 50  # samplers with more network evaluations than this get --slow-samples samples


def speed(psi, phi, device, frame, table=SAMPLER_TABLE) -> list[dict]:
    psi, phi = psi.to(device), phi.to(device)
    rows = []
    cond = diffusion.condition(phi, frame[None].to(device), psi.config.cond).repeat(512, 1, 1, 1)
    y = torch.randn(512, 80, 80, device=device)
    t = torch.full((512,), 50, device=device)
    with torch.no_grad():
        t_eval_512 = common.best_time(lambda: psi(y, cond, t), device, repeats=2, min_time=0.1)
        t_eval_32 = common.best_time(lambda: psi(y[:32], cond[:32], t[:32]), device, repeats=3, min_time=0.1)
    for label, sampler in table.items():
        uncertainty_map(frame, psi, phi, 32, sampler, progress=False)  # warm-up
        common.sync(device)
        t0 = time.perf_counter()
        res = uncertainty_map(frame, psi, phi, 32, sampler, progress=False)
        common.sync(device)
        sec = time.perf_counter() - t0
        ev = res.info["evals_per_sample"]
        rows.append({"device": str(device), "sampler": label, "evals_per_sample": ev,
                     "one_frame_k32_seconds": sec, "one_eval_batch32_seconds": t_eval_32,
                     "one_eval_batch512_seconds": t_eval_512,
                     "batch16_k32_seconds_from_eval_time": ev * t_eval_512})
        print(f"{device} {label:32s} evals {ev:4d}  K=32 one frame {sec:7.2f} s  "
              f"16 frames ≈ {ev * t_eval_512:7.1f} s")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--samples", type=int, default=8, help="K for the fast samplers")
    ap.add_argument("--slow-samples", type=int, default=2, help=f"K for samplers with > {SLOW} evaluations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="remeasure the speed rows only, keeping the fidelity rows of the existing JSON")
    ap.add_argument("--out", default=None)
    ap.add_argument("--weights", default="diffusion_quick", help="bundled Ψ to measure")
    ap.add_argument("--only", nargs="+", default=None,
                    help="measure only the samplers whose label contains one of these strings")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    psi, phi = pretrained.load(args.weights, device="cpu"), pretrained.load("deepstorm_quick", device="cpu")
    info = pretrained.manifest(args.weights)
    table = {k: v for k, v in SAMPLER_TABLE.items() if args.only is None or any(o in k for o in args.only)}
    cfg = ualm.SimConfig()
    sim = ualm.simulate_batch(args.frames, cfg, generator=ualm.make_generator(HELD_OUT_SEED), dtype=torch.float32)
    x, y, theta, mask = sim["x"], sim["y"], sim["theta"], sim["mask"]

    speed_rows = []
    if not args.skip_speed:
        for device in common.devices():
            speed_rows += speed(psi, phi, device, x[0], table)
        psi, phi = psi.to("cpu"), phi.to("cpu")

    if args.speed_only:
        path = Path(args.out) if args.out else common.RESULTS / "diffusion.json"
        old = json.loads(path.read_text())
        if old.get("weights_sha256") != info["sha256"]:
            raise SystemExit(f"{path} describes other weights; run the whole benchmark")
        rows, args.frames = old["fidelity"], old["protocol"]["frames"]
        args.samples, args.slow_samples = old["protocol"]["samples"], old["protocol"]["slow_samples"]
        labels = []
    else:
        yhat = phi.predict(x)
        rows = [fidelity("ŷ = φ(x)", yhat, y, theta, mask).as_row()]
        print(rows[0])
        labels = list(table)
    for label in labels:
        sampler = SAMPLER_TABLE[label]
        k = args.slow_samples if evals_per_sample(sampler, diffusion.schedule("paper").T) > SLOW else args.samples
        t0 = time.perf_counter()
        res = uncertainty_map(x, psi, phi, k, sampler, seed=1, progress=True)
        sec = time.perf_counter() - t0
        row = fidelity(label, res.mean(), y, theta, mask, std=res.std(), n_samples=k,
                       evals=res.info["evals_per_sample"], seconds=sec).as_row()
        rows.append(row)
        print({k2: (round(v, 5) if isinstance(v, float) else v) for k2, v in row.items()})

    if args.only and not args.speed_only:  # keep the other samplers' rows measured on these weights
        path = Path(args.out) if args.out else common.RESULTS / "diffusion.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        same = (old.get("weights_sha256") == info["sha256"] and old.get("protocol", {}).get("frames") == args.frames
                and old["protocol"].get("samples") == args.samples
                and old["protocol"].get("slow_samples") == args.slow_samples)
        if same:
            fresh = {r["method"] for r in rows}
            rows = [rows[0]] + [r for r in old["fidelity"][1:] if r["method"] not in fresh] + rows[1:]
            order = list(SAMPLER_TABLE)
            rows = [rows[0]] + sorted(rows[1:], key=lambda r: order.index(r["method"]) if r["method"] in order else 99)
            measured = {r["sampler"] for r in speed_rows}
            speed_rows = sorted([r for r in old.get("speed", []) if r["sampler"] not in measured] + speed_rows,
                                key=lambda r: (r["device"], order.index(r["sampler"]) if r["sampler"] in order else 99))
            print(f"merged with the rows of {path} for the samplers not measured now")
    base = rows[0]
    paper = next((r for r in rows if r["method"].startswith("paper")), {"evals": 100, "mse": float("inf"),
                                                                           "recall": 0.0})

    def meets_bar(r):  # no worse than ŷ: MSE, and detection within one percentage point
        return (r["mse"] <= base["mse"] and r["recall"] >= base["recall"] - 0.01
                and r["precision"] >= base["precision"] - 0.01)

    fast = [r for r in rows[1:] if r["evals"] * 3 <= paper["evals"]]
    meeting = [r for r in rows[1:] if meets_bar(r)]
    cpu_speed = {r["sampler"]: r for r in speed_rows if r["device"] == "cpu"}
    fastest = min(meeting, key=lambda r: r["evals"]) if meeting else None
    bars = {
        "gamma_T_paper": diffusion.schedule("paper").describe()["gamma_T"],
        "gamma_T_cosine": diffusion.schedule("cosine").describe()["gamma_T"],
        "samplers_meeting_yhat_bar": [r["method"] for r in meeting],
        "fast_samplers_at_least_as_good_as_paper": [
            r["method"] for r in fast if r["mse"] <= paper["mse"] and r["recall"] >= paper["recall"]],
        "fastest_meeting_bar": fastest["method"] if fastest else None,
        "fastest_meeting_bar_k32_seconds_cpu": (cpu_speed[fastest["method"]]["one_frame_k32_seconds"]
                                                if fastest and cpu_speed else None),
        "spearman_by_sampler": {r["method"]: r["spearman"] for r in rows[1:]},
    }
    print(bars)
    payload = {"weights": args.weights, "weights_sha256": info["sha256"], "cond": list(psi.config.cond),
               "protocol": {"frames": args.frames, "count": cfg.count, "i0": cfg.i0,
                            "radius": cfg.radius, "sigma_y": cfg.sigma_y, "seed": HELD_OUT_SEED,
                            "samples": args.samples, "slow_samples": args.slow_samples,
                            "significant_level": 0.05},
               "speed": speed_rows, "fidelity": rows, "bars": bars}
    path = common.save("diffusion", payload, args.out)
    if args.out is None or args.weights != "diffusion_quick":
        pretrained.record_metrics(args.weights, info["sha256"], {
            "benchmark": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "command": shlex.join(["python", "benchmarks/diffusion.py", *sys.argv[1:]]),
            "protocol": payload["protocol"], "fidelity": rows, "bars": bars})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
