"""The result of a Markov chain Monte Carlo run: the kept draws and what is needed to judge
them (acceptance, R-hat, ESS, posterior moments). Made by `ualm.mcmc.rwmh`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .diagnostics import ess, rhat


@dataclass
class MCMCResult:
    """Draws after burn-in and what is needed to judge them.

    samples (..., chains, draws, params); names of the params (e.g. ['x0', 'y0']);
    acceptance (..., chains): acceptance rate after burn-in; burn_in_acceptance likewise during
    burn-in; log_prob (..., chains, draws): the log target β·log p(x|θ) + log p(θ) of each draw;
    proposal_cov (..., P, P): the proposal covariance used after burn-in (fixed or tuned);
    beta: the tempering, a float or one value per frame.
    Leading dims (...) are the frames of a batched run, absent for a single frame.
    """

    samples: torch.Tensor
    names: list
    acceptance: torch.Tensor
    burn_in_acceptance: torch.Tensor
    log_prob: torch.Tensor
    proposal_cov: torch.Tensor
    beta: float | torch.Tensor = 1.0
    n_iter: int = 0
    burn_in: int = 0
    thin: int = 1
    info: dict = field(default_factory=dict)

    @property
    def n_chains(self) -> int:
        return self.samples.shape[-3]

    @property
    def n_draws(self) -> int:
        return self.samples.shape[-2]

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"name must be one of {self.names}, got {name!r}")
        return self.names.index(name)

    def param(self, name: str) -> torch.Tensor:
        """Draws of one parameter, (..., chains, draws)."""
        return self.samples[..., self.index(name)]

    def flat(self) -> torch.Tensor:
        """All chains pooled: (..., chains·draws, params)."""
        return self.samples.flatten(-3, -2)

    def mean(self) -> torch.Tensor:
        """Posterior mean of each parameter, (..., P), pooled over chains and draws."""
        return self.flat().mean(-2)

    def var(self) -> torch.Tensor:
        """Posterior variance of each parameter, (..., P)."""
        return self.flat().var(-2)

    def std(self) -> torch.Tensor:
        return self.var().sqrt()

    def cov(self) -> torch.Tensor:
        """Posterior covariance (..., P, P)."""
        f = self.flat()
        d = f - f.mean(-2, keepdim=True)
        return d.transpose(-1, -2) @ d / (f.shape[-2] - 1)

    def rhat(self, rank_normalize: bool = True) -> torch.Tensor:
        """Split R-hat per parameter, (..., P); see `rhat`."""
        return rhat(self.samples.movedim(-1, 0), rank_normalize).movedim(0, -1)

    def ess(self, rank_normalize: bool = True) -> torch.Tensor:
        """Effective sample size per parameter (all chains together), (..., P); see `ess`."""
        return ess(self.samples.movedim(-1, 0), rank_normalize).movedim(0, -1)

    def positions(self) -> torch.Tensor:
        """Emitter positions of every draw, (..., chains·draws, N, 2), for KDEs (eq. 5)."""
        n = sum(1 for nm in self.names if nm.startswith("x") and nm[1:].isdigit())
        if n == 0:
            raise ValueError("these samples hold no emitter positions (names x0, y0, ...)")
        idx = [self.index(f"{a}{k}") for k in range(n) for a in ("x", "y")]
        flat = self.flat()[..., idx]
        return flat.reshape(*flat.shape[:-1], n, 2)

    def summary(self) -> str:
        """A small table: mean, std, R-hat, bulk ESS per parameter and the acceptance rate.
        For a batched run each number is the average over frames (R-hat: the largest)."""
        lead = self.samples.ndim - 3
        dims = tuple(range(lead))

        def avg(t):
            return t.float().mean(dims) if lead else t

        mean, std, ess_ = avg(self.mean()), avg(self.std()), avg(self.ess())
        rh = self.rhat().amax(dims) if lead else self.rhat()
        rows = [f"{'param':>10} {'mean':>10} {'std':>10} {'R-hat':>7} {'ESS':>8}"]
        for i, nm in enumerate(self.names):
            rows.append(f"{nm:>10} {float(mean[i]):10.4f} {float(std[i]):10.4f} "
                        f"{float(rh[i]):7.4f} {float(ess_[i]):8.0f}")
        rows.append(f"acceptance {float(self.acceptance.float().mean()):.3f} "
                    f"(beta={_beta_str(self.beta)}, {self.n_chains} chains x {self.n_draws} draws"
                    + (f", {math.prod(self.samples.shape[:lead])} frames)" if lead else ")"))
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (f"MCMCResult(samples={tuple(self.samples.shape)}, names={self.names}, "
                f"acceptance={float(self.acceptance.float().mean()):.3f}, beta={_beta_str(self.beta)})")


def _beta_str(beta) -> str:
    if isinstance(beta, torch.Tensor):
        return "per frame" if beta.numel() > 1 else f"{float(beta):g}"
    return f"{beta:g}"
