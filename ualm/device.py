"""Pick the device and the run profile in one place: "quick" on a CPU, "gpu" (budgeted runs of
about ten minutes a chapter on a T4-class GPU) on CUDA, "full" (the paper's scale) only when
asked for."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

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


# Wall-clock budget (minutes) of one training call in the 'gpu' and 'full' profiles: with the
# chapter's other work it keeps a chapter near ten minutes on a T4-class GPU.
TRAIN_MINUTES = 5.0
DRIVE = Path("/content/drive/MyDrive")  # Google Drive, where Colab mounts it


def smoke() -> bool:
    """UALM_SMOKE=1: run a profile's code paths with tiny sizes and a few training steps (CI runs
    every chapter so in the 'full' profile on the CPU; quality checks are skipped there)."""
    value = os.environ.get("UALM_SMOKE", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"UALM_SMOKE must be 0 or 1, got {value!r}")
    return value == "1"


def runs_dir() -> Path:
    """Where chapters keep their training runs: env UALM_RUNS_DIR, else Google Drive's
    MyDrive/ualm-runs when Drive is mounted (Colab: `from google.colab import drive;
    drive.mount("/content/drive")`, so that a run outlives the Colab session), else ./runs.
    Smoke runs use a fresh temporary directory, so that they never meet a real run."""
    if os.environ.get("UALM_RUNS_DIR"):
        return Path(os.environ["UALM_RUNS_DIR"]).expanduser()
    if smoke():
        return Path(tempfile.mkdtemp(prefix="ualm-smoke-runs-"))
    return DRIVE / "ualm-runs" if DRIVE.is_dir() else Path("runs")
