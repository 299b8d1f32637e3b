"""Wall time of every chapter, executed top to bottom as the book build runs it (quick profile
unless UALM_PROFILE says otherwise, explorers precomputed, no progress bars). The instructors'
page quotes it.

    python benchmarks/chapter_times.py [--only 03_mcmc ...] [--out PATH]

Run it on an otherwise idle machine: the chapters use both cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jupytext
import torch
from nbclient import NotebookClient

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from test_book import CHAPTERS  # noqa: E402  (the notebook chapters of _toc.yml, in order)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="chapter names (e.g. 03_mcmc); default all")
    ap.add_argument("--out", type=Path, default=RESULTS / "chapter_times.json")
    args = ap.parse_args()
    profile = os.environ.setdefault("UALM_PROFILE", "quick")
    os.environ.setdefault("UALM_STATIC_WIDGETS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    chapters = [c for c in CHAPTERS if not args.only or Path(c).name in args.only]
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = {r["chapter"]: r for r in old.get("chapters", [])
            if old.get("profile") == profile and old.get("device") == device_name()}
    for doc in chapters:
        nb = jupytext.read(ROOT / f"{doc}.md")
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "book")}}).execute()
        seconds = time.perf_counter() - t0
        rows[Path(doc).name] = {"chapter": Path(doc).name, "title": title(doc), "seconds": seconds,
                                "code_cells": sum(c.cell_type == "code" for c in nb.cells)}
        print(f"{doc}: {seconds:.1f} s", flush=True)
        order = [Path(c).name for c in CHAPTERS]
        save("chapter_times", {"profile": profile, "device": device_name(),
                               "chapters": sorted(rows.values(), key=lambda r: order.index(r["chapter"])
                                                  if r["chapter"] in order else 99)}, args.out)


def title(doc: str) -> str:
    for line in (ROOT / f"{doc}.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return Path(doc).name


def device_name() -> str:
    want = os.environ.get("UALM_DEVICE")
    if want:
        return want
    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
