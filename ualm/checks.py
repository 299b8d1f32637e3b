"""Input validation shared by the package: clear errors that name the argument."""
from __future__ import annotations

import torch

from .seeding import make_generator


def as_tensor(value, name: str, dtype=None, device=None) -> torch.Tensor:
    """Convert `value` to a floating tensor, refusing NaN/inf with an error naming `name`."""
    if isinstance(value, torch.Tensor):
        t = value
        if device is not None and not same_device(t.device, device):
            raise ValueError(
                f"{name} is on {t.device} but the computation is on {device}; move it first"
            )
        if dtype is not None:
            t = t.to(dtype)
        elif not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    else:
        try:
            t = torch.as_tensor(value, dtype=dtype or torch.get_default_dtype(), device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}") from err
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def positive(value, name: str, **kw) -> torch.Tensor:
    t = as_tensor(value, name, **kw)
    if (t <= 0).any():
        raise ValueError(f"{name} must be > 0, got min {t.min().item():g}")
    return t


def nonnegative(value, name: str, **kw) -> torch.Tensor:
    t = as_tensor(value, name, **kw)
    if (t < 0).any():
        raise ValueError(f"{name} must be >= 0, got min {t.min().item():g}")
    return t


def theta(value, name: str = "theta", **kw) -> torch.Tensor:
    """Emitter coordinates: a tensor of shape (..., N, 2) holding (x, y) in low-res pixels."""
    t = as_tensor(value, name, **kw)
    if t.ndim < 2 or t.shape[-1] != 2:
        raise ValueError(
            f"{name} must have shape (..., N, 2) with (x, y) in the last axis, got {tuple(t.shape)}"
        )
    return t


def shape2d(shape, name: str = "shape") -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a pair (H, W) of ints, got {shape!r}") from err
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {shape!r}")
    return h, w


def as_int(value, name: str, lo: int | None = None) -> int:
    """An int (an integral float such as 1e4 is accepted), at least `lo` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an int, got {value!r}") from None
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def full_device(device) -> torch.device:
    """The device with its index: "cuda" -> "cuda:<current>" (a tensor's device always has one)."""
    device = torch.device(device)
    if device.index is None and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def same_device(a, b) -> bool:
    """Whether two devices are the same one ("cuda" is the current CUDA device; cuda:1 is not
    cuda:0)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and full_device(a) == full_device(b)


def generator_on(generator, device, name: str = "generator", what: str = "the data") -> None:
    """Refuse anything but None or a torch.Generator on `device` itself, the device of `what`
    it will draw for."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {type(generator).__name__}")
    if not same_device(generator.device, device):
        raise ValueError(f"{name} is on {generator.device} but {what} is on {device}; "
                         f"make it with ualm.make_generator(seed, device)")


def generator(generator, seed, device, what: str = "the data") -> torch.Generator:
    """The generator to draw from: `generator`, checked by `generator_on`, else a fresh one on
    `device` seeded with `seed` (fresh entropy when None)."""
    if generator is None:
        return make_generator(seed, device)
    generator_on(generator, device, what=what)
    return generator
