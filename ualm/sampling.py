"""Sampling Ψ's reverse process: the named samplers (`SAMPLERS`), the step iterator
`sample_steps` and its collectors `sample` and `sample_with_path`. The schedule, the network's
prediction and the single steps (`ancestral_step`, `ddim_step`) are `ualm.diffusion`'s."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .diffusion import Schedule, amp_dtype, ancestral_step, ddim_step, from_net, predict, step_path
from .progress import show_progress
from .seeding import CHAINS, make_generator, step_seed

@dataclass(frozen=True)
class Sampler:
    """A way to run Ψ's reverse chain: its settings for `sample_steps`, whether it is offered
    for uncertainty, and its labels for tables (`label`) and legends (`short`). A registry name
    (`name`) is what `uncertainty_map(..., sampler=name)` takes; `variant` makes a labelled
    variant with other settings (chapter 5 compares several)."""

    name: str
    method: str = "ancestral"  # "ancestral" (eq. 10, one evaluation per step) or "ddim"
    start: str = "guided"      # "noise" (y_t0 ~ N(0, I)) or "guided" (q(y_t0 | y_0 = ŷ))
    t0: int | None = None      # the first step (None: T)
    steps: int | None = None   # DDIM's jumps
    eta: float | None = None   # DDIM's noise scale
    posterior: bool = False    # passes the oracle spread test (tests/test_diffusion.py)
    label: str = ""
    short: str = ""

    def __post_init__(self):
        if self.method not in ("ancestral", "ddim") or self.start not in ("noise", "guided"):
            raise ValueError(f"unknown method or start: {self.method!r}, {self.start!r}")

    def settings(self, **overrides) -> dict:
        """The keyword arguments of `sample_steps`, with `overrides` (t0, steps, eta, clip)."""
        out = {"method": self.method, "start": self.start}
        out.update({k: v for k in ("t0", "steps", "eta") if (v := getattr(self, k)) is not None})
        return {**out, **overrides}

    def variant(self, label: str, short: str = "", **settings) -> "Sampler":
        """The same sampler with other settings and its own labels."""
        return replace(self, label=label, short=short or label, **settings)


SAMPLERS = {s.name: s for s in (
    # eq. 10 from y_T ~ N(0, I), as the paper samples: T network evaluations. Right only on a
    # schedule that reaches noise; on the paper's (γ_T ≈ 0.60) the start is wrong and biases
    # the mean
    Sampler("paper", start="noise", label="paper (eq. 10 from N(0, I))", short="paper"),
    # the same chain, named for what it is on a schedule that reaches noise: the posterior
    # sampler (std within 5 % of the truth with the exact ε̂, tests/test_diffusion.py)
    Sampler("ancestral", start="noise", posterior=True, label="ancestral from N(0, I)", short="ancestral"),
    # an SDEdit-style start (Meng et al. 2022): the chain from q(y_t0 | y_0 = ŷ) =
    # N(√γ_t0 ŷ, (1 − γ_t0) I). Good for the mean; narrow by construction, since the marginal
    # the network was trained on also holds γ_t0·Cov(y_0 | ŷ): with the exact ε̂ and an
    # emitter-like spread, std ratio 0.10 at t0 = 10, 0.25 at t0 = 25, 0.80 at t0 = T on the
    # paper's schedule (benchmarks/results/oracle_spread.json)
    Sampler("guided", label="guided start, t0 = T", short="t₀ = T"),
    # DDIM from the guided start, in `steps` jumps: each jump replaces y_0 by its mean, so the
    # spread shrinks (with the exact ε̂: 0.72 on the paper's schedule, 0.83 on the cosine one at
    # 10 steps, 0.91 at 20; worse where the posterior is narrow, 0.65 at 20 steps for a spread
    # a tenth of the signal's). Not a posterior sampler: at s = 1 it needs ≥ 50 steps to pass the
    # oracle test, and at s = 0.1 it fails even at 100 (0.87, benchmarks/results/oracle_spread.json).
    # On the cosine schedule the start at T is N(0, I) up to γ_T ≈ 0. With steps=20 and Ψ_v it is
    # uncertainty_map's default as a fast *calibrated interval*: on validation frames the trained
    # network's own errors widened it to 0.99 × the MCMC posterior's std, where the full
    # ancestral chain gave 1.48 × (benchmarks/results/posterior_validation.json), and the
    # conformal scales stored with Ψ_v set the width; its raw spread is not claimed to be the
    # posterior's
    Sampler("ddim", method="ddim", steps=10, eta=1.0, label="DDIM 10 steps, η = 1", short="DDIM η = 1"),
)}
# the samplers offered for uncertainty: they pass the oracle test
POSTERIOR_SAMPLERS = tuple(name for name, s in SAMPLERS.items() if s.posterior)


def get_sampler(sampler) -> Sampler:
    """A `Sampler`, from itself or its registry name."""
    if isinstance(sampler, Sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be a Sampler or one of {sorted(SAMPLERS)}, got {sampler!r}")
    return SAMPLERS[sampler]


def cuda_batch_size(model, cond: torch.Tensor, fraction: float = 0.25, largest: int = 4096) -> int:
    """Chains per network call on a CUDA device: as many as `fraction` of the free memory holds,
    from the memory one probe call of 8 chains took (at least 8, at most `largest`)."""
    device = cond.device
    torch.cuda.synchronize(device)
    free, _ = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe = 8
    c = cond[:1].expand(probe, *cond.shape[1:])
    with torch.no_grad(), torch.autocast("cuda", dtype=amp_dtype(device)):
        model(torch.zeros(c[:, 0].shape, device=device, dtype=cond.dtype), c,
              torch.ones(probe, dtype=torch.long, device=device))
    per_chain = max(torch.cuda.max_memory_allocated(device) - base, 1) / probe
    return int(min(max(fraction * free / per_chain, probe), largest))


def chain_seed(seed: int, frame: int, sample: int) -> int:
    """The seed of the noise of chain (frame, sample): every chain draws its start and its step
    noises from its own generator, so a chain's samples do not depend on how chains are batched."""
    return step_seed(seed, frame, sample, CHAINS)


@dataclass(frozen=True)
class ChainStep:
    """What `sample_steps` yields after each network evaluation of one batch of chains: the
    chains' rows `rows` (a slice of the F·K chains, frame-major), the step's index `index` in
    the path and its t, the new state y and the network's ŷ_0, both in the network's range;
    `last` marks the final state of these chains."""

    rows: slice
    index: int
    t: int
    y: torch.Tensor
    y0: torch.Tensor
    last: bool


def _check_sampler(cond, sched, n_samples, method, start, t0, steps, eta) -> list[int]:
    """The validated step path of one call."""
    if cond.ndim != 4:
        raise ValueError(f"cond must have shape (F, C, H, W), got {tuple(cond.shape)}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    if start not in ("noise", "guided"):
        raise ValueError(f"start must be 'noise' or 'guided', got {start!r}")
    if not isinstance(t0, int) or not 1 <= t0 <= sched.T:
        raise ValueError(f"t0 must be an int in [1, T = {sched.T}], got {t0!r}")
    if method == "ddim":
        if steps is None:
            raise ValueError("steps must be given for method='ddim'")
        if not isinstance(steps, int) or not 1 <= steps <= t0:
            raise ValueError(f"steps must be an int in [1, t0 = {t0}], got {steps!r}")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    elif steps not in (None, t0):
        raise ValueError(f"steps must be None or t0 = {t0} for method='ancestral' "
                         f"(it takes every step), got {steps!r}")
    if not torch.isfinite(cond).all():
        raise ValueError("cond contains NaN or infinite values")
    return step_path(t0, method, steps)


@torch.no_grad()
def sample_steps(model, cond: torch.Tensor, sched: Schedule, n_samples: int = 8, *, method: str = "ancestral",
                 start: str = "guided", t0: int | None = None, steps: int | None = None, eta: float = 0.0,
                 clip: bool = True, seed: int = 0, first_frame: int = 0, batch_size: int | None = None,
                 amp: bool | None = None, channels_last: bool | None = None):
    """The reverse process of n_samples chains per frame, one `ChainStep` per network
    evaluation of each batch of chains (as improved-diffusion's progressive loop). `sample`
    keeps the last states, `sample_with_path` every ŷ_0 as well.

    cond: (F, C, H, W), the condition in the network's range; channel 0 is ŷ (used by the guided
    start). method: "ancestral" (eq. 10, t0 network evaluations) or "ddim" (`steps`
    evaluations, noise scale eta ∈ [0, 1], 0 = deterministic given the start). start: "noise"
    (y_t0 ~ N(0, I), the paper) or "guided" (y_t0 ~ N(√γ_t0 ŷ, (1 − γ_t0) I)). t0 ≤ T: the
    first step (default T). clip: clip ŷ_0 to the KDE range [0, 2] at every step (`CLIP`).
    seed, first_frame: chain (f, k) draws from `chain_seed(seed, first_frame + f, k)`, so the
    same seed gives the same samples whatever `batch_size` (chains per network call; default 32
    on the CPU, where larger batches fall out of the cache and run slower per chain; on CUDA as
    many as a quarter of the free memory holds, `cuda_batch_size`).
    amp: the network's forward pass in bfloat16 (float16 on GPUs without it) under autocast;
    default True on CUDA, never on the CPU. The sampler's own arithmetic stays in cond's dtype.
    channels_last: run the network in channels-last memory layout (`channels_last_layout`);
    default on the CPU only. The samples change only by float rounding.
    """
    t0 = sched.T if t0 is None else t0
    path = _check_sampler(cond, sched, n_samples, method, start, t0, steps, eta)
    if batch_size is None:
        batch_size = cuda_batch_size(model, cond) if cond.device.type == "cuda" else 32
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    low_precision = amp_dtype(cond.device) if (amp is None or amp) else None
    n_frames, _, h, w = cond.shape
    device = cond.device
    chains = [(f, k) for f in range(n_frames) for k in range(n_samples)]
    was_training = model.training
    model.eval()
    on = device.type == "cpu" if channels_last is None else channels_last
    try:
        with channels_last_layout(model, on):
            for lo in range(0, len(chains), batch_size):
                part = chains[lo:lo + batch_size]
                gens = [make_generator(chain_seed(seed, first_frame + f, k), device) for f, k in part]

                def noise():
                    return torch.stack([torch.randn((h, w), generator=g, device=device, dtype=cond.dtype)
                                        for g in gens])

                c = cond[[f for f, _ in part]]
                y = noise()
                if start == "guided":
                    y = sched.q_sample(c[:, 0], t0, y)
                for i, t in enumerate(path[:-1]):
                    eps, y0 = predict(model, sched, y, t, c, clip=clip, amp=low_precision)
                    if method == "ancestral":
                        y = ancestral_step(sched, y, t, eps, noise() if t > 1 else None)
                    else:
                        s = path[i + 1]
                        y = ddim_step(sched, y, t, s, eps, y0, float(eta), noise() if eta > 0 and s > 0 else None)
                    yield ChainStep(slice(lo, lo + len(part)), i, t, y, y0, i == len(path) - 2)
    finally:
        model.train(was_training)


@contextmanager
def channels_last_layout(model, on: bool = True):
    """The model's 4-D weights in channels-last memory layout inside the block (if `on` and they
    are not already), restored after. oneDNN's convolutions, most of the small U-Net's time on
    the CPU, run faster so: 1.15–1.2x per network call at 32 chains on 2 cores
    (`python benchmarks/posterior.py speed`)."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    change = on and any(not p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    if change:
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if change:
            model.to(memory_format=torch.contiguous_format)


def _collect(steps, cond: torch.Tensor, n_samples: int, n_steps: int, keep_path: bool, progress: bool, label: str):
    n_frames, _, h, w = cond.shape
    out = torch.empty(n_frames * n_samples, h, w, dtype=cond.dtype, device=cond.device)
    kept = torch.empty(n_frames * n_samples, n_steps, h, w, dtype=cond.dtype, device=cond.device) \
        if keep_path else None
    with tqdm(total=n_frames * n_samples * n_steps, disable=not show_progress(progress), desc=f"{label} sampling",
              leave=False, unit="chain-step") as bar:
        for st in steps:
            if kept is not None:
                kept[st.rows, st.index] = st.y0
            if st.last:
                out[st.rows] = st.y
            bar.update(st.rows.stop - st.rows.start)
    samples = from_net(out).reshape(n_frames, n_samples, h, w)
    return samples, None if kept is None else from_net(kept).reshape(n_frames, n_samples, n_steps, h, w)


def sample(model, cond: torch.Tensor, sched: Schedule, n_samples: int = 8, *, progress: bool = True,
           **settings) -> torch.Tensor:
    """n_samples KDEs per frame from Ψ's reverse process, (F, K, H, W) in KDE units; the
    settings are `sample_steps`'."""
    return sample_with_path(model, cond, sched, n_samples, progress=progress, keep_path=False, **settings)[0]


def sample_with_path(model, cond: torch.Tensor, sched: Schedule, n_samples: int = 8, *, progress: bool = True,
                     keep_path: bool = True, **settings):
    """`sample`, and the network's ŷ_0 after every step, (F, K, n_steps, H, W) in KDE units
    (None when keep_path is False)."""
    t0 = settings.get("t0") or sched.T
    n_steps = len(step_path(t0, settings.get("method", "ancestral"), settings.get("steps"))) - 1
    steps = sample_steps(model, cond, sched, n_samples, **settings)
    return _collect(steps, cond, n_samples, n_steps, keep_path, progress, settings.get("method", "ancestral"))
