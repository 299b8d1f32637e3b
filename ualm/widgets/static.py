"""A kernel-free explorer: every state of a small grid rendered to PNG beforehand, browsed with
plain HTML range inputs and a few lines of inline JavaScript (no ipywidgets, no kernel).

`static_explorer(figure_fn, grid, ...)` calls `figure_fn(**state)` for each combination of the
grid's values (at most `max_states` of them), and returns a `StaticExplorer` whose `_repr_html_`
is a self-contained snippet: one full-width slider per control that has more than one value,
one <img> per state (data-URI PNG, all but the current one hidden) and a script that shows the
image of the sliders' state. The default state is rendered first and shown first, also where
scripts do not run. Element ids carry a random token, so that any number of explorers can sit on
one page (or one JupyterLab window) without colliding.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

MAX_STATES = 24
NOTE = ("Precomputed states: move the sliders to browse them. Run the notebook (Jupyter or Colab) "
        "for the live explorer with every setting.")


def format_value(value) -> str:
    """A control's value as a slider label shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def figure_png(fig, dpi: float = 72, colors: int | None = 256) -> bytes:
    """`fig` as PNG bytes (tight bounding box); closes the figure. With `colors`, the image is
    reduced to a palette of that many colours without dithering (Pillow): with 256, about a
    third of the size of the full-colour PNG. colors=None keeps full colour."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if colors:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow comes with matplotlib
            return data
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img = img.quantize(colors=int(colors), dither=Image.Dither.NONE)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        if out.tell() < len(data):
            data = out.getvalue()
    return data


class StaticExplorer:
    """Precomputed states of a figure function, shown as HTML (see the module docstring).

    names: the controls with a slider, in order; values[i]: the values of control i;
    images[k]: PNG bytes of state k, k the mixed-radix index of the slider positions (the last
    control varies fastest); default: the slider positions of the default state."""

    def __init__(self, names, values, images, default, *, labels=None, fixed=None, title=None,
                 formats=None, note: str = NOTE, seconds: float | None = None):
        self.names = list(names)
        self.values = [list(v) for v in values]
        self.images = list(images)
        self.default = tuple(int(i) for i in default)
        self.labels = {**(labels or {}), **{n: (labels or {}).get(n, n) for n in self.names}}
        self.fixed = dict(fixed or {})
        self.title = title
        self.formats = dict(formats or {})
        self.note = note
        self.seconds = seconds
        if len(self.images) != math.prod(len(v) for v in self.values):
            raise ValueError(f"{len(self.images)} images for a grid of sizes "
                             f"{[len(v) for v in self.values]}")

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.values]

    @property
    def n_states(self) -> int:
        return len(self.images)

    @property
    def default_index(self) -> int:
        k = 0
        for n, i in zip(self.sizes, self.default):
            k = k * n + i
        return k

    def _fmt(self, name, value) -> str:
        return self.formats.get(name, format_value)(value)

    def describe(self, k: int) -> str:
        """State k as 'label = value, ...'."""
        idx = []
        for n in reversed(self.sizes):
            idx.append(k % n)
            k //= n
        idx.reverse()
        return ", ".join(f"{self.labels[n]} = {self._fmt(n, v[i])}"
                         for n, v, i in zip(self.names, self.values, idx))

    def to_html(self) -> str:
        uid = "ualm-sx-" + uuid.uuid4().hex[:12]
        e = html.escape
        parts = [f'<div id="{uid}" class="ualm-static-explorer tex2jax_ignore mathjax_ignore" '
                 'style="width:100%;max-width:100%;margin:0.5em 0">']
        if self.title:
            parts.append(f'<div style="font-weight:bold">{e(self.title)}</div>')
        parts.append(f'<div style="font-size:90%;opacity:0.8;margin-bottom:0.3em">{e(self.note)}</div>')
        shown = []
        for i, (name, vals) in enumerate(zip(self.names, self.values)):
            j = self.default[i]
            texts = [self._fmt(name, v) for v in vals]
            shown.append(texts)
            parts.append(
                f'<div style="margin:0.2em 0"><label for="{uid}-c{i}" style="display:block">'
                f'{e(self.labels[name])}: <b id="{uid}-v{i}">{e(texts[j])}</b></label>'
                f'<input type="range" id="{uid}-c{i}" min="0" max="{len(vals) - 1}" step="1" '
                f'value="{j}" autocomplete="off" aria-label="{e(self.labels[name])}" '
                'style="width:100%;display:block;margin:0"></div>')
        if self.fixed:
            fixed = ", ".join(f"{self.labels.get(n, n)} = {self._fmt(n, v)}" for n, v in self.fixed.items())
            parts.append(f'<div style="font-size:90%;opacity:0.8">Fixed here: {e(fixed)}.</div>')
        first = self.default_index
        for k in [first] + [k for k in range(self.n_states) if k != first]:
            src = "data:image/png;base64," + base64.b64encode(self.images[k]).decode("ascii")
            hide = "" if k == first else "display:none;"
            alt = (self.title + ": " if self.title else "") + self.describe(k)
            parts.append(f'<img id="{uid}-s{k}" data-state="{k}" alt="{e(alt)}" src="{src}" '
                         f'style="{hide}max-width:100%;height:auto">')
        texts_js = json.dumps(shown).replace("</", "<\\/")  # no "</script>" inside the script
        parts.append(
            "<script>(function(){"
            f'var id="{uid}",n={json.dumps(self.sizes)},t={texts_js};'
            "var root=document.getElementById(id);if(!root)return;"
            "function c(i){return document.getElementById(id+'-c'+i);}"
            "function show(){var k=0;for(var i=0;i<n.length;i++){var j=+c(i).value;k=k*n[i]+j;"
            "document.getElementById(id+'-v'+i).textContent=t[i][j];}"
            "var im=root.querySelectorAll('img[data-state]');"
            "for(var m=0;m<im.length;m++){"
            "im[m].style.display=(+im[m].getAttribute('data-state')===k)?'':'none';}}"
            "for(var i=0;i<n.length;i++){c(i).addEventListener('input',show);}show();"
            "})();</script>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    @property
    def nbytes(self) -> int:
        """Size of the HTML snippet in bytes."""
        return len(self.to_html().encode("utf-8"))

    def __repr__(self) -> str:
        timing = f", {self.seconds:.1f} s to render" if self.seconds is not None else ""
        return (f"<StaticExplorer {self.title or ''!s}: {self.n_states} states over "
                f"{dict(zip(self.names, self.sizes))}{timing}>")


def static_explorer(figure_fn: Callable, grid: Mapping[str, Sequence], *,
                    defaults: Mapping | None = None, fixed: Mapping | None = None,
                    labels: Mapping[str, str] | None = None, title: str | None = None,
                    formats: Mapping[str, Callable] | None = None, max_states: int = MAX_STATES,
                    dpi: float = 72, colors: int | None = 256) -> StaticExplorer:
    """Render `figure_fn(**fixed, **state)` for every state of `grid` (name -> values; a name
    with one value is passed on like `fixed` and gets no slider) and return a StaticExplorer.

    defaults: name -> value (one of grid[name]; the first value where omitted): the state shown
    first. fixed: further keyword arguments of figure_fn, listed under the sliders. labels:
    name -> text of the slider label; formats: name -> function formatting a value for it.
    dpi, colors: of the PNGs (see figure_png); each state's PNG is some 15-30 kB at the defaults.
    Raises ValueError when the grid has more than `max_states` states."""
    grid = {str(k): list(v) for k, v in grid.items()}
    for name, vals in grid.items():
        if not vals:
            raise ValueError(f"control {name!r} has no values")
    sizes = {k: len(v) for k, v in grid.items()}
    n = math.prod(sizes.values())
    if n > max_states:
        raise ValueError(f"a grid of {n} states (sizes {sizes}) is over the cap of {max_states} "
                         "states: give fewer values")
    defaults = dict(defaults or {})
    unknown = set(defaults) - set(grid)
    if unknown:
        raise ValueError(f"defaults for controls not in the grid: {sorted(unknown)}")
    fixed = dict(fixed or {})
    names, values, default = [], [], []
    for name, vals in grid.items():
        value = defaults.get(name, vals[0])
        if value not in vals:
            raise ValueError(f"default {name} = {value!r} is not one of its values {vals}")
        if len(vals) == 1:
            fixed[name] = vals[0]
            continue
        names.append(name)
        values.append(vals)
        default.append(vals.index(value))

    states = list(itertools.product(*[range(len(v)) for v in values]))
    first = states.index(tuple(default))
    order = [first] + [k for k in range(len(states)) if k != first]
    images = [b""] * len(states)
    clock = time.perf_counter()
    for k in order:  # the default state first
        state = {name: vals[i] for name, vals, i in zip(names, values, states[k])}
        images[k] = figure_png(figure_fn(**fixed, **state), dpi=dpi, colors=colors)
    seconds = time.perf_counter() - clock
    return StaticExplorer(names, values, images, default, labels=labels, fixed=fixed, title=title,
                          formats=formats, seconds=seconds)
