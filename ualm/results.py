"""The benchmark results of `benchmarks/results/*.json` as tables, for the book's Results page.

Each `*_table(result)` takes the parsed JSON of one benchmark and returns a `Table`
(rows, columns, formats) for `ualm.tables.markdown_table(*table)`; `provenance(result)` is the
one-line record of where, when and how the numbers were measured. Data only: the plots are
drawn in the page from `Table.rows` and the `*_series` helpers.

A value a result does not record shows as "—" in its table. A result that lacks a part a table
is built from (its "rows", say) raises `ResultsError` naming the file and the key.
"""
from __future__ import annotations

import json
import os
import math
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ResultsError",
    "Table",
    "deepstorm_density_series",
    "deepstorm_isolated_table",
    "deepstorm_table",
    "deepstorm_throughput_table",
    "diffusion_fidelity_table",
    "diffusion_speed_table",
    "diffusion_t0_table",
    "fmt",
    "load",
    "load_all",
    "mcmc_ess_table",
    "mcmc_speed_table",
    "mle_table",
    "overview_table",
    "posterior_compare_table",
    "posterior_coverage_table",
    "posterior_density_table",
    "posterior_shift_table",
    "posterior_summary_table",
    "provenance",
    "results_dir",
    "sim_throughput_table",
    "uncertainty_emitter_table",
    "chapter_times_table",
    "chapter_estimates_table",
    "compute_costs_table",
    "busy_neighbour_table",
    "busy_chapter_table",
    "uncertainty_reference_table",
    "uncertainty_reliability_series",
    "uncertainty_table",
]

DASH = "—"


class Benchmark(NamedTuple):
    title: str
    chapter: str      # the chapter that quotes or uses the numbers
    command: str      # a command that writes the file, from the repository root
    weights: tuple    # bundled weights the numbers describe (their SHA-256 is in the JSON)


# file stem -> what writes it, in the order of the book
BENCHMARKS = {
    "sim_throughput": Benchmark("Simulation throughput", "1, 4", "python benchmarks/sim_throughput.py", ()),
    "mle_accuracy": Benchmark("MLE against the CRLB", "2", "python benchmarks/mle_accuracy.py", ()),
    "mcmc_speed": Benchmark("Batched MCMC speed", "3", "python benchmarks/mcmc_speed.py", ()),
    "deepstorm": Benchmark("DeepSTORM φ", "4", "python benchmarks/deepstorm.py", ("deepstorm_quick",)),
    "diffusion_t0": Benchmark("Where the guided sampler starts", "5", "python benchmarks/diffusion_t0.py",
                              ("diffusion_quick",)),
    "diffusion": Benchmark("Diffusion samplers, Ψ(ŷ)", "5", "python benchmarks/diffusion.py",
                           ("diffusion_quick",)),
    "diffusion_frame": Benchmark("Diffusion samplers, Ψ(ŷ, x)", "6",
                                 "python benchmarks/diffusion.py --weights diffusion_frame_quick "
                                 "--out benchmarks/results/diffusion_frame.json", ("diffusion_frame_quick",)),
    "uncertainty": Benchmark("Is the uncertainty right?", "6", "python benchmarks/uncertainty.py", ()),
    "posterior_test": Benchmark("The default uncertainty map, calibrated, on held-out frames", "6",
                                "python benchmarks/posterior.py test", ("diffusion_v",)),
    "posterior_compare": Benchmark("Sharpness at equal coverage: every method calibrated the same way", "6",
                                   "python benchmarks/posterior.py compare",
                                   ("diffusion_v", "deepstorm_quick", "deepstorm_ens0", "deepstorm_ens1",
                                    "deepstorm_ens2", "deepstorm_ens3", "deepstorm_ens4")),
    "chapter_times": Benchmark("Time to run each chapter", "all", "python benchmarks/chapter_times.py", ()),
    "compute_costs": Benchmark("Network costs and GPU estimates", "4, 5",
                               "python benchmarks/compute_costs.py", ()),
    "estimates": Benchmark("Chapter times per profile and device", "all",
                           "python benchmarks/estimates.py", ()),
    "busy_neighbour": Benchmark("Beside a busy neighbour process", "2, 5",
                                "python benchmarks/busy_neighbour.py", ()),
}


class ResultsError(ValueError):
    """A results file lacks a part that a table needs."""


class Table(NamedTuple):
    """Arguments of `ualm.tables.markdown_table`: `markdown_table(*table)`."""
    rows: list
    columns: dict
    formats: dict


# ---------------------------------------------------------------- files


def results_dir(start=None) -> Path | None:
    """The first `benchmarks/results` folder in `start` (default: the working directory) or a
    folder above it, else beside the package (an editable install); None if there is none.
    Env UALM_RESULTS_DIR overrides: a folder, or "none" for no results at all (as on Colab,
    where the chapters compute everything live; the smoke run of CI does this)."""
    if os.environ.get("UALM_RESULTS_DIR"):
        chosen = os.environ["UALM_RESULTS_DIR"]
        return None if chosen == "none" else Path(chosen)
    start = Path(start or Path.cwd()).resolve()
    for p in (start, *start.parents, Path(__file__).resolve().parents[1]):
        if (p / "benchmarks" / "results").is_dir():
            return p / "benchmarks" / "results"
    return None


def load(name: str, directory=None) -> dict | None:
    """The parsed `<directory>/<name>.json`, or None when it is absent (not measured yet).
    Each result gets `_file` (the file name) for the messages of `ResultsError`."""
    directory = Path(directory) if directory is not None else results_dir()
    path = directory / f"{name}.json" if directory is not None else None
    if path is None or not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(result, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(result).__name__}")
    result.setdefault("_file", path.name)
    return result


def load_all(directory=None, names=None) -> dict:
    """name -> parsed result or None (absent), for every benchmark of `BENCHMARKS` (or `names`)."""
    return {name: load(name, directory) for name in (names or BENCHMARKS)}


def _need(result: dict, *keys):
    """result[k0][k1]..., or a ResultsError that names the file and the missing key."""
    value = result
    for i, k in enumerate(keys):
        if not isinstance(value, dict) or k not in value:
            where = result.get("_file") or f"{result.get('benchmark', 'results')}.json"
            path = "".join(f"[{x!r}]" for x in keys[: i + 1])
            raise ResultsError(f"{where} has no {path}: not written by a current {where.split('.')[0]} "
                               f"benchmark? Rerun its script.")
        value = value[k]
    return value


# ---------------------------------------------------------------- provenance


def _short(sha: str | None, n: int = 8) -> str:
    return sha[:n] if sha else "?"


def _bundled_sha(name: str) -> str | None:
    try:
        from .pretrained import manifest
        return manifest(name).get("sha256")
    except Exception:  # noqa: BLE001 - no manifest: nothing to compare with
        return None


def _weights_part(result: dict, bundled) -> str:
    """'weights diffusion_quick 5203360d (the bundled ones)' and the like; '' if none recorded."""
    shas = result.get("weights_sha256")
    if not shas:
        return ""
    if isinstance(shas, str):
        name = result.get("weights")
        if not name:
            names = BENCHMARKS.get(Path(result.get("_file", "")).stem, Benchmark("", "", "", ())).weights
            name = names[0] if names else "?"
        shas = {name: shas}
    lookup = bundled if bundled is not None else _bundled_sha
    lookup = lookup.get if isinstance(lookup, dict) else lookup
    stale = [n for n, s in shas.items() if lookup(n) is not None and lookup(n) != s]
    unknown = [n for n in shas if lookup(n) is None]
    if len(shas) == 1:
        (name, sha), = shas.items()
        text = f"weights {name} {_short(sha)}"
    else:
        text = f"{len(shas)} sets of weights"
    if stale:
        return text + f" (NOT the bundled {', '.join(stale)}: these numbers describe other weights)"
    if unknown:
        return text
    return text + (" (the bundled ones)" if len(shas) == 1 else ", all the bundled ones")


def provenance(result: dict, writer: str | None = None, bundled=None) -> str:
    """One line: when, on what machine and software, at which commit, with which weights, and
    the command that reproduces the numbers. Whatever the JSON does not record is said so.

    writer: a command that writes the file, named when the result does not record its own
      (default: the one of `BENCHMARKS` for this file name).
    bundled: name -> SHA-256 of the bundled weights, or a function of the name (default: the
      manifests in ualm/pretrained)."""
    m = result.get("machine") or {}
    when = result.get("when")
    head = f"Measured {when}" if when else "Measured on a date not recorded"
    if m:
        cpu = m.get("cpu") or "unknown CPU"
        hw = f"{cpu}, {m['cpu_count']} cores" if m.get("cpu_count") else cpu
        if m.get("cuda_device"):
            hw += f", GPU {m['cuda_device']}"
        sw = [f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}"
              if m.get("torch_threads") else None,
              f"torch {m['torch']}" if m.get("torch") else None,
              f"Python {m['python']}" if m.get("python") else None]
        sw = ", ".join(s for s in sw if s)
        parts = [f"{head} on {hw}" + (f" ({sw})" if sw else "")]
    else:
        parts = [f"{head}, machine not recorded"]
    load_avg = result.get("load_average")
    if load_avg:
        parts.append(f"load average {load_avg[0]:.1f} at the start")
    commit = result.get("commit")
    parts.append(f"commit {commit[:10]}" if commit else "commit not recorded")
    weights = _weights_part(result, bundled)
    if weights:
        parts.append(weights)
    command = result.get("command")
    if command:
        parts.append(f"reproduce with `{command}`")
    else:
        if not writer:
            bench = BENCHMARKS.get(Path(result.get("_file", "")).stem)
            writer = bench.command if bench else (f"python benchmarks/{result['benchmark']}.py"
                                                  if result.get("benchmark") else None)
        parts.append(f"command not recorded (`{writer}` writes this file)" if writer
                     else "command not recorded")
    return "; ".join(parts) + "."


def overview_table(results: dict) -> Table:
    """One row per benchmark of `results` (name -> parsed result or None): when it was measured,
    or "not measured yet"."""
    rows = []
    for name, r in results.items():
        b = BENCHMARKS.get(name)
        rows.append({"title": b.title if b else name, "file": f"`{name}.json`",
                     "chapter": b.chapter if b else DASH,
                     "when": (r.get("when") or "date not recorded") if r is not None else "not measured yet"})
    return Table(rows, {"title": "benchmark", "file": "file", "chapter": "chapter", "when": "measured"}, {})


# ---------------------------------------------------------------- formats


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(spec: str):
    """A cell format for `markdown_table`: `spec` applied to numbers, "—" for None and NaN."""
    return lambda v: DASH if _missing(v) else format(v, spec)


def _iqr(q: dict | None, spec: str = ".2f") -> str:
    """'median [q25, q75]' of a quartiles dict of benchmarks/uncertainty.py."""
    if not q or _missing(q.get("median")):
        return DASH
    return f"{q['median']:{spec}} [{q['q25']:{spec}}, {q['q75']:{spec}}]"


def _rows(result: dict, key: str) -> list:
    rows = _need(result, key)
    if not isinstance(rows, list):
        raise ResultsError(f"{result.get('_file', 'results')}: [{key!r}] should be a list")
    return rows


def _pick(row: dict, keys) -> dict:
    return {k: row.get(k) for k in keys}


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

def _ci(c: dict | None, spec: str = ".3f") -> str:
    """'value [lo, hi]' of a {value, ci95} dict of benchmarks/posterior.py."""
    if not c or _missing(c.get("value")):
        return DASH
    lo, hi = c["ci95"]
    return f"{c['value']:{spec}} [{lo:{spec}}, {hi:{spec}}]"


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
        {"what": "seconds for one calibrated K = 32 map of one frame",
         "value": f"{result.get('seconds_one_frame_k32', math.nan):.1f}"},
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
