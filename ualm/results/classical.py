"""Tables of chapters 1–4: simulation throughput, the MLE against the CRLB, MCMC speed, DeepSTORM."""
from __future__ import annotations

from .store import Table, _need, _pick, _rows, fmt


# ---------------------------------------------------------------- chapters 1-3


def sim_throughput_table(result: dict) -> Table:
    cols = {"device": "device", "batch": "batch", "frames_per_s": "frames/s (x and y)",
            "frame_only_per_s": "frames/s (x only)", "kde_only_per_s": "KDEs/s (y only)"}
    rows = [_pick(r, cols) for r in _rows(result, "rows")]
    return Table(rows, cols, {k: fmt(",.0f") for k in cols if k.endswith("_per_s")})


def mle_table(result: dict) -> Table:
    cols = {"device": "device", "i0": "i0 (photons)", "background": "b (photons/px)",
            "rmse_nm": "RMSE (nm)", "crlb_nm": "CRLB (nm)", "ratio_x": "RMSE/CRLB x",
            "ratio_y": "RMSE/CRLB y", "ratio_photons": "RMSE/CRLB photons", "converged": "converged",
            "fits_per_s": "fits/s"}
    rows = [_pick(r, cols) for r in _rows(result, "rows")]
    f = {"i0": fmt(".0f"), "background": fmt(".0f"), "rmse_nm": fmt(".2f"), "crlb_nm": fmt(".2f"),
         "ratio_x": fmt(".3f"), "ratio_y": fmt(".3f"), "ratio_photons": fmt(".3f"),
         "converged": fmt(".1%"), "fits_per_s": fmt(",.0f")}
    return Table(rows, cols, f)


def mle_batch_table(result: dict) -> Table:
    """fit_mle's fits/s by batch size on the CPU: in chunks (as shipped) and in one call."""
    cols = {"i0": "i0 (photons)", "batch": "frames", "threads": "threads",
            "chunked_fits_per_s": "fits/s in chunks", "one_call_fits_per_s": "fits/s in one call",
            "chunked_over_one_call": "chunks / one call"}
    rows = [_pick(r, cols) for r in _rows(result, "batches")]
    return Table(rows, cols, {"i0": fmt(".0f"), "batch": fmt(",d"), "chunked_fits_per_s": fmt(",.0f"),
                              "one_call_fits_per_s": fmt(",.0f"), "chunked_over_one_call": fmt(".2f")})


def mcmc_speed_table(result: dict) -> Table:
    """Chain-iterations per second of each sampler, and its speed-up over the two loops."""
    rows = []
    for dev, d in _need(result, "devices").items():
        speed = d.get("chain_iterations_per_s") or {}
        torch_loop, numpy_loop = speed.get("loop_torch"), speed.get("loop_numpy")
        for name, v in speed.items():
            rows.append({"device": dev, "sampler": name.replace("_", " "), "rate": v,
                         "accept": (d.get("acceptance") or {}).get(name),
                         "vs_torch": v / torch_loop if torch_loop else None,
                         "vs_numpy": v / numpy_loop if numpy_loop else None})
    cols = {"device": "device", "sampler": "sampler", "rate": "chain-iterations/s",
            "accept": "acceptance", "vs_torch": "× torch loop", "vs_numpy": "× numpy loop"}
    return Table(rows, cols, {"rate": fmt(",.0f"), "accept": fmt(".3f"), "vs_torch": fmt(".1f"),
                              "vs_numpy": fmt(".2f")})


def mcmc_ess_table(result: dict) -> Table:
    """Time to a posterior variance map with an ESS of at least 1000 in x and y."""
    rows = []
    for dev, d in _need(result, "devices").items():
        e = d.get("time_to_1000_ess") or {}
        rows.append({"device": dev, **_pick(e, ("n_chains", "burn_in", "draws_per_chain", "ess_x", "ess_y",
                                                "seconds_total", "loop_numpy_seconds_extrapolated",
                                                "loop_torch_seconds_extrapolated"))})
    cols = {"device": "device", "n_chains": "chains", "burn_in": "burn-in", "draws_per_chain": "draws/chain",
            "ess_x": "ESS x", "ess_y": "ESS y", "seconds_total": "batched (s)",
            "loop_numpy_seconds_extrapolated": "numpy loop (s, extrap.)",
            "loop_torch_seconds_extrapolated": "torch loop (s, extrap.)"}
    f = {"ess_x": fmt(".0f"), "ess_y": fmt(".0f"), "seconds_total": fmt(".2f"),
         "loop_numpy_seconds_extrapolated": fmt(".1f"), "loop_torch_seconds_extrapolated": fmt(".1f")}
    return Table(rows, cols, f)


# ---------------------------------------------------------------- chapter 4

_DETECTION = {"method": "method", "precision": "precision", "recall": "recall", "jaccard": "Jaccard",
              "rmse_nm": "RMSE (nm)", "efficiency": "efficiency"}
_DETECTION_F = {"precision": fmt(".3f"), "recall": fmt(".3f"), "jaccard": fmt(".3f"), "rmse_nm": fmt(".1f"),
                "efficiency": fmt(".1f")}


def deepstorm_table(result: dict) -> Table:
    """The paper's protocol: φ and the oracle rows."""
    cols = {"method": "method", "sigma_y": "σ_y (KDE px)", "refine": "refinement", **_DETECTION}
    rows = [_pick(r, cols) for r in _rows(result, "table")]
    return Table(rows, cols, {"sigma_y": fmt(".1f"), **_DETECTION_F})


_ISOLATED = {"network_subpixel": "φ, sub-pixel refinement", "network_grid": "φ, KDE grid",
             "oracle_grid": "oracle (true KDE), KDE grid"}


def deepstorm_isolated_table(result: dict) -> Table:
    """Isolated emitters: lateral RMSE against the lateral CRLB."""
    iso = _need(result, "isolated")
    rows = [{"method": _ISOLATED.get(k, k), "recall": v.get("recall"), "rmse_nm": v.get("rmse_nm"),
             "crlb_nm": iso.get("crlb_lateral_nm"), "ratio": v.get("rmse_over_crlb"),
             "bias_x": v.get("bias_x_px"), "bias_y": v.get("bias_y_px")}
            for k, v in iso.items() if isinstance(v, dict)]
    cols = {"method": "method", "recall": "recall", "rmse_nm": "RMSE (nm)", "crlb_nm": "CRLB (nm)",
            "ratio": "RMSE/CRLB", "bias_x": "bias x (px)", "bias_y": "bias y (px)"}
    return Table(rows, cols, {"recall": fmt(".3f"), "rmse_nm": fmt(".1f"), "crlb_nm": fmt(".1f"),
                              "ratio": fmt(".2f"), "bias_x": fmt("+.4f"), "bias_y": fmt("+.4f")})


def deepstorm_throughput_table(result: dict) -> Table:
    t = _need(result, "throughput")
    rows = [{"device": "cpu", "frames_per_s": t.get("cpu_frames_per_s"),
             "note": f"{t.get('cpu_threads', '?')} threads"}]
    if "cuda_frames_per_s" in t:
        rows.append({"device": "cuda", "frames_per_s": t["cuda_frames_per_s"],
                     "note": t.get("cuda_device", "")})
    cols = {"device": "device", "frames_per_s": "frames/s (20×20 → 80×80)", "note": "threads / GPU"}
    return Table(rows, cols, {"frames_per_s": fmt(",.0f")})


def deepstorm_density_series(result: dict, keys=("recall", "precision", "rmse_nm")) -> dict:
    """method -> {"count": [...], key: [...]} of the density sweep, for plotting."""
    out = {}
    for r in _rows(result, "density_sweep"):
        s = out.setdefault(r.get("method", "?"), {"count": [], **{k: [] for k in keys}})
        s["count"].append(r.get("count"))
        for k in keys:
            s[k].append(r.get(k))
    return out
