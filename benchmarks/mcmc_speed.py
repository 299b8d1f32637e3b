#!/usr/bin/env python3
"""How fast is the batched Metropolis–Hastings sampler? (issue 3)

Side by side, in one run, on one isolated-emitter frame (i0 = 200, the paper's camera), the same
Poisson-approximation likelihood (eq. 13) and the same random-walk proposal (σ² = 0.05, β = 1):

- batched: `ualm.mcmc.sample_posterior`, all chains advanced together by tensor operations;
- loop (torch): a plain Python loop, one chain at a time, one proposal at a time, calling the
  package's own unchecked fast path, ``poisson_terms(x, _expected_frame(θ), camera)``;
- loop (numpy): the same loop with numpy/scipy on plain arrays (erf at the pixel edges, an outer
  product, one log per pixel): what one would write by hand, and the harder baseline.

The issue's target ("batched ≥ 50× faster than a plain per-chain Python loop written in the
benchmark") refers to the first loop, the plain per-chain loop over the same torch likelihood:
that is `speedup_vs_loop_torch` in the JSON and the "target" column of the table. Against the
hand-optimised numpy loop the batched sampler is far less ahead (~8× on one CPU core); both
numbers are reported.

The number reported is chain-iterations per second (chains × iterations / wall time), the best
of `--repeats` repeats (`common.best_time`; the machine may be shared). Then the time to a
posterior
variance map with at least 1,000 effective samples: sample (adaptive proposal, β = 1) with
enough draws for a bulk ESS ≥ 1000 in x and y, then the KDE moments (eq. 5). CPU always, CUDA
when present (the loops always run on the CPU). Prints a table and writes JSON.

    python benchmarks/mcmc_speed.py [--quick] [--threads 1] [--out mcmc_speed]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import erf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ualm  # noqa: E402
from common import best_time, save, sync  # noqa: E402  (benchmarks/common.py)
from ualm import mcmc, posterior  # noqa: E402
from ualm.likelihood import poisson_terms  # noqa: E402
from ualm.psf import _expected_frame  # noqa: E402

I0, SIGMA, PROPOSAL_VAR = 200.0, 0.92, 0.05
CAMERA = ualm.PAPER_CAMERA
TARGET_SPEEDUP = 50.0  # issue 3: batched >= 50x the plain per-chain loop (loop_torch)
BASELINES = {
    "loop_torch": "plain per-chain Python loop, one proposal at a time, same torch likelihood "
                  "(the baseline of the issue's 50x target)",
    "loop_numpy": "hand-optimised per-chain loop on numpy arrays (a harder baseline, "
                  "not the one the target refers to)",
}


def make_frame(seed=0):
    cfg = ualm.SimConfig(layout="isolated")
    sim = ualm.simulate_batch(1, cfg, generator=ualm.make_generator(seed), dtype=torch.float64)
    return sim["x"][0], sim["theta"][0, 0]


# ------------------------------------------------------------------------------------------
# The per-chain loops (baselines)
# ------------------------------------------------------------------------------------------


def loop_torch(x, start, n_chains, n_iter, seed=0):
    """One chain at a time, one proposal at a time, with the package's likelihood pieces."""
    g = torch.Generator().manual_seed(seed)
    i0 = torch.tensor([I0], dtype=x.dtype)
    sigma = torch.tensor([SIGMA], dtype=x.dtype)
    bg = torch.tensor(0.0, dtype=x.dtype)
    step = math.sqrt(PROPOSAL_VAR)

    def loglik(theta):  # theta (2,)
        omega = _expected_frame(theta[None], i0, sigma, bg, x.shape)
        return -poisson_terms(x, omega, CAMERA).sum()

    accepted, draws = 0, []
    for _ in range(n_chains):
        th = start.clone()
        ll = loglik(th)
        chain = []
        for _ in range(n_iter):
            prop = th + step * torch.randn(2, generator=g, dtype=x.dtype)
            lp = loglik(prop)
            if math.log(torch.rand(1, generator=g, dtype=x.dtype).item()) < (lp - ll).item():
                th, ll = prop, lp
                accepted += 1
            chain.append(th)
        draws.append(torch.stack(chain))
    return accepted / (n_chains * n_iter), torch.stack(draws)


def loop_numpy(x, start, n_chains, n_iter, seed=0):
    """The same loop on numpy arrays (erf at pixel edges, outer product, log per pixel)."""
    rng = np.random.default_rng(seed)
    xn = x.numpy()
    h, w = xn.shape
    excess = CAMERA.read_var / CAMERA.gain**2
    n = np.clip((xn - CAMERA.offset) / CAMERA.gain + excess, 0.0, None).ravel()
    edges_x, edges_y = np.arange(w + 1) - 0.5, np.arange(h + 1) - 0.5
    c = 1.0 / (math.sqrt(2.0) * SIGMA)
    step = math.sqrt(PROPOSAL_VAR)

    def loglik(tx, ty):
        ex = 0.5 * np.diff(erf((edges_x - tx) * c))
        ey = 0.5 * np.diff(erf((edges_y - ty) * c))
        rate = np.outer(I0 * ey, ex).ravel() + excess
        return n @ np.log(rate) - rate.sum()

    accepted, draws = 0, np.empty((n_chains, n_iter, 2))
    for k in range(n_chains):
        tx, ty = float(start[0]), float(start[1])
        ll = loglik(tx, ty)
        for i in range(n_iter):
            px, py = tx + step * rng.standard_normal(), ty + step * rng.standard_normal()
            lp = loglik(px, py)
            if math.log(rng.random()) < lp - ll:
                tx, ty, ll = px, py, lp
                accepted += 1
            draws[k, i] = tx, ty
    return accepted / (n_chains * n_iter), draws


def batched(x, start, n_chains, n_iter, seed=0):
    init = start.to(x.device).expand(n_chains, 2)
    res = mcmc.sample_posterior(x, n_chains=n_chains, n_iter=n_iter, burn_in=0,
                                proposal=PROPOSAL_VAR, adapt=False, init=init, seed=seed)
    return float(res.acceptance.mean()), res


# ------------------------------------------------------------------------------------------
# Time to a variance map with 1,000 effective samples
# ------------------------------------------------------------------------------------------


def time_to_ess(x, device, n_chains, target=1000, burn_in=500, seed=0):
    """Sample with an adaptive proposal, β = 1, doubling the draws until the bulk ESS of x and y
    reaches `target`; report the successful attempt (sampling + ESS + KDE moments)."""
    draws = max(50, int(math.ceil(8 * target / n_chains)))
    tries = []
    while True:
        sync(device)
        t0 = time.perf_counter()
        res = mcmc.sample_posterior(x, n_chains=n_chains, n_iter=burn_in + draws, burn_in=burn_in,
                                    seed=seed)
        ess = res.ess()
        sync(device)
        t_sample = time.perf_counter() - t0
        mean, var = posterior.kde_moments(res)
        sync(device)
        total = time.perf_counter() - t0
        tries.append(dict(draws=draws, ess_min=float(ess.min()), seconds=total))
        if float(ess.min()) >= target or draws > 10**6:
            return dict(n_chains=n_chains, burn_in=burn_in, draws_per_chain=draws,
                        ess_x=float(ess[0]), ess_y=float(ess[1]),
                        acceptance=float(res.acceptance.mean()),
                        seconds_sampling=t_sample, seconds_total=total,
                        chain_iterations=n_chains * (burn_in + draws),
                        std_peak=float(var.sqrt().max()), attempts=tries)
        draws *= 2


# ------------------------------------------------------------------------------------------


def run_device(device, args, x_cpu, start):
    x = x_cpu.to(device)
    quick = args.quick
    if device.type == "cpu":
        sizes = [64, 1024] if quick else [64, 1024, 4096]
    else:
        sizes = [1024, 16384, 131072] if quick else [1024, 16384, 131072, 524288]
    iters = {c: max(20, min(2000, int(2e6 // c) if device.type == "cpu" else 400)) for c in sizes}
    loop_np = dict(chains=2, iters=300 if quick else 1000)
    loop_t = dict(chains=2, iters=100 if quick else 300)
    batched(x, start, 8, 20)  # warm up (allocations, CUDA context)

    def rate_of(key, fn, n, device):
        """Best chain-iterations per second of fn (n chain-iterations a call); its acceptance."""
        last = {}

        def call():
            last["a"] = fn()[0]

        rates[key] = n / best_time(call, device, repeats=args.repeats, min_time=0.2)
        accept[key] = last["a"]

    rates, accept = {}, {}
    for c in sizes:
        rate_of(f"batched_{c}", lambda c=c: batched(x, start, c, iters[c]), c * iters[c], device)
    cpu = torch.device("cpu")
    rate_of("loop_numpy", lambda: loop_numpy(x_cpu, start, loop_np["chains"], loop_np["iters"]),
            loop_np["chains"] * loop_np["iters"], cpu)
    rate_of("loop_torch", lambda: loop_torch(x_cpu, start, loop_t["chains"], loop_t["iters"]),
            loop_t["chains"] * loop_t["iters"], cpu)

    top = max((k for k in rates if k.startswith("batched")), key=rates.get)
    out = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        chain_iterations_per_s=rates, acceptance=accept,
        iterations={k: iters[int(k.split("_")[1])] for k in rates if k.startswith("batched")},
        loop_iterations=dict(numpy=loop_np, torch=loop_t),
        best_batched=top,
        speedup_vs_loop_torch=rates[top] / rates["loop_torch"],
        speedup_vs_loop_numpy=rates[top] / rates["loop_numpy"],
    )
    out["issue_target"] = dict(
        required_speedup=TARGET_SPEEDUP, baseline="loop_torch",
        baseline_description=BASELINES["loop_torch"], speedup=out["speedup_vs_loop_torch"],
        met=out["speedup_vs_loop_torch"] >= TARGET_SPEEDUP,
        note=("the issue's 50x target is against the plain per-chain loop with the same torch "
              "likelihood (loop_torch); against the hand-optimised numpy loop (loop_numpy) the "
              f"batched sampler is {out['speedup_vs_loop_numpy']:.1f}x faster"))
    n_chains = 64 if device.type == "cpu" else 4096
    ess = time_to_ess(x, device, n_chains)
    ess["loop_numpy_seconds_extrapolated"] = ess["chain_iterations"] / rates["loop_numpy"]
    ess["loop_torch_seconds_extrapolated"] = ess["chain_iterations"] / rates["loop_torch"]
    out["time_to_1000_ess"] = ess
    return out


def print_table(res):
    print(f"\n== {res['device']} ({res['device_name']}) ==")
    print(f"{'sampler':>16} {'chain-iter/s':>14} {'acceptance':>11} "
          f"{'vs torch loop':>14} {'vs numpy loop':>14}")
    print(f"{'':>16} {'':>14} {'':>11} {'(50x target)':>14} {'(hand-opt.)':>14}")
    for k, r in res["chain_iterations_per_s"].items():
        print(f"{k:>16} {r:14.3g} {res['acceptance'][k]:11.3f} "
              f"{r / res['chain_iterations_per_s']['loop_torch']:13.3g}x "
              f"{r / res['chain_iterations_per_s']['loop_numpy']:13.3g}x")
    t = res["issue_target"]
    print(f"issue 3 target: {res['best_batched']} is {t['speedup']:.0f}x the plain per-chain torch "
          f"loop (target >= {t['required_speedup']:.0f}x: {'met' if t['met'] else 'NOT met'}); "
          f"against the hand-optimised numpy loop it is {res['speedup_vs_loop_numpy']:.1f}x")
    e = res["time_to_1000_ess"]
    print(f"time to a variance map with ESS >= 1000: {e['seconds_total']:.2f} s "
          f"({e['n_chains']} chains x ({e['burn_in']} + {e['draws_per_chain']}) iterations, "
          f"ESS x/y {e['ess_x']:.0f}/{e['ess_y']:.0f}, sampling {e['seconds_sampling']:.2f} s); "
          f"the loops would need ~{e['loop_numpy_seconds_extrapolated']:.1f} s (numpy) / "
          f"~{e['loop_torch_seconds_extrapolated']:.1f} s (torch), extrapolated")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and iterations")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: per-core numbers, as the loops use one)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best counts")
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cuda when present)")
    ap.add_argument("--out", default="mcmc_speed",
                    help="result name: writes benchmarks/results/<name>.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, theta = make_frame()
    start = theta.clone()
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    results = dict(
        issue=3, quick=args.quick, threads=args.threads, repeats=args.repeats,
        numpy=np.__version__, platform=platform.platform(),
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
        setting=dict(i0=I0, sigma=SIGMA, proposal_var=PROPOSAL_VAR, beta=1.0, dtype="float64",
                     camera="paper (gain 1, offset 100 ADU, read-noise variance 5 ADU^2)"),
        target=dict(required_speedup=TARGET_SPEEDUP, baseline="loop_torch"),
        baselines=BASELINES,
        devices={},
    )
    for dev in devices:
        res = run_device(dev, args, x, start)
        results["devices"][dev.type] = res
        print_table(res)
    results["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    save(Path(args.out).stem if args.out else "mcmc_speed", results)
    return results


if __name__ == "__main__":
    main()
