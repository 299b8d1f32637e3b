"""Wall time of every chapter, executed top to bottom as the book build runs it (quick profile
unless UALM_PROFILE says otherwise, explorers precomputed, no progress bars). The instructors'
page quotes it.

    python benchmarks/chapter_times.py [--only 03_mcmc ...] [--out PATH] [--allow-errors]

With --allow-errors a failing cell does not stop its chapter: the time is still measured and
the errors are recorded (for a first run on a new device, where one pass must find them all).

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
    ap.add_argument("--allow-errors", action="store_true")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = ap.parse_args()
    profile = os.environ.setdefault("UALM_PROFILE", "quick")
    os.environ.setdefault("UALM_STATIC_WIDGETS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # in the order given (the most important first, when time on a machine is short)
    chapters = [c for name in args.only for c in CHAPTERS if Path(c).name == name] \
        if args.only else CHAPTERS
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = {r["chapter"]: r for r in old.get("chapters", [])
            if old.get("profile") == profile and old.get("device") == device_name()}
    for doc in chapters:
        nb = jupytext.read(ROOT / f"{doc}.md")
        t0 = time.perf_counter()
        try:
            NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                           allow_errors=args.allow_errors,
                           resources={"metadata": {"path": str(ROOT / "book")}}).execute()
            failure = None
        except Exception as err:  # a timeout or a dead kernel: record it, go on
            if not args.allow_errors:
                raise
            failure = f"{type(err).__name__}: {str(err)[-2000:]}"
        seconds = time.perf_counter() - t0
        errors = [{"cell": i, "error": f"{o.get('ename')}: {o.get('evalue')}"[:1000],
                   "source": c.source[:300]}
                  for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if failure:
            errors.append({"cell": None, "error": failure})
        rows[Path(doc).name] = {"chapter": Path(doc).name, "title": title(doc), "seconds": seconds,
                                "code_cells": sum(c.cell_type == "code" for c in nb.cells),
                                **glued_seconds(nb), **({"errors": errors} if errors else {})}
        print(f"{doc}: {seconds:.1f} s" + (f", {len(errors)} error(s)" if errors else ""),
              flush=True)
        for e in errors:
            print(f"  cell {e['cell']}: {e['error'][:300]}", flush=True)
        order = [Path(c).name for c in CHAPTERS]
        save("chapter_times", {"profile": profile, "device": device_name(),
                               "chapters": sorted(rows.values(), key=lambda r: order.index(r["chapter"])
                                                  if r["chapter"] in order else 99)}, args.out)


def glued_seconds(nb) -> dict:
    """The chapter's own timings glued as `<name>_seconds_here` (e.g. the seconds its training
    took), so that estimates can separate a fixed training budget from the rest."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name", "")
            text = o.get("data", {}).get("application/papermill.record/text/plain")
            if name.endswith("_seconds_here") and text is not None:
                try:
                    out[name] = float(text)
                except ValueError:
                    pass
    return out


def title(doc: str) -> str:
    for line in (ROOT / f"{doc}.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return Path(doc).name


def device_name() -> str:
    want = os.environ.get("UALM_DEVICE")
    if want:
        return want
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
