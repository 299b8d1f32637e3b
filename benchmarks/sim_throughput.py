"""Simulation throughput: frames per second for simulate_batch (frame + KDE) at several batch
sizes, and the frame and the KDE alone, on CPU and on CUDA when present.

    python benchmarks/sim_throughput.py [--batches 1 16 256 1024]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import ualm  # noqa: E402


def run(batches, dtype=torch.float32):
    cfg = ualm.SimConfig()  # paper protocol: 10 emitters on the disc, i0 = 200, 20×20 -> 80×80
    rows = []
    for device in common.devices():
        gen = ualm.make_generator(0, device)
        theta, mask = ualm.disc_emitters(max(batches), 10, generator=gen, dtype=dtype)
        for b in batches:
            th, m = theta[:b], mask[:b]
            t_all = common.best_time(lambda: ualm.simulate_batch(b, cfg, generator=gen, dtype=dtype), device)
            t_frame = common.best_time(
                lambda: cfg.camera.sample(ualm.expected_frame(th, 200.0, 0.92, 0.0, (20, 20), mask=m), gen),
                device)
            t_kde = common.best_time(lambda: ualm.kde(th, (20, 20), 3.0, mask=m), device)
            row = {"device": device.type, "batch": b, "frames_per_s": b / t_all,
                   "frame_only_per_s": b / t_frame, "kde_only_per_s": b / t_kde}
            rows.append(row)
            print(f"{device.type:5s} batch {b:5d}: {row['frames_per_s']:10.0f} frames/s (x+y)  "
                  f"{row['frame_only_per_s']:10.0f} frames/s (x)  {row['kde_only_per_s']:10.0f} KDEs/s")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 1024])
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sim_throughput.json)")
    args = p.parse_args(argv)
    rows = run(args.batches)
    common.save("sim_throughput", {"config": "SimConfig() paper protocol, float32", "rows": rows}, args.out)


if __name__ == "__main__":
    main()
