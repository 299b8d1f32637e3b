"""Tables of chapter 7: ualm beside Picasso on one simulated movie (benchmarks/peer_picasso.py)."""
from __future__ import annotations

from .store import Table, _need, _rows, fmt

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
    """Isolated emitters: fits per second of fit_mle and Picasso's MLE on the same spots, idle and
    beside a busy neighbour, at 1 and 2 threads; RMSE / CRLB of each (measured once per i0)."""
    rows = []
    for r in _need(result, "mle", "rows"):
        u, p = r.get("ualm_fits_per_s"), r.get("picasso_fits_per_s")
        rows.append({"load": r.get("load"), "threads": r.get("threads"), "i0": r.get("i0"), "ualm": u,
                     "picasso": p, "speedup": u / p if u and p else None,
                     "acc_u": (r.get("ualm") or {}).get("rmse_over_crlb"),
                     "acc_p": (r.get("picasso") or {}).get("rmse_over_crlb")})
    cols = {"load": "machine", "threads": "threads", "i0": "photons", "ualm": "fit_mle fits/s",
            "picasso": "Picasso fits/s", "speedup": "fit_mle / Picasso", "acc_u": "RMSE / CRLB fit_mle",
            "acc_p": "RMSE / CRLB Picasso"}
    return Table(rows, cols, {"i0": fmt(".0f"), "ualm": fmt(",.0f"), "picasso": fmt(",.0f"),
                              "speedup": fmt(".2f"), "acc_u": fmt(".3f"), "acc_p": fmt(".3f")})
