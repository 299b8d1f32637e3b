"""The simplified 2-D DeepSTORM φ of appendix A.4: camera frame x (ADU) -> KDE estimate ŷ.

Three modules (Nehme et al. 2020, simplified to 2-D as in the paper):

1. context aggregation: 3×3 convolutions with growing dilation (1, 2, 4, 8, 4, 2, 1 by default)
   on the 20×20 frame, each with a residual connection, so every output pixel sees the whole
   frame (receptive field 45 px with the default dilations);
2. upsampling: two 2× nearest-neighbour resize-convolutions (20 -> 40 -> 80);
3. prediction: three refinement convolution blocks at 80×80 and a 1×1 convolution followed by
   a HardTanh onto the KDE range [0, `max_value`].

Input normalisation happens inside the model, so a user passes raw frames in ADU:
z = ((x - offset) / gain) / photon_scale, i.e. photons per pixel divided by `photon_scale`
(20 photons by default: an i0 = 200 emitter peaks near 34 photons, so z is of order one).
offset and gain are scalar buffers built from the config (one camera offset and gain for the
whole frame); per-pixel (sCMOS) maps are not supported.

About the HardTanh: with the default "peak" KDE normalisation one isolated emitter peaks at 1,
but two emitters closer than about 2 σ_y overlap and the true KDE exceeds 1 there. The paper
scales KDEs to [0, 1], so `max_value` defaults to 1: the network saturates on such pairs (they
are also merged by the LoG detector at this σ_y, see the oracle in `ualm.detect`). Pass a
larger `max_value` to let the output follow overlapping emitters.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..simulate import SimConfig


# photons in one pixel above which a frame is far outside the training data (a warning)
BRIGHT_PHOTONS = 1e4

@dataclass(frozen=True)
class DeepSTORMConfig(Config):
    """Architecture of φ. width: channels of the 20×20 and 40×40 layers; hr_width: channels of
    the 80×80 layers (they dominate the cost; None means width // 2). dropout: probability of the
    Dropout2d layers placed after the context module and after each refinement block (0 disables
    them)."""

    width: int = 32
    hr_width: int | None = None
    dilations: tuple = (1, 2, 4, 8, 4, 2, 1)
    upsample: int = 4
    dropout: float = 0.0
    max_value: float = 1.0
    offset: float = 100.0
    gain: float = 1.0
    photon_scale: float = 20.0



def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeepSTORM(nn.Module):
    """φ: x (B, H, W) or (B, 1, H, W) in ADU -> ŷ (B, 4H, 4W) in [0, max_value]."""

    def __init__(self, config: DeepSTORMConfig | None = None, **overrides):
        super().__init__()
        config = (config or DeepSTORMConfig())
        if overrides:
            config = DeepSTORMConfig.from_dict({**config.to_dict(), **overrides})
        if config.width < 2:
            raise ValueError(f"width must be >= 2, got {config.width}")
        if config.upsample != 4:
            raise ValueError(f"upsample must be 4 (two 2x resize-convolutions), got {config.upsample}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        if config.max_value <= 0 or config.gain <= 0 or config.photon_scale <= 0:
            raise ValueError("max_value, gain and photon_scale must be > 0")
        self.config = config
        w = config.width
        w2 = config.hr_width if config.hr_width else max(config.width // 2, 1)
        self.register_buffer("offset", torch.tensor(float(config.offset)), persistent=False)
        self.register_buffer("gain", torch.tensor(float(config.gain)), persistent=False)
        self.stem = _block(1, w)
        self.context = nn.ModuleList(_block(w, w, d) for d in config.dilations)
        self.drop_context = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up1 = _block(w, w)    # after 20 -> 40 nearest-neighbour resize
        self.up2 = _block(w, w2)   # after 40 -> 80
        self.refine = nn.ModuleList(_block(w2, w2) for _ in range(3))
        self.drop_refine = nn.ModuleList(
            nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity() for _ in range(3))
        self.head = nn.Conv2d(w2, 1, 1)
        self.out = nn.Hardtanh(0.0, float(config.max_value))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw ADU frames -> network input: photons / photon_scale."""
        return (x - self.offset) / self.gain / self.config.photon_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor of frames in ADU, got {type(x).__name__}")
        squeeze = x.ndim == 3
        if squeeze:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must have shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
        self._check_frames(x)
        h = self.stem(self.normalize(x.to(self.head.weight.dtype)))
        for layer in self.context:
            h = h + layer(h)
        h = self.drop_context(h)
        h = self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up2(F.interpolate(h, scale_factor=2, mode="nearest"))
        for layer, drop in zip(self.refine, self.drop_refine):
            h = drop(h + layer(h))
        y = self.out(self.head(h))
        return y[:, 0] if squeeze else y

    def _check_frames(self, x: torch.Tensor) -> None:
        """Refuse non-finite frames (one NaN pixel spreads to the whole output), and warn when
        the frames look offset-subtracted or dark: raw frames sit at the camera offset or
        above, so a median below half the offset means the units are not raw ADU."""
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or infinite values")
        offset = float(self.config.offset)
        med = float(x.detach().median())
        if offset > 0 and med < 0.5 * offset:
            warnings.warn(f"DeepSTORM expects raw frames in ADU, at the camera offset "
                          f"({offset:g} ADU) or above, but the median pixel is {med:g} ADU: "
                          "were the frames offset-subtracted or converted to photons? The "
                          "output is then meaningless (false detections)", UserWarning,
                          stacklevel=3)
        peak = (float(x.detach().max()) - offset) / float(self.config.gain)
        if peak > BRIGHT_PHOTONS:
            warnings.warn(f"the brightest pixel holds {peak:.3g} photons, far beyond the frames "
                          f"φ was trained on (emitters of 100-400 photons, a few tens of "
                          f"photons per pixel): the output is an extrapolation; check the gain "
                          f"and offset, or scale the frames", UserWarning, stacklevel=3)

    def enable_dropout(self) -> "DeepSTORM":
        """Eval mode everywhere except the Dropout layers (Monte-Carlo dropout)."""
        self.eval()
        for m in self.modules():
            if isinstance(m, nn.Dropout2d):
                m.train()
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """ŷ for many frames in eval mode, in batches, on the model's device."""
        was_training = self.training
        self.eval()
        dev = self.head.weight.device
        outs = [self(x[i:i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(outs) if outs else x.new_zeros((0,))


def deepstorm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean squared error between φ(x) and the KDE y: the training loss of φ."""
    pred = model(batch["x"])
    return F.mse_loss(pred.float(), batch["y"].to(pred.device).float())


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- training data

def training_sim_config() -> SimConfig:
    """The simulated training distribution: 1-20 emitters on the paper's disc, i0 uniform in
    [100, 400] photons, σ_y = 3 (paper text), KDE peak-normalised."""
    return SimConfig(count=(1, 20), i0=(100.0, 400.0))
