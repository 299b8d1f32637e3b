"""Movies with ground truth: blinking emitters on a structure (filaments or rings), recorded by
an sCMOS camera with per-pixel gain, offset and read-noise maps, plus the dark and flat-field
stacks a user records to calibrate that camera. Frames are unsigned 16-bit ADU, as a camera
writes them; `write_tiff` and `read_tiff` keep them as multi-page TIFF with their metadata.

Coordinates follow the package: (x, y) in camera pixels, pixel k covers [k - 1/2, k + 1/2].
Blinking is a two-state Markov chain per label (off -> on with p_on, on -> off with p_off per
frame) with bleaching while on (p_bleach per on frame); an emitter is on for whole frames.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checks
from .camera import Camera
from .config import Config
from .defaults import PIXEL_NM, SIGMA_X
from .progress import tqdm
from .psf import expected_frame

ADU_MAX = 65535  # what a 16-bit camera can record


@dataclass(frozen=True)
class SCMOSConfig:
    """Per-pixel camera maps drawn once per camera: gain ~ N(gain, (gain·gain_spread)²),
    offset ~ N(offset, offset_spread²) in ADU, read-noise variance log-normal with median
    `read_var` (ADU²) and log-std `read_var_spread` (a tail of noisy pixels, as measured on sCMOS
    sensors by Huang et al. 2013)."""

    gain: float = 2.0
    gain_spread: float = 0.03
    offset: float = 100.0
    offset_spread: float = 2.0
    read_var: float = 5.0
    read_var_spread: float = 0.5


def scmos_camera(shape, config: SCMOSConfig = SCMOSConfig(), generator=None) -> Camera:
    """A `Camera` with (H, W) gain, offset and read-variance maps drawn from `config`."""
    h, w = checks.shape2d(shape)
    z = torch.randn((3, h, w), generator=generator, dtype=torch.float64)
    gain = config.gain * (1 + config.gain_spread * z[0])
    if (gain <= 0).any():
        raise ValueError("gain_spread too large: a pixel's gain came out <= 0")
    return Camera(gain=gain, offset=config.offset + config.offset_spread * z[1],
                  read_var=config.read_var * torch.exp(config.read_var_spread * z[2]))


@dataclass(frozen=True)
class MovieConfig(Config):
    """A movie of `frames` frames of `shape` pixels. Labels sit on `n_structures` filaments
    (worm-like curves of `length` px with persistence length `persistence` px) or rings of
    `ring_radius` px, `labels_per_px` per pixel of contour, each displaced by N(0, label_jitter²)
    (the linker). An on emitter gives i0 photons, uniform in the range per frame, over a uniform
    `background` (photons/px)."""

    shape: tuple = (64, 64)
    frames: int = 2000
    pixel_nm: float = PIXEL_NM
    structure: str = "filaments"
    n_structures: int = 5
    length: float = 50.0
    persistence: float = 30.0
    ring_radius: float = 2.0
    labels_per_px: float = 4.0
    label_jitter: float = 0.05
    p_on: float = 0.005
    p_off: float = 0.5
    p_bleach: float = 0.01
    i0: tuple = (100.0, 400.0)
    background: float = 10.0
    sigma: float = SIGMA_X
    camera: SCMOSConfig = field(default_factory=SCMOSConfig)
    dark_frames: int = 1000


@dataclass
class Movie:
    """frames (N, H, W) and dark (D, H, W) uint16 ADU; the true camera; the labels (M, 2) and the
    structure's contour points (P, 2) in px; `events`, the true localizations: arrays frame, id,
    x, y and photons, one entry per emitter per frame it is on."""

    frames: np.ndarray
    dark: np.ndarray
    camera: Camera
    labels: np.ndarray
    contour: np.ndarray
    events: dict
    config: MovieConfig


def _filament(cfg: MovieConfig, h: int, w: int, generator) -> torch.Tensor:
    step = 0.25
    n = max(2, int(cfg.length / step))
    u = torch.rand(3, generator=generator, dtype=torch.float64)
    middle = torch.stack(((0.2 + 0.6 * u[0]) * (w - 1), (0.2 + 0.6 * u[1]) * (h - 1)))
    turns = torch.randn(n - 1, generator=generator, dtype=torch.float64) * math.sqrt(step / cfg.persistence)
    angle = 2 * math.pi * u[2] + torch.cat((torch.zeros(1, dtype=torch.float64), turns.cumsum(0)))
    curve = step * torch.cumsum(torch.stack((angle.cos(), angle.sin()), 1), 0)
    return curve - curve[n // 2] + middle  # its middle in the central 60 % of the frame


def _ring(cfg: MovieConfig, h: int, w: int, generator) -> torch.Tensor:
    margin = cfg.ring_radius + 1
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    centre = torch.stack((margin + u[0] * (w - 1 - 2 * margin), margin + u[1] * (h - 1 - 2 * margin)))
    phi = torch.linspace(0, 2 * math.pi, max(8, int(8 * cfg.ring_radius)) + 1, dtype=torch.float64)
    return centre + cfg.ring_radius * torch.stack((phi.cos(), phi.sin()), 1)


def _labels_on(curve: torch.Tensor, density: float, jitter: float, generator) -> torch.Tensor:
    """Labels uniform along a polyline, Poisson in number, displaced by N(0, jitter²)."""
    seg = (curve[1:] - curve[:-1]).norm(dim=1)
    arc = torch.cat((torch.zeros(1, dtype=seg.dtype), seg.cumsum(0)))
    rate = torch.tensor(float(density * arc[-1]), dtype=torch.float64)
    n = int(torch.poisson(rate, generator=generator))
    s = torch.rand(n, generator=generator, dtype=torch.float64) * arc[-1]
    i = torch.searchsorted(arc, s).clamp(1, len(arc) - 1)
    f = ((s - arc[i - 1]) / seg[i - 1].clamp_min(1e-12))[:, None]
    pts = curve[i - 1] + f * (curve[i] - curve[i - 1])
    return pts + jitter * torch.randn(pts.shape, generator=generator, dtype=torch.float64)


def structure(cfg: MovieConfig, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (M, 2) inside the frame and the contour points (P, 2) they were drawn on."""
    h, w = checks.shape2d(cfg.shape)
    make = {"filaments": _filament, "rings": _ring}.get(cfg.structure)
    if make is None:
        raise ValueError(f"structure must be 'filaments' or 'rings', got {cfg.structure!r}")
    curves = [make(cfg, h, w, generator) for _ in range(cfg.n_structures)]
    labels = torch.cat([_labels_on(c, cfg.labels_per_px, cfg.label_jitter, generator) for c in curves])
    inside = lambda p: (p[:, 0] > -0.5) & (p[:, 0] < w - 0.5) & (p[:, 1] > -0.5) & (p[:, 1] < h - 0.5)  # noqa: E731
    contour = torch.cat(curves)
    return labels[inside(labels)], contour[inside(contour)]


def blink(n_labels: int, cfg: MovieConfig, generator=None) -> torch.Tensor:
    """On/off states (frames, n_labels), bool: each label starts in the stationary state of its
    two-state chain and bleaches for good with p_bleach per frame it is on."""
    for name in ("p_on", "p_off", "p_bleach"):
        p = getattr(cfg, name)
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    duty = cfg.p_on / (cfg.p_on + cfg.p_off) if cfg.p_on + cfg.p_off > 0 else 0.0
    u = torch.rand((cfg.frames, 2, n_labels), generator=generator, dtype=torch.float64)
    on = torch.rand(n_labels, generator=generator, dtype=torch.float64) < duty
    alive = torch.ones(n_labels, dtype=torch.bool)
    states = torch.empty((cfg.frames, n_labels), dtype=torch.bool)
    for t in range(cfg.frames):
        states[t] = on & alive
        alive &= ~(states[t] & (u[t, 1] < cfg.p_bleach))
        on = torch.where(on, u[t, 0] >= cfg.p_off, u[t, 0] < cfg.p_on)
    return states


def simulate_movie(cfg: MovieConfig = MovieConfig(), generator=None, chunk: int = 256, progress: bool = False) -> Movie:
    """The movie of `cfg`, its dark frames and its ground truth, from one generator."""
    h, w = checks.shape2d(cfg.shape)
    frames = checks.as_int(cfg.frames, "frames", 1)
    camera = scmos_camera((h, w), cfg.camera, generator)
    labels, contour = structure(cfg, generator)
    states = blink(len(labels), cfg, generator)
    lo, hi = cfg.i0
    photons = lo + (hi - lo) * torch.rand(states.shape, generator=generator, dtype=torch.float64)
    f_idx, l_idx = states.nonzero(as_tuple=True)
    events = {"frame": f_idx.numpy(), "id": l_idx.numpy(), "x": labels[l_idx, 0].numpy(),
              "y": labels[l_idx, 1].numpy(), "photons": photons[f_idx, l_idx].numpy()}
    out = np.empty((frames, h, w), dtype=np.uint16)
    starts = tqdm(range(0, frames, chunk), progress=progress, desc="movie", unit="chunk")
    for s in starts:
        st = states[s:s + chunk]
        n_max = max(1, int(st.sum(1).max()))
        order = torch.argsort(st.to(torch.int8), dim=1, descending=True, stable=True)[:, :n_max]
        mask = torch.gather(st, 1, order)
        theta = labels[order]
        i0 = torch.gather(photons[s:s + chunk], 1, order) * mask
        omega = expected_frame(theta, i0, cfg.sigma, cfg.background, (h, w))
        out[s:s + chunk] = to_adu(camera.sample(omega, generator=generator))
    dark = to_adu(camera.sample(torch.zeros((cfg.dark_frames, h, w), dtype=torch.float64), generator=generator))
    return Movie(out, dark, camera, labels.numpy(), contour.numpy(), events, cfg)


def to_adu(x: torch.Tensor) -> np.ndarray:
    """Camera values as a 16-bit camera records them: rounded and clipped to [0, 65535]. The
    rounding adds 1/12 ADU² of variance, which dark-frame calibration measures as read noise."""
    return x.round().clamp(0, ADU_MAX).to(torch.int32).numpy().astype(np.uint16)


def flat_stacks(camera: Camera, levels=(20.0, 50.0, 100.0, 200.0, 400.0), frames: int = 500,
                shape=None, generator=None) -> list[np.ndarray]:
    """Flat-field stacks (frames, H, W) uint16, one per level of uniform illumination in
    photons/px: the data of a photon-transfer curve."""
    if shape is None:
        maps = [v for v in (camera.gain, camera.offset, camera.read_var) if torch.as_tensor(v).ndim]
        if not maps:
            raise ValueError("give shape for a camera without per-pixel maps")
        shape = tuple(torch.as_tensor(maps[0]).shape)
    h, w = checks.shape2d(shape)
    return [to_adu(camera.sample(torch.full((frames, h, w), float(level), dtype=torch.float64),
                                 generator=generator)) for level in levels]


# ----------------------------------------------------------------------------- files

def write_tiff(path, frames: np.ndarray, pixel_nm: float = PIXEL_NM, **metadata) -> Path:
    """Frames (N, H, W) as a multi-page TIFF whose description holds the metadata as JSON
    (pixel size in nm and whatever else is given); the resolution tags carry the pixel size for
    ImageJ/Fiji."""
    import tifffile

    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {frames.shape}")
    path = Path(path)
    per_cm = 1e7 / float(pixel_nm)
    tifffile.imwrite(path, frames, photometric="minisblack", resolution=(per_cm, per_cm),
                     resolutionunit="CENTIMETER", metadata={"axes": "TYX", "pixel_nm": float(pixel_nm), **metadata})
    return path


def read_tiff(path) -> tuple[np.ndarray, dict]:
    """Frames (N, H, W) of a TIFF stack (one page reads as one frame) and the metadata that
    `write_tiff` stored ({} for a TIFF from elsewhere)."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no TIFF at {path}")
    with tifffile.TiffFile(path) as tif:
        frames = tif.asarray()
        meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"{path} holds an array of shape {frames.shape}, not a stack of 2-D frames")
    meta.pop("shape", None)
    return frames, meta


def save_movie(movie: Movie, directory) -> dict:
    """movie.tif and dark.tif (what a user has) and truth.npz + truth.json (what only a
    simulation knows: the camera's maps, the labels, the events, the config)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    px = movie.config.pixel_nm
    paths = {"movie": write_tiff(d / "movie.tif", movie.frames, px, camera="simulated sCMOS"),
             "dark": write_tiff(d / "dark.tif", movie.dark, px, camera="simulated sCMOS", dark=True)}
    g, o, v = (torch.as_tensor(t).numpy() for t in (movie.camera.gain, movie.camera.offset, movie.camera.read_var))
    paths["truth"] = d / "truth.npz"
    np.savez_compressed(paths["truth"], gain=g, offset=o, read_var=v, labels=movie.labels,
                        contour=movie.contour, **{f"event_{k}": a for k, a in movie.events.items()})
    paths["config"] = d / "truth.json"
    paths["config"].write_text(json.dumps(asdict(movie.config), indent=1) + "\n")
    return paths
