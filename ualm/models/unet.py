"""Ψ: the SR3-style conditional U-Net of the guided diffusion model (paper section 4).

Input: the noisy KDE y_t (B, 1, 80, 80) in the network's range (see `ualm.diffusion.to_net`),
the condition c (B, C, 80, 80) concatenated to it along channels (SR3), and the step t (B,).
Output: the predicted noise ε̂ (B, 1, 80, 80), or v̂ (`UNetConfig.prediction`).

Blocks, top to bottom: a sinusoidal embedding of t (the Transformer position embedding) and an
MLP; residual blocks (GroupNorm, SiLU, 3×3 convolution, the embedding added per channel,
dropout) at every level; self-attention at the levels listed in `attention` (level 3 is 10×10
on 80×80 KDEs: the paper's "16×16" was SR3's setting for 128-px images, design note 5); skip
connections from every down block to its mirror up block; a zero-initialised output convolution,
so that the untrained network predicts ε̂ = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config

CONDITIONS = ("yhat", "frame")  # ŷ = φ(x), and the frame x upsampled to the KDE grid
PREDICTIONS = ("eps", "v")  # what Ψ outputs: the noise ε, or v = √γ ε − √(1 − γ) y_0


@dataclass(frozen=True)
class UNetConfig(Config):
    """Architecture of Ψ and what it is conditioned on.

    width: channels at the first level; level i has width·mults[i] channels and half the
    resolution of level i − 1. blocks: residual blocks per level on the way down (one more on
    the way up, as in DDPM). attention: levels with self-attention (0 = full resolution).
    cond: the conditioning inputs, a tuple of names from CONDITIONS, one channel each.
    schedule: the noise schedule the network is trained for (`ualm.diffusion.schedule`); the
    embedding of t means nothing under another schedule, so it belongs to the network.
    prediction: what the network outputs, "eps" (the noise ε, the paper's eq. 9) or "v"
    (v = √γ_t ε − √(1 − γ_t) y_0, Salimans & Ho 2022): with a schedule that reaches noise
    (γ_T ≈ 0), ŷ_0 from ε̂ divides the network's error by √γ_T, from v̂ it does not.
    """

    width: int = 16
    mults: tuple = (1, 2, 4, 4)
    blocks: int = 1
    attention: tuple = (3,)
    dropout: float = 0.0
    groups: int = 8
    cond: tuple = ("yhat",)
    schedule: str = "paper"
    prediction: str = "eps"

    def __post_init__(self):
        for name in ("mults", "attention", "cond"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.width < 1 or not self.mults or any(m < 1 for m in self.mults):
            raise ValueError(f"width and mults must be positive, got {self.width}, {self.mults}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {self.blocks}")
        if any(not 0 <= a < len(self.mults) for a in self.attention):
            raise ValueError(f"attention levels must lie in [0, {len(self.mults)}), got {self.attention}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.cond or any(c not in CONDITIONS for c in self.cond) or len(set(self.cond)) < len(self.cond):
            raise ValueError(f"cond must be distinct names from {CONDITIONS}, got {self.cond}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    @property
    def downsamplings(self) -> int:
        return len(self.mults) - 1



PRESETS = {
    # the paper's channel multipliers, for GPUs (99.5 M parameters at width 64)
    "paper": UNetConfig(width=64, mults=(1, 2, 4, 8, 8), blocks=2, attention=(3,), dropout=0.1,
                        groups=32),
    # trains on a 2-core CPU in under 45 minutes (the bundled quick weights)
    "small": UNetConfig(width=16, mults=(1, 2, 4, 4), blocks=1, attention=(3,), groups=8),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """The Transformer's sinusoidal embedding of (possibly fractional) steps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the step embedding added per channel in between."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.conv1(F.silu(self.norm1(h)))
        z = z + self.emb(emb)[:, :, None, None]
        z = self.conv2(self.drop(F.silu(self.norm2(z))))
        return self.skip(h) + z


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, hh * ww).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return h + self.proj(out.transpose(1, 2).reshape(b, c, hh, ww))


class Down(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h, emb=None):
        return self.conv(h)


class Up(nn.Module):
    """Nearest-neighbour 2× resize, then a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h, emb=None):
        return self.conv(F.interpolate(h, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """Ψ(y_t, c, t) -> ε̂. y_t (B, H, W) or (B, 1, H, W); c (B, C, H, W) with C = len(config.cond);
    t (B,) steps. H and W must be divisible by 2**downsamplings (80 = 10·2³ for the small preset,
    80 = 5·2⁴ for the paper's)."""

    def __init__(self, config: UNetConfig | None = None, **overrides):
        super().__init__()
        config = config or UNetConfig()
        if overrides:
            config = UNetConfig.from_dict({**config.to_dict(), **overrides})
        self.config = c = config
        emb_dim = 4 * c.width
        self.embed = nn.Sequential(nn.Linear(c.width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(1 + len(c.cond), c.width, 3, padding=1)
        chans = [c.width * m for m in c.mults]
        self.down, skips, ch = nn.ModuleList(), [c.width], c.width
        for level, cout in enumerate(chans):
            for _ in range(c.blocks):
                self.down.append(self._stage(ch, cout, level, emb_dim))
                ch = cout
                skips.append(ch)
            if level < len(chans) - 1:
                self.down.append(Down(ch))
                skips.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, c.dropout, c.groups),
                                     Attention(ch, c.groups),
                                     ResBlock(ch, ch, emb_dim, c.dropout, c.groups)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            for _ in range(c.blocks + 1):
                self.up.append(self._stage(ch + skips.pop(), chans[level], level, emb_dim))
                ch = chans[level]
            if level > 0:
                self.up.append(Up(ch))
        self.head = nn.Sequential(_norm(ch, c.groups), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _stage(self, cin, cout, level, emb_dim) -> nn.Module:
        block = ResBlock(cin, cout, emb_dim, self.config.dropout, self.config.groups)
        if level in self.config.attention:
            return _Seq(block, Attention(cout, self.config.groups))
        return block

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        squeeze = y_t.ndim == 3
        if squeeze:
            y_t = y_t[:, None]
        n_cond = len(self.config.cond)
        if cond.ndim == 3 and n_cond == 1:
            cond = cond[:, None]
        if y_t.ndim != 4 or y_t.shape[1] != 1:
            raise ValueError(f"y_t must have shape (B, H, W) or (B, 1, H, W), got {tuple(y_t.shape)}")
        if cond.shape != (y_t.shape[0], n_cond, *y_t.shape[2:]):
            raise ValueError(f"cond must have shape {(y_t.shape[0], n_cond, *y_t.shape[2:])} "
                             f"(conditioned on {self.config.cond}), got {tuple(cond.shape)}")
        k = 2 ** self.config.downsamplings
        if y_t.shape[-1] % k or y_t.shape[-2] % k:
            raise ValueError(f"y_t height and width must be divisible by {k}, got {tuple(y_t.shape[2:])}")
        dtype = self.stem.weight.dtype
        emb = self.embed(timestep_embedding(t.reshape(-1).expand(y_t.shape[0]), self.config.width).to(dtype))
        h = self.stem(torch.cat([y_t, cond], dim=1).to(dtype))
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(h, emb) if isinstance(layer, Up) else layer(torch.cat([h, skips.pop()], 1), emb)
        out = self.head(h)
        return out[:, 0] if squeeze else out


class _Seq(nn.Module):
    """A residual block followed by attention; both take the embedding argument."""

    def __init__(self, block: ResBlock, attn: Attention):
        super().__init__()
        self.block, self.attn = block, attn

    def forward(self, h, emb):
        return self.attn(self.block(h, emb))
