"""Mixed precision in sampling, checked on a CUDA GPU: the same chains (same seeds) of the bundled
Ψ with its forward pass in bfloat16 (float16 where there is none) and in float32, their
difference, their fidelity to the truth, and the seconds of a K = 32 map of 64 frames each way;
also the batch size `cuda_batch_size` picks and, optionally, `torch.compile`.

    python benchmarks/amp_check.py [--frames 64] [--compile] [--out PATH]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import RESULTS, save

import ualm
from ualm import diffusion as D
from ualm import sampling as S
from ualm import pretrained
from ualm.uncertainty import uncertainty_map


def timed(fn, device):
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd Ψ")
    ap.add_argument("--out", type=Path, default=RESULTS / "amp_check.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("amp_check needs a CUDA device")
    device = torch.device("cuda")
    psi = pretrained.load("diffusion_quick", device=device)
    phi = pretrained.load("deepstorm_quick", device=device)
    # frames simulated on the CPU (the same frames as on any machine), then moved
    batch = ualm.simulate_batch(args.frames, ualm.SimConfig(), generator=ualm.make_generator(11),
                                dtype=torch.float32)
    x = batch["x"].to(device)
    cond = D.condition(phi, x, psi.config.cond)
    sched = D.schedule(psi.config.schedule)
    rows = {}
    uncertainty_map(x[:2], psi, phi, n_samples=2, progress=False)  # warm-up (cuDNN autotune)
    for label, amp in (("float32", False), ("autocast", True)):
        res, sec = timed(lambda: uncertainty_map(x, psi, phi, n_samples=args.samples,
                                                 progress=False, amp=amp), device)
        mean = res.mean().cpu()
        rows[label] = {"seconds": sec, "mse_of_mean": float(((mean - batch["y"]) ** 2).mean()),
                       "samples": res.samples.cpu()}
        print(f"{label}: K = {args.samples} maps of {args.frames} frames in {sec:.2f} s, "
              f"MSE of the mean {rows[label]['mse_of_mean']:.3e}", flush=True)
    a, b = rows["float32"].pop("samples"), rows["autocast"].pop("samples")
    diff = {"max_abs_sample_diff": float((a - b).abs().max()),
            "mean_abs_sample_diff": float((a - b).abs().mean()),
            "std_ratio_autocast_over_float32": float(b.std(1).mean() / a.std(1).mean())}
    print(diff, flush=True)
    batch_size = S.cuda_batch_size(psi, cond)
    print("cuda_batch_size:", batch_size, flush=True)
    compiled = None
    if args.compile:
        try:
            psi_c = torch.compile(psi)
            _, first = timed(lambda: S.sample(psi_c, cond[:2], sched, 2, method="ddim", steps=10,
                                              eta=1.0, progress=False), device)
            _, sec = timed(lambda: S.sample(psi_c, cond, sched, args.samples, method="ddim",
                                            steps=10, eta=1.0, progress=False), device)
            compiled = {"first_call_seconds": first, "seconds": sec}
        except Exception as err:  # noqa: BLE001 (record why, do not stop the check)
            compiled = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
        print("torch.compile:", compiled, flush=True)
    save("amp_check", {"device": torch.cuda.get_device_name(0), "amp_dtype": str(D.amp_dtype(device)),
                       "frames": args.frames, "samples": args.samples, "sampler": "ddim (default)",
                       "rows": rows, "difference": diff, "cuda_batch_size": batch_size,
                       "compiled": compiled}, args.out)


if __name__ == "__main__":
    main()
