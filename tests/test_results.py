"""ualm.results: the tables and provenance lines of the book's Results page, on the committed
benchmark JSONs and on small synthetic ones (missing files, missing keys, stale weights)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from ualm import results as R
from ualm.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

TABLES = {
    "sim_throughput": [R.sim_throughput_table],
    "mle_accuracy": [R.mle_table, R.mle_batch_table],
    "mcmc_speed": [R.mcmc_speed_table, R.mcmc_ess_table],
    "deepstorm": [R.deepstorm_table, R.deepstorm_isolated_table, R.deepstorm_throughput_table],
    "diffusion_t0": [R.diffusion_t0_table],
    "diffusion": [R.diffusion_fidelity_table, R.diffusion_speed_table],
    "oracle_spread": [R.oracle_spread_table],
    "posterior_validation": [R.posterior_validation_table],
    "posterior_exact": [R.posterior_exact_table],
    "posterior_condition": [R.posterior_condition_table],
    "posterior_frame": [R.posterior_frame_table],
    "uncertainty": [R.uncertainty_table, R.uncertainty_reference_table, R.uncertainty_emitter_table],
    "posterior_test": [R.posterior_coverage_table, R.posterior_density_table, R.posterior_summary_table,
                       R.posterior_shift_table],
    "posterior_compare": [R.posterior_compare_table],
    "posterior_speed": [R.posterior_speed_table],
    "chapter_times": [R.chapter_times_table],
    "compute_costs": [R.compute_costs_table],
    "estimates": [R.chapter_estimates_table],
    "busy_neighbour": [R.busy_neighbour_table, R.busy_chapter_table],
    "peer_picasso": [R.peer_movie_table, R.peer_mle_table],
    "movie_coverage": [R.movie_coverage_table],
}


def test_estimates_mark_estimates_and_measurements():
    result = {"chapters": {"05_diffusion": {
        "quick/cpu": {"seconds": 90.0, "kind": "measured", "device": "cpu"},
        "gpu/T4": {"seconds": 420.0, "kind": "estimate", "device": "T4"}},
        "01_image_formation": {"quick/cpu": {"seconds": 15.0, "kind": "measured", "device": "cpu"},
                               "gpu/H100": {"seconds": 30.0, "kind": "measured", "device": "H100"}},
        "results": {"quick/cpu": {"seconds": 3.0, "kind": "measured", "device": "cpu"}}}}
    t = R.chapter_estimates_table(result)
    assert list(t.columns) == ["chapter", "quick/cpu", "gpu/T4", "gpu/H100"]  # T4 first
    assert t.rows[0] == {"chapter": "05_diffusion", "quick/cpu": "1.5", "gpu/T4": "≈ 7.0",
                         "gpu/H100": "—"}
    assert t.rows[1]["gpu/T4"] == "—" and t.rows[1]["gpu/H100"] == "0.5"  # measured: no ≈
    assert len(t.rows) == 2  # pages without a gpu entry are left out


def test_every_benchmark_has_tables_and_a_script():
    assert set(TABLES) == set(R.BENCHMARKS)
    for name, b in R.BENCHMARKS.items():
        script = b.command.split()[1]
        assert (ROOT / script).is_file(), f"{name}: {script} does not exist"


def test_results_dir_found_from_the_book():
    assert R.results_dir(ROOT / "book") == RESULTS


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "ualm" / "results").glob("*.py")))
def test_module_is_data_only(module):
    tree = ast.parse((ROOT / "ualm" / "results" / module).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"matplotlib", "torch", "numpy"}, imported


@pytest.mark.parametrize("name", list(R.BENCHMARKS))
def test_committed_results(name):
    """Every committed file gives its tables and a provenance line; absent ones are None."""
    result = R.load(name, RESULTS)
    if result is None:
        assert not (RESULTS / f"{name}.json").exists()
        pytest.skip(f"{name}.json not measured yet")
    line = R.provenance(result)
    assert line.startswith(f"Measured {result['when']} on ")
    assert ("reproduce with `" in line) or ("command not recorded (`python benchmarks/" in line)
    assert "NOT the bundled" not in line, f"{name}.json describes other weights than the bundled ones"
    for table in TABLES[name]:
        t = table(result)
        assert t.rows, f"{name}: {table.__name__} is empty"
        text = markdown_table(*t)
        assert len(text.splitlines()) == len(t.rows) + 2
        assert "None" not in text and "nan" not in text


def test_committed_numbers_reach_the_tables():
    r = R.load("sim_throughput", RESULTS)
    t = R.sim_throughput_table(r)
    assert [row["batch"] for row in t.rows] == [row["batch"] for row in r["rows"]]
    r = R.load("diffusion_t0", RESULTS)
    rows = R.diffusion_t0_table(r).rows
    assert [x["method"] for x in rows if x["method"].endswith("(chosen)")] == \
        [f"guided start, t0 = {r['chosen_t0']} (chosen)"]
    assert rows[0]["mse_over_yhat"] == 1.0 and rows[0]["evals"] is None  # the ŷ row
    r = R.load("deepstorm", RESULTS)
    assert "commit " + r["commit"][:10] in R.provenance(r)
    series = R.deepstorm_density_series(r)
    assert sum(len(s["count"]) for s in series.values()) == len(r["density_sweep"])


# ------------------------------------------------------------------ synthetic results


def test_provenance_says_what_is_not_recorded():
    line = R.provenance({"benchmark": "sim_throughput"})
    assert line == ("Measured on a date not recorded, machine not recorded; commit not recorded; "
                    "command not recorded (`python benchmarks/sim_throughput.py` writes this file).")
    full = {"when": "2030-01-02 03:04:05", "commit": "0123456789abcdef", "command": "python benchmarks/x.py --n 3",
            "machine": {"cpu": "Zen 9", "cpu_count": 64, "torch_threads": 1, "torch": "9.9", "python": "3.99",
                        "cuda_device": "H100"},
            "load_average": [1.5, 1.0, 1.0]}
    assert R.provenance(full) == ("Measured 2030-01-02 03:04:05 on Zen 9, 64 cores, GPU H100 (1 torch thread, "
                                  "torch 9.9, Python 3.99); load average 1.5 at the start; commit 0123456789; "
                                  "reproduce with `python benchmarks/x.py --n 3`.")
    moved = R.provenance({**full, "commit": "0123456789abcdef+dirty", "commit_at_save": "fedcba9876543210"})
    assert "commit 0123456789+dirty (saved at fedcba9876);" in moved
    assert R.provenance({}) == "Measured on a date not recorded, machine not recorded; commit not recorded; " \
                               "command not recorded."
    assert R.provenance({"machine": {"cpu": "arm64"}}).startswith("Measured on a date not recorded on arm64;")


def test_provenance_checks_the_weights():
    r = {"_file": "diffusion.json", "weights": "diffusion_quick", "weights_sha256": "abcdef0123"}
    assert "weights diffusion_quick abcdef01 (the bundled ones)" in R.provenance(r, bundled={"diffusion_quick":
                                                                                             "abcdef0123"})
    stale = R.provenance(r, bundled={"diffusion_quick": "999"})
    assert "NOT the bundled diffusion_quick" in stale
    assert "weights diffusion_quick abcdef01;" in R.provenance(r, bundled={})  # nothing to compare with
    # deepstorm.json names no weights: the registry does
    assert "weights deepstorm_quick" in R.provenance({"_file": "deepstorm.json", "weights_sha256": "12"},
                                                     bundled={})
    many = {"weights_sha256": {"a": "1", "b": "2"}}
    assert "2 sets of weights, all the bundled ones" in R.provenance(many, bundled={"a": "1", "b": "2"})
    assert "NOT the bundled b" in R.provenance(many, bundled={"a": "1", "b": "3"})


def test_missing_parts_raise_clearly():
    with pytest.raises(R.ResultsError, match=r"sim_throughput.json has no \['rows'\]"):
        R.sim_throughput_table({"_file": "sim_throughput.json"})
    with pytest.raises(R.ResultsError, match=r"uncertainty.json has no \['methods'\]"):
        R.uncertainty_table({"benchmark": "uncertainty"})
    with pytest.raises(R.ResultsError, match="should be a list"):
        R.mle_table({"rows": {"i0": 1}})


def test_missing_values_show_as_dashes():
    t = R.mle_table({"rows": [{"device": "cpu", "i0": 200.0, "rmse_nm": float("nan")}]})
    last = markdown_table(*t).splitlines()[-1]
    assert last == "| cpu | 200 | — | — | — | — | — | — | — | — |"
    t = R.mcmc_speed_table({"devices": {"cpu": {"chain_iterations_per_s": {"batched_64": 100.0}}}})
    assert markdown_table(*t).splitlines()[-1] == "| cpu | batched 64 | 100 | — | — | — |"


def test_files_absent_or_broken(tmp_path):
    assert R.load("uncertainty", tmp_path) is None
    found = R.load_all(tmp_path)
    assert list(found) == list(R.BENCHMARKS) and all(v is None for v in found.values())
    (tmp_path / "sim_throughput.json").write_text(json.dumps({"when": "today", "rows": []}))
    found = R.load_all(tmp_path)
    rows = R.overview_table(found).rows
    assert [r["when"] for r in rows[:2]] == ["today", "not measured yet"]
    assert found["sim_throughput"]["_file"] == "sim_throughput.json"
    (tmp_path / "mle_accuracy.json").write_text("{not json")
    with pytest.raises(R.ResultsError, match="not valid JSON"):
        R.load("mle_accuracy", tmp_path)
    (tmp_path / "mcmc_speed.json").write_text("[1, 2]")
    with pytest.raises(R.ResultsError, match="expected a JSON object"):
        R.load("mcmc_speed", tmp_path)


def _quartiles(m):
    return {"median": m, "q25": m - 0.1, "q75": m + 0.1, "n": 4}


def test_tiny_uncertainty_result():
    """The schema of benchmarks/uncertainty.py, one method, smoke-run sized."""
    method = {"kind": "dropout", "weights": ["deepstorm_ens0"], "sampler": None,
              "isolated": {"frames": 4, "samples": 16, "std_ratio": _quartiles(1.1), "corr": _quartiles(0.6)},
              "dense": {"frames": 4, "samples": 8,
                        "calibration": {"n_pixels": 10, "mean_abs_z": 1.5, "coverage_50": 0.4, "coverage_90": 0.8,
                                        "coverage_95": 0.85},
                        "reliability": {"levels": [0.5, 0.9], "coverage": [0.4, 0.8]},
                        "emitter": {"matched": 7, "rmse_px": 0.2, "median_spread_px": 0.1, "median_crlb_px": 0.08,
                                    "spread_over_crlb_median": 1.25, "z_std": 2.0}},
              "fidelity": {"mse": 6e-3}, "evals_per_sample": 1, "seconds_per_frame": 0.03}
    r = {"benchmark": "uncertainty", "_file": "uncertainty.json",
         "mcmc": {"beta1": {"seconds": 1.0, "rhat_max": 1.01, "accept": 0.3},
                  "beta02": {"seconds": 1.0, "std_ratio": _quartiles(2.2), "corr": _quartiles(0.99)}},
         "methods": {"MC dropout (φ, p = 0.1)": method, "no dense part yet": {"isolated": {}}}}
    lines = markdown_table(*R.uncertainty_table(r)).splitlines()
    assert lines[2] == "| MC dropout (φ, p = 0.1) | 8 | 1.10\u00a0[1.00,\u00a01.20] | 0.60 | 0.400 | 0.800 | 0.850 " \
                       "| 1.50 | 6.00\u00a0×\u00a010⁻³ | 1 | 0.03 |"
    assert lines[3] == "| no dense part yet | — | — | — | — | — | — | — | — | — | — |"
    ref = markdown_table(*R.uncertainty_reference_table(r)).splitlines()
    assert ref[3] == "| MCMC β = 0.2 (the paper's) | 2.20\u00a0[2.10,\u00a02.30] | 0.990 | 1.0 | — | — |"
    emitters = markdown_table(*R.uncertainty_emitter_table(r)).splitlines()
    assert emitters[2] == "| MC dropout (φ, p = 0.1) | 7 | 0.200 | 0.100 | 0.080 | 1.25 | 2.00 |"
    assert R.uncertainty_reliability_series(r) == {"MC dropout (φ, p = 0.1)": ([0.5, 0.9], [0.4, 0.8])}


def test_chapter_times_table_shows_a_missing_time_as_a_dash():
    t = R.chapter_times_table({"chapters": [{"chapter": "a", "seconds": 12.0}, {"chapter": "b", "seconds": None}]})
    text = markdown_table(*t)
    assert "| a | 12 | 0.2 |" in text and "| b | — | — |" in text


def test_a_pipe_in_a_cell_does_not_split_it():
    text = markdown_table([{"what": "mean |z|", "v": 1}], {"what": "a|b", "v": "v"})
    head, _, row = text.splitlines()
    split = lambda line: [c for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # noqa: E731
    assert len(split(head)) == len(split(row)) == 2
    assert split(row)[0].strip() == r"mean \|z\|"


def test_current_checks_the_weights_a_result_describes():
    r = {"weights_sha256": {"a": "1", "b": "2"}}
    assert R.current(r, bundled={"a": "1", "b": "2"}) and R.current(r, "a", bundled={"a": "1", "b": "9"})
    assert not R.current(r, bundled={"a": "1", "b": "9"}) and not R.current(r, "c", bundled={"c": "3"})
    assert not R.current(None)
    one = {"weights_sha256": "5", "weights": "psi"}  # a single SHA names its weights, or the one asked for
    assert R.current(one, bundled={"psi": "5"}) and not R.current(one, bundled={"psi": "6"})
    assert R.current({"weights_sha256": "5"}, "psi", bundled={"psi": "5"})
    # calibrated numbers are current only with the calibration they were scored with
    cal = {"weights_sha256": "5", "weights": "psi", "calibration_sha256": {"psi": "c1"}}
    assert R.current(cal, bundled={"psi": "5"}, calibrations={"psi": "c1"})
    assert not R.current(cal, bundled={"psi": "5"}, calibrations={"psi": "c2"})
    assert not R.current(cal, bundled={"psi": "5"}, calibrations={})
