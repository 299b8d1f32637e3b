"""Small matplotlib helpers for the book's figures.

Conventions (see the package docstring): images are indexed [row = y, column = x] and pixel k
covers [k - 1/2, k + 1/2], so a low-resolution frame of shape (H, W) is drawn with
extent (-0.5, W - 0.5, H - 0.5, -0.5). A KDE on the u-times finer grid is drawn with the *same*
extent, in low-resolution pixels, so that emitter coordinates θ (low-res px) overlay both at
their true positions. Axes are labelled in px; `add_nm_axis` adds a secondary axis in nm
(108 nm camera pixels).

matplotlib is imported here only, never by the rest of the package.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, Ellipse

from .defaults import PIXEL_NM, SHAPE

__all__ = ["to_numpy", "frame_extent", "show_frame", "show_kde", "overlay_theta", "show_emitters",
           "add_nm_axis", "subplots"]


def to_numpy(value) -> np.ndarray:
    """A torch tensor (any device, any dtype) or array-like as a float numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def frame_extent(shape) -> tuple[float, float, float, float]:
    """imshow extent of a low-res frame of shape (H, W): pixel centres at integer coordinates."""
    h, w = (int(s) for s in shape[-2:])
    return (-0.5, w - 0.5, h - 0.5, -0.5)


# The book's text column is about 7.3 inches at 100 dpi (730 px). A wider figure is shrunk by
# the browser, and its 10-point labels with it, so `subplots` keeps figures within the column:
# a single row of panels that does not fit wraps onto more rows, and what is still too wide is
# scaled down as a whole.
COLUMN_INCHES = 7.3
DPI = 100
MIN_SCALE = 0.8  # shrink panels by at most this much before wrapping a row


def subplots(ncols: int = 1, nrows: int = 1, width: float = 3.4, height: float = 3.0,
             max_width: float | None = COLUMN_INCHES, **kw):
    """plt.subplots sized per panel (`width` × `height` inches), with constrained layout
    (colourbars and nm axes fit), kept within `max_width` inches (the book's column; None for
    no limit). A single row of `ncols` panels that would be wider than `max_width` is laid out
    on several rows instead, and returned as the same 1-D array of `ncols` axes in reading
    order, so that code indexing `axes[k]` is unaffected; a grid (nrows > 1) is only scaled."""
    kw.setdefault("layout", "constrained")
    kw.setdefault("dpi", DPI)
    squeeze = kw.pop("squeeze", True)
    per_row = ncols
    if max_width is not None and nrows == 1 and ncols > 1 and ncols * width * MIN_SCALE > max_width:
        per_row = max(1, int(max_width // (width * MIN_SCALE)))
    rows = nrows if per_row == ncols else -(-ncols // per_row)
    scale = 1.0 if max_width is None else min(1.0, max_width / (width * per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(width * per_row * scale, height * rows * scale),
                             squeeze=False, **kw)
    if per_row != ncols:  # wrapped: hand back the first ncols axes as one row, drop the rest
        flat = list(axes.flat)
        for ax in flat[ncols:]:
            fig.delaxes(ax)
        axes = np.array(flat[:ncols], dtype=object).reshape(1, ncols)
    if squeeze:
        axes = axes[0, 0] if axes.size == 1 else (axes.reshape(-1) if 1 in axes.shape else axes)
    return fig, axes


def add_nm_axis(ax, which: str = "both", pixel_nm: float | None = None, scale: float = 1.0):
    """Secondary axes in nm for axes in px: x on top, y on the right. `scale` converts the axis
    unit to low-res px (1 for px, 1/4 for KDE px). Returns the secondary axes created."""
    nm = (pixel_nm or PIXEL_NM) * scale
    fwd, inv = (lambda v: v * nm), (lambda v: v / nm)
    out = []
    if which in ("x", "both"):
        sec = ax.secondary_xaxis("top", functions=(fwd, inv))
        sec.set_xlabel("x (nm)")
        out.append(sec)
    if which in ("y", "both"):
        sec = ax.secondary_yaxis("right", functions=(fwd, inv))
        sec.set_ylabel(ax.get_ylabel().replace("(px)", "(nm)") or "(nm)")
        out.append(sec)
    return out


def _image(ax, img, extent, title, label, colorbar, nm, **imshow_kw):
    im = ax.imshow(to_numpy(img), extent=extent, origin="upper", interpolation="nearest",
                   **imshow_kw)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    if title:
        ax.set_title(title)
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
        cb.set_label(label)
    if nm:
        add_nm_axis(ax, "x")
    return im


def show_frame(ax, frame, title: str | None = None, label: str = "ADU", colorbar: bool = True,
               nm: bool = False, cmap: str = "gray", **imshow_kw):
    """Draw a low-res image (H, W) — a camera frame in ADU or ω in photons — with axes in px
    (pixel k centred on the integer k), a colourbar labelled `label`, and optionally a top
    x axis in nm."""
    frame = to_numpy(frame)
    if frame.ndim != 2:
        raise ValueError(f"frame must be a 2-D image, got shape {frame.shape}")
    return _image(ax, frame, frame_extent(frame.shape), title, label, colorbar, nm, cmap=cmap,
                  **imshow_kw)


def show_kde(ax, y, upsample: int = 4, title: str | None = None, label: str = "KDE y",
             colorbar: bool = True, nm: bool = False, cmap: str = "inferno", **imshow_kw):
    """Draw a KDE (uH, uW) on its fine grid, with the extent in low-res px
    (-0.5, W - 0.5, H - 0.5, -0.5), so that θ in low-res px overlays at the true positions."""
    y = to_numpy(y)
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-D image, got shape {y.shape}")
    if not isinstance(upsample, int) or upsample < 1:
        raise ValueError(f"upsample must be a positive int, got {upsample!r}")
    h, w = y.shape
    if h % upsample or w % upsample:
        raise ValueError(f"KDE shape {y.shape} is not a multiple of upsample={upsample}")
    extent = frame_extent((h // upsample, w // upsample))
    return _image(ax, y, extent, title, label, colorbar, nm, cmap=cmap, **imshow_kw)


def overlay_theta(ax, theta, mask=None, marker: str = "+", color: str = "cyan", size: float = 60,
                  label: str | None = "true θ", **kw):
    """Mark emitters θ (N, 2) or (1, N, 2) = (x, y) in low-res px; `mask` (N,) drops padding."""
    th = to_numpy(theta).reshape(-1, 2)
    if mask is not None:
        th = th[to_numpy(mask).reshape(-1) > 0]
    kw.setdefault("linewidths", 1.5)
    return ax.scatter(th[:, 0], th[:, 1], marker=marker, c=color, s=size, label=label, **kw)


def show_emitters(ax, theta, mask=None, shape=SHAPE, radius: float | None = None,
                  centre=None, title: str | None = "emitters θ"):
    """θ on an empty frame of `shape` with the pixel grid, optionally the layout disc."""
    h, w = (int(s) for s in shape)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-0.5, w, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1.0), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    if radius is not None:
        cx, cy = centre if centre is not None else ((w - 1) / 2, (h - 1) / 2)
        ax.add_patch(Circle((cx, cy), radius, fill=False, ls="--", color="0.5",
                            label=f"disc r = {radius:g} px"))
    overlay_theta(ax, theta, mask, marker="o", color="C3", size=25, label="θ")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------- chapter 4 (detection)

def draw_matches(ax, pred, truth, pairs=None, tolerance_px: float | None = None, legend: bool = True):
    """Detections `pred` (n, 2) and true emitters `truth` (m, 2), both (x, y) in low-res px, with
    their one-to-one matching `pairs` = (i_pred, i_true) (e.g. from `ualm.detect.match`):
    true positives as circles joined to their emitter, false positives as red crosses, missed
    emitters (false negatives) as orange squares. `tolerance_px` draws the matching radius."""
    p = to_numpy(pred).reshape(-1, 2)
    t = to_numpy(truth).reshape(-1, 2)
    ip, it = (np.asarray(pairs[0], int), np.asarray(pairs[1], int)) if pairs is not None else \
        (np.zeros(0, int), np.zeros(0, int))
    fp = np.setdiff1d(np.arange(len(p)), ip)
    fn = np.setdiff1d(np.arange(len(t)), it)
    ax.scatter(t[:, 0], t[:, 1], marker="+", c="cyan", s=60, linewidths=1.5, label="true θ")
    for a, b in zip(ip, it):
        ax.plot([p[a, 0], t[b, 0]], [p[a, 1], t[b, 1]], color="lime", lw=1.0)
    ax.scatter(p[ip, 0], p[ip, 1], facecolors="none", edgecolors="lime", s=70, linewidths=1.3,
               label=f"TP ({len(ip)})")
    ax.scatter(p[fp, 0], p[fp, 1], marker="x", c="red", s=60, linewidths=1.5, label=f"FP ({len(fp)})")
    ax.scatter(t[fn, 0], t[fn, 1], marker="s", facecolors="none", edgecolors="orange", s=90,
               linewidths=1.5, label=f"FN ({len(fn)})")
    if tolerance_px:
        for b in range(len(t)):
            ax.add_patch(Circle(tuple(t[b]), tolerance_px, fill=False, color="cyan", lw=0.5, ls=":"))
    if legend:
        ax.legend(fontsize=7, loc="lower right", framealpha=0.6)
    return ax


# --------------------------------------------------------------------------- chapter 3 (MCMC)

def show_traces(ax, draws, label: str = "x (px)", max_chains: int = 8, truth=None,
                band=None, alpha: float = 0.8, lw: float = 0.6):
    """Trace plot of MCMC draws (C, D) of one parameter: one line per chain (the first
    `max_chains`) against the iteration after burn-in; `truth` draws a dashed line and `band`
    a grey ±band around it (e.g. the CRLB)."""
    d = to_numpy(draws)
    if d.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {d.shape}")
    it = np.arange(d.shape[1])
    for c in range(min(max_chains, d.shape[0])):
        ax.plot(it, d[c], lw=lw, alpha=alpha, color=f"C{c % 10}")
    if truth is not None:
        ax.axhline(float(truth), color="k", ls="--", lw=1.0, label="true value")
        if band is not None:
            ax.axhspan(float(truth) - float(band), float(truth) + float(band), color="0.85",
                       zorder=0, label="± CRLB")
    ax.set_xlabel("iteration after burn-in")
    ax.set_ylabel(label)
    return ax


def cov_ellipse(ax, mean, cov, n_std: float = 1.0, **kw):
    """Draw the n_std-standard-deviation ellipse of a 2-D Gaussian, mean (2,), cov (2, 2)."""
    m, c = to_numpy(mean).reshape(2), to_numpy(cov).reshape(2, 2)
    vals, vecs = np.linalg.eigh(c)
    angle = float(np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1])))
    w, h = 2 * n_std * np.sqrt(np.clip(vals[::-1], 0, None))
    kw.setdefault("fill", False)
    patch = Ellipse(tuple(m), w, h, angle=angle, **kw)
    ax.add_patch(patch)
    return patch


_MARKERS = "osD^v<>ph*"


def series_styles(names) -> dict:
    """name -> {"color", "marker"}: distinct for up to 20 series (tab20's ten dark colours, then
    its ten light ones, each with its own marker), so that a legend of 13 methods has no twins."""
    names = list(names)
    if len(names) > 20:
        raise ValueError(f"{len(names)} series are too many to tell apart; plot fewer")
    tab20 = plt.get_cmap("tab20").colors
    return {name: {"color": tab20[2 * (i % 10) + i // 10], "marker": _MARKERS[(i + 3 * (i // 10)) % 10]}
            for i, name in enumerate(names)}
