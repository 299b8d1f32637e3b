"""Emitter layouts, simulated frames and their kernel density estimates (KDEs, eq. 4).

KDE grid: upsampling factor u (4 by default, 80×80 for 20×20 frames). KDE pixel j covers
low-res [j/u - 1/2, (j+1)/u - 1/2]; its centre is (j + 1/2)/u - 1/2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import checks
from .camera import PAPER_CAMERA, Camera
from .config import Config
from .defaults import COUNT, I0, RADIUS, SHAPE, SIGMA_X, SIGMA_Y, UPSAMPLE
from .psf import expected_frame, pixel_integral
from .seeding import DATA, step_generator

_CHUNK = 1 << 22  # values per chunk of a large computation (32 MB in float64)


def kde_centres(n: int, upsample: int = UPSAMPLE, dtype=None, device=None) -> torch.Tensor:
    """Low-res coordinates of the centres of the n KDE pixels along one axis."""
    j = torch.arange(n, dtype=dtype or torch.get_default_dtype(), device=device)
    return (j + 0.5) / upsample - 0.5


def to_kde_coords(theta: torch.Tensor, upsample: int = UPSAMPLE) -> torch.Tensor:
    """Low-res pixel coordinates -> KDE pixel coordinates (KDE pixel j has centre j)."""
    return (theta + 0.5) * upsample - 0.5


def from_kde_coords(coords: torch.Tensor, upsample: int = UPSAMPLE) -> torch.Tensor:
    """KDE pixel coordinates -> low-res pixel coordinates."""
    return (coords + 0.5) / upsample - 0.5


def kde_peak(sigma_y: float) -> float:
    """Largest value one emitter reaches on the KDE grid (emitter on a pixel centre)."""
    return float(pixel_integral(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(float(sigma_y))) ** 2)


def kde(theta, shape=SHAPE, sigma_y: float = SIGMA_Y, upsample: int = UPSAMPLE, mask=None,
        normalize: str = "peak"):
    """KDE y (..., u·H, u·W) of emitters θ (..., N, 2) given in low-res pixels (eq. 4).

    The kernel is the pixel-integrated Gaussian of width `sigma_y` KDE pixels. normalize="peak"
    (the default, used for training) divides by `kde_peak(sigma_y)` so that one isolated emitter
    peaks at 1 and the KDE of sparse emitters lies in [0, 1]; normalize="sum" leaves eq. 4 as
    written, where each emitter integrates to 1.
    """
    th = checks.theta(theta)
    h, w = checks.shape2d(shape)
    if not isinstance(upsample, int) or upsample < 1:
        raise ValueError(f"upsample must be a positive int, got {upsample!r}")
    sig = float(checks.positive(sigma_y, "sigma_y"))
    if normalize not in ("peak", "sum"):
        raise ValueError(f"normalize must be 'peak' or 'sum', got {normalize!r}")
    if mask is not None:
        mask = torch.as_tensor(mask, device=th.device)
        if mask.shape != th.shape[:-1]:
            raise ValueError(f"mask must have shape {tuple(th.shape[:-1])}, got {tuple(mask.shape)}")
    weight = 1.0 / kde_peak(sig) if normalize == "peak" else 1.0
    big = (h * upsample, w * upsample)
    # Frame by frame in chunks of about _CHUNK values, so that a large batch needs the output
    # and little else.
    out = _allocate((math.prod(th.shape[:-2]),) + big, th, "the KDEs y")
    coords = to_kde_coords(th, upsample).reshape(-1, *th.shape[-2:])
    masks = None if mask is None else mask.reshape(coords.shape[:-1])
    weights = torch.full(coords.shape[1:-1], weight, dtype=th.dtype, device=th.device)
    step = max(1, _CHUNK // (big[0] * big[1]))
    for i in range(0, len(coords), step):
        out[i:i + step] = expected_frame(coords[i:i + step], weights, sig, 0.0, big,
                                         mask=None if masks is None else masks[i:i + step])
    return out.reshape(th.shape[:-2] + big)


def _allocate(shape, like: torch.Tensor, what: str) -> torch.Tensor:
    """An empty tensor like `like`, or a MemoryError that says how much `what` needs."""
    try:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    except RuntimeError as err:  # CPU allocation failures and torch.OutOfMemoryError
        gb = math.prod(shape) * like.element_size() / 1e9
        raise MemoryError(f"{what} {tuple(shape)} need {gb:.1f} GB, more than {like.device} "
                          "can give: ask for fewer frames per call (SMLMDataset streams "
                          "batches)") from err


def _counts(batch, count, generator, device):
    want = f"count must be an int >= 0 or a range (lo, hi) with 0 <= lo <= hi, got {count!r}"
    try:
        lo = hi = checks.as_int(count, "count")
    except TypeError:
        try:
            lo, hi = (checks.as_int(c, "count") for c in count)
        except (TypeError, ValueError):
            raise TypeError(want) from None
    if lo < 0 or hi < lo:
        raise ValueError(want)
    if lo == hi:
        return torch.full((batch,), lo, device=device), hi
    return torch.randint(lo, hi + 1, (batch,), generator=generator, device=device), hi


def disc_emitters(batch: int, count=COUNT, radius: float = RADIUS, centre=None, shape=SHAPE,
                  generator=None, device=None, dtype=None):
    """Emitters uniform on a disc (the paper's layout). `count` is an int or an inclusive
    range (lo, hi) drawn per frame. Returns θ (B, N_max, 2) and a bool mask (B, N_max)."""
    h, w = checks.shape2d(shape)
    batch = checks.as_int(batch, "batch", 0)
    radius = float(checks.nonnegative(radius, "radius"))
    device = device or (generator.device if generator is not None else "cpu")
    dtype = dtype or torch.get_default_dtype()
    counts, n_max = _counts(batch, count, generator, device)
    if centre is None:
        cx, cy = (w - 1) / 2, (h - 1) / 2
    else:
        c = checks.as_tensor(centre, "centre", dtype=torch.float64)
        if c.shape != (2,):
            raise ValueError(f"centre must be a pair (x, y), got shape {tuple(c.shape)}")
        cx, cy = (float(v) for v in c)
    u = torch.rand((batch, n_max, 2), generator=generator, device=device, dtype=dtype)
    r = radius * torch.sqrt(u[..., 0])
    phi = 2 * math.pi * u[..., 1]
    theta = torch.stack((cx + r * torch.cos(phi), cy + r * torch.sin(phi)), dim=-1)
    mask = torch.arange(n_max, device=device)[None, :] < counts[:, None]
    return theta, mask


def isolated_emitters(batch: int, shape=SHAPE, jitter: float = 0.5, generator=None,
                      device=None, dtype=None):
    """One emitter per frame near the frame centre, uniformly within ±jitter px.
    Returns θ (B, 1, 2) and mask (B, 1)."""
    h, w = checks.shape2d(shape)
    batch = checks.as_int(batch, "batch", 0)
    jitter = float(checks.nonnegative(jitter, "jitter"))
    device = device or (generator.device if generator is not None else "cpu")
    dtype = dtype or torch.get_default_dtype()
    u = torch.rand((batch, 1, 2), generator=generator, device=device, dtype=dtype)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=dtype, device=device)
    theta = centre + jitter * (2 * u - 1)
    return theta, torch.ones((batch, 1), dtype=torch.bool, device=device)


@dataclass(frozen=True)
class SimConfig(Config):
    """Everything that defines a simulated data set; defaults follow section 4 of the paper.

    i0 is a number or a range (lo, hi) drawn uniformly per emitter (for varied SNR).
    """

    shape: tuple = SHAPE
    upsample: int = UPSAMPLE
    sigma: float = SIGMA_X
    i0: float | tuple = I0
    background: float = 0.0
    camera: Camera = field(default_factory=lambda: PAPER_CAMERA)
    layout: str = "disc"
    count: int | tuple = COUNT
    radius: float = RADIUS
    sigma_y: float = SIGMA_Y
    kde_normalize: str = "peak"


def simulate_batch(batch: int, config: SimConfig = SimConfig(), generator=None, device=None,
                   dtype=None) -> dict:
    """Simulate `batch` frames: x (B, H, W) in ADU, KDE y (B, uH, uW), θ (B, N, 2), mask
    (B, N), per-emitter photons i0 (B, N) and the expected image omega (B, H, W). The KDEs,
    the bulk of the memory, are drawn in chunks: a batch needs little more than its outputs
    (a MemoryError says how much they need when even that is too much)."""
    device = torch.device(device or (generator.device if generator is not None else "cpu"))
    generator = checks.generator(generator, None, device, what="the batch")
    kw = dict(generator=generator, device=device, dtype=dtype)
    if config.layout == "disc":
        theta, mask = disc_emitters(batch, config.count, config.radius, shape=config.shape, **kw)
    elif config.layout == "isolated":
        theta, mask = isolated_emitters(batch, config.shape, **kw)
    else:
        raise ValueError(f"layout must be 'disc' or 'isolated', got {config.layout!r}")
    if isinstance(config.i0, (tuple, list)):
        lo, hi = (float(v) for v in config.i0)
        i0 = lo + (hi - lo) * torch.rand(mask.shape, generator=generator, device=device,
                                         dtype=theta.dtype)
    else:
        i0 = torch.full(mask.shape, float(config.i0), device=device, dtype=theta.dtype)
    i0 = i0 * mask
    omega = expected_frame(theta, i0, config.sigma, config.background, config.shape)
    x = config.camera.sample(omega, generator=generator)
    y = kde(theta, config.shape, config.sigma_y, config.upsample, mask=mask,
            normalize=config.kde_normalize)
    return dict(x=x, y=y, theta=theta, mask=mask, i0=i0, omega=omega)


class SMLMDataset(torch.utils.data.IterableDataset):
    """Simulates batches on the fly: each item is a dict from `simulate_batch`.

    Batch k is drawn on the CPU from its own generator, seeded by the project's one rule
    (`ualm.seeding.step_seed(seed, k, rank=0, stream=DATA)`, the seeds `ualm.sources.SimSource`
    uses), so the stream is the same whatever the number of DataLoader workers: with w workers,
    worker i simulates batches i, i + w, ... and the DataLoader yields them in order. Use it with
    `DataLoader(dataset, batch_size=None)`. n_batches=None gives an endless stream.
    """

    def __init__(self, config: SimConfig = SimConfig(), batch_size: int = 32,
                 n_batches: int | None = None, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config, self.batch_size, self.n_batches, self.seed = config, batch_size, n_batches, seed

    def __len__(self):
        if self.n_batches is None:
            raise TypeError("an endless SMLMDataset has no length")
        return self.n_batches

    def batch(self, k: int) -> dict:
        """Batch k of the stream."""
        gen = step_generator(self.seed, k, 0, DATA, "cpu")
        return simulate_batch(self.batch_size, self.config, generator=gen)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, step = (info.id, info.num_workers) if info is not None else (0, 1)
        while self.n_batches is None or k < self.n_batches:
            yield self.batch(k)
            k += step
