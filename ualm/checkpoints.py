"""Training checkpoints: written atomically, checksummed, and verified before anything uses them.

A checkpoint of `ualm.train.train` is a dict saved with `torch.save`: the model, optimizer,
scheduler and AMP scaler states, the step, the training configuration, the `extra` metadata,
the history and the world size. `save_checkpoint` adds a "checksum": the SHA-256 of every
tensor (dtype, shape and bytes) and every other value in the state, walked in a fixed order
(`state_digest`). `load_checkpoint` recomputes it, so a flipped bit anywhere in the weights or
the optimizer state (say, a weight that became -4e36) is refused instead of resumed from or
exported, and it refuses non-finite weights or optimizer state even when the checksum agrees
(a run that diverged). A checkpoint of an older ualm, written without a checksum, loads with a
warning after the finiteness check.

`ualm.train` uses them; import them from here.
"""
from __future__ import annotations

import hashlib
import math
import os
import signal
import struct
import threading
import warnings
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "ualm-checkpoint-1"
REQUIRED_KEYS = ("format", "model", "optimizer", "scheduler", "step", "config")
CHECKSUM_KEY = "checksum"
# the parts whose floating-point tensors must all be finite
FINITE_KEYS = ("model", "optimizer")

# signals that make `train` checkpoint and stop (SIGTERM: what schedulers and torchrun send)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)

__all__ = ["CHECKPOINT_NAME", "FORMAT", "CheckpointError", "state_digest", "nonfinite_entries",
           "verify_checkpoint", "save_checkpoint", "load_checkpoint", "STOP_SIGNALS",
           "StopSignals", "TrainingInterrupted"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, non-finite or from something else."""


def _feed(h, obj) -> None:
    """Feed `obj` to hash `h` in a canonical, type-tagged encoding (dict keys sorted)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(obj.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0])))
        h.update(b"D" + str(len(items)).encode())
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + str(len(obj)).encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(b"B" + repr(obj).encode())
    elif isinstance(obj, int):
        h.update(b"I" + str(obj).encode() + b";")
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        h.update(b"S" + str(len(data)).encode() + b":" + data)
    else:  # anything else torch.load(weights_only=True) can return (e.g. torch.Size, dtype)
        h.update(b"R" + type(obj).__name__.encode() + repr(obj).encode())


def state_digest(state: dict) -> str:
    """SHA-256 (hex) of everything in checkpoint `state` except its own "checksum" entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def nonfinite_entries(state: dict, keys=FINITE_KEYS) -> list[str]:
    """Names ("model.stem.0.weight", "optimizer.state.3.exp_avg", ...) of the floating-point
    tensors or floats under `keys` of `state` that hold NaN or infinite values."""
    bad: list[str] = []

    def walk(obj, name):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                bad.append(name)
        elif isinstance(obj, float):
            if not math.isfinite(obj):
                bad.append(name)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{name}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{name}.{i}")

    for key in keys:
        if key in state:
            walk(state[key], key)
    return bad


def _nonfinite_message(bad: list[str]) -> str:
    return f"{len(bad)} tensors hold NaN or inf values (" + ", ".join(bad[:5]) \
        + (", ..." if len(bad) > 5 else "") + ")"


def verify_checkpoint(state: dict, path=None) -> None:
    """Raise CheckpointError when `state` is not a complete ualm training checkpoint, when its
    checksum does not match its contents, or when its weights or optimizer state are not
    finite. A state without a checksum (older ualm) passes with a warning."""
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} does not hold a dict (got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing or state.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a ualm training checkpoint "
                              f"(missing keys {missing}, format {state.get('format')!r})")
    stored = state.get(CHECKSUM_KEY)
    if stored is None:
        warnings.warn(f"{where} has no checksum (written by an older ualm): its contents cannot "
                      f"be verified", stacklevel=3)
    else:
        digest = state_digest(state)
        if stored != digest:
            raise CheckpointError(f"{where} is corrupt: its contents have SHA-256 {digest}, but "
                                  f"it was written with {stored}")
    bad = nonfinite_entries(state)
    if bad:
        raise CheckpointError(f"{where} is not usable: {_nonfinite_message(bad)}")


def save_checkpoint(path, state: dict) -> Path:
    """Write `state` with torch.save to a temporary file beside `path`, then os.replace it: a
    crash mid-write never leaves a half-written checkpoint under the final name.

    A training checkpoint (a dict with "format" == FORMAT) is refused with a CheckpointError
    when its weights or optimizer state are not finite, so a diverged run never overwrites the
    last good checkpoint, and it is written with its "checksum" (see `state_digest`)."""
    path = Path(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        bad = nonfinite_entries(state)
        if bad:
            raise CheckpointError(f"refusing to write checkpoint {path}: {_nonfinite_message(bad)}")
        state = {**state, CHECKSUM_KEY: state_digest(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path, map_location="cpu", verify: bool = True) -> dict:
    """Load a checkpoint written by `train` (with weights_only=True: no code runs on load), then
    `verify_checkpoint` it (verify=False skips the checksum and finiteness checks, for
    inspecting a damaged file). `path` may be the run directory. Raises CheckpointError naming
    the file when it is missing, unreadable, incomplete, corrupt or not finite."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, foreign pickle, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                              f"({type(err).__name__}: {str(err)[:200]})") from err
    if verify:
        verify_checkpoint(state, path)
    elif not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict (got {type(state).__name__})")
    return state


# ----------------------------------------------------------------------------- interruptions

class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `ualm.train.train` after SIGINT or SIGTERM, once the checkpoint is written.
    `signum`, `step` and `checkpoint` (None when nothing was written) say where it stopped;
    `exit_code` is the shell's convention, 128 + signum."""

    def __init__(self, signum: int, step: int, checkpoint=None):
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        name = signal.Signals(self.signum).name
        where = (f"checkpoint written to {checkpoint}; run the same command again to resume"
                 if checkpoint is not None else "no checkpoint written (no output directory)")
        super().__init__(f"training interrupted by {name} at step {self.step}: {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """While active, SIGINT and SIGTERM only set `received` (the signal number), so that the
    training loop can finish its step, write a checkpoint and stop; a second SIGINT interrupts
    at once. Python allows signal handlers on the main thread only: elsewhere this does
    nothing. The previous handlers are restored on exit."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.received, self._previous = tuple(signals), None, {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: stop now, without a checkpoint
        self.received = signum

    def __enter__(self) -> "StopSignals":
        self.received, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
