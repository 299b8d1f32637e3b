"""How long each chapter takes, per profile and device, for `ualm.start` to say up front and for
the instructors' page: measured where it was measured, estimated elsewhere, labelled which.

    python benchmarks/estimates.py   # writes ualm/estimates.json and results/estimates.json

Inputs (benchmarks/results/): chapter_times.json (quick profile, CPU, measured),
chapter_work.json (the same chapters with their network time and evaluations counted),
compute_costs.json (FLOPs and the GPU estimates per network evaluation and training step) and,
when a GPU run made it, gpu_check/chapter_times_gpu.json (measured).

The gpu-profile estimate of a chapter on a GPU class is, per its parts:
- training (chapters 4 and 5): the budget of the call, `ualm.device.TRAIN_MINUTES`, in full
  (FLOP estimates say the gpu profile's steps fit in less on every GPU listed, but small
  networks are limited by kernel launches and data simulation, which FLOPs do not see);
- network evaluations: those counted in the quick run, times the chapter's `SCALE` (how many
  times more samples the gpu profile draws, from its `run.size` constants), times the
  estimated seconds per evaluation on that GPU (FLOPs / (peak × efficiency));
- everything else (simulation, detection, MCMC on the CPU, plots): the quick run's time
  outside the networks, times its `SCALE`, on a 2-core CPU like Colab's.
Chapters 1-3 use no network: their estimate is their gpu-profile sizes executed on the 2-core
CPU (chapter_times_gpu_sizes_cpu.json), vectorised work a GPU does no slower.
A rough, stated model: its purpose is to say whether a chapter fits in about ten minutes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ualm.device import TRAIN_MINUTES  # noqa: E402

# gpu-profile work / quick-profile work of chapters 4-6, from their run.size(quick, large)
# constants: (network evaluations, everything else).
SCALE = {
    "04_deepstorm": (5.0, 5.0),                   # protocol frames 200 -> 1000, sweep 40 -> 200
    "05_diffusion": (64 * 16 / (6 * 4), 64 / 6),  # live table: frames 6 -> 64, samples 4 -> 16
    "06_calibration": (100 * 32 / (6 * 8), 100 / 6),  # dense: frames 6 -> 100, samples 8 -> 32
}
TRAINS = ("04_deepstorm", "05_diffusion")
GPU_CLASSES = {"T4": "T4", "A100": "A100-SXM", "H100": "H100-SXM"}


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    times, work, costs = load("chapter_times.json"), load("chapter_work.json"), load("compute_costs.json")
    if not (times and work and costs):
        raise SystemExit("needs chapter_times.json, chapter_work.json and compute_costs.json")
    cpu = f"a 2-core {times['machine']['cpu']} CPU"
    rows = {(r["network"], r["profile"]): r for r in costs["rows"]}
    out = {}
    for r in times["chapters"]:
        out.setdefault(r["chapter"], {})["quick/cpu"] = {
            "seconds": r["seconds"], "kind": "measured", "device": cpu}
    on_cpu = load("chapter_times_gpu_sizes_cpu.json")
    for r in (on_cpu or {}).get("chapters", []):
        for short in GPU_CLASSES:
            out.setdefault(r["chapter"], {})[f"gpu/{short}"] = {
                "seconds": r["seconds"], "kind": "estimate",
                "device": f"a {short} (estimate: the gpu profile's sizes timed on {cpu})"}
    for w in work["chapters"]:
        if w["chapter"] not in SCALE:
            continue
        chapter, (scale, other) = w["chapter"], SCALE[w["chapter"]]
        for short, gpu in GPU_CLASSES.items():
            eval_s = {net: rows[(net, "gpu")]["estimates"][f"{gpu}/amp"]["est_seconds_per_sample_eval"]
                      for net in ("phi", "psi")}
            parts = {"other": w["other_seconds"] * other,
                     "networks": scale * (w["unet"]["samples"] * eval_s["psi"]
                                          + w["deepstorm"]["samples"] * eval_s["phi"])}
            if chapter in TRAINS:
                parts["training"] = 60 * TRAIN_MINUTES
            out.setdefault(chapter, {})[f"gpu/{short}"] = {
                "seconds": sum(parts.values()), "kind": "estimate", "parts": parts,
                "device": f"a {short} (estimate, efficiency {costs['efficiency']:g} of peak)"}
    gpu_run = load("gpu_check/chapter_times_gpu.json")
    if gpu_run:  # measured on a GPU: replaces the estimate for that class
        name = gpu_run["machine"].get("cuda_device", "GPU")
        short = next((k for k in ("H200", "H100", "A100", "L4", "T4") if k in name.upper()), name)
        for r in gpu_run["chapters"]:
            if not r.get("errors"):
                out.setdefault(r["chapter"], {})[f"gpu/{short}"] = {
                    "seconds": r["seconds"], "kind": "measured", "device": name}
    payload = {"train_minutes": TRAIN_MINUTES, "efficiency": costs["efficiency"],
               "scale": SCALE, "chapters": out,
               "sources": ["chapter_times.json", "chapter_work.json", "compute_costs.json"]
               + (["chapter_times_gpu_sizes_cpu.json"] if on_cpu else [])
               + (["gpu_check/chapter_times_gpu.json"] if gpu_run else [])}
    save("estimates", payload)
    (ROOT / "ualm" / "estimates.json").write_text(json.dumps(
        {"made_by": "python benchmarks/estimates.py", **payload}, indent=1) + "\n")
    for chapter, entries in out.items():
        print(chapter, {k: f"{v['seconds'] / 60:.1f} min ({v['kind']})" for k, v in entries.items()})


if __name__ == "__main__":
    main()
