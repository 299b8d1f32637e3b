"""Command line: `python -m ualm train deepstorm --profile quick|full --out DIR` (console script
`ualm`). Training resumes from DIR/checkpoint.pt when it exists; `--export NAME` writes bundled
weights (NAME.pt + NAME.json) from the final checkpoint. Under `torchrun` it trains with
DistributedDataParallel."""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from .device import pick_device, pick_profile
from .pretrained import export_weights
from .profiles import train_deepstorm, train_diffusion
from .train import dist_info


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ualm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network on simulated data")
    t.add_argument("model", choices=["deepstorm", "diffusion"],
                   help="deepstorm: the KDE estimator φ; diffusion: the conditional U-Net Ψ")
    t.add_argument("--profile", choices=["quick", "full"], default=None,
                   help="quick: small CPU model; full: paper-scale GPU run (default: by device)")
    t.add_argument("--out", required=True, help="directory for checkpoint.pt and log.jsonl")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: UALM_DEVICE or auto)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--width", type=int)
    t.add_argument("--hr-width", type=int)
    t.add_argument("--dropout", type=float)
    t.add_argument("--cond", default=None,
                   help="diffusion only: conditioning inputs, comma-separated from yhat,frame")
    t.add_argument("--threads", type=int, help="torch.set_num_threads on CPU")
    t.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and exit after this many steps in this call (resume later)")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--export", metavar="NAME", help="write bundled weights NAME.pt/.json when done")
    t.add_argument("--export-dir", default=None, help="where --export writes (default: ualm/pretrained)")
    t.add_argument("--export-dtype", choices=["float32", "float16"], default="float32")
    e = sub.add_parser("export", help="turn a training checkpoint into bundled weights")
    e.add_argument("checkpoint")
    e.add_argument("name")
    e.add_argument("--export-dir", default=None)
    e.add_argument("--export-dtype", choices=["float32", "float16"], default="float32")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "export":
        path = export_weights(args.checkpoint, args.name, args.export_dir,
                              dtype=getattr(torch, args.export_dtype))
        print(f"wrote {path}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    profile = pick_profile(args.profile, device)
    model_over = {k: v for k, v in dict(width=args.width, hr_width=args.hr_width,
                                        dropout=args.dropout).items() if v is not None}
    train_over = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                        seed=args.seed).items() if v is not None}
    run = dict(device=device, train_overrides=train_over, progress=not args.no_progress,
               resume=not args.no_resume, stop_after=args.stop_after)
    if args.model == "diffusion":
        over = {k: v for k, v in dict(width=args.width, dropout=args.dropout).items() if v is not None}
        if args.cond:
            over["cond"] = tuple(c.strip() for c in args.cond.split(","))
        _, result = train_diffusion(profile, args.out, model_overrides=over, **run)
    else:
        _, result = train_deepstorm(profile, args.out, model_overrides=model_over, **run)
    rank = dist_info()[0]
    if rank == 0:
        last = [h for h in result.history if "val_loss" in h]
        print(f"done: step {result.step}, checkpoint {result.checkpoint}"
              + (f", val_loss {last[-1]['val_loss']:.4g}" if last else ""))
        if args.export:
            command = "python -m ualm " + " ".join(shlex.quote(a) for a in argv)
            path = export_weights(result.checkpoint, args.export, args.export_dir,
                                  dtype=getattr(torch, args.export_dtype), command=command)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
