"""MLE accuracy and speed: RMSE of fit_mle against the CRLB on isolated emitters, and fits/s.

The CRLB is for the 4-parameter model (x, y, photons, background) that fit_mle estimates,
averaged as sqrt(mean CRLB²) over the true sub-pixel positions; the RMSE counts every fit
(`ualm.protocols.mle_vs_crlb`).

    python benchmarks/mle_accuracy.py [--fits 4000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from ualm.protocols import mle_vs_crlb  # noqa: E402


def one_setting(i0, bg, fits, seed, device):
    r = mle_vs_crlb(i0, bg, n_fits=fits, shape=(11, 11), seed=seed, device=device)
    return {"device": device.type, **r.as_row()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fits", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
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
    common.save("mle_accuracy", {"fits": args.fits, "seed": args.seed,
                                 "camera": "PAPER_CAMERA (gain 1, offset 100, read var 5)",
                                 "sigma_px": 0.92, "frame": "11x11", "worst_ratio_i0_ge_200": worst,
                                 "rows": rows})


if __name__ == "__main__":
    main()
