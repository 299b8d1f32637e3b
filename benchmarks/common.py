"""Shared bits of the benchmark scripts: timing, machine description, JSON output."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def devices() -> list[torch.device]:
    """CPU always, CUDA when present."""
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device, repeats: int = 5, min_time: float = 0.2) -> float:
    """Fastest wall time of one call of fn (seconds), after a warm-up call."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def boot(inside, total, n=2000, seed=0) -> dict:
    """Pooled coverage (inside / total summed over frames) and its bootstrap 95 % interval,
    resampling frames."""
    inside, total = np.asarray(inside), np.asarray(total)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(total), (n, len(total)))
    reps = inside[idx].sum(1) / np.maximum(total[idx].sum(1), 1)
    return {"value": float(inside.sum() / max(total.sum(), 1)),
            "ci95": [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str | None:
    """The checkout's git commit, with '+dirty' when tracked files other than benchmark results
    differ from it (a result written and not yet committed changes no code)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


# the code that runs is the code at start: a commit made while a long benchmark runs must not
# be recorded as the one that produced its numbers
STARTED_AT = commit()


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):  # the machine is shared: a busy one runs slower
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def save(name: str, payload: dict, path=None) -> Path:
    """Write results/<name>.json (or `path`) with the machine description, a timestamp and the
    commit the run started at (`commit_at_save` too if HEAD moved or the tree changed since)."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "machine": machine(), "commit": STARTED_AT,
               "command": "python " + shlex.join(sys.argv), **payload}
    if (now := commit()) != STARTED_AT:
        payload["commit_at_save"] = now
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path
