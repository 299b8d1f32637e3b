"""The precomputed (kernel-free) explorers, the switch between them and the live ones, and the
live explorer's layout. Tiny figure functions stand in for the chapters' figures, so these run
in seconds."""
from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ualm import widgets  # noqa: E402
from ualm.widgets import core, diffusion, imaging, inference  # noqa: E402
from ualm.widgets.static import NOTE, StaticExplorer, static_explorer  # noqa: E402


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(core.STATIC_ENV, raising=False)
    yield
    plt.close("all")


class Recorder:
    """A tiny figure function that records the keyword arguments of each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kw):
        self.calls.append(kw)
        fig = plt.figure(figsize=(0.6, 0.4))
        fig.text(0.1, 0.5, str(len(self.calls)))
        return fig


def images(html):
    return re.findall(r"<img [^>]*>", html)


def state_of(img):
    return int(re.search(r'data-state="(\d+)"', img).group(1))


def test_static_html_has_a_slider_per_control_and_an_image_per_state():
    fn = Recorder()
    ex = static_explorer(fn, {"a": [1, 2, 3], "b": ["x", "y"]}, defaults={"a": 2},
                         labels={"a": "alpha"}, title="tiny")
    assert isinstance(ex, StaticExplorer) and ex.n_states == 6 and len(fn.calls) == 6
    assert fn.calls[0] == {"a": 2, "b": "x"}  # the default state is rendered first
    html = ex._repr_html_()
    ranges = re.findall(r'<input type="range"[^>]*>', html)
    assert len(ranges) == 2
    assert all("width:100%" in r for r in ranges)
    assert 'max="2"' in ranges[0] and 'value="1"' in ranges[0]  # a = 2 of [1, 2, 3]
    assert 'max="1"' in ranges[1] and 'value="0"' in ranges[1]
    assert "alpha: <b" in html and NOTE in html
    imgs = images(html)
    assert len(imgs) == 6
    assert sorted(state_of(i) for i in imgs) == list(range(6))
    # the default state (a index 1, b index 0 -> 1 * 2 + 0) comes first and alone is visible
    assert state_of(imgs[0]) == ex.default_index == 2
    assert "display:none" not in imgs[0]
    assert all("display:none" in i for i in imgs[1:])
    assert all('src="data:image/png;base64,' in i for i in imgs)
    assert "alpha = 2, b = x" in imgs[0]
    assert html.count("<script>") == 1 and "http" not in html.split("<script>")[1]
    assert ex.nbytes == len(html.encode())
    assert "6 states" in repr(ex)


def test_two_explorers_have_distinct_ids():
    fn = Recorder()
    a = static_explorer(fn, {"v": [0, 1]})
    b = static_explorer(fn, {"v": [0, 1]})
    ids_a = set(re.findall(r'id="([^"]+)"', a._repr_html_()))
    ids_b = set(re.findall(r'id="([^"]+)"', b._repr_html_()))
    assert ids_a and ids_b and not ids_a & ids_b
    # two displays of one explorer do not collide either
    assert not set(re.findall(r'id="([^"]+)"', a._repr_html_())) & ids_a
    # and the script looks its elements up by its own id
    for html in (a.to_html(), b.to_html()):
        root = re.search(r'<div id="([^"]+)"', html).group(1)
        assert f'var id="{root}"' in html


def test_grid_cap_and_bad_defaults_raise():
    fn = Recorder()
    with pytest.raises(ValueError, match=r"25 states.*'a': 5, 'b': 5.*24"):
        static_explorer(fn, {"a": range(5), "b": range(5)})
    with pytest.raises(ValueError, match="cap of 3"):
        static_explorer(fn, {"a": range(2), "b": range(2)}, max_states=3)
    with pytest.raises(ValueError, match="not one of"):
        static_explorer(fn, {"a": [1, 2]}, defaults={"a": 3})
    with pytest.raises(ValueError, match="not in the grid"):
        static_explorer(fn, {"a": [1, 2]}, defaults={"z": 3})
    with pytest.raises(ValueError, match="no values"):
        static_explorer(fn, {"a": []})
    assert fn.calls == []  # nothing rendered before the checks


def test_single_values_and_fixed_are_passed_and_listed():
    fn = Recorder()
    ex = static_explorer(fn, {"a": [True, False], "b": [7]}, fixed={"c": 0.5},
                         labels={"c": "gamma"})
    html = ex.to_html()
    assert len(re.findall(r'type="range"', html)) == 1
    assert all(c["b"] == 7 and c["c"] == 0.5 for c in fn.calls)
    assert "Fixed here: gamma = 0.5, b = 7." in html
    assert "a: <b" in html and '"on"' in html and '"off"' in html


def test_use_static_reads_the_argument_then_the_environment(monkeypatch):
    assert core.use_static() is False
    assert core.use_static(True) is True
    for value, expected in (("1", True), ("yes", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv(core.STATIC_ENV, value)
        assert core.use_static() is expected
        assert core.use_static(False) is False and core.use_static(True) is True


def test_near_keeps_the_grid_size_and_holds_the_default():
    assert core.near([20.0, 200.0, 2000.0], 200.0) == [20.0, 200.0, 2000.0]
    assert core.near([20.0, 200.0, 2000.0], 500.0) == [20.0, 500.0, 2000.0]
    assert core.near([0.0, 10.0], 3.0) == [0.0, 3.0]
    assert core.near(["a", "b"], "c") == ["c", "a", "b"]


def _stub_all(monkeypatch):
    fn = Recorder()
    for module, name in ((imaging, "image_formation_figure"), (imaging, "crlb_figure"),
                         (inference, "mcmc_figure"), (inference, "deepstorm_figure"),
                         (diffusion, "diffusion_figure"), (diffusion, "uncertainty_figure")):
        monkeypatch.setattr(module, name, fn)
    walk = SimpleNamespace(path=torch.zeros(1, 8, 10, 2, 2), info={"path_t": list(range(10, 0, -1))})
    maps = {"m1": [0, 0, 0], "m2": [0, 0, 0], "m3": [0, 0, 0], "m4": [0, 0, 0]}
    builds = {
        "image_formation": (lambda **kw: widgets.image_formation_explorer(**kw),
                            dict(photons=200.0, background=0.0, gain=1.0, sigma=0.92)),
        "crlb": (lambda **kw: widgets.crlb_explorer(**kw),
                 dict(photons=200.0, background=0.0, read_var=5.0, sigma=0.92)),
        "mcmc": (lambda **kw: widgets.mcmc_explorer(n_iter=200, burn_in=50, **kw),
                 dict(beta=0.2, proposal_var=0.05, adapt=False)),
        "deepstorm": (lambda **kw: widgets.deepstorm_explorer(object(), **kw),
                      dict(photons=200.0, n_emitters=10, threshold=0.3)),
        "diffusion": (lambda **kw: widgets.diffusion_explorer(walk, **kw), dict(step=9, sample=0)),
        "uncertainty": (lambda **kw: widgets.uncertainty_explorer(maps, **kw),
                        dict(method="m1", frame=0)),
    }
    return fn, builds


def test_every_explorer_has_a_small_static_grid_starting_at_its_default(monkeypatch):
    fn, builds = _stub_all(monkeypatch)
    for name, (build, default) in builds.items():
        fn.calls.clear()
        ex = build(static=True)
        assert isinstance(ex, StaticExplorer), name
        assert 2 <= ex.n_states <= 24 and len(fn.calls) == ex.n_states, name
        assert all(n > 1 for n in ex.sizes), name
        first = fn.calls[0]
        assert {k: first[k] for k in default} == default, (name, first)
        html = ex.to_html()
        assert len(re.findall(r'type="range"', html)) == len(ex.names), name
        assert len(images(html)) == ex.n_states, name
    # the diffusion grid ends at the last step and labels steps with their t
    ex = builds["diffusion"][0](static=True)
    assert ex.values[0][-1] == 9 and ex.values[0][0] == 0
    assert "10 of 10 (t = 1)" in ex.to_html()


def test_explorer_defaults_move_into_the_static_grid(monkeypatch):
    fn, _ = _stub_all(monkeypatch)
    ex = widgets.image_formation_explorer(static=True, photons=500.0, seed=4)
    assert fn.calls[0]["photons"] == 500.0 and fn.calls[0]["seed"] == 4
    assert ex.values[ex.names.index("photons")] == [20.0, 500.0, 2000.0]
    fn.calls.clear()
    widgets.mcmc_explorer(static=True, adapt=True, photons=1000.0)
    assert fn.calls[0]["adapt"] is True and fn.calls[0]["photons"] == 1000.0


def test_environment_and_argument_pick_the_kind(monkeypatch):
    W = pytest.importorskip("ipywidgets")
    _, builds = _stub_all(monkeypatch)
    opened = []
    original_open = W.Widget.open

    def counting_open(self):
        opened.append(type(self).__name__)
        return original_open(self)

    monkeypatch.setattr(W.Widget, "open", counting_open)
    for name, (build, _) in builds.items():
        monkeypatch.delenv(core.STATIC_ENV, raising=False)
        assert isinstance(build(), W.VBox), name
        assert isinstance(build(static=True), StaticExplorer), name
        monkeypatch.setenv(core.STATIC_ENV, "1")
        opened.clear()
        assert isinstance(build(), StaticExplorer), name
        assert opened == [], f"{name}: static mode created widgets {opened}"
        assert isinstance(build(static=False), W.VBox), name
        assert opened, "the live explorer opens widgets (the check above can fail)"


def test_live_explorer_has_one_full_width_control_per_row(monkeypatch):
    W = pytest.importorskip("ipywidgets")
    _, builds = _stub_all(monkeypatch)
    box = builds["image_formation"][0](static=False)
    rows = [c for c in box.children if isinstance(c, W.HBox)]
    assert len(rows) == 7
    assert all(len(r.children) == 1 for r in rows)
    assert all(r.layout.width == "100%" and r.children[0].layout.width == "100%" for r in rows)
    notes = [c.value for c in box.children if isinstance(c, W.HTML)]
    assert any("Live explorer" in v for v in notes)


_FAKE_DOM = """
const spec = JSON.parse(process.argv[1]);
const els = {}, listeners = [];
for (const [id, value] of spec.inputs) els[id] = {value: String(value),
  addEventListener: (ev, f) => { if (ev === "input") listeners.push(f); }};
for (const id of spec.labels) els[id] = {textContent: "?"};
const imgs = spec.imgs.map(([id, k]) => ({id, style: {display: ""}, getAttribute: () => String(k)}));
for (const im of imgs) els[im.id] = im;
els[spec.root] = {querySelectorAll: () => imgs};
global.document = {getElementById: (id) => els[id] || null};
eval(spec.script);
const shown = () => imgs.filter((im) => im.style.display !== "none").map((im) => im.getAttribute());
const out = [[shown(), spec.labels.map((id) => els[id].textContent)]];
for (const [id, value] of spec.moves) {
  els[id].value = String(value);
  listeners.forEach((f) => f());
  out.push([shown(), spec.labels.map((id) => els[id].textContent)]);
}
console.log(JSON.stringify(out));
"""


def test_the_script_shows_the_state_of_the_sliders():
    """Run the inline script under node against a minimal stand-in for the DOM."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    ex = static_explorer(Recorder(), {"a": [1, 2, 3], "b": ["x", "y"]}, defaults={"a": 2})
    html = ex.to_html()
    root = re.search(r'<div id="([^"]+)"', html).group(1)
    spec = dict(
        root=root,
        inputs=re.findall(r'<input type="range" id="([^"]+)"[^>]*value="(\d+)"', html),
        labels=re.findall(r'<b id="([^"]+)">', html),
        imgs=[(re.search(r'id="([^"]+)"', i).group(1), state_of(i)) for i in images(html)],
        script=re.search(r"<script>(.*)</script>", html, re.S).group(1),
        moves=[(f"{root}-c1", 1), (f"{root}-c0", 0), (f"{root}-c0", 2)])
    out = json.loads(subprocess.run([node, "-e", _FAKE_DOM, json.dumps(spec)], check=True,
                                    capture_output=True, text=True, timeout=30).stdout)
    assert out == [[["2"], ["2", "x"]], [["3"], ["2", "y"]], [["1"], ["1", "y"]],
                   [["5"], ["3", "y"]]]
