"""Where should the guided sampler start? A sweep of t0 on validation frames.

The guided warm start draws y_t0 ~ N(√γ_t0 ŷ, (1 − γ_t0) I) and runs the reverse chain from
t0. A small t0 keeps the samples near ŷ (little spread, little room to correct ŷ); a large t0
lets the chain wander and accumulate the network's errors. This script measures the MSE of the
sample mean to the truth, LoG detection on the mean and the mean per-pixel std for a few t0, on
VALIDATION frames (seed 20261130): not the training stream, and not the held-out frames of
benchmarks/diffusion.py and benchmarks/uncertainty.py, which score the chosen t0 afterwards.

    python benchmarks/diffusion_t0.py [--frames 100] [--samples 8] [--t0 5 10 15 25 50]
Writes benchmarks/results/diffusion_t0.json.
"""
from __future__ import annotations

import argparse
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
from ualm import pretrained  # noqa: E402
from ualm.uncertainty import fidelity, uncertainty_map  # noqa: E402

VALIDATION_SEED = 20261130
# A t0 is kept if its validation MSE is at least 2 % below ŷ's: the ratio of two MSEs on 100
# frames moves by a few percent from one set of frames to another, and a t0 that only ties ŷ
# here may lose on the held-out frames.
MARGIN = 0.98


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--t0", type=int, nargs="+", default=[5, 10, 15, 25, 50])
    ap.add_argument("--weights", default="diffusion_quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    psi, phi = pretrained.load(args.weights), pretrained.load("deepstorm_quick")
    sim = ualm.simulate_batch(args.frames, ualm.SimConfig(), generator=ualm.make_generator(VALIDATION_SEED),
                              dtype=torch.float32)
    x, y, theta, mask = sim["x"], sim["y"], sim["theta"], sim["mask"]
    rows = [fidelity("ŷ = φ(x)", phi.predict(x), y, theta, mask).as_row()]
    for t0 in args.t0:
        start = time.perf_counter()
        res = uncertainty_map(x, psi, phi, args.samples, "guided", t0=t0, seed=1, progress=False)
        row = fidelity(f"guided start, t0 = {t0}", res.mean(), y, theta, mask, std=res.std(),
                       n_samples=args.samples, evals=res.info["evals_per_sample"],
                       seconds=time.perf_counter() - start).as_row()
        row["t0"] = t0
        row["mse_over_yhat"] = row["mse"] / rows[0]["mse"]
        rows.append(row)
        print(f"t0 = {t0:3d}: MSE {row['mse']:.3e} ({row['mse_over_yhat']:.3f} × ŷ)  P {row['precision']:.4f}"
              f"  R {row['recall']:.4f}  mean std {row['mean_std']:.4f}")
    base = rows[0]
    ok = [r for r in rows[1:] if r["mse"] <= MARGIN * base["mse"] and r["recall"] >= base["recall"] - 0.01
          and r["precision"] >= base["precision"] - 0.01]
    # the largest t0 (the most spread, the most room to explore) whose mean beats ŷ by the margin
    chosen = max(ok, key=lambda r: r["t0"])["t0"] if ok else None
    print("chosen t0:", chosen)
    common.save("diffusion_t0", {
        "weights": args.weights, "weights_sha256": pretrained.manifest(args.weights)["sha256"],
        "protocol": {"frames": args.frames, "samples": args.samples, "seed": VALIDATION_SEED,
                     "config": "SimConfig() (10 emitters on the disc, i0 = 200)"},
        "rows": rows, "rule": f"largest t0 whose sample-mean MSE is <= {MARGIN} x ŷ's, P and R within 0.01 of ŷ's",
        "chosen_t0": chosen, "command": shlex.join(["python", "benchmarks/diffusion_t0.py", *sys.argv[1:]])},
        args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
