"""A chapter's run in one object: the device, the profile, the sizes it implies, where training
runs are kept, and what the chapter will do and for about how long, said up front.

    run = ualm.start("05_diffusion")     # prints one short summary
    N_FRAMES = run.size(200, 1000)       # quick (and smoke) value, gpu/full value
    if run.trains: ...                   # gpu/full: a budgeted training run, else bundled weights
    if run.checks: assert ...            # quality checks that need trained networks

Profiles (`ualm.pick_profile`): "quick" on a CPU, "gpu" on CUDA, "full" when asked for. With
UALM_SMOKE=1 the profile's code paths run at the quick sizes with a few training steps (CI runs
every chapter so), and `checks` is False.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .device import TRAIN_MINUTES, pick_device, pick_profile, runs_dir, smoke

ESTIMATES = Path(__file__).with_name("estimates.json")  # written by benchmarks/chapter_times.py
TRAINS = {"04_deepstorm": ("deepstorm", "φ", "deepstorm_quick"),
          "05_diffusion": ("diffusion", "Ψ", "diffusion_quick")}


@dataclass(frozen=True)
class Session:
    chapter: str
    device: torch.device
    profile: str
    smoke: bool
    runs: Path

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    @property
    def trains(self) -> bool:
        """Whether the chapter trains its network (gpu, full) instead of loading bundled weights."""
        return not self.quick

    @property
    def checks(self) -> bool:
        """Whether the quality checks that need trained networks apply (not in a smoke run)."""
        return not self.smoke

    def size(self, quick, large):
        """`quick` in the quick profile and in smoke runs, `large` in the gpu and full profiles."""
        return quick if self.quick or self.smoke else large

    def out(self, name: str) -> Path:
        """The directory of this chapter's training run `name` in this profile (resumable)."""
        return self.runs / f"{name}_{self.profile}"

    def skip_checks(self) -> bool:
        """True, with a visible note, when quality checks are skipped (smoke runs only)."""
        if self.checks:
            return False
        print(f"smoke run ({self.profile} profile, tiny sizes): quality checks skipped")
        return True

    def summary(self) -> str:
        lines = [f"ualm · {self.chapter} · {describe_device(self.device)} · profile {self.profile}"
                 + (" (smoke run)" if self.smoke else "")]
        if self.chapter in TRAINS:
            _, symbol, bundled = TRAINS[self.chapter]
            if self.trains:
                lines.append(f"trains {symbol} for at most {TRAIN_MINUTES:g} min in "
                             f"{self.out(TRAINS[self.chapter][0])} (resumes there next time) and "
                             f"uses it only if it beats the bundled {bundled} on validation")
            else:
                lines.append(f"uses the bundled weights {bundled}")
        estimate = chapter_estimate(self.chapter, self.profile, self.device)
        if estimate:
            lines.append(estimate)
        return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def gpu_class(name: str) -> str | None:
    """The GPU class of the estimates table ("T4", "A100", "H100", "H200", ...) in a CUDA device
    name, or None."""
    for key in ("H200", "H100", "A100", "L4", "T4", "V100", "A10G"):
        if key in name.upper():
            return key
    return None


def load_estimates() -> dict:
    try:
        return json.loads(ESTIMATES.read_text())
    except (OSError, ValueError):
        return {}


def chapter_estimate(chapter: str, profile: str, device: torch.device) -> str | None:
    """One line on how long the chapter takes here: measured or estimated (said which), from
    `estimates.json`; None when the table has nothing for this chapter."""
    table = load_estimates().get("chapters", {}).get(chapter, {})
    where = "cpu" if device.type == "cpu" else gpu_class(torch.cuda.get_device_name(device)) or "T4"
    row = table.get(f"{profile}/{where}")
    if row is None:
        return None
    what = "measured on" if row["kind"] == "measured" else "estimated for"
    return f"takes about {_duration(row['seconds'])} ({what} {row['device']})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def start(chapter: str, device=None, profile=None, quiet: bool = False) -> Session:
    """The run of `chapter` (its file name, e.g. "05_diffusion"): device and profile from the
    arguments or UALM_DEVICE / UALM_PROFILE, smoke mode from UALM_SMOKE. Prints a short summary
    unless `quiet`."""
    dev = pick_device(device)
    session = Session(chapter=chapter, device=dev, profile=pick_profile(profile, dev),
                      smoke=smoke(), runs=runs_dir())
    if not quiet:
        print(session.summary())
    return session

