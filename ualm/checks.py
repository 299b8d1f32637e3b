"""Input validation shared by the package: clear errors that name the argument."""
from __future__ import annotations

import torch


def as_tensor(value, name: str, dtype=None, device=None) -> torch.Tensor:
    """Convert `value` to a floating tensor, refusing NaN/inf with an error naming `name`."""
    if isinstance(value, torch.Tensor):
        t = value
        if device is not None and t.device != torch.device(device):
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


def generator_on(generator, device, name: str = "generator") -> None:
    """Refuse a torch.Generator on another device than the tensors it will draw for."""
    if generator is not None and torch.device(generator.device) != torch.device(device):
        raise ValueError(f"{name} is on {generator.device} but the tensors are on {device}; "
                         f"make it with ualm.make_generator(seed, device)")
