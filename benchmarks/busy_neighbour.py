"""ualm beside a busy neighbour: `fit_mle`'s rate and chapter 5's wall time on an idle machine and
with another process running 2-thread torch work on the same cores (a shared JupyterHub, a
laptop with other work), side by side in one run.

    python benchmarks/busy_neighbour.py [--skip-chapter] [--out PATH]

Each measurement runs in a fresh Python process, so that the OpenMP settings under test
(OMP_WAIT_POLICY, the thread count) apply from the start, as they would for a user. The
neighbour is a plain torch program with torch's defaults (its threads spin-wait, like most
numerical programs). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]

NEIGHBOUR = """
import torch
torch.set_num_threads(2)
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a / 384)
"""

# fits per second of fit_mle on isolated 11x11 windows (i0 = 200, b = 10), best of 3 rounds
FIT = """
import json, sys, time
if sys.argv[2] == "torch first":  # as before: OpenMP starts before ualm can choose its wait policy
    import torch
import ualm  # first, as the chapters do: it sets the OpenMP wait policy before torch loads
import torch
threads = json.loads(sys.argv[1])
if threads is not None:
    torch.set_num_threads(threads)
gen = ualm.make_generator(3)
theta = 5 + 0.5 * (torch.rand((2000, 1, 2), generator=gen, dtype=torch.float64) - 0.5)
omega = ualm.expected_frame(theta, torch.full((2000, 1), 200.0, dtype=torch.float64), 0.92, 10.0, (11, 11))
x = ualm.PAPER_CAMERA.sample(omega, gen)
fixed = torch.get_num_threads() if sys.argv[3] == "fixed" else None  # else fit_mle chooses
ualm.fit_mle(x[:200], num_threads=fixed)
best = 0.0
for _ in range(3):
    t0 = time.perf_counter()
    ualm.fit_mle(x, num_threads=fixed)
    best = max(best, len(x) / (time.perf_counter() - t0))
print(json.dumps({"fits_per_s": best, "torch_threads": torch.get_num_threads()}))
"""


def run_fit(threads, order, env, fixed=False) -> dict:
    out = subprocess.run([sys.executable, "-c", FIT, json.dumps(threads), order,
                          "fixed" if fixed else "chosen"], env=env,
                         check=True, capture_output=True, text=True, cwd=ROOT, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_chapter(doc: str, env) -> float:
    """Seconds to execute a chapter in the quick profile, as the book build does."""
    code = ("import jupytext, time; from nbclient import NotebookClient; "
            f"nb = jupytext.read({str(ROOT / 'book' / (doc + '.md'))!r}); t = time.perf_counter(); "
            "NotebookClient(nb, timeout=3600, kernel_name='python3', "
            f"resources={{'metadata': {{'path': {str(ROOT / 'book')!r}}}}}).execute(); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True, cwd=ROOT, timeout=3600)
    return float(out.stdout.strip().splitlines()[-1])


class Neighbour:
    """A busy 2-thread torch process for the duration of a `with` block."""

    def __enter__(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "UALM_"))}
        self.proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env)
        time.sleep(2.0)  # let it start computing
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-chapter", action="store_true", help="only the fit_mle rates")
    ap.add_argument("--chapter", default="05_diffusion")
    ap.add_argument("--rounds", type=int, default=3, help="fit_mle rates per setting and load")
    ap.add_argument("--out", type=Path, default=RESULTS / "busy_neighbour.json")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    base.update(UALM_PROFILE="quick", UALM_STATIC_WIDGETS="1", TQDM_DISABLE="1", MPLBACKEND="Agg")
    # the package's defaults, and what they replaced: torch imported before ualm, so that
    # OpenMP keeps libgomp's own default wait (spin, then sleep)
    # fit_mle's own thread choice (threads.small_op_threads: 1 thread where OpenMP's threads
    # sleep, else the cores other processes leave free) against the fixed counts it replaced
    settings = {"ualm defaults (2 threads, OMP_WAIT_POLICY=PASSIVE, threads chosen per call)":
                (None, "ualm first", False),
                "before: 2 threads fixed, OMP_WAIT_POLICY=PASSIVE": (None, "ualm first", True),
                "before that: 2 threads fixed, libgomp's default wait": (None, "torch first", True),
                "1 thread, libgomp's default wait": (1, "torch first", True)}
    fits = []
    for label, (threads, order, fixed) in settings.items():
        # each rate in a fresh process; the median of `rounds`, busy ones beside one neighbour
        idle = [run_fit(threads, order, base, fixed) for _ in range(args.rounds)]
        with Neighbour():
            busy = [run_fit(threads, order, base, fixed) for _ in range(args.rounds)]
        i_rate = statistics.median(r["fits_per_s"] for r in idle)
        b_rate = statistics.median(r["fits_per_s"] for r in busy)
        row = {"setting": label, "threads": idle[0]["torch_threads"], "idle_fits_per_s": i_rate,
               "busy_fits_per_s": b_rate, "busy_over_idle": b_rate / i_rate,
               "idle_rounds": [r["fits_per_s"] for r in idle],
               "busy_rounds": [r["fits_per_s"] for r in busy]}
        fits.append(row)
        print(f"fit_mle, {label}: idle {i_rate:.0f}/s, busy {b_rate:.0f}/s "
              f"({row['busy_over_idle']:.2f} x)", flush=True)
    chapter = []
    # the chapter imports ualm first (its setup cell): the old behaviour is libgomp's default
    # wait, which an empty OMP_WAIT_POLICY gives (ualm leaves a set variable alone, and libgomp
    # ignores an empty one, with a warning)
    for label, extra in ({} if args.skip_chapter else {
            "ualm defaults": {}, "before: libgomp's default wait": {"OMP_WAIT_POLICY": ""}}).items():
        env = {**base, **extra}
        idle_s = run_chapter(args.chapter, env)
        with Neighbour():
            busy_s = run_chapter(args.chapter, env)
        chapter.append({"setting": label, "chapter": args.chapter, "idle_seconds": idle_s,
                        "busy_seconds": busy_s, "busy_over_idle": busy_s / idle_s})
        print(f"{args.chapter}, {label}: idle {idle_s:.0f} s, busy {busy_s:.0f} s "
              f"({busy_s / idle_s:.2f} x)", flush=True)
    save("busy_neighbour", {"neighbour": "a 2-thread torch matmul loop with torch's defaults",
                            "fit_mle": fits, "chapter": chapter,
                            "goals": {"fit_mle_busy_over_idle_min": 0.4,
                                      "chapter_busy_over_idle_max": 3.0}}, args.out)


if __name__ == "__main__":
    main()
