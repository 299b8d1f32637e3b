"""Tables of chapters 5–6: the diffusion samplers, and whether their uncertainty is right."""
from __future__ import annotations

import math

from .store import Table, _ci, _iqr, _need, _pick, _rows, fmt


# ---------------------------------------------------------------- chapter 5


def diffusion_fidelity_table(result: dict) -> Table:
    """Sample mean of each sampler against the truth, beside ŷ = φ(x)."""
    cols = {"method": "method", "n_samples": "K", "evals": "evals/sample", "seconds_per_frame": "s/frame",
            "mse": "MSE", "precision": "precision", "recall": "recall", "spearman": "Spearman(std, error)",
            "mean_std": "mean std"}
    rows = [_pick(r, cols) for r in _rows(result, "fidelity")]
    for r in rows:  # ŷ has no samples: its K and evaluations are not counts
        if r["n_samples"] == 0:
            r["n_samples"] = r["evals"] = None
    f = {"n_samples": fmt("d"), "evals": fmt("d"), "seconds_per_frame": fmt(".2f"), "mse": fmt(".3e"),
         "precision": fmt(".4f"), "recall": fmt(".4f"), "spearman": fmt(".3f"), "mean_std": fmt(".4f")}
    return Table(rows, cols, f)


def diffusion_speed_table(result: dict) -> Table:
    """Wall time of an uncertainty map of K = 32 samples, per sampler and device."""
    cols = {"device": "device", "sampler": "sampler", "evals_per_sample": "evals/sample",
            "one_frame_k32_seconds": "1 frame, K = 32 (s)",
            "batch16_k32_seconds_from_eval_time": "16 frames, K = 32 (s, from eval time)"}
    rows = [_pick(r, cols) for r in _rows(result, "speed")]
    return Table(rows, cols, {"one_frame_k32_seconds": fmt(".2f"),
                              "batch16_k32_seconds_from_eval_time": fmt(".0f")})


def diffusion_t0_table(result: dict) -> Table:
    cols = {"method": "method", "t0": "t0", "evals": "evals/sample", "mse": "MSE",
            "mse_over_yhat": "MSE / ŷ's",
            "precision": "precision", "recall": "recall", "mean_std": "mean std",
            "seconds_per_frame": "s/frame"}
    rows = [_pick(r, cols) for r in _rows(result, "rows")]
    for r in rows:
        if r["t0"] is None:  # the ŷ row
            r["evals"], r["mse_over_yhat"] = None, 1.0
    chosen = result.get("chosen_t0")
    for r in rows:
        if chosen is not None and r["t0"] == chosen:
            r["method"] += " (chosen)"
    f = {"t0": fmt("d"), "evals": fmt("d"), "mse": fmt(".3e"), "mse_over_yhat": fmt(".3f"),
         "precision": fmt(".4f"), "recall": fmt(".4f"), "mean_std": fmt(".4f"),
         "seconds_per_frame": fmt(".2f")}
    return Table(rows, cols, f)


# ---------------------------------------------------------------- chapter 6


def uncertainty_table(result: dict) -> Table:
    """Every method: against MCMC on isolated frames, and calibration on dense frames."""
    rows = []
    for name, m in _need(result, "methods").items():
        iso, dense = m.get("isolated") or {}, m.get("dense") or {}
        c = dense.get("calibration") or {}
        rows.append({"method": name, "k": dense.get("samples"), "ratio": _iqr(iso.get("std_ratio")),
                     "corr": (iso.get("corr") or {}).get("median"),
                     **_pick(c, ("coverage_50", "coverage_90", "coverage_95", "mean_abs_z")),
                     "mse": (m.get("fidelity") or {}).get("mse"), "evals": m.get("evals_per_sample"),
                     "spf": m.get("seconds_per_frame")})
    cols = {"method": "method", "k": "K", "ratio": "std / MCMC's, median [IQR]", "corr": "map corr.",
            "coverage_50": "50 %", "coverage_90": "90 %", "coverage_95": "95 %", "mean_abs_z": "mean abs(z)",
            "mse": "MSE of mean", "evals": "evals/sample", "spf": "s/frame"}
    f = {"k": fmt("d"), "corr": fmt(".2f"), "coverage_50": fmt(".3f"), "coverage_90": fmt(".3f"),
         "coverage_95": fmt(".3f"), "mean_abs_z": fmt(".2f"), "mse": fmt(".2e"), "evals": fmt("d"),
         "spf": fmt(".2f")}
    return Table(rows, cols, f)


def uncertainty_reference_table(result: dict) -> Table:
    """The MCMC reference (β = 1) and the paper's β = 0.2 maps scored against it."""
    mc = _need(result, "mcmc")
    b1, b02 = mc.get("beta1") or {}, mc.get("beta02") or {}
    rows = [{"method": "MCMC β = 1 (reference)", "ratio": "1 (by definition)", "corr": None,
             "seconds": b1.get("seconds"), "rhat": b1.get("rhat_max"), "accept": b1.get("accept")},
            {"method": "MCMC β = 0.2 (the paper's)", "ratio": _iqr(b02.get("std_ratio")),
             "corr": (b02.get("corr") or {}).get("median"), "seconds": b02.get("seconds"), "rhat": None,
             "accept": None}]
    cols = {"method": "method", "ratio": "std / β = 1's, median [IQR]", "corr": "map corr.",
            "seconds": "seconds (all frames)", "rhat": "max R-hat", "accept": "acceptance"}
    return Table(rows, cols, {"corr": fmt(".3f"), "seconds": fmt(".1f"), "rhat": fmt(".3f"),
                              "accept": fmt(".3f")})


def uncertainty_emitter_table(result: dict) -> Table:
    """Per emitter on dense frames: position spread across samples against error and CRLB."""
    rows = [{"method": name, **_pick((m.get("dense") or {}).get("emitter") or {},
                                     ("matched", "rmse_px", "median_spread_px", "median_crlb_px",
                                      "spread_over_crlb_median", "z_std"))}
            for name, m in _need(result, "methods").items()]
    cols = {"method": "method", "matched": "emitters", "rmse_px": "RMSE (px)",
            "median_spread_px": "median spread (px)", "median_crlb_px": "median CRLB (px)",
            "spread_over_crlb_median": "spread / CRLB", "z_std": "std of z"}
    f = {"rmse_px": fmt(".3f"), "median_spread_px": fmt(".3f"), "median_crlb_px": fmt(".3f"),
         "spread_over_crlb_median": fmt(".2f"), "z_std": fmt(".2f")}
    return Table(rows, cols, f)


# ---------------------------------------------------------------- posterior_test (issue 16)

def posterior_coverage_table(result: dict) -> Table:
    """Coverage of the default map's central intervals at each level, raw and calibrated, with
    bootstrap 95 % intervals over frames, at the default K and at a small K (its first samples)."""
    dense, small = _need(result, "dense"), result.get("dense_small") or {}
    k, ks = dense["samples"], small.get("samples")
    rows = [{"level": float(lv), "raw": _ci(dense["raw"].get(str(lv))),
             "calibrated": _ci(dense["calibrated"].get(str(lv))),
             "small": _ci((small.get("calibrated") or {}).get(str(lv)))} for lv in dense["levels"]]
    cols = {"level": "nominal", "raw": f"raw, K = {k}", "calibrated": f"calibrated, K = {k}",
            "small": f"calibrated, K = {ks}" if ks else "calibrated, small K"}
    return Table(rows, cols, {"level": fmt(".2f")})


def posterior_density_table(result: dict) -> Table:
    """90 % coverage per class of true emitter count, raw and calibrated."""
    rows = [{"emitters": f"{b['emitters'][0]}–{b['emitters'][1]}", "frames": b["frames"],
             "raw": _ci(b.get("raw")), "calibrated": _ci(b.get("calibrated"))}
            for b in _need(result, "dense", "by_density")]
    return Table(rows, {"emitters": "true emitters", "frames": "frames", "raw": "raw 90 %",
                        "calibrated": "calibrated 90 %"}, {})


def posterior_summary_table(result: dict) -> Table:
    """The issue's other bars: isolated std ratio and map correlation against β = 1 MCMC, mean
    MSE against ŷ, mean |z| against its value for a perfect sampler at K, time, misses."""
    iso, dense = _need(result, "isolated"), _need(result, "dense")
    misses = dense.get("misses") or {}
    rows = [
        {"what": "isolated: total std / β = 1 MCMC's, median [IQR], raw", "value": _iqr(iso["raw"]["std_ratio"])},
        {"what": "isolated: the same, calibrated", "value": _iqr(iso["calibrated"]["std_ratio"])},
        {"what": "isolated: std-map correlation with MCMC, median [IQR]", "value": _iqr(iso["raw"]["corr"], ".3f")},
        {"what": "dense: MSE of the sample mean / MSE of ŷ", "value": f"{dense['mse'] / dense['yhat_mse']:.3f}"},
        {"what": f"dense: mean abs(z), raw / calibrated / a perfect sampler at K = {dense['samples']}",
         "value": f"{dense['mean_abs_z_raw']:.2f} / {dense['mean_abs_z_calibrated']:.2f} / "
                  f"{dense['mean_abs_z_ideal']:.2f}"},
        {"what": "dense: calibrated 90 % coverage near true emitters that the mean misses / elsewhere",
         "value": f"{misses.get('coverage_near_missed', math.nan):.3f} / {misses.get('coverage_rest', math.nan):.3f}"},
        {"what": "dense: share of the uncovered pixels near missed emitters",
         "value": f"{misses.get('share_of_uncovered_near_missed', math.nan):.3f}"},
    ]
    return Table(rows, {"what": "measure", "value": "value"}, {})


def posterior_compare_table(result: dict) -> Table:
    """Every method calibrated the same way, on the same held-out pixels: calibrated 90 % coverage
    and mean width, the width with one factor fitted to cover exactly 90 % of these pixels
    (sharpness at equal coverage), proper scores of the calibrated samples (lower is better),
    MSE of the mean. A method no scale can calibrate is scored raw, marked."""
    rows = []
    for name, m in _need(result, "methods").items():
        sc = m.get("calibrated") or m["raw"]
        rows.append({"method": name + ("" if m.get("calibrated") else " (not calibratable: raw)"),
                     "cov": _ci(m["coverage_90"]), "width": m["width_90"],
                     "exact": (m.get("at_exactly_90") or {}).get("width"), "crps": sc["crps"],
                     "energy": sc["energy"], "mse": m["mse"]})
    return Table(rows, {"method": "method", "cov": "90 % coverage", "width": "mean width",
                        "exact": "mean width at exactly 90 %", "crps": "CRPS", "energy": "energy score",
                        "mse": "MSE of the mean"},
                 {"width": fmt(".3f"), "exact": fmt(".3f"), "crps": fmt(".4f"), "energy": fmt(".2f"),
                  "mse": fmt(".4f")})


def posterior_shift_table(result: dict) -> Table:
    """90 % coverage, raw and calibrated, on frames away from the training distribution."""
    rows = [{"shift": label, "raw": _ci(r.get("raw_90")), "calibrated": _ci(r.get("calibrated_90")),
             "mse": r["mse"] / r["yhat_mse"]} for label, r in _need(result, "shift").items()]
    return Table(rows, {"shift": "frames", "raw": "raw 90 %", "calibrated": "calibrated 90 %",
                        "mse": "MSE / ŷ's"}, {"mse": fmt(".2f")})


def uncertainty_reliability_series(result: dict) -> dict:
    """method -> (nominal levels, observed coverage) on dense frames, for a reliability plot."""
    out = {}
    for name, m in _need(result, "methods").items():
        rel = (m.get("dense") or {}).get("reliability") or {}
        if rel.get("levels") and rel.get("coverage"):
            out[name] = (list(rel["levels"]), list(rel["coverage"]))
    return out


SWAPS = ("right condition", "yhat from another frame", "frame from another frame")
_SWAP_COLS = {SWAPS[0]: "loss, right condition", SWAPS[1]: "ŷ from another frame",
              SWAPS[2]: "frame from another frame"}


def posterior_condition_table(result: dict) -> Table:
    """Each Ψ's training loss at t = T with its condition, and with one channel of it taken from
    another frame (benchmarks/posterior.py condition): how much it reads each channel."""
    rows = [{"psi": w, **{k: v.get(k) for k in SWAPS}} for w, v in _need(result, "loss_at_T").items()]
    return Table(rows, {"psi": "Ψ", **_SWAP_COLS}, {k: fmt(".3g") for k in SWAPS})


def posterior_frame_table(result: dict) -> Table:
    """Ψ_v(ŷ) against Ψ_v(ŷ, x), sampled alike and scored raw (benchmarks/posterior.py frame)."""
    rows = []
    for label, r in _need(result, "candidates").items():
        loss = r.get("loss_at_T") or {}
        rows.append({"psi": label, "ratio": _iqr((r.get("isolated") or {}).get("std_ratio")),
                     "corr": ((r.get("isolated") or {}).get("corr") or {}).get("median"),
                     "cov90": (r.get("dense") or {}).get("coverage_90"),
                     "absz": (r.get("dense") or {}).get("mean_abs_z"),
                     "mse": r["mse"] / r["yhat_mse"] if r.get("yhat_mse") else None,
                     "loss": loss.get(SWAPS[0]), "loss_y": loss.get(SWAPS[1]), "loss_x": loss.get(SWAPS[2])})
    cols = {"psi": "Ψ, sampler", "ratio": "std / MCMC, median [IQR]", "corr": "map corr.",
            "cov90": "90 % coverage (raw)", "absz": "mean abs(z)", "mse": "MSE / ŷ's", "loss": "loss at T",
            "loss_y": "ŷ swapped", "loss_x": "frame swapped"}
    return Table(rows, cols, {"corr": fmt(".2f"), "cov90": fmt(".3f"), "absz": fmt(".2f"), "mse": fmt(".2f"),
                              "loss": fmt(".3g"), "loss_y": fmt(".3g"), "loss_x": fmt(".3g")})


_EXACT = {"mcmc_K32": "MCMC, K = 32 draws", "mcmc_K256": "MCMC, K = 256 draws",
          "diffusion_raw": "Ψ_v, raw", "diffusion_calibrated": "Ψ_v, calibrated"}


def posterior_speed_table(result: dict) -> Table:
    """Seconds for one calibrated K = 32 map of one frame (benchmarks/posterior.py speed), Ψ in
    each memory layout, timed alternately in one run: median and range over the repeats."""
    rows = [{"layout": name.replace("_", "-"), "median": r["median"], "range": f"{r['min']:.2f}–{r['max']:.2f}",
             "n": len(r["seconds"])} for name, r in _need(result, "layouts").items()]
    cols = {"layout": "Ψ's layout", "median": "median (s)", "range": "range (s)", "n": "calls"}
    return Table(rows, cols, {"median": fmt(".2f"), "n": fmt("d")})


def posterior_exact_table(result: dict) -> Table:
    """Coverage of the exact posterior's draws on isolated emitters, where the posterior is known
    (benchmarks/posterior.py exact): the ceiling a K-sample interval can reach, beside Ψ_v."""
    rows = []
    for key, r in _need(result, "rows").items():
        c = r.get("coverage") or {}
        scale = r.get("needed_scale_90", r.get("scale_90_applied"))
        if isinstance(scale, list):  # one scale per class of detected count: all alike here
            scale = scale[0] if len(set(scale)) == 1 else None
        rows.append({"method": _EXACT.get(key, key), **{lv: c.get(lv) for lv in ("0.5", "0.8", "0.9", "0.95")},
                     "scale": scale,
                     "kind": "needed" if "needed_scale_90" in r else "applied"})
    cols = {"method": "samples", "0.5": "50 %", "0.8": "80 %", "0.9": "90 %", "0.95": "95 %",
            "scale": "scale for 90 %", "kind": "scale is"}
    return Table(rows, cols, {lv: fmt(".3f") for lv in ("0.5", "0.8", "0.9", "0.95")} | {"scale": fmt(".3f")})


def oracle_spread_table(result: dict, spread: str = "1.0") -> Table:
    """Sample std / true std with an exact ε-oracle (benchmarks/oracle_spread.py), per schedule
    and sampler: the paper's guided start at t0 and DDIM (η = 1) by steps, at one posterior
    spread (a multiple of the isolated emitter's)."""
    rows = []
    for name, sch in _need(result, "schedules").items():
        sp = _need(sch, "spreads", spread) if spread in (sch.get("spreads") or {}) else {}
        start = "guided start" if sch.get("ddim_start") == "guided" else "from noise"
        for t0, v in (sp.get("sdedit_t0") or {}).items():
            rows.append({"schedule": name, "sampler": f"guided start at t0 = {t0}", "ratio": v})
        for steps, v in (sp.get("ddim_eta1") or {}).items():
            rows.append({"schedule": name, "sampler": f"DDIM {steps} steps, η = 1, {start}", "ratio": v})
        anc = (sch.get("ancestral_from_noise") or {}).get(spread)
        if anc is not None:
            rows.append({"schedule": name, "sampler": "ancestral, all steps, from noise", "ratio": anc})
    return Table(rows, {"schedule": "schedule", "sampler": "sampler", "ratio": "sample std / true std"},
                 {"ratio": fmt(".2f")})


def posterior_validation_table(result: dict) -> Table:
    """The candidate samplers on validation frames, and the one the rule chose
    (benchmarks/posterior.py validate)."""
    choice = result.get("choice")
    rows = []
    for label, r in _need(result, "candidates").items():
        d = r.get("dense") or {}
        rows.append({"sampler": label + (" (chosen)" if label == choice else ""),
                     "ratio": _iqr((r.get("isolated") or {}).get("std_ratio")),
                     "cov90": d.get("coverage_90"), "absz": d.get("mean_abs_z"),
                     "mse": r["mse"] / r["yhat_mse"] if r.get("yhat_mse") else None,
                     "evals": r.get("evals_per_sample"), "spf": r.get("seconds_per_frame_k32")})
    cols = {"sampler": "sampler", "ratio": "std / MCMC, median [IQR]", "cov90": "90 % coverage (raw)",
            "absz": "mean abs(z)", "mse": "MSE / ŷ's", "evals": "evals/sample", "spf": "s, K = 32"}
    return Table(rows, cols, {"cov90": fmt(".3f"), "absz": fmt(".2f"), "mse": fmt(".2f"), "evals": fmt("d"),
                              "spf": fmt(".1f")})
