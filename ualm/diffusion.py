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

from .seeding import NOISE, step_generator
from .sources import SimSource


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
