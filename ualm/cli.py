"""Command line: `python -m ualm train deepstorm --profile quick|full --out DIR` (console script
`ualm`); `python -m ualm simulate movie --out DIR` writes a simulated acquisition (ualm.movie), and
`python -m ualm localize MOVIE.tif --dark DARK.tif --out DIR` localizes one (resumable; under
`torchrun --nproc_per_node=N -m ualm localize ...` N processes share the chunks).
Training resumes from DIR/checkpoint.pt when it exists; `--export NAME` writes bundled weights
(NAME.pt + NAME.json) from the final checkpoint. Under `torchrun` it trains with
DistributedDataParallel. Ctrl-C or SIGTERM write a checkpoint before the program exits (status
128 + signal number); run the same command again to resume.

Bad arguments (a step count below 1, an --out that cannot be made a writable directory, a thread
count below 1, ...) and unusable checkpoints or weights end with one line
`ualm: error: ...` and exit status 2, as argparse does, not with a traceback."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from .checkpoints import CheckpointError, TrainingInterrupted
from .device import PROFILES, pick_device, pick_profile
from .models.unet import CONDITIONS
from .pretrained import WeightsError, export_weights
from .profiles import train_deepstorm, train_diffusion
from .defaults import PIXEL_NM
from .train import dist_info


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _float_in(low: float, high: float, low_open: bool = True, high_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must lie in {lo}{low:g}, {high:g}{hi}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def writable_dir_problem(path) -> str | None:
    """Why `path` cannot be used as an output directory, or None when it can: it is created
    (with its parents) when missing, and a temporary file is written into it and removed."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return f"cannot write to {path} ({err.strerror or type(err).__name__})"
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ualm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network on simulated data")
    t.add_argument("model", choices=["deepstorm", "diffusion"],
                   help="deepstorm: the KDE estimator φ; diffusion: the conditional U-Net Ψ")
    t.add_argument("--profile", choices=list(PROFILES), default=None,
                   help="quick: small CPU model; gpu: a budgeted GPU run; full: the paper-scale "
                        "run (default: by device, see ualm.pick_profile)")
    t.add_argument("--out", required=True, help="directory for checkpoint.pt and log.jsonl")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: UALM_DEVICE or auto)")
    t.add_argument("--steps", type=_int_at_least(1), help="total optimizer steps (>= 1)")
    t.add_argument("--batch-size", type=_int_at_least(1))
    t.add_argument("--lr", type=_float_in(0.0, math.inf))
    t.add_argument("--seed", type=_int_at_least(0))
    t.add_argument("--width", type=_int_at_least(1))
    t.add_argument("--hr-width", type=_int_at_least(1))
    t.add_argument("--dropout", type=_float_in(0.0, 1.0, low_open=False))
    t.add_argument("--cond", default=None,
                   help="diffusion only: conditioning inputs, comma-separated from yhat,frame")
    t.add_argument("--schedule", choices=["paper", "cosine"], default=None,
                   help="diffusion only: the noise schedule (default: the profile's, the paper's)")
    t.add_argument("--prediction", choices=["eps", "v"], default=None,
                   help="diffusion only: the network predicts the noise (eps) or v")
    t.add_argument("--members", type=_int_at_least(1), default=1,
                   help="deepstorm only: train a deep ensemble of this many networks, member k with "
                        "seed (--seed or 0) + k in OUT/member<k>, exported as NAME<k>")
    t.add_argument("--threads", type=_int_at_least(1), help="torch.set_num_threads on CPU (>= 1)")
    t.add_argument("--minutes", type=_float_in(0.0, math.inf), default=None,
                   help="wall-clock budget of this call: checkpoint and exit at the first step "
                        "boundary past it; run the command again to go on")
    t.add_argument("--stop-after", type=_int_at_least(1), default=None,
                   help="checkpoint and exit after this many steps in this call (resume later)")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--export", metavar="NAME", help="write bundled weights NAME.pt/.json when done")
    t.add_argument("--export-dir", default=None, help="where --export writes (default: ualm/pretrained)")
    t.add_argument("--export-dtype", choices=["float32", "float16"], default="float32")
    s = sub.add_parser("simulate", help="write a simulated acquisition with its ground truth")
    s.add_argument("what", choices=["movie"],
                   help="movie: blinking emitters on a structure, an sCMOS camera with per-pixel maps, "
                        "dark and flat-field stacks (multi-page TIFF) and the truth (truth.npz, truth.json)")
    s.add_argument("--out", required=True, help="directory for movie.tif, dark.tif, flat_<level>.tif, truth.*")
    s.add_argument("--frames", type=_int_at_least(1), default=2000)
    s.add_argument("--size", type=_int_at_least(8), default=64, help="frame height and width, px")
    s.add_argument("--structure", choices=["filaments", "rings"], default="filaments")
    s.add_argument("--dark-frames", type=_int_at_least(2), default=1000)
    s.add_argument("--flat-frames", type=_int_at_least(2), default=500,
                   help="frames per flat-field level (20, 50, 100, 200, 400 photons/px)")
    s.add_argument("--seed", type=_int_at_least(0), default=0)
    s.add_argument("--no-progress", action="store_true")
    lo = sub.add_parser("localize", help="localize a TIFF movie: a table of localizations for Picasso and ThunderSTORM")
    lo.add_argument("movie", help="multi-page TIFF, frames in ADU")
    lo.add_argument("--dark", required=True, help="dark frames (TIFF): offset and read-noise maps")
    lo.add_argument("--flats", nargs="*", default=None,
                    help="flat-field stacks (TIFF, one per light level): the gain; without them the gain is read off "
                         "the movie itself (photon transfer with the blinks clipped)")
    lo.add_argument("--out", required=True, help="directory for parts/, camera.npz, locs.hdf5/.yaml, locs.csv")
    lo.add_argument("--chunk", type=_int_at_least(1), default=256, help="frames per part (the unit of resuming)")
    lo.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per rank)")
    lo.add_argument("--threads", type=_int_at_least(1), help="torch.set_num_threads on CPU (>= 1)")
    lo.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("export", help="turn a training checkpoint into bundled weights")
    e.add_argument("checkpoint")
    e.add_argument("name")
    e.add_argument("--export-dir", default=None)
    e.add_argument("--export-dtype", choices=["float32", "float16"], default="float32")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    for flag in ("out", "export_dir"):
        where = getattr(args, flag, None)
        problem = writable_dir_problem(where) if where is not None else None
        if problem:
            parser.error(f"--{flag.replace('_', '-')}: {problem}")
    try:
        return _run(args, argv, parser)
    except TrainingInterrupted as stop:
        print(f"ualm: {stop}", file=sys.stderr)
        return stop.exit_code
    except (CheckpointError, WeightsError) as err:  # one line, no traceback
        parser.exit(2, f"ualm: error: {err}\n")


def _simulate(args) -> int:
    from . import movie
    from .seeding import make_generator

    gen = make_generator(args.seed)
    cfg = movie.MovieConfig(shape=(args.size, args.size), frames=args.frames, structure=args.structure,
                            dark_frames=args.dark_frames)
    m = movie.simulate_movie(cfg, generator=gen, progress=not args.no_progress)
    paths = movie.save_movie(m, args.out)
    levels = (20.0, 50.0, 100.0, 200.0, 400.0)
    for level, stack in zip(levels, movie.flat_stacks(m.camera, levels, args.flat_frames, generator=gen)):
        paths[f"flat_{level:g}"] = movie.write_tiff(Path(args.out) / f"flat_{level:03.0f}.tif", stack,
                                                    cfg.pixel_nm, camera="simulated sCMOS", flat=True)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _localize(args) -> int:
    """One process, or one rank of `torchrun --nproc_per_node=N -m ualm localize ...`: each rank
    localizes its share of the chunks, rank 0 merges them (the same table for any N) and exports."""
    import numpy as np
    import torch.distributed as dist

    from . import camera as cam
    from .export import write_picasso, write_thunderstorm
    from .localize import localize_movie, merge_parts
    from .movie import read_tiff
    from .pretrained import load

    rank, local_rank, world = dist_info()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    frames, meta = read_tiff(args.movie)
    dark, _ = read_tiff(args.dark)
    offset, read_var = cam.dark_calibration(dark)
    if args.flats:
        ptc = cam.photon_transfer([read_tiff(f)[0] for f in args.flats], offset, read_var)
    else:
        ptc = cam.photon_transfer([frames], offset, read_var, clip=4.0)
    camera = cam.Camera(gain=ptc["gain"], offset=offset, read_var=read_var)
    device = torch.device(f"cuda:{local_rank}" if args.device == "cuda" and world > 1 else args.device)
    phi = load("deepstorm_quick").to(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # only a barrier: the parts travel as files
    localize_movie(frames, camera, args.out, chunk=args.chunk, rank=rank, world=world, phi=phi,
                   progress=not args.no_progress)
    if world > 1:
        dist.barrier()
    if rank != 0:
        return 0
    table = merge_parts(args.out, len(frames), args.chunk)
    out = Path(args.out)
    np.savez(out / "camera.npz", gain=ptc["gain"].numpy(), offset=offset.numpy(), read_var=read_var.numpy())
    px = float(meta.get("pixel_nm", PIXEL_NM))
    h, w = frames.shape[1:]
    paths = [write_thunderstorm(out / "locs.csv", table, px)]
    try:
        paths += list(write_picasso(out / "locs", table, width=w, height=h, frames=len(frames), pixel_nm=px))
    except ImportError as err:
        print(f"no Picasso file: {err}")
    print(f"{len(table['x'])} localizations in {len(frames)} frames (median gain {ptc['median_gain']:.3f} ADU/photon"
          f"{' from the flats' if args.flats else ' from the movie'})")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _run(args, argv, parser) -> int:
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "localize":
        return _localize(args)
    if args.command == "export":
        path = export_weights(args.checkpoint, args.name, args.export_dir,
                              dtype=getattr(torch, args.export_dtype))
        print(f"wrote {path}")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
    except (ValueError, RuntimeError) as err:  # unknown device string, CUDA absent
        parser.error(f"--device: {err}")
    try:
        profile = pick_profile(args.profile, device)
    except ValueError as err:  # a bad UALM_PROFILE
        parser.error(f"--profile: {err}")
    model_over = {k: v for k, v in dict(width=args.width, hr_width=args.hr_width,
                                        dropout=args.dropout).items() if v is not None}
    train_over = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                        seed=args.seed, minutes=args.minutes).items()
                  if v is not None}
    if args.minutes is None and not os.environ.get("UALM_TRAIN_MINUTES"):
        train_over["minutes"] = None  # from a shell the profile's chapter budget does not apply
    if args.model == "diffusion":
        if args.members != 1:
            parser.error("--members: ensembles are trained for deepstorm only")
        over = {k: v for k, v in dict(width=args.width, dropout=args.dropout, schedule=args.schedule,
                                      prediction=args.prediction).items() if v is not None}
        if args.cond:
            over["cond"] = tuple(c.strip() for c in args.cond.split(","))
            bad = [c for c in over["cond"] if c not in CONDITIONS]
            if bad or len(set(over["cond"])) < len(over["cond"]):
                parser.error(f"--cond: give distinct names from {','.join(CONDITIONS)}, got {args.cond!r}")
        runs = [(None, lambda run: train_diffusion(profile, args.out, model_overrides=over, **run))]
    else:
        for flag in ("cond", "schedule", "prediction"):
            if getattr(args, flag):
                parser.error(f"--{flag}: only the diffusion model takes it")
        seed0 = args.seed if args.seed is not None else 0
        members = range(args.members) if args.members > 1 else [None]
        runs = [(k, lambda run, k=k: train_deepstorm(
                    profile, args.out if k is None else Path(args.out) / f"member{k}",
                    model_overrides=model_over,
                    **{**run, "train_overrides": {**run["train_overrides"], **({} if k is None else
                                                                            {"seed": seed0 + k})}}))
                for k in members]
    run = dict(device=device, train_overrides=train_over, progress=not args.no_progress,
               resume=not args.no_resume, stop_after=args.stop_after)
    for k, train_one in runs:
        _, result = train_one(run)
        if dist_info()[0] != 0:
            continue
        last = [h for h in result.history if "val_loss" in h]
        print(f"{'stopped' if result.stopped else 'done'}: step {result.step}, checkpoint "
              f"{result.checkpoint}" + (f", val_loss {last[-1]['val_loss']:.4g}" if last else "")
              + (" (budget spent: run the same command again to go on)"
                 if result.stopped == "budget" else ""))
        if args.export and result.stopped:
            print(f"not exported: the run is not finished (step {result.step})")
        elif args.export:
            command = "python -m ualm " + " ".join(shlex.quote(a) for a in argv)
            name = args.export if k is None else f"{args.export}{k}"
            path = export_weights(result.checkpoint, name, args.export_dir,
                                  dtype=getattr(torch, args.export_dtype), command=command)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
