"""The benchmark results of `benchmarks/results/*.json` as tables, for the book's Results page.

Each `*_table(result)` takes the parsed JSON of one benchmark and returns a `Table`
(rows, columns, formats) for `ualm.tables.markdown_table(*table)`; `provenance(result)` is the
one-line record of where, when and how the numbers were measured. Data only: the plots are
drawn in the page from `Table.rows` and the `*_series` helpers.

A value a result does not record shows as "—" in its table. A result that lacks a part a table
is built from (its "rows", say) raises `ResultsError` naming the file and the key.

Split by concern: `store` (files, provenance, formats), `classical` (chapters 1–4),
`posterior` (chapters 5–6), `movie` (chapter 7), `costs` (run times and network costs).
"""
from __future__ import annotations

from .store import (  # noqa: F401
    BENCHMARKS,
    Benchmark,
    ResultsError,
    Table,
    fmt,
    current,
    load,
    load_all,
    overview_table,
    provenance,
    results_dir,
)
from .classical import (  # noqa: F401
    deepstorm_density_series,
    deepstorm_isolated_table,
    deepstorm_table,
    deepstorm_throughput_table,
    mcmc_ess_table,
    mcmc_speed_table,
    mle_batch_table,
    mle_table,
    sim_throughput_table,
)
from .posterior import (  # noqa: F401
    diffusion_fidelity_table,
    diffusion_speed_table,
    diffusion_t0_table,
    SWAPS,
    posterior_compare_table,
    posterior_condition_table,
    posterior_coverage_table,
    posterior_exact_table,
    posterior_speed_table,
    oracle_spread_table,
    posterior_frame_table,
    posterior_validation_table,
    posterior_density_table,
    posterior_shift_table,
    posterior_summary_table,
    uncertainty_emitter_table,
    uncertainty_reference_table,
    uncertainty_reliability_series,
    uncertainty_table,
)
from .movie import (  # noqa: F401
    PEER_LABELS,
    peer_mle_table,
    movie_coverage_table,
    peer_movie_table,
)
from .costs import (  # noqa: F401
    busy_chapter_table,
    busy_neighbour_table,
    chapter_estimates_table,
    chapter_times_table,
    compute_costs_table,
)

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ResultsError",
    "Table",
    "busy_chapter_table",
    "busy_neighbour_table",
    "chapter_estimates_table",
    "chapter_times_table",
    "compute_costs_table",
    "deepstorm_density_series",
    "deepstorm_isolated_table",
    "deepstorm_table",
    "deepstorm_throughput_table",
    "diffusion_fidelity_table",
    "diffusion_speed_table",
    "diffusion_t0_table",
    "fmt",
    "current",
    "load",
    "load_all",
    "mcmc_ess_table",
    "mcmc_speed_table",
    "mle_batch_table",
    "mle_table",
    "overview_table",
    "peer_mle_table",
    "movie_coverage_table",
    "peer_movie_table",
    "PEER_LABELS",
    "SWAPS",
    "posterior_compare_table",
    "posterior_condition_table",
    "posterior_exact_table",
    "posterior_speed_table",
    "oracle_spread_table",
    "posterior_frame_table",
    "posterior_validation_table",
    "posterior_coverage_table",
    "posterior_density_table",
    "posterior_shift_table",
    "posterior_summary_table",
    "provenance",
    "results_dir",
    "sim_throughput_table",
    "uncertainty_emitter_table",
    "uncertainty_reference_table",
    "uncertainty_reliability_series",
    "uncertainty_table",
]
