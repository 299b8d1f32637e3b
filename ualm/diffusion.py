"""The conditional DDPM of paper section 3.2: noise schedules, the forward process, ε-prediction,
the training loss (eq. 9) and three samplers.

Steps run t = 1 … T; t = 0 is the data. With α_t = 1 − β_t and γ_t = ∏_{s ≤ t} α_s:

- forward process q(y_t | y_0) = N(√γ_t y_0, (1 − γ_t) I)                          (eq. 6–7)
- ε-prediction: Ψ(y_t, c, t) = ε̂, so ŷ_0 = (y_t − √(1 − γ_t) ε̂) / √γ_t             (eq. 9)
- v-prediction (Salimans & Ho 2022): Ψ = v̂ ≈ √γ_t ε − √(1 − γ_t) y_0, so
  ŷ_0 = √γ_t y_t − √(1 − γ_t) v̂, well defined where γ_t ≈ 0 (a schedule that reaches noise)
- reverse step y_{t−1} = (y_t − β_t / √(1 − γ_t) ε̂) / √α_t + √β_t ξ                (eq. 10)
  (eq. 10 with the score s = −ε̂ / √(1 − γ_t)); DDIM (Song et al. 2021) generalises it.

Network range: KDEs y ∈ [0, 1] (`kde(normalize="peak")`) are mapped to 2y − 1 ∈ [−1, 1] by
`to_net`, the only place where the scale is set; the condition ŷ = φ(x) gets the same map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .seeding import CHAINS, NOISE, make_generator, step_generator, step_seed
from .sources import SimSource
from .progress import show_progress


def to_net(y: torch.Tensor) -> torch.Tensor:
    """KDE units (one isolated emitter peaks at 1) -> the network's range [−1, 1]."""
    return 2.0 * y - 1.0


def from_net(z: torch.Tensor) -> torch.Tensor:
    """The network's range -> KDE units."""
    return (z + 1.0) / 2.0


@dataclass(frozen=True, eq=False)
class Schedule:
    """A noise schedule, its tables computed once in float64 (index t = 0 … T, entry 0 is the
    data: β_0 = 0, γ_0 = 1). Use `gather` to read a table at steps t on any device."""

    name: str
    betas: torch.Tensor  # (T + 1,) float64 on the CPU

    def __post_init__(self):
        b = self.betas
        if b.ndim != 1 or len(b) < 2 or b[0] != 0 or not ((b[1:] > 0) & (b[1:] < 1)).all():
            raise ValueError("betas must be (T + 1,) with betas[0] = 0 and 0 < betas[t] < 1")
        alphas = 1.0 - b
        gammas = torch.cumprod(alphas, 0)
        prev = torch.cat([gammas[:1], gammas[:-1]])  # γ_{t−1}; γ_{−1} is unused
        tables = {
            "alphas": alphas, "gammas": gammas, "gammas_prev": prev,
            "sqrt_gammas": gammas.sqrt(), "sqrt_one_minus_gammas": (1 - gammas).sqrt(),
            # q(y_{t−1} | y_t, y_0) = N(c0·y_0 + ct·y_t, β̃_t)  (Ho et al. 2020, eq. 7)
            "post_var": torch.where(torch.arange(len(b)) > 0, b * (1 - prev) / (1 - gammas).clamp(min=1e-300),
                                    torch.zeros_like(b)),
            "post_c0": b * prev.sqrt() / (1 - gammas).clamp(min=1e-300),
            "post_ct": (1 - prev) * alphas.sqrt() / (1 - gammas).clamp(min=1e-300),
        }
        object.__setattr__(self, "_tables", tables)

    @property
    def T(self) -> int:
        return len(self.betas) - 1

    def table(self, name: str) -> torch.Tensor:
        """A float64 table (T + 1,), e.g. "gammas"."""
        return self._tables[name] if name != "betas" else self.betas

    def gather(self, name: str, t, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at steps t (int or (B,)), cast to `like`'s dtype and device and shaped
        (B, 1, …) to broadcast against it."""
        t = torch.as_tensor(t, device="cpu").long().reshape(-1)
        v = self.table(name)[t].to(like.dtype).to(like.device)
        return v.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, y0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """y_t = √γ_t y_0 + √(1 − γ_t) ε: a draw of q(y_t | y_0) for given noise ε (eq. 7)."""
        return self.gather("sqrt_gammas", t, y0) * y0 + self.gather("sqrt_one_minus_gammas", t, y0) * eps

    def y0_from_eps(self, y_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        return (y_t - self.gather("sqrt_one_minus_gammas", t, y_t) * eps) / self.gather("sqrt_gammas", t, y_t)

    def eps_from_y0(self, y_t: torch.Tensor, t, y0: torch.Tensor) -> torch.Tensor:
        return (y_t - self.gather("sqrt_gammas", t, y_t) * y0) / self.gather("sqrt_one_minus_gammas", t, y_t)

    def v_target(self, y0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """v = √γ_t ε − √(1 − γ_t) y_0, the target of a v-predicting network."""
        return self.gather("sqrt_gammas", t, y0) * eps - self.gather("sqrt_one_minus_gammas", t, y0) * y0

    def from_v(self, y_t: torch.Tensor, t, v: torch.Tensor):
        """(ε, y_0) from y_t and v: ε = √(1 − γ_t) y_t + √γ_t v, y_0 = √γ_t y_t − √(1 − γ_t) v."""
        a, b = self.gather("sqrt_gammas", t, y_t), self.gather("sqrt_one_minus_gammas", t, y_t)
        return b * y_t + a * v, a * y_t - b * v

    def posterior(self, y0: torch.Tensor, y_t: torch.Tensor, t):
        """Mean and variance of q(y_{t−1} | y_t, y_0)."""
        mean = self.gather("post_c0", t, y_t) * y0 + self.gather("post_ct", t, y_t) * y_t
        return mean, self.gather("post_var", t, y_t)

    def describe(self) -> dict:
        g = self._tables["gammas"]
        return {"name": self.name, "T": self.T, "beta_1": float(self.betas[1]),
                "beta_T": float(self.betas[-1]), "gamma_T": float(g[-1])}


def linear_schedule(T: int = 100, beta_1: float = 1e-4, beta_T: float = 1e-2) -> Schedule:
    """β linear from beta_1 at t = 1 to beta_T at t = T (the paper's: T = 100, 1e-4 → 1e-2,
    where γ_T ≈ 0.60: y_T is far from N(0, I))."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    b = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)
    return Schedule(f"linear(T={T}, {beta_1:g}->{beta_T:g})", torch.cat([torch.zeros(1, dtype=torch.float64), b]))


def cosine_schedule(T: int = 100, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal (2021): γ_t ∝ cos²((t/T + s)/(1 + s) · π/2), which reaches noise
    (γ_T < 1e-3 for T ≥ 2)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    g = f / f[0]
    b = (1 - g[1:] / g[:-1]).clamp(max=max_beta)
    return Schedule(f"cosine(T={T}, s={s:g})", torch.cat([torch.zeros(1, dtype=torch.float64), b]))


SCHEDULES = {"paper": linear_schedule, "cosine": cosine_schedule}


def schedule(name: str = "paper") -> Schedule:
    """A schedule by name: "paper" (linear, T = 100, 1e-4 → 1e-2) or "cosine" (T = 100)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name]()


# ----------------------------------------------------------------------------- the network's view

CLIP = (to_net(0.0), to_net(2.0))  # the range of ŷ_0 when a sampler clips, in the network's range


def amp_dtype(device) -> torch.dtype | None:
    """The autocast dtype for Ψ's forward pass on `device`: bfloat16 on a CUDA GPU that has it,
    float16 on an older one, None (full precision) on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def prediction(model) -> str:
    """What `model` outputs: its config's `prediction` ("eps" or "v"); "eps" for a model
    without one (e.g. the tests' oracles). Looks through DDP's `.module`."""
    model = getattr(model, "module", model)
    return getattr(getattr(model, "config", None), "prediction", "eps")


def predict(model, sched: Schedule, y_t: torch.Tensor, t, cond: torch.Tensor, clip: bool = False,
            amp: torch.dtype | None = None):
    """The one place where Ψ is evaluated: returns (ε̂, ŷ_0) for y_t at steps t, whether the
    network predicts ε or v (`prediction(model)`).

    clip=True clips ŷ_0 to CLIP (KDE values in [0, 2]: no negative density, and room for two
    overlapping emitters, whose true KDE exceeds 1) and recomputes ε̂ from the clipped ŷ_0, so
    that every sampler sees a consistent pair. amp: run the network's forward pass under
    autocast in this dtype (e.g. `amp_dtype(device)`); the sampler's arithmetic stays in
    y_t's dtype."""
    t = torch.as_tensor(t, device=y_t.device).long().reshape(-1).expand(y_t.shape[0])
    with torch.autocast(y_t.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(y_t, cond, t)
    out = out.to(y_t.dtype)
    if prediction(model) == "v":
        eps, y0 = sched.from_v(y_t, t.cpu(), out)
    else:
        eps, y0 = out, sched.y0_from_eps(y_t, t.cpu(), out)
    if clip:
        y0 = y0.clamp(*CLIP)
        eps = sched.eps_from_y0(y_t, t.cpu(), y0)
    return eps, y0


def diffusion_loss(model, batch: dict, sched: Schedule) -> torch.Tensor:
    """Eq. 9: ‖Ψ(√γ_t y_0 + √(1 − γ_t) ε, c, t) − ε‖², with y_0 = to_net(batch["y"]), the
    condition batch["cond"] (already in the network's range) and t, ε from the batch; for a
    v-predicting Ψ the target is v = √γ_t ε − √(1 − γ_t) y_0 instead of ε."""
    y0, eps = to_net(batch["y"].float()), batch["eps"].float()
    t = batch["t"]
    y_t = sched.q_sample(y0, t.cpu(), eps)
    out = model(y_t, batch["cond"].float(), t)
    target = sched.v_target(y0, t.cpu(), eps) if prediction(model) == "v" else eps
    return F.mse_loss(out.float(), target)


class DiffusionLoss:
    """`loss_fn(model, batch)` for `ualm.train.train`, bound to a schedule."""

    def __init__(self, sched: Schedule):
        self.sched = sched

    def __call__(self, model, batch: dict) -> torch.Tensor:
        return diffusion_loss(model, batch, self.sched)


# ----------------------------------------------------------------------------- sampler steps

def ancestral_step(sched: Schedule, y_t, t: int, eps, noise):
    """Eq. 10: y_{t−1} = (y_t − β_t/√(1 − γ_t) ε̂)/√α_t + √β_t ξ (no noise at t = 1)."""
    beta = float(sched.betas[t])
    mean = (y_t - beta / math.sqrt(1 - float(sched.table("gammas")[t])) * eps) / math.sqrt(1 - beta)
    return mean + math.sqrt(beta) * noise if t > 1 else mean


def ddim_step(sched: Schedule, y_t, t: int, s: int, eps, y0, eta: float, noise):
    """DDIM (Song et al. 2021, eq. 12) from step t to s < t: y_s = √γ_s ŷ_0 +
    √(1 − γ_s − σ²) ε̂ + σ ξ with σ = η √((1 − γ_s)/(1 − γ_t)) √(1 − γ_t/γ_s)."""
    g = sched.table("gammas")
    gt, gs = float(g[t]), float(g[s])
    sigma = eta * math.sqrt((1 - gs) / (1 - gt)) * math.sqrt(max(1 - gt / gs, 0.0))
    out = math.sqrt(gs) * y0 + math.sqrt(max(1 - gs - sigma ** 2, 0.0)) * eps
    return out + sigma * noise if sigma > 0 else out


def step_path(t0: int, method: str = "ancestral", steps: int | None = None) -> list[int]:
    """The steps a sampler visits, t0 down to 0: every step for "ancestral", `steps` jumps for
    "ddim". The network is evaluated at all but the last."""
    return ddim_steps(t0, steps) if method == "ddim" else list(range(t0, -1, -1))


def ddim_steps(t0: int, n_steps: int) -> list[int]:
    """n_steps + 1 decreasing steps from t0 to 0, evenly spaced (rounded, distinct)."""
    if not 1 <= n_steps <= t0:
        raise ValueError(f"steps must be in [1, t0 = {t0}], got {n_steps}")
    ts = torch.linspace(t0, 0, n_steps + 1, dtype=torch.float64).round().long().tolist()
    return [int(v) for v in ts]


# ----------------------------------------------------------------------------- the sampling loop

SAMPLERS = {
    # eq. 10 from y_T ~ N(0, I), as the paper samples: T network evaluations. Right only on a
    # schedule that reaches noise; on the paper's (γ_T ≈ 0.60) the start is wrong and biases
    # the mean
    "paper": dict(method="ancestral", start="noise"),
    # the same chain, named for what it is on a schedule that reaches noise: the posterior
    # sampler (std within 5 % of the truth with the exact ε̂, tests/test_diffusion.py)
    "ancestral": dict(method="ancestral", start="noise"),
    # an SDEdit-style start (Meng et al. 2022): the chain from q(y_t0 | y_0 = ŷ) =
    # N(√γ_t0 ŷ, (1 − γ_t0) I). Good for the mean; narrow by construction, since the marginal
    # the network was trained on also holds γ_t0·Cov(y_0 | ŷ): with the exact ε̂ and an
    # emitter-like spread, std ratio 0.10 at t0 = 10, 0.25 at t0 = 25, 0.80 at t0 = T on the
    # paper's schedule (benchmarks/results/oracle_spread.json)
    "guided": dict(method="ancestral", start="guided"),
    # DDIM from the guided start, in `steps` jumps: each jump replaces y_0 by its mean, so the
    # spread shrinks (with the exact ε̂: 0.72 on the paper's schedule, 0.83 on the cosine one at
    # 10 steps, 0.91 at 20; worse where the posterior is narrow, 0.65 at 20 steps for a spread
    # a tenth of the signal's). Not a posterior sampler, so not in POSTERIOR_SAMPLERS: at s = 1
    # it needs ≥ 50 steps to pass the oracle test, and at s = 0.1 it fails even at 100 (0.87,
    # benchmarks/results/oracle_spread.json). On the cosine schedule the start at T is N(0, I) up
    # to γ_T ≈ 0. With steps=20 and Ψ_v it is uncertainty_map's default as a fast *calibrated
    # interval*: on validation frames the trained network's own errors widened it to 0.99 × the
    # MCMC posterior's std, where the full ancestral chain gave 1.48 ×
    # (benchmarks/results/posterior_validation.json), and the conformal scales stored with Ψ_v
    # set the width; its raw spread is not claimed to be the posterior's
    "ddim": dict(method="ddim", start="guided", steps=10, eta=1.0),
}
POSTERIOR_SAMPLERS = ("ancestral",)  # the samplers offered for uncertainty: pass the oracle test


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
                 amp: bool | None = None):
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
    try:
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


# ----------------------------------------------------------------------------- conditioning and data

def condition(phi, x: torch.Tensor, names=("yhat",), yhat: torch.Tensor | None = None) -> torch.Tensor:
    """The condition c (B, C, uH, uW) for frames x (B, H, W) in ADU, one channel per name:
    "yhat": ŷ = φ(x) in the network's range (to_net); "frame": x in photons / photon_scale
    (φ's own input normalisation), repeated onto the KDE grid. Pass `yhat` if φ(x) is known."""
    if yhat is None:
        with torch.no_grad():
            yhat = phi(x)
    chans = []
    for name in names:
        if name == "yhat":
            chans.append(to_net(yhat))
        elif name == "frame":
            z = phi.normalize(x.to(yhat.dtype))[:, None]
            up = yhat.shape[-1] // x.shape[-1]
            chans.append(F.interpolate(z, scale_factor=up, mode="nearest")[:, 0])
        else:
            raise ValueError(f"unknown condition {name!r}; use 'yhat' or 'frame'")
    return torch.stack(chans, dim=1)


class DiffusionSource:
    """Training pairs for Ψ, simulated on the fly: batch(step, rank, device) holds the true KDE
    y, the condition c from the frozen φ, and the step t and noise ε of eq. 9.

    Frames come from `ualm.sources.SimSource` (its seeded data stream); t and ε from a generator
    seeded with step_seed(seed, step, rank, NOISE). Every batch, validation included, is a
    pure function of (seed, step, rank)."""

    def __init__(self, phi, sim_config, sched: Schedule, batch_size: int = 16, seed: int = 0,
                 cond=("yhat",)):
        self.phi, self.sched, self.cond, self.seed = phi.eval(), sched, tuple(cond), seed
        self.sim = SimSource(sim_config, batch_size, seed)

    def shifted(self, offset: int) -> "DiffusionSource":
        return DiffusionSource(self.phi, self.sim.config, self.sched, self.sim.batch_size,
                               self.seed + offset, self.cond)

    def batch(self, step: int, rank: int = 0, device="cpu") -> dict:
        device = torch.device(device)
        b = self.sim.batch(step, rank, device)
        phi = self.phi.to(device)
        with torch.no_grad():
            yhat = phi(b["x"])
        gen = step_generator(self.seed, step, rank, NOISE, device)
        n = b["y"].shape[0]
        t = torch.randint(1, self.sched.T + 1, (n,), generator=gen, device=device)
        eps = torch.randn(b["y"].shape, generator=gen, device=device, dtype=b["y"].dtype)
        return dict(y=b["y"], cond=condition(phi, b["x"], self.cond, yhat), t=t, eps=eps)
