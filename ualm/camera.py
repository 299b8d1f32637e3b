"""The camera: x = g·Poisson(ω) + N(o, w²), with scalar or per-pixel (sCMOS) gain, offset and
read-noise variance. All values in ADU; ω in photons."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks

_NAMES = ("gain", "offset", "read_var")


@dataclass(frozen=True)
class Camera:
    """gain g (ADU/photon), offset o (ADU) and read-noise variance w² (ADU²).

    Each is a float or an (H, W) tensor (sCMOS maps). The default is the camera of the paper's
    code: gain 1, offset 100 ADU, read-noise variance 5 ADU².
    """

    gain: float | torch.Tensor = 1.0
    offset: float | torch.Tensor = 100.0
    read_var: float | torch.Tensor = 5.0

    def __post_init__(self):
        maps = (checks.positive(self.gain, "gain"), checks.as_tensor(self.offset, "offset"),
                checks.nonnegative(self.read_var, "read_var"))
        for name, t in zip(_NAMES, maps):
            if t.ndim not in (0, 2):
                raise ValueError(f"{name} must be a number or an (H, W) map, got shape "
                                 f"{tuple(t.shape)}")

    def maps(self, like: torch.Tensor):
        """(g, o, w²) as tensors on the device and dtype of `like`, an image (..., H, W); an
        (H, W) map must match its last two axes."""
        kw = dict(dtype=like.dtype, device=like.device)
        out = tuple(torch.as_tensor(v, **kw) for v in (self.gain, self.offset, self.read_var))
        for name, t in zip(_NAMES, out):
            if t.ndim and (like.ndim < 2 or t.shape != like.shape[-2:]):
                raise ValueError(f"{name} is a {tuple(t.shape)} map but the frames are "
                                 f"{tuple(like.shape[-2:])}: a per-pixel map must match H × W")
        return out

    def excess(self, like: torch.Tensor) -> torch.Tensor:
        """Read-noise variance in photon units, w²/g²: what the Poisson approximation adds to ω."""
        g, _, v = self.maps(like)
        return v / (g * g)

    def to_photons(self, x: torch.Tensor) -> torch.Tensor:
        """(x - o)/g + w²/g²: the data the Poisson approximation treats as Poisson(ω + w²/g²)."""
        x = checks.as_tensor(x, "x")
        g, o, v = self.maps(x)
        return (x - o) / g + v / (g * g)

    def sample(self, omega: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a frame in ADU from expected photon counts ω (..., H, W)."""
        omega = checks.nonnegative(omega, "omega")
        checks.generator_on(generator, omega.device, what="omega")
        g, o, v = self.maps(omega)
        shot = torch.poisson(omega, generator=generator)
        read = torch.randn(omega.shape, generator=generator, dtype=omega.dtype, device=omega.device)
        return g * shot + o + torch.sqrt(v) * read


PAPER_CAMERA = Camera()



# ----------------------------------------------------------------------------- calibration

def _stack(frames, name: str) -> torch.Tensor:
    t = torch.as_tensor(frames if isinstance(frames, torch.Tensor) else __import__("numpy").asarray(frames))
    if t.ndim != 3 or len(t) < 2:
        raise ValueError(f"{name} must be a stack (N >= 2, H, W), got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def dark_calibration(dark) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset and read-noise variance maps (H, W), in ADU and ADU², from dark frames (N, H, W):
    the per-pixel mean and unbiased variance. The variance's relative standard error is
    √(2/(N − 1)): 2 % takes about 5 000 frames."""
    d = _stack(dark, "dark")
    return d.mean(0), d.var(0, unbiased=True)


def _robust_moments(x: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and variance over axis 0, leaving out values more than `clip` robust
    standard deviations above the pixel's median (blinking emitters in a sparse movie)."""
    if clip is None:
        return x.mean(0), x.var(0, unbiased=True)
    med = x.median(0).values
    sd = 1.4826 * (x - med).abs().median(0).values
    keep = (x <= med + clip * sd.clamp_min(1.0)).to(x.dtype)
    n = keep.sum(0)
    mean = (x * keep).sum(0) / n
    return mean, ((x - mean) ** 2 * keep).sum(0) / (n - 1)


def photon_transfer(stacks, offset, read_var, clip: float | None = None) -> dict:
    """Gain from a photon-transfer curve: for x = g·Poisson(ω) + N(o, w²), Var x − w² = g·(E x − o)
    at every illumination level. `stacks` are (N, H, W) stacks at one uniform level each (flat
    fields, or a sparse movie with `clip` set so that blinks are left out); offset and read_var
    come from `dark_calibration`. Returns the per-pixel gain map (least squares through the
    origin over the levels), the median gain, and the curve's points (mean and variance above
    the dark values, per level and pixel)."""
    o, v = checks.as_tensor(offset, "offset", dtype=torch.float64), checks.as_tensor(read_var, "read_var",
                                                                                    dtype=torch.float64)
    signal, excess = [], []
    for i, s in enumerate(stacks):
        m, var = _robust_moments(_stack(s, f"stacks[{i}]"), clip)
        signal.append(m - o)
        excess.append(var - v)
    if not signal:
        raise ValueError("give at least one stack")
    s, e = torch.stack(signal), torch.stack(excess)
    if (s.mean((1, 2)) <= 0).any():
        raise ValueError("a stack is not brighter than the dark frames: no photon signal to calibrate on")
    gain = (s * e).sum(0) / (s * s).sum(0)
    return {"gain": gain, "median_gain": float(gain.median()), "signal": s, "excess_variance": e}


def calibrate(dark, stacks, clip: float | None = None) -> Camera:
    """The `Camera` of a user's sensor, with per-pixel maps, from dark frames and flat (or
    sparse, with `clip`) stacks."""
    offset, read_var = dark_calibration(dark)
    ptc = photon_transfer(stacks, offset, read_var, clip)
    return Camera(gain=ptc["gain"], offset=offset, read_var=read_var)
