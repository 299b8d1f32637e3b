"""A network with a known answer: the exact ε̂ for Gaussian data, to test samplers on their spread.

If y_0 ~ N(μ, s²) independently per pixel, E[ε | y_t] = b (y_t − aμ) / (a² s² + b²) with
a = √γ_t, b = √(1 − γ_t). A sampler fed this oracle should return draws with mean μ and std s;
any shortfall in the std is the sampler's own doing, not the network's. An isolated emitter's
posterior is narrow per pixel but, along the few directions that move the emitter, has a std of
about one network unit (a shift of the CRLB, ~0.5 KDE px at 200 photons, moves a KDE of peak 2
by ~1.2 in norm), so `EMITTER_S` = 1 is the spread that matters for the book's maps.
"""
from __future__ import annotations

import torch
from torch import nn

from .diffusion import Schedule, to_net
from .sampling import sample

EMITTER_S = 1.0  # network units: an isolated emitter's posterior std along a shift
PIXEL_S = 0.1  # network units: a typical per-pixel posterior std on an emitter


class GaussianOracle(nn.Module):
    """The optimal ε̂ for y_0 ~ N(μ, s²) per pixel; μ is read from the condition's channel 0."""

    def __init__(self, sched: Schedule, s: float):
        super().__init__()
        if not s > 0:
            raise ValueError(f"s must be > 0, got {s!r}")
        self.sched, self.s = sched, float(s)
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, y_t, cond, t):
        a = self.sched.gather("sqrt_gammas", t.cpu(), y_t)
        b = self.sched.gather("sqrt_one_minus_gammas", t.cpu(), y_t)
        return b * (y_t - a * cond[:, 0]) / (a * a * self.s ** 2 + b * b)


def oracle_draws(sched: Schedule, s: float, mu: float = 0.3, size: int = 40, n_samples: int = 16,
                 seed: int = 0, **settings) -> torch.Tensor:
    """n_samples × size² draws (network units) of a sampler (`ualm.sampling.sample` settings:
    method, start, t0, steps, eta) fed the oracle for N(mu, s²); clipping is off."""
    cond = torch.full((1, 1, size, size), float(mu), dtype=torch.float64)
    z = sample(GaussianOracle(sched, s), cond, sched, n_samples, clip=False, progress=False,
               seed=seed, **settings)
    return to_net(z)


def std_ratio(sched: Schedule, s: float, **settings) -> float:
    """Sample std / true std s of a sampler fed the exact oracle (1 is right)."""
    return float(oracle_draws(sched, s, **settings).std()) / s


T0S = (5, 10, 25, 50, 75, 100)  # guided (SDEdit-style) starts swept
STEPS = (5, 10, 20, 50, 100)  # DDIM step counts swept


def spread_sweep(name: str, spreads=(EMITTER_S,), t0s=T0S, steps=STEPS) -> dict:
    """Sample std / true std on schedule `name` for the guided start at each t0 (ancestral
    steps), DDIM (η = 1) in each number of steps from the start of the schedule (N(0, I) where
    the schedule reaches noise, the guided start where it does not), per spread s."""
    from .diffusion import schedule
    sched = schedule(name)
    start = "guided" if name == "paper" else "noise"
    out = {"schedule": sched.describe(), "ddim_start": start, "spreads": {}}
    for s in spreads:
        out["spreads"][str(s)] = {
            "sdedit_t0": {str(t0): std_ratio(sched, s, method="ancestral", start="guided", t0=t0) for t0 in t0s},
            "ddim_eta1": {str(n): std_ratio(sched, s, method="ddim", start=start, steps=n, eta=1.0) for n in steps},
        }
    return out
