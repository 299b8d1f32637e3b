"""Data sources for training: anything with `batch(step, rank=0, device="cpu") -> dict` (the
`Source` protocol) and, to give validation batches of the same kind, `shifted(offset)` (the
same source with its seed moved). `SimSource` simulates frames; `ualm.diffusion.DiffusionSource`
wraps one for Ψ. Sources sit below the training loop: `ualm.train` reads them, they import
nothing from it."""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from .seeding import DATA, step_generator
from .simulate import SimConfig, simulate_batch


@runtime_checkable
class Source(Protocol):
    def batch(self, step: int, rank: int = 0, device="cpu") -> dict: ...


class SimSource:
    """On-the-fly simulated batches: batch(step, rank) is reproducible from (seed, step, rank).

    `transform(batch) -> batch` may add or change entries (e.g. a frozen φ's ŷ for diffusion)."""

    def __init__(self, config: SimConfig = SimConfig(), batch_size: int = 16, seed: int = 0,
                 transform: Callable[[dict], dict] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config, self.batch_size, self.seed, self.transform = config, batch_size, seed, transform

    def batch(self, step: int, rank: int = 0, device="cpu") -> dict:
        """Simulated on `device` itself, with a generator on that device seeded from
        (seed, step, rank). The stream is reproducible per device kind (CPU and CUDA
        generators draw different numbers)."""
        device = torch.device(device)
        gen = step_generator(self.seed, step, rank, DATA, device)
        b = simulate_batch(self.batch_size, self.config, generator=gen, device=device,
                           dtype=torch.float32)
        return self.transform(b) if self.transform is not None else b

    def shifted(self, offset: int) -> "SimSource":
        """The same data with the seed moved by `offset` (the validation batches)."""
        return SimSource(self.config, self.batch_size, self.seed + offset, self.transform)
