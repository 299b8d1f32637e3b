"""Benchmark of the DeepSTORM φ with the bundled quick weights (or a training checkpoint).

Writes benchmarks/results/deepstorm.json:
- the paper's protocol (N = 1000 frames, 10 emitters uniform on a disc of radius 7 px, i0 = 200,
  σ_y = 3): φ with and without sub-pixel refinement, and the oracle rows (LoG on the true KDE y
  at σ_y = 3, the paper's text, and σ_y = 1.5, the paper's code), one-to-one Hungarian matching
  with 5 KDE px tolerance;
- isolated emitters (N = 1000, i0 = 200): lateral RMSE with and without refinement against the
  lateral CRLB sqrt(CRLB_x² + CRLB_y²);
- a density sweep (1-20 emitters on the disc) for φ and the σ_y = 3 oracle;
- inference throughput in frames/s on CPU (and CUDA when present).

With the bundled weights (no --checkpoint) it then records a summary of these metrics in the
weights' manifest, ualm/pretrained/deepstorm_quick.json ("metrics", keyed by the SHA-256 of the
weights it measured; `ualm.pretrained.record_metrics`), so no number there is typed by hand.
Retraining the weights is therefore two commands (see ualm/pretrained/README.md): the
`python -m ualm train deepstorm ... --export deepstorm_quick` run, then this script.

    python benchmarks/deepstorm.py [--frames 1000] [--checkpoint DIR] [--out benchmarks/results/deepstorm.json]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

import ualm  # noqa: E402
from ualm import pretrained, protocols  # noqa: E402
from ualm.models import DeepSTORM, DeepSTORMConfig  # noqa: E402


def load_model(checkpoint=None):
    if checkpoint is None:
        return pretrained.load_deepstorm("deepstorm_quick", device="cpu"), "bundled deepstorm_quick"
    from ualm.checkpoints import load_checkpoint
    st = load_checkpoint(checkpoint)
    model = DeepSTORM(DeepSTORMConfig.from_dict(st["extra"]["model_config"]))
    model.load_state_dict(st["model"])
    return model.eval(), f"checkpoint {checkpoint} (step {st['step']})"


def throughput(model, device, n=2000, batch=500):
    model = model.to(device).eval()
    x = ualm.simulate_batch(batch, ualm.SimConfig(), generator=ualm.make_generator(0),
                            dtype=torch.float32)["x"].to(device)
    with torch.no_grad():
        model(x[:16])
        common.sync(device)
        t = time.perf_counter()
        done = 0
        while done < n:
            model(x)
            done += batch
        common.sync(device)
    return done / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--sweep-frames", type=int, default=200)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deepstorm.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    model, source = load_model(args.checkpoint)
    # the checksum of the file actually loaded (load_deepstorm verified it against the manifest)
    sha = pretrained.sha256(pretrained.HERE / "deepstorm_quick.pt") if args.checkpoint is None else None
    cfg = ualm.SimConfig()  # the paper's protocol
    print(f"model: {source}; protocol: {args.frames} frames", flush=True)

    table = protocols.detection_protocol(model, cfg, args.frames, seed=args.seed, progress=True)
    rows = table.rows()
    net, oracle = table["network_subpixel"].metrics, table["oracle_3"].metrics
    targets = {
        "precision": net.precision, "precision_target": 0.95,
        "recall_over_oracle_recall": net.recall / oracle.recall, "recall_ratio_target": 0.95,
    }
    for r in rows:
        print(f"  {r['method']:<28} P={r['precision']:.3f} R={r['recall']:.3f} J={r['jaccard']:.3f} "
              f"RMSE={r['rmse_nm']:.1f} nm E={r['efficiency']:.1f}", flush=True)

    # isolated emitters against the CRLB
    iso = protocols.isolated_vs_crlb(model, cfg, args.frames, seed=args.seed + 1)
    isolated = iso.as_dict()
    for name, m in iso.methods.items():
        print(f"  isolated {name:<18} RMSE={m.rmse_nm:.2f} nm = {iso.rmse_over_crlb(name):.2f} x CRLB "
              f"(R={m.recall:.3f}, P={m.precision:.3f})", flush=True)
    targets["isolated_rmse_over_crlb_subpixel"] = isolated["network_subpixel"]["rmse_over_crlb"]
    targets["isolated_target"] = 1.5

    # density sweep (the network on the KDE grid is left out)
    sweep = []
    by_count = protocols.density_sweep(model, cfg, (1, 2, 5, 10, 15, 20), args.sweep_frames,
                                       seed=args.seed + 100, oracle_sigmas=(3.0, 1.5))
    for count, res in by_count.items():
        sweep += [{"count": count, **m.as_row()} for m in res.methods.values() if m.key != "network_grid"]
        print(f"  density {count:>2}: " + ", ".join(f"{m.method[:12]} R={m.metrics.recall:.2f}"
                                                 for m in res.methods.values()), flush=True)

    speed = {"cpu_frames_per_s": throughput(model, torch.device("cpu")), "cpu_threads": args.threads}
    if torch.cuda.is_available():
        speed["cuda_frames_per_s"] = throughput(model, torch.device("cuda"), n=20000, batch=2000)
        speed["cuda_device"] = torch.cuda.get_device_name()
    print(f"  speed: {speed}", flush=True)

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    result = {
        "model": source,
        "weights_sha256": sha,
        "protocol": {"frames": args.frames, "count": cfg.count, "i0": cfg.i0,
                     "radius": cfg.radius, "sigma_y": cfg.sigma_y, "seed": args.seed,
                     "matching": "Hungarian, one-to-one, 5 KDE px (1.25 px)",
                     "detector": "skimage blob_log, threshold 0.3 (peak height)"},
        "table": rows, "targets": targets, "isolated": isolated, "density_sweep": sweep,
        "throughput": speed, "commit": commit, "seconds": time.time() - t_start,
    }
    common.save("deepstorm", result, path=args.out)
    if sha is not None:
        keep = ("method", "precision", "recall", "jaccard", "rmse_nm", "efficiency")
        iso = {k: {"rmse_nm": v["rmse_nm"], "rmse_over_crlb": v["rmse_over_crlb"]}
               for k, v in isolated.items() if isinstance(v, dict)}
        path = pretrained.record_metrics("deepstorm_quick", sha, {
            "benchmark": "benchmarks/results/deepstorm.json", "command": "python benchmarks/deepstorm.py"
            + (f" --frames {args.frames}" if args.frames != 1000 else ""),
            "protocol": result["protocol"], "table": [{k: r[k] for k in keep} for r in rows],
            "targets": targets, "isolated": {"crlb_lateral_nm": isolated["crlb_lateral_nm"], **iso},
            "throughput": speed})
        print(f"recorded the metrics in {path}")
    return result


if __name__ == "__main__":
    main()
