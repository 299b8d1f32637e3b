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

