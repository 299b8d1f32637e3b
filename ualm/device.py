"""Pick the device and the run profile in one place: "quick" on a CPU, "gpu" (budgeted runs of
about ten minutes a chapter on a T4-class GPU) on CUDA, "full" (the paper's scale) only when
asked for."""
from __future__ import annotations

import os

import torch

PROFILES = ("quick", "gpu", "full")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the argument, else env ``UALM_DEVICE``, else CUDA if present."""
    choice = device if device is not None else os.environ.get("UALM_DEVICE")
    if choice is None or choice == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available")
    return dev


def pick_profile(profile: str | None = None, device: torch.device | None = None) -> str:
    """"quick" (CPU-sized runs, bundled weights), "gpu" (training on a wall-clock budget, the
    paper's sample counts) or "full" (paper-scale training, resumed across sessions): the
    argument, else env ``UALM_PROFILE``, else "gpu" on a CUDA device and "quick" otherwise."""
    choice = profile or os.environ.get("UALM_PROFILE") or ""
    if choice == "":
        dev = device if device is not None else pick_device()
        return "gpu" if torch.device(dev).type == "cuda" else "quick"
    if choice not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {choice!r}")
    return choice
