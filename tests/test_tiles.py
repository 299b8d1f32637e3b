"""Tiling and stitching (ualm.tiles): no seams, exact where one tile covers the frame."""
import pytest
import torch

from ualm.tiles import starts, tiled_moments


def local_fn(tiles):
    """A pixel-local map (the same answer whatever the tile): the mean is the upsampled frame,
    the variance its square plus one."""
    up = tiles.repeat_interleave(4, -1).repeat_interleave(4, -2).double()
    return up, up ** 2 + 1


def test_starts_cover_the_frame():
    assert starts(20, 20, 4) == [0]
    assert starts(64, 20, 4) == [0, 16, 32, 44]
    for size in (20, 21, 37, 64, 100):
        s = starts(size, 20, 4)
        covered = torch.zeros(size, dtype=torch.bool)
        for a in s:
            covered[a:a + 20] = True
        assert covered.all() and s[-1] == size - 20
    with pytest.raises(ValueError, match="smaller than a tile"):
        starts(10, 20, 4)
    with pytest.raises(ValueError, match="overlap"):
        starts(64, 20, 20)


def test_one_tile_gives_back_its_maps_exactly():
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0))

    def noisy(tiles):  # not local: a tile's answer depends on the whole tile
        m = tiles.mean((1, 2), keepdim=True) + local_fn(tiles)[0]
        return m, m.abs() + 0.1
    mean, var = tiled_moments(x, noisy)
    ref_m, ref_v = noisy(x)
    torch.testing.assert_close(mean, ref_m.double(), rtol=0, atol=1e-12)
    torch.testing.assert_close(var, ref_v.double(), rtol=0, atol=1e-12)


def test_a_local_map_is_stitched_without_seams():
    x = torch.rand(2, 57, 64, generator=torch.Generator().manual_seed(1))
    mean, var = tiled_moments(x, local_fn, batch=5)
    ref_m, ref_v = local_fn(x)
    torch.testing.assert_close(mean, ref_m, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, ref_v, rtol=1e-10, atol=1e-10)


def test_disagreeing_tiles_blend_smoothly_and_add_their_disagreement():
    """Each tile answers a constant of its own: across a seam the stitched mean moves in steps no
    larger than the ramp allows, and inside the overlap the variance exceeds the tiles' own."""
    calls = iter(range(1000))

    def constant(tiles):
        vals = torch.tensor([float(next(calls)) for _ in tiles], dtype=torch.float64)[:, None, None]
        m = vals.expand(-1, 80, 80).clone()
        return m, torch.zeros_like(m)
    mean, var = tiled_moments(torch.zeros(20, 36), constant)  # tiles at columns 0 and 16: values 0 and 1
    row = mean[40]
    assert row[0] == 0 and row[-1] == 1
    assert (row.diff() >= 0).all() and row.diff().max() < 0.1  # a ramp over 16 fine pixels, no jump
    assert var[40, 70] > 0.2 and var[40, 0] == 0  # 0.25 at the middle of the overlap


def test_bad_fn_output_is_refused():
    with pytest.raises(ValueError, match="fn must return"):
        tiled_moments(torch.zeros(20, 20), lambda t: (t, t))
