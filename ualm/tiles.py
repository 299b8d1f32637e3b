"""Frames larger than the networks' 20 × 20 patches, cut into overlapping tiles and stitched back.

Each tile gives a mean and a variance map on the u-times finer grid. Where tiles overlap, the
stitched map is the mixture of the tiles' answers with weights that ramp from the tile's edge to
its interior over the overlap (and stay 1 at the frame's own border): the mean is the weighted
mean, the variance the mixture's, Σ wᵢ(vᵢ + mᵢ²) − m², which adds the tiles' disagreement
instead of hiding it. The weights are continuous across a seam, so the maps have no seams; a
frame that one tile covers gives back that tile's maps exactly.
"""
from __future__ import annotations

import torch

from .defaults import UPSAMPLE
from .progress import tqdm


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile − overlap, the last tile flush with the end."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if size < tile:
        raise ValueError(f"the frame ({size} px) is smaller than a tile ({tile} px): pad it or use a smaller tile")
    out = list(range(0, size - tile + 1, tile - overlap))
    if out[-1] != size - tile:
        out.append(size - tile)
    return out


def _ramp(size: int, tile: int, start: int, overlap: int, upsample: int) -> torch.Tensor:
    """Weights along one axis of one tile on the fine grid: a linear ramp over the overlap on a
    side that has a neighbour, 1 elsewhere."""
    n = tile * upsample
    ramp_len = max(1, overlap * upsample)
    k = torch.arange(n, dtype=torch.float64)
    w = torch.ones(n, dtype=torch.float64)
    if start > 0:
        w = torch.minimum(w, (k + 0.5) / ramp_len)
    if start + tile < size:
        w = torch.minimum(w, (n - k - 0.5) / ramp_len)
    return w


def tiled_moments(frames, fn, tile: int = 20, overlap: int = 4, upsample: int = UPSAMPLE,
                  batch: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance maps (F, uH, uW) of frames (F, H, W) or (H, W), from fn applied to
    batches of tiles: fn(tiles (B, tile, tile)) -> (mean, var), each (B, u·tile, u·tile)."""
    x = torch.as_tensor(frames)
    squeeze = x.ndim == 2
    x = x[None] if squeeze else x
    if x.ndim != 3:
        raise ValueError(f"frames must be (H, W) or (F, H, W), got shape {tuple(x.shape)}")
    f, h, w = x.shape
    rows, cols = starts(h, tile, overlap), starts(w, tile, overlap)
    jobs = [(i, r, c) for i in range(f) for r in rows for c in cols]
    u = upsample
    num = torch.zeros((f, u * h, u * w), dtype=torch.float64)
    second = torch.zeros_like(num)
    wsum = torch.zeros_like(num)
    ramps_r = {r: _ramp(h, tile, r, overlap, u) for r in rows}
    ramps_c = {c: _ramp(w, tile, c, overlap, u) for c in cols}
    for b in tqdm(range(0, len(jobs), batch), progress=progress, desc="tiles", unit="batch"):
        part = jobs[b:b + batch]
        tiles = torch.stack([x[i, r:r + tile, c:c + tile] for i, r, c in part])
        mean, var = fn(tiles)
        expect = (len(part), u * tile, u * tile)
        if tuple(mean.shape) != expect or tuple(var.shape) != expect:
            raise ValueError(f"fn must return mean and var of shape {expect}, got "
                             f"{tuple(mean.shape)} and {tuple(var.shape)}")
        mean, var = mean.detach().to("cpu", torch.float64), var.detach().to("cpu", torch.float64)
        for (i, r, c), m, v in zip(part, mean, var):
            wt = ramps_r[r][:, None] * ramps_c[c][None, :]
            sl = (i, slice(u * r, u * (r + tile)), slice(u * c, u * (c + tile)))
            num[sl] += wt * m
            second[sl] += wt * (v + m * m)
            wsum[sl] += wt
    mean = num / wsum
    var = (second / wsum - mean * mean).clamp_min(0)
    return (mean[0], var[0]) if squeeze else (mean, var)
