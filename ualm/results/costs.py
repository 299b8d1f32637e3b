"""Tables of what the book costs to run: chapter times, network costs, a busy neighbour."""
from __future__ import annotations

from .store import DASH, Table, _need, _pick, _rows, fmt


# ---------------------------------------------------------------- chapter times

def chapter_times_table(result: dict) -> Table:
    """Seconds to execute each chapter top to bottom (benchmarks/chapter_times.py)."""
    rows = [{"chapter": r.get("title", r.get("chapter", DASH)), "seconds": r.get("seconds"),
             "minutes": (r["seconds"] / 60 if isinstance(r.get("seconds"), (int, float)) else None)}
            for r in _need(result, "chapters")]
    return Table(rows, {"chapter": "chapter", "seconds": "seconds", "minutes": "minutes"},
                 {"seconds": fmt(".0f"), "minutes": fmt(".1f")})


def chapter_estimates_table(result: dict) -> Table:
    """Minutes per chapter: the quick profile on a CPU and the gpu profile per GPU class
    (benchmarks/estimates.py); an estimate is marked "≈", a measurement is not."""
    chapters = _need(result, "chapters")
    order = ("T4", "L4", "A100", "H100", "H200")  # the T4 (Colab's) first: it sets the budget
    keys = sorted({k for entries in chapters.values() for k in entries if k != "quick/cpu"},
                  key=lambda k: (order.index(k[4:]) if k[4:] in order else len(order), k))
    cols = {"chapter": "chapter", "quick/cpu": "quick, 2-core CPU (min)"}
    cols.update({k: f"gpu, {k.split('/', 1)[1]} (min)" for k in keys})
    chapters = {name: e for name, e in chapters.items() if any(k in e for k in keys)}

    def cell(entry):
        if not entry:
            return DASH
        return ("" if entry["kind"] == "measured" else "≈ ") + f"{entry['seconds'] / 60:.1f}"

    rows = [{"chapter": name, **{k: cell(entries.get(k)) for k in cols if k != "chapter"}}
            for name, entries in chapters.items()]
    return Table(rows, cols, {})


def compute_costs_table(result: dict) -> Table:
    """FLOPs, measured CPU seconds and estimated GPU times of each network and profile
    (benchmarks/compute_costs.py)."""
    rows = []
    for r in _rows(result, "rows"):
        est = r.get("estimates") or {}
        row = {"network": {"phi": "φ", "psi": "Ψ"}.get(r["network"], r["network"]),
               "profile": r["profile"], "params": r["params"] / 1e6,
               "gflop_step": r["train_flops"] / 1e9, "gflop_eval": r["sample_flops"] / 1e9,
               "cpu_step": r.get("cpu_s_per_train_step"), "steps": r.get("steps")}
        for gpu in ("T4", "A100-SXM", "H100-SXM"):
            e = est.get(f"{gpu}/amp") or {}
            row[gpu] = e.get("est_full_run_minutes")
        rows.append(row)
    cols = {"network": "net", "profile": "profile", "params": "M params",
            "gflop_step": "GFLOP / step", "gflop_eval": "GFLOP / eval", "cpu_step": "CPU s / step",
            "steps": "steps", "T4": "≈ T4 min", "A100-SXM": "≈ A100 min", "H100-SXM": "≈ H100 min"}
    return Table(rows, cols, {"params": fmt(".2f"), "gflop_step": fmt(".3g"),
                              "gflop_eval": fmt(".3g"), "cpu_step": fmt(".3g"),
                              "T4": fmt(".3g"), "A100-SXM": fmt(".3g"), "H100-SXM": fmt(".3g")})


def busy_neighbour_table(result: dict) -> Table:
    """fit_mle's rate on an idle machine and beside a busy process (benchmarks/busy_neighbour.py)."""
    rows = [_pick(r, ("setting", "threads", "idle_fits_per_s", "busy_fits_per_s", "busy_over_idle"))
            for r in _rows(result, "fit_mle")]
    cols = {"setting": "setting", "threads": "threads", "idle_fits_per_s": "fits/s idle",
            "busy_fits_per_s": "fits/s busy", "busy_over_idle": "busy / idle"}
    return Table(rows, cols, {"idle_fits_per_s": fmt(",.0f"), "busy_fits_per_s": fmt(",.0f"),
                              "busy_over_idle": fmt(".2f")})


def busy_chapter_table(result: dict) -> Table:
    """A chapter's wall time idle and beside a busy process (benchmarks/busy_neighbour.py)."""
    rows = [_pick(r, ("setting", "chapter", "idle_seconds", "busy_seconds", "busy_over_idle"))
            for r in _rows(result, "chapter")]
    cols = {"setting": "setting", "chapter": "chapter", "idle_seconds": "s idle",
            "busy_seconds": "s busy", "busy_over_idle": "busy / idle"}
    return Table(rows, cols, {"idle_seconds": fmt(".0f"), "busy_seconds": fmt(".0f"),
                              "busy_over_idle": fmt(".2f")})
