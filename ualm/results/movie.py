"""Tables of chapter 7: ualm beside Picasso on one simulated movie (benchmarks/peer_picasso.py),
and the default uncertainty map's coverage over many frames of a movie (benchmarks/movie_coverage.py)."""
from __future__ import annotations

from .store import Table, _ci, _need, _rows, fmt

PEER_LABELS = {"ualm": "ualm (φ detects, fit_mle fits)", "picasso_lq": "Picasso, least squares",
               "picasso_mle": "Picasso, MLE"}


def peer_movie_table(result: dict) -> Table:
    """One row per pipeline on the movie: speed, detection (whole frame and away from the edges,
    where Picasso does not look), position error against the CRLB, FRC resolution of the render."""
    rows = []
    for r in _rows(result, "localization"):
        a, i = r.get("all") or {}, r.get("interior") or {}
        rows.append({"method": PEER_LABELS.get(r.get("method"), r.get("method")),
                     "fps": r.get("frames_per_s"), "recall": a.get("recall"), "precision": a.get("precision"),
                     "jaccard": a.get("jaccard"), "jaccard_in": i.get("jaccard"),
                     "rmse": a.get("rmse_lateral_nm"), "ratio": a.get("rmse_over_crlb"),
                     "ratio_iso": a.get("rmse_over_crlb_isolated"), "frc": r.get("frc_nm")})
    cols = {"method": "pipeline", "fps": "frames/s", "recall": "recall", "precision": "precision",
            "jaccard": "Jaccard", "jaccard_in": "Jaccard, interior", "rmse": "RMSE (nm)",
            "ratio": "RMSE / CRLB", "ratio_iso": "RMSE / CRLB, isolated", "frc": "FRC (nm)"}
    f = {"fps": fmt(".0f"), "recall": fmt(".3f"), "precision": fmt(".3f"), "jaccard": fmt(".3f"),
         "jaccard_in": fmt(".3f"), "rmse": fmt(".1f"), "ratio": fmt(".2f"), "ratio_iso": fmt(".2f"),
         "frc": fmt(".1f")}
    return Table(rows, cols, f)


def peer_mle_table(result: dict) -> Table:
    """Isolated emitters, one row per photon count: RMSE / CRLB of fit_mle and of Picasso's MLE
    (measured once, idle, 1 thread), and fit_mle's fits per second over Picasso's on the same
    spots, idle and beside a busy process, at 1 and 2 threads (above 1: fit_mle is faster)."""
    by_i0 = {}
    for r in _need(result, "mle", "rows"):
        row = by_i0.setdefault(r.get("i0"), {"i0": r.get("i0")})
        u, p = r.get("ualm_fits_per_s"), r.get("picasso_fits_per_s")
        row[f"{r.get('load')}{r.get('threads')}"] = u / p if u and p else None
        if "ualm" in r:
            row["acc"] = f"{r['ualm']['rmse_over_crlb']:.3f} / {r['picasso']['rmse_over_crlb']:.3f}"
            row["rate"] = f"{u / 1e3:.1f}k / {p / 1e3:.1f}k"
    cols = {"i0": "photons", "acc": "RMSE / CRLB, fit_mle / Picasso", "rate": "fits/s idle, 1 thread",
            "idle1": "× idle, 1 thread", "idle2": "× idle, 2 threads", "busy1": "× busy, 1 thread",
            "busy2": "× busy, 2 threads"}
    rows = [{k: row.get(k) for k in cols} for row in by_i0.values()]
    return Table(rows, cols, {"i0": fmt(".0f"), **{k: fmt(".2f") for k in ("idle1", "idle2", "busy1", "busy2")}})


def movie_coverage_table(result: dict) -> Table:
    """Coverage of the stitched map's central intervals on the frames of a movie, raw and
    calibrated, with bootstrap 95 % intervals over frames."""
    cov = _need(result, "coverage")
    levels = [lv for lv in cov["calibrated"] if lv != "zero_std_share"]
    rows = [{"level": float(lv), "raw": _ci(cov["raw"].get(lv)), "calibrated": _ci(cov["calibrated"].get(lv))}
            for lv in levels]
    return Table(rows, {"level": "nominal", "raw": "raw", "calibrated": "calibrated"}, {"level": fmt(".2f")})
