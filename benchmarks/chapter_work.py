"""What each chapter computes with its networks, measured in the quick profile on the CPU: the
chapter's wall time, the time spent inside Ψ's and φ's forward passes, and how many samples
(chains, frames) went through each. `benchmarks/estimates.py` turns this into the estimated
time of the gpu profile on a GPU.

    python benchmarks/chapter_work.py [--only 05_diffusion ...] [--out PATH]

A cell injected after the setup cell wraps `UNet.forward` and `DeepSTORM.forward` with a
counter and a clock; the chapter itself is unchanged. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from test_book import CHAPTERS  # noqa: E402

PROBE = '''
import time as _time
from ualm.models.deepstorm import DeepSTORM as _DeepSTORM
from ualm.models.unet import UNet as _UNet
_WORK = {"unet": {"samples": 0, "seconds": 0.0}, "deepstorm": {"samples": 0, "seconds": 0.0}}
_DEPTH = [0]


def _counted(cls, key):
    forward = cls.forward

    def wrapped(self, *args, **kwargs):
        _DEPTH[0] += 1
        start = _time.perf_counter()
        try:
            return forward(self, *args, **kwargs)
        finally:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:  # the outermost network call only
                _WORK[key]["seconds"] += _time.perf_counter() - start
                _WORK[key]["samples"] += int(args[0].shape[0]) if args[0].ndim >= 3 else 1
    cls.forward = wrapped


_counted(_UNet, "unet")
_counted(_DeepSTORM, "deepstorm")
'''
REPORT = 'import json as _json\nprint("UALM_WORK " + _json.dumps(_WORK))'


def measure(doc: str) -> dict:
    nb = jupytext.read(ROOT / f"{doc}.md")
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "ualm.start(" in c.source)
    nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(PROBE))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "book")}}).execute()
    seconds = time.perf_counter() - t0
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    work = json.loads(text.split("UALM_WORK ", 1)[1])
    return {"chapter": Path(doc).name, "seconds": seconds, **work,
            "other_seconds": seconds - work["unet"]["seconds"] - work["deepstorm"]["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", type=Path, default=RESULTS / "chapter_work.json")
    args = ap.parse_args()
    for key, value in dict(UALM_PROFILE="quick", UALM_STATIC_WIDGETS="1", TQDM_DISABLE="1",
                           MPLBACKEND="Agg").items():
        os.environ.setdefault(key, value)
    rows = []
    for doc in CHAPTERS:
        if not Path(doc).name[:2].isdigit() or (args.only and Path(doc).name not in args.only):
            continue
        row = measure(doc)
        rows.append(row)
        print(f"{row['chapter']}: {row['seconds']:.0f} s, Ψ {row['unet']['samples']} chain-evaluations "
              f"in {row['unet']['seconds']:.0f} s, φ {row['deepstorm']['samples']} frames in "
              f"{row['deepstorm']['seconds']:.1f} s", flush=True)
    save("chapter_work", {"profile": os.environ["UALM_PROFILE"], "chapters": rows}, args.out)


if __name__ == "__main__":
    main()
