"""One seeding rule for every stream of random numbers; nothing is seeded globally.

`step_seed(seed, step, rank, stream)` is the seed of step `step` (a training step, or batch k of
a data set) on process `rank`, for one stream:

- DATA (0): simulated batches (`ualm.sources.SimSource`, `ualm.SMLMDataset`);
- MODEL (1): the model's own random numbers while training (dropout);
- NOISE (2): the step t and noise ε of the diffusion loss (`ualm.diffusion.DiffusionSource`);
- CHAINS (3): a diffusion sampler's chain (frame f, sample k), as step = f, rank = k;
- 4, 5, ...: free for new uses.

With base = (seed · 1 000 003 + step) · 1009 + rank, the data stream's seed is base and any
other stream's is 7 · base + stream · 0x9E3779B1, both modulo 2⁶³ − 1. The two forms differ for
a historical reason: they are the seeds the bundled weights were trained with (data, dropout),
so keeping them keeps those weights and every number in the book bit for bit.

A stream is a pure function of (seed, step, rank): a resumed run repeats an uninterrupted one,
and a data set gives the same batch k however many worker processes draw it.
"""
from __future__ import annotations

import operator

import torch

DATA = 0
MODEL = 1
NOISE = 2
CHAINS = 3
_MOD = 2**63 - 1


def step_seed(seed: int, step: int, rank: int = 0, stream: int = DATA) -> int:
    """The seed of step `step` on process `rank` for `stream` (DATA, MODEL, ...)."""
    seed, step, rank, stream = (operator.index(v) for v in (seed, step, rank, stream))
    if stream < 0:
        raise ValueError(f"stream must be >= 0, got {stream}")
    base = (seed * 1_000_003 + step) * 1009 + rank
    if stream == DATA:
        return base % _MOD
    return (base * 7 + stream * 0x9E3779B1) % _MOD


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device`, seeded (fresh entropy when seed is None)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def step_generator(seed: int, step: int, rank: int = 0, stream: int = DATA,
                   device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded with `step_seed(seed, step, rank, stream)`."""
    return make_generator(step_seed(seed, step, rank, stream), device)
