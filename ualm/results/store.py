"""Where the benchmark results live and how they are read: loading, the provenance line, the
overview, and the cell formats every table uses."""
from __future__ import annotations

import json
import os
import math
from pathlib import Path
from typing import NamedTuple

DASH = "—"  # a value the result does not record



class Benchmark(NamedTuple):
    title: str
    chapter: str      # the chapter that quotes or uses the numbers
    command: str      # a command that writes the file, from the repository root
    weights: tuple    # bundled weights the numbers describe (their SHA-256 is in the JSON)


# file stem -> what writes it, in the order of the book (the overview and the Results page follow it)
BENCHMARKS = {
    "sim_throughput": Benchmark("Simulation throughput", "1, 4", "python benchmarks/sim_throughput.py", ()),
    "mle_accuracy": Benchmark("MLE against the CRLB", "2", "python benchmarks/mle_accuracy.py", ()),
    "mcmc_speed": Benchmark("Batched MCMC speed", "3", "python benchmarks/mcmc_speed.py", ()),
    "deepstorm": Benchmark("DeepSTORM φ", "4", "python benchmarks/deepstorm.py", ("deepstorm_quick",)),
    "diffusion_t0": Benchmark("Where the guided sampler starts", "5", "python benchmarks/diffusion_t0.py",
                              ("diffusion_quick",)),
    "diffusion": Benchmark("Diffusion samplers, Ψ(ŷ)", "5", "python benchmarks/diffusion.py",
                           ("diffusion_quick",)),
    "oracle_spread": Benchmark("Samplers' spread with an exact ε-oracle", "5",
                               "python benchmarks/oracle_spread.py", ()),
    "uncertainty": Benchmark("Is the uncertainty right?", "6", "python benchmarks/uncertainty.py", ()),
    "posterior_validation": Benchmark("Choosing the posterior sampler on validation frames", "6",
                                      "python benchmarks/posterior.py validate", ("diffusion_v",)),
    "posterior_test": Benchmark("The default uncertainty map, calibrated, on held-out frames", "6",
                                "python benchmarks/posterior.py test", ("diffusion_v",)),
    "posterior_compare": Benchmark("Sharpness at equal coverage: every method calibrated the same way", "6",
                                   "python benchmarks/posterior.py compare",
                                   ("diffusion_v", "deepstorm_quick", "deepstorm_ens0", "deepstorm_ens1",
                                    "deepstorm_ens2", "deepstorm_ens3", "deepstorm_ens4")),
    "posterior_speed": Benchmark("One calibrated map of one frame: seconds", "6",
                                 "python benchmarks/posterior.py speed", ("diffusion_v",)),
    "posterior_exact": Benchmark("Isolated emitters, where the posterior is exact", "6",
                                 "python benchmarks/posterior.py exact", ("diffusion_v",)),
    "posterior_condition": Benchmark("What each Ψ reads of its condition", "6",
                                     "python benchmarks/posterior.py condition",
                                     ("diffusion_v", "diffusion_quick", "diffusion_frame_quick")),
    "posterior_frame": Benchmark("Ψ_v(ŷ) against Ψ_v(ŷ, x)", "6", "python benchmarks/posterior.py frame",
                                 ("diffusion_v", "diffusion_frame_v")),
    "peer_picasso": Benchmark("ualm beside Picasso on one movie", "7",
                              ".venv-picasso/bin/python benchmarks/peer_picasso.py", ("deepstorm_quick",)),
    "movie_coverage": Benchmark("The default map's coverage over many frames of a movie", "7",
                                "python benchmarks/movie_coverage.py", ("diffusion_v",)),
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
    for p in (start, *start.parents, Path(__file__).resolve().parents[2]):
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
        from ..pretrained import manifest
        return manifest(name).get("sha256")
    except Exception:  # noqa: BLE001 - no manifest: nothing to compare with
        return None


def _bundled_calibration_sha(name: str) -> str | None:
    try:
        from ..pretrained import manifest
        return (manifest(name).get("calibration") or {}).get("sha256")
    except Exception:  # noqa: BLE001 - no manifest: nothing to compare with
        return None


def _recorded(result: dict, default: str | None = None) -> dict:
    """name -> SHA-256 of the weights a result records; a single SHA is named by the result's
    "weights", else `default`, else the first weights its benchmark lists."""
    shas = result.get("weights_sha256") or {}
    if isinstance(shas, str):
        name = result.get("weights") or default
        if not name:
            names = BENCHMARKS.get(Path(result.get("_file", "")).stem, Benchmark("", "", "", ())).weights
            name = names[0] if names else "?"
        shas = {name: shas}
    return shas


def _lookup(bundled):
    """name -> SHA-256 of the bundled weights (None if unknown), from a dict, a function or the
    manifests."""
    lookup = bundled if bundled is not None else _bundled_sha
    return lookup.get if isinstance(lookup, dict) else lookup


def _weights_part(result: dict, bundled) -> str:
    """'weights diffusion_quick 5203360d (the bundled ones)' and the like; '' if none recorded."""
    shas = _recorded(result)
    if not shas:
        return ""
    lookup = _lookup(bundled)
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


def current(result: dict | None, *weights: str, bundled=None, calibrations=None) -> bool:
    """Whether `result` exists and describes the bundled weights: those named, or all that it
    records, and the conformal calibrations stored with them where it records one
    ("calibration_sha256": name -> SHA; `calibrations` as `bundled`, default the manifests).
    A chapter quotes a result only when it is current; otherwise it says so."""
    if result is None:
        return False
    shas, lookup = _recorded(result, weights[0] if weights else "?"), _lookup(bundled)
    calibrated = _lookup(calibrations if calibrations is not None else _bundled_calibration_sha)
    return (all(w in shas and shas[w] == lookup(w) for w in (weights or shas))
            and all(calibrated(w) == sha for w, sha in (result.get("calibration_sha256") or {}).items()))


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
    parts.append(f"commit {commit[:10]}{'+dirty' if commit.endswith('+dirty') else ''}" if commit
                 else "commit not recorded")
    if result.get("commit_at_save"):  # HEAD moved or the tree changed while it ran
        parts[-1] += f" (saved at {result['commit_at_save'][:10]})"
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
    return interval(q["median"], q["q25"], q["q75"], spec)


def interval(value, lo, hi, spec: str = ".3f") -> str:
    """'value [lo, hi]' with no-break spaces: an interval never wraps inside a table cell."""
    return f"{value:{spec}}\u00a0[{lo:{spec}},\u00a0{hi:{spec}}]"


def _ci(c: dict | None, spec: str = ".3f") -> str:
    """'value [lo, hi]' of a {value, ci95} dict (a benchmark's bootstrap, `common.boot`)."""
    if not c or _missing(c.get("value")):
        return DASH
    lo, hi = c["ci95"]
    return interval(c["value"], lo, hi, spec)


def _rows(result: dict, key: str) -> list:
    rows = _need(result, key)
    if not isinstance(rows, list):
        raise ResultsError(f"{result.get('_file', 'results')}: [{key!r}] should be a list")
    return rows


def _pick(row: dict, keys) -> dict:
    return {k: row.get(k) for k in keys}
