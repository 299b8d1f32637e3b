"""Samplers tested on their spread with a perfect network (`ualm.oracle.GaussianOracle`).

For y_0 ~ N(μ, s²) per pixel the oracle returns the exact E[ε | y_t], so a sampler's sample
std / s measures what the sampler itself does to the spread. Swept: the SDEdit-style guided
start at t0 (ancestral steps from N(√γ_t0 ŷ, (1 − γ_t0) I)), DDIM (η = 1) in n steps from the
start of the schedule, and ancestral from N(0, I), for the paper's schedule (γ_T ≈ 0.60) and
the cosine schedule (γ_T ≈ 0), at s = `EMITTER_S` (an emitter's spread along a shift) and
`PIXEL_S` (one pixel's). 16 × 1,600 draws per point; seconds on a CPU.

    python benchmarks/oracle_spread.py [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

from ualm.diffusion import schedule  # noqa: E402
from ualm.oracle import EMITTER_S, PIXEL_S, STEPS, T0S, spread_sweep, std_ratio  # noqa: E402

SPREADS = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


def sweep(name: str) -> dict:
    out = spread_sweep(name, sorted({EMITTER_S, PIXEL_S}))
    out["ancestral_from_noise"] = {str(s): std_ratio(schedule(name), s, method="ancestral", start="noise")
                                   for s in SPREADS}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t = time.perf_counter()
    payload = {"emitter_s": EMITTER_S, "pixel_s": PIXEL_S, "t0s": list(T0S), "steps": list(STEPS),
               "schedules": {name: sweep(name) for name in ("paper", "cosine")}}
    payload["seconds"] = time.perf_counter() - t
    for name, r in payload["schedules"].items():
        e = r["spreads"][str(EMITTER_S)]
        print(name, "SDEdit t0:", {k: round(v, 3) for k, v in e["sdedit_t0"].items()},
              "DDIM:", {k: round(v, 3) for k, v in e["ddim_eta1"].items()},
              "ancestral from noise:", {k: round(v, 3) for k, v in r["ancestral_from_noise"].items()})
    common.save("oracle_spread", payload, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
