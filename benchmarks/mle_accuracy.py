"""MLE accuracy and speed: RMSE of fit_mle against the CRLB on isolated emitters, and fits/s.

The CRLB is for the 4-parameter model (x, y, photons, background) that fit_mle estimates,
averaged as sqrt(mean CRLB²) over the true sub-pixel positions; the RMSE counts every fit
(`ualm.protocols.mle_vs_crlb`).

Then fits/s against the batch size on the CPU (7 × 7 windows, background 10 photons/px, 1 and
2 torch threads, fixed), fit_mle as shipped (chunks of `mle.CPU_CHUNK` frames) side by side
with one call on the whole batch (`CPU_CHUNK` set past the batch): the median of `--rounds`.

    python benchmarks/mle_accuracy.py [--fits 4000] [--seed 0] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import ualm  # noqa: E402
from ualm import mle  # noqa: E402
from ualm.protocols import mle_vs_crlb  # noqa: E402

BATCHES = (4000, 16000, 64000)


def one_setting(i0, bg, fits, seed, device):
    r = mle_vs_crlb(i0, bg, n_fits=fits, shape=(11, 11), seed=seed, device=device)
    return {"device": device.type, **r.as_row()}


def batch_rates(seed: int, rounds: int) -> list[dict]:
    """fits/s by batch size: in chunks (as shipped) and in one call, at 1 and 2 threads."""
    rows, chunk = [], mle.CPU_CHUNK
    for i0 in (100.0, 2000.0):
        gen = ualm.make_generator(seed)
        th, _ = ualm.isolated_emitters(max(BATCHES), (7, 7), generator=gen, dtype=torch.float64)
        x = ualm.PAPER_CAMERA.sample(ualm.expected_frame(th, i0, 0.92, 10.0, (7, 7)), generator=gen)
        ualm.fit_mle(x[:200])  # warm-up
        for n in BATCHES:
            for threads in (1, 2):
                row = {"i0": i0, "background": 10.0, "frame": "7x7", "batch": n, "threads": threads}
                for label, size in (("chunked", chunk), ("one_call", n + 1)):
                    times = []
                    mle.CPU_CHUNK = size
                    try:
                        for _ in range(rounds):
                            t0 = time.perf_counter()
                            ualm.fit_mle(x[:n], num_threads=threads)
                            times.append(time.perf_counter() - t0)
                    finally:
                        mle.CPU_CHUNK = chunk
                    row[f"{label}_fits_per_s"] = n / statistics.median(times)
                row["chunked_over_one_call"] = row["chunked_fits_per_s"] / row["one_call_fits_per_s"]
                rows.append(row)
                print(f"i0 {i0:6.0f} batch {n:6d} {threads} thr: chunks of {chunk} "
                      f"{row['chunked_fits_per_s']:8.0f}/s, one call {row['one_call_fits_per_s']:8.0f}/s "
                      f"({row['chunked_over_one_call']:.2f} x)", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fits", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="timed calls per batch setting")
    args = p.parse_args(argv)
    rows = []
    print(f"{'dev':5s} {'i0':>6s} {'bg':>4s} {'RMSE nm':>8s} {'CRLB nm':>8s} {'ratio x':>8s} {'ratio y':>8s} "
          f"{'fits/s':>9s}")
    for device in common.devices():
        for bg in (0.0, 10.0):
            for i0 in (100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0):
                r = one_setting(i0, bg, args.fits, args.seed, device)
                rows.append(r)
                print(f"{r['device']:5s} {i0:6.0f} {bg:4.0f} {r['rmse_nm']:8.2f} {r['crlb_nm']:8.2f} "
                      f"{r['ratio_x']:8.3f} {r['ratio_y']:8.3f} {r['fits_per_s']:9.0f}")
    worst = max(max(r["ratio_x"], r["ratio_y"]) for r in rows if r["i0"] >= 200)
    print(f"worst RMSE/CRLB for i0 >= 200: {worst:.3f}")
    batches = batch_rates(args.seed, args.rounds)
    common.save("mle_accuracy", {"fits": args.fits, "seed": args.seed,
                                 "camera": "PAPER_CAMERA (gain 1, offset 100, read var 5)",
                                 "sigma_px": 0.92, "frame": "11x11", "worst_ratio_i0_ge_200": worst,
                                 "rows": rows, "cpu_chunk": mle.CPU_CHUNK, "batches": batches})


if __name__ == "__main__":
    main()
