"""Bundled network weights, verified by SHA-256 before they are loaded.

Each weight file `NAME.pt` (a plain state dict, loaded with `torch.load(weights_only=True)`) has a
manifest `NAME.json` beside it: the file's SHA-256, the model ("model": a registered name such as
"deepstorm") and its configuration ("model_config"), the exact command that reproduces it and the
metrics it reaches. `load(NAME)` builds any registered network from its manifest;
`register_model` adds a network kind.

Two checksums guard a manifest: "sha256", of the weight file, and "model_sha256", of the
manifest's model part (MODEL_KEYS: the weight file's name, checksum and dtype, the model name
and its configuration, which holds everything that changes how the weights are built and how
inputs are normalised, e.g. DeepSTORM's camera offset, gain and photon scale). `load` verifies
both, so an edited offset is refused rather than used. `model_digest` computes the second;
`stamp_model_digest` writes it into a manifest after a deliberate edit.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..device import pick_device
from ..models.deepstorm import DeepSTORM, DeepSTORMConfig
from ..models.unet import UNet, UNetConfig
from ..checkpoints import CheckpointError, load_checkpoint

HERE = Path(__file__).resolve().parent
# manifest "model" name -> (model class, config class with from_dict); see register_model
MODELS: dict[str, tuple[type, type]] = {}


def register_model(name: str, model_cls: type, config_cls: type) -> None:
    """Let `load` build bundled weights whose manifest says "model": `name`, as
    `model_cls(config_cls.from_dict(manifest["model_config"]))`."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(getattr(config_cls, "from_dict", None)):
        raise TypeError(f"config_cls must have a from_dict classmethod, got {config_cls!r}")
    MODELS[name] = (model_cls, config_cls)


register_model("deepstorm", DeepSTORM, DeepSTORMConfig)
register_model("unet", UNet, UNetConfig)


class WeightsError(ValueError):
    """Missing, corrupt or mismatching bundled weights."""


# the manifest fields that say which network the weights build, and how (see model_digest)
MODEL_KEYS = ("file", "sha256", "dtype", "model", "model_config")
MODEL_DIGEST_KEY = "model_sha256"


def model_digest(info: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, no NaN) of manifest `info`'s
    model part, MODEL_KEYS. Raises WeightsError naming a missing field."""
    missing = [k for k in MODEL_KEYS if k not in info]
    if missing:
        raise WeightsError(f"manifest lacks {missing}: it does not say which network to build")
    part = json.loads(json.dumps({k: info[k] for k in MODEL_KEYS}))  # tuples -> lists, as on disk
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _write_manifest(path: Path, info: dict) -> Path:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, default=float) + "\n")
    tmp.replace(path)
    return path


def stamp_model_digest(name: str, directory=None) -> Path:
    """Write "model_sha256" (`model_digest`) into manifest NAME.json, in place, changing
    nothing else: for manifests written before the field existed, or after a deliberate edit
    of the model part. It trusts the manifest as it stands, so check it first."""
    directory = Path(directory or HERE)
    info = manifest(name, directory)
    info[MODEL_DIGEST_KEY] = model_digest(info)
    return _write_manifest(directory / f"{name}.json", info)


def verify_manifest(info: dict, name: str = "?") -> None:
    """Raise WeightsError when manifest `info` lacks its model part or "model_sha256", or
    when the model part no longer matches "model_sha256"."""
    if not isinstance(info.get("model_config"), dict):
        raise WeightsError(f"manifest {name!r} has no model_config (a dict of the network's "
                           f"settings), so the network cannot be built")
    if not isinstance(info.get("model"), str):
        raise WeightsError(f"manifest {name!r} does not name its model (\"model\")")
    stored = info.get(MODEL_DIGEST_KEY)
    if stored is None:
        raise WeightsError(f"manifest {name!r} has no {MODEL_DIGEST_KEY}: its model part cannot be "
                           f"verified (check it, then ualm.pretrained.stamp_model_digest({name!r}))")
    digest = model_digest(info)
    if digest != stored:
        raise WeightsError(f"manifest {name!r} was edited: its model part ({', '.join(MODEL_KEYS)}) "
                           f"has SHA-256 {digest}, but {MODEL_DIGEST_KEY} says {stored}")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def available(directory=None) -> list[str]:
    """Names of the bundled weights (those with both a manifest and a weight file), sorted."""
    directory = Path(directory or HERE)
    return sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".pt").is_file())


def manifest(name: str = "deepstorm_quick", directory=None) -> dict:
    path = Path(directory or HERE) / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"no manifest for bundled weights {name!r}: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"manifest {path} is not valid JSON: {err}") from err


def load_state_dict(name: str = "deepstorm_quick", directory=None, verify: bool = True) -> dict:
    """The state dict of bundled weights `name`, after checking its SHA-256 against the manifest."""
    directory = Path(directory or HERE)
    info = manifest(name, directory)
    path = directory / info.get("file", f"{name}.pt")
    if not path.is_file():
        raise WeightsError(f"bundled weights {name!r} not found: {path} is missing "
                           f"(reproduce them with: {info.get('command', '?')})")
    if verify:
        digest = sha256(path)
        if digest != info.get("sha256"):
            raise WeightsError(f"bundled weights {path} are corrupt: SHA-256 {digest} does not "
                               f"match the manifest's {info.get('sha256')}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"bundled weights {path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise WeightsError(f"bundled weights {path} do not hold a state dict")
    return state


def load(name: str, device=None, directory=None) -> torch.nn.Module:
    """The network of bundled weights `name`, built from its manifest (the registered "model"
    and its "model_config"), after checking the SHA-256; in eval mode and float32 on `device`."""
    info = manifest(name, directory)
    verify_manifest(info, name)
    kind = info["model"]
    if kind not in MODELS:
        raise WeightsError(f"manifest {name!r} names model {kind!r}, which is not registered "
                           f"(known: {sorted(MODELS)}; see ualm.pretrained.register_model)")
    model_cls, config_cls = MODELS[kind]
    try:
        config = config_cls.from_dict(info["model_config"])
    except (TypeError, ValueError) as err:
        raise WeightsError(f"manifest {name!r} has a bad model_config for {kind!r}: {err}") from err
    model = model_cls(config)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_state_dict(name, directory).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"bundled weights {name!r} do not fit the model in the manifest: {err}") from err
    return model.to(pick_device(device)).eval()


def load_deepstorm(name: str = "deepstorm_quick", device=None, directory=None) -> DeepSTORM:
    """The DeepSTORM φ with bundled weights `name` (see `load`)."""
    model = load(name, device, directory)
    if not isinstance(model, DeepSTORM):
        raise WeightsError(f"bundled weights {name!r} are a {type(model).__name__}, not DeepSTORM")
    return model


def export_weights(checkpoint, name: str, directory=None, dtype=torch.float32, command: str = "",
                   metrics: dict | None = None) -> Path:
    """Turn a training checkpoint into bundled weights NAME.pt + NAME.json.

    Everything in the manifest is written here, from the checkpoint: SHA-256, size, model and
    training configuration, world size, the command (passed by the CLI), the total training time
    (wall clock, cumulative over resumed runs), the history and the model part's checksum
    ("model_sha256"). `metrics` starts empty (or as given); the benchmarks fill it for the
    weights they measured (`record_metrics`). A checkpoint that fails verification (checksum,
    non-finite values) or does not record its model and model_config raises CheckpointError."""
    state = load_checkpoint(checkpoint)  # verified: checksum and finite values, or CheckpointError
    extra = state.get("extra") or {}
    if not isinstance(extra.get("model"), str) or not isinstance(extra.get("model_config"), dict):
        raise CheckpointError(f"checkpoint {checkpoint} does not record its model and model_config "
                              f"(extra={sorted(extra)}): the weights could not be rebuilt from a "
                              f"manifest; train through ualm.profiles or pass them in `extra`")
    directory = Path(directory or HERE)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().clone()
          for k, v in state["model"].items()}
    path = directory / f"{name}.pt"
    torch.save(sd, path)
    hist = state.get("history", [])
    vals = [h for h in hist if "val_loss" in h]
    info = {
        "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
        "dtype": str(dtype).replace("torch.", ""),
        "model": extra["model"],
        "model_config": extra["model_config"],
        "profile": extra.get("profile"),
        "train_config": state["config"], "steps": state["step"],
        "world_size": state.get("world_size", 1),
        "torch": torch.__version__,
        "final_val_loss": vals[-1]["val_loss"] if vals else None,
        "train_seconds": hist[-1]["time"] if hist else None,
        "command": command,
        "metrics": metrics or {"note": "not measured yet: run python benchmarks/deepstorm.py"},
        "history": [{k: h[k] for k in ("step", "loss", "val_loss", "lr", "time") if k in h}
                    for h in hist],
    }
    info[MODEL_DIGEST_KEY] = model_digest(info)
    _write_manifest(directory / f"{name}.json", info)
    return path


def record_metrics(name: str, sha: str, metrics: dict, directory=None) -> Path:
    """Store `metrics` (measured on the weights with SHA-256 `sha`) in manifest NAME.json,
    keyed by that checksum; refuses when the manifest describes other weights."""
    directory = Path(directory or HERE)
    info = manifest(name, directory)
    if info.get("sha256") != sha:
        raise WeightsError(f"metrics were measured on weights {sha}, but manifest {name!r} "
                           f"describes {info.get('sha256')}")
    info["metrics"] = {"weights_sha256": sha, **metrics}
    return _write_manifest(directory / f"{name}.json", info)


# ----------------------------------------------------------------------------- conformal calibration

def _body_digest(body: dict) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def record_calibration(name: str, sha: str, calibration: dict, directory=None) -> Path:
    """Store a conformal calibration (`ualm.calibration.Conformal.to_dict()` plus the sampler it
    was fitted with, its data and command), fitted on the weights with SHA-256 `sha`, in
    manifest NAME.json under "calibration", with the SHA-256 of its own content."""
    directory = Path(directory or HERE)
    info = manifest(name, directory)
    if info.get("sha256") != sha:
        raise WeightsError(f"the calibration was fitted on weights {sha}, but manifest {name!r} "
                           f"describes {info.get('sha256')}")
    body = json.loads(json.dumps({"weights_sha256": sha, **calibration}))
    info["calibration"] = {**body, "sha256": _body_digest(body)}
    return _write_manifest(directory / f"{name}.json", info)


def stored_calibration(name: str, directory=None) -> dict | None:
    """The calibration stored with weights NAME, verified against its checksum and the weights'
    (WeightsError when edited or fitted on other weights); None when there is none."""
    info = manifest(name, directory)
    stored = info.get("calibration")
    if stored is None:
        return None
    body = {k: v for k, v in stored.items() if k != "sha256"}
    if _body_digest(body) != stored.get("sha256"):
        raise WeightsError(f"the calibration in manifest {name!r} was edited: its content no longer "
                           f"matches its sha256 (rerun the command it records)")
    if body.get("weights_sha256") != info.get("sha256"):
        raise WeightsError(f"the calibration in manifest {name!r} was fitted on weights "
                           f"{body.get('weights_sha256')}, not on {info.get('sha256')}")
    return body
