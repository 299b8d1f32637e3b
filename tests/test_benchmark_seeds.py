"""The benchmarks' frame sets are drawn from separate random streams: a seed shared by two sets
(say calibration and scoring frames) would make their emitters' positions and photon counts
share the same draws, so a score would no longer be on frames independent of the choice.

Left as it is: `uncertainty.isolated_reference` seeds its MCMC chains with seed + 1 and seed + 2,
which are other sets' frame seeds. A chain's proposals sharing a stream with another set's
simulation does not make two frame sets share draws; changing it would change stored results."""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def frame_seeds() -> dict:
    post, unc = _load("posterior"), _load("uncertainty")
    seeds = {"diffusion held-out": _load("diffusion").HELD_OUT_SEED,
             "diffusion_t0 validation": _load("diffusion_t0").VALIDATION_SEED,
             "uncertainty isolated (posterior test)": unc.ISOLATED_SEED,
             "uncertainty dense (posterior test)": unc.DENSE_SEED,
             "posterior exact": post.EXACT_SEED, "posterior exact MCMC": post.EXACT_MCMC_SEED,
             "movie coverage": _load("movie_coverage").MOVIE_SEED}
    for split in ("validation", "calibration"):
        seeds.update({f"posterior {split} {kind}": s for kind, s in post.SEEDS[split].items()})
    assert post.SEEDS["test"] == {"isolated": unc.ISOLATED_SEED, "dense": unc.DENSE_SEED}
    return seeds


def test_every_benchmark_frame_set_has_its_own_seed():
    seeds = frame_seeds()
    assert len(seeds) == 12
    by_seed = {}
    for name, seed in seeds.items():
        by_seed.setdefault(seed, []).append(name)
    shared = {s: names for s, names in by_seed.items() if len(names) > 1}
    assert not shared, f"seeds used by more than one frame set: {shared}"
