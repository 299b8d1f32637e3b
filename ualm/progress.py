"""One rule for progress bars: shown when the caller asks for them (`progress=True`), unless the
environment variable TQDM_DISABLE is set to a true value. The book build sets it, so that the
web pages carry no progress bars (in a notebook, tqdm.auto draws them as widgets); an explicit
`disable=` argument would otherwise override tqdm's own reading of that variable."""
from __future__ import annotations

import os

__all__ = ["show_progress", "tqdm"]


def show_progress(progress: bool = True) -> bool:
    """Whether to draw a progress bar."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(progress) and not off


def tqdm(*args, progress: bool = True, **kwargs):
    """`tqdm.auto.tqdm` that follows `show_progress` (tqdm's notebook bar ignores TQDM_DISABLE):
    the chapters' own loops use it."""
    from tqdm.auto import tqdm as _tqdm

    kwargs.setdefault("disable", not show_progress(progress))
    return _tqdm(*args, **kwargs)
