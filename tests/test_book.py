"""The book: each chapter in _toc.yml is a jupytext pair (.md + .ipynb) in sync, the notebook is
free of outputs, the first code cell is the Colab cell generated from _config.yml, and the
chapter executes top to bottom. `python3 dev.py sync` repairs the first three."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tools.colab import TAG, colab_cell_source, is_notebook_source, repo_url_and_branch, set_colab_cell

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FIX = "run `python3 dev.py sync`"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in kernel tracebacks


def toc_documents() -> list[str]:
    """The documents of _toc.yml in reading order, without extension ("book/intro", ...)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    walk(toc.get("parts"))
    return [d[: -len(Path(d).suffix)] if Path(d).suffix in (".md", ".ipynb") else d for d in docs]


def is_notebook(doc: str) -> bool:
    """A chapter is a jupytext notebook (YAML header with `jupytext:`); a plain page
    (notation, conclusion, ...) is Markdown only."""
    path = ROOT / f"{doc}.md"
    if not path.exists():  # reported by test_toc_lists_chapters_in_book
        return True
    return is_notebook_source(path.read_text(encoding="utf-8"))


PAGES = toc_documents()
CHAPTERS = [doc for doc in PAGES if is_notebook(doc)]
PLAIN = [doc for doc in PAGES if doc not in CHAPTERS]


def pair(doc: str) -> tuple[Path, Path]:
    return ROOT / f"{doc}.md", ROOT / f"{doc}.ipynb"


def cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_toc_lists_chapters_in_book():
    assert PAGES[0] == "book/intro"
    assert all(doc.startswith("book/") for doc in PAGES), PAGES
    assert all((ROOT / f"{doc}.md").exists() for doc in PAGES), "a page of _toc.yml is missing"
    assert [doc for doc in CHAPTERS if doc[5:7].isdigit()] == sorted(
        doc for doc in CHAPTERS if doc[5:7].isdigit()), "numbered chapters out of order"


@pytest.mark.parametrize("doc", PLAIN)
def test_plain_page_has_no_code(doc):
    """A page without a jupytext header is not executed, so it must not hold code cells."""
    md, ipynb = pair(doc)
    assert "{code-cell}" not in md.read_text(encoding="utf-8"), f"{md}: code cells need a jupytext header"
    assert not ipynb.exists(), f"{ipynb}: a plain page has no notebook"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_is_a_paired_notebook(doc):
    md, ipynb = pair(doc)
    assert md.exists(), f"{md.relative_to(ROOT)} is listed in _toc.yml but missing"
    assert ipynb.exists(), f"{ipynb.relative_to(ROOT)} is missing: {FIX}"
    meta = jupytext.read(md).metadata
    assert meta.get("jupytext", {}).get("formats") == "ipynb,md:myst", f"{md}: not paired"
    assert meta.get("kernelspec", {}).get("name") == "python3", f"{md}: kernelspec"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_pair_in_sync(doc):
    md, ipynb = pair(doc)
    assert cells(jupytext.read(md)) == cells(jupytext.read(ipynb)), f"{md} and {ipynb} differ: {FIX}"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_notebook_has_no_outputs(doc):
    ipynb = pair(doc)[1]
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [i for i, c in enumerate(code_cells(nb)) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{ipynb}: code cells {dirty} carry outputs or execution counts: {FIX}"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_first_code_cell_is_colab_cell(doc):
    expected = colab_cell_source(*repo_url_and_branch(ROOT / "_config.yml"))
    for path in pair(doc):
        first = code_cells(jupytext.read(path))[0]
        assert first.source == expected, f"{path}: first code cell is not the Colab cell: {FIX}"
        assert TAG in first.metadata.get("tags", []), f"{path}: Colab cell lacks tag {TAG}"


CODE_WIDTH = 88  # characters the book's code column shows; longer lines scroll sideways


@pytest.mark.parametrize("doc", CHAPTERS)
def test_code_cells_fit_the_column(doc):
    """No line of a code cell is wider than the rendered page's code column. The Colab cell
    is exempt: tools/colab.py generates it, and the page does not show it (remove-cell)."""
    md = pair(doc)[0]
    colab = colab_cell_source(*repo_url_and_branch(ROOT / "_config.yml"))
    wide = [f"{md.relative_to(ROOT)}, code cell {k}, line {n}: {len(line)} characters: "
            f"{line.strip()}"
            for k, cell in enumerate(code_cells(jupytext.read(md))) if cell.source != colab
            for n, line in enumerate(cell.source.splitlines(), 1) if len(line) > CODE_WIDTH]
    assert not wide, (f"code lines longer than {CODE_WIDTH} characters (break them inside "
                      "brackets):\n" + "\n".join(wide))


def test_colab_cell_follows_config(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: t\nrepository:\n  url: https://example.org/a/b/  # c\n"
                      "  path_to_book: ''\n  branch: dev\nhtml:\n  url: no\n")
    url, branch = repo_url_and_branch(config)
    assert (url, branch) == ("https://example.org/a/b", "dev")
    source = colab_cell_source(url, branch)
    assert '    spec = "ualm @ git+https://example.org/a/b@dev"' in source.splitlines()
    compile(source, "colab", "exec")  # plain Python (no magics): the same cell runs anywhere

    old = "# T\n\n```{code-cell} ipython3\n:tags: [remove-cell]\n\nimport sys  # google.colab\n```\n"
    new = set_colab_cell(old, source)
    assert new == f"# T\n\n```{{code-cell}} ipython3\n:tags: [{TAG}]\n\n{source}\n```\n"
    assert set_colab_cell(new, source) == new
    # A chapter without a Colab cell gets one in front of its first code cell.
    plain = "# T\n\n```{code-cell} ipython3\nx = 1\n```\n"
    assert set_colab_cell(plain, source).endswith("```\n\n```{code-cell} ipython3\nx = 1\n```\n")


# How each chapter is executed: the quick profile as the book is built, and a smoke run of the
# full profile on the CPU (tiny sizes, two training steps, no benchmark files, as on Colab), so
# that no branch of a chapter ships unexecuted. The full profile's code paths are the gpu
# profile's: they differ in settings only (ualm.profiles).
MODES = {
    "quick": {"UALM_PROFILE": "quick"},
    "full-smoke": {"UALM_PROFILE": "full", "UALM_DEVICE": "cpu", "UALM_SMOKE": "1",
                   "UALM_RESULTS_DIR": "none"},
}


def _log_run(doc: str, mode: str, seconds: float, ok: bool) -> None:
    """One line per executed chapter in $UALM_CHAPTER_LOG (CI prints it)."""
    log = os.environ.get("UALM_CHAPTER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{doc:28s} {mode:11s} {'ok' if ok else 'FAILED':6s} {seconds:6.0f} s\n")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_executes(doc, mode, monkeypatch):
    """Top to bottom in a fresh python3 kernel, from book/ as the book build does. The cell
    timeout only catches hangs: chapters take seconds to a minute on an idle 2-core CPU, and a
    busy machine can make that several times longer."""
    for key, value in MODES[mode].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(pair(doc)[0])
    client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(BOOK)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = None
    except CellExecutionError as err:  # its message holds the cell's source and traceback
        error = ANSI.sub("", str(err))
    _log_run(doc, mode, time.perf_counter() - start, error is None)
    if error:
        pytest.fail(f"{doc} ({mode}) failed to execute:\n{error}", pytrace=False)
    # Glued numbers are formatted by the book from their repr: numpy and torch scalars
    # ("np.float64(...)", "tensor(...)") cannot be, and only fail the book build. Catch them here.
    bad = [out["data"][key] for cell in nb.cells for out in cell.get("outputs", [])
           for key in out.get("data", {}) if key.endswith("papermill.record/text/plain")
           and str(out["data"][key]).startswith(("np.", "tensor("))]
    assert not bad, f"{doc} glues values the book cannot format (wrap them in float()): {bad}"


def test_colab_cell_stops_with_a_clear_message(monkeypatch):
    """On Colab, a failed install stops the notebook with pip's message and how to fix it;
    elsewhere the cell does nothing."""
    import subprocess
    import sys
    import types

    source = colab_cell_source("https://example.org/fork", "course")
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=1, stderr="ERROR: repository not found")

    monkeypatch.setattr(subprocess, "run", fake_run)
    exec(source, {})  # not on Colab: nothing runs
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError, match="(?s)example.org/fork@course.*repository not found.*_config.yml"):
        exec(source, {})
    assert calls and calls[0][-1] == "ualm @ git+https://example.org/fork@course"


def test_exercises_are_numbered_and_listed_for_instructors():
    """Every chapter exercise is a sphinx-exercise with a label ex-<chapter>-<k>, k = 1, 2, ...
    in order, and the instructors' page lists each one."""
    labels = []
    for doc in CHAPTERS:
        text = (ROOT / f"{doc}.md").read_text(encoding="utf-8")
        found = re.findall(r"^```\{exercise\}[^\n]*\n:label: (ex-[\w-]+)", text, re.M)
        assert text.count("```{exercise}") == len(found), f"{doc}: an exercise without a label"
        chapter = Path(doc).name[:2]
        if chapter.isdigit():
            assert found == [f"ex-{int(chapter)}-{k}" for k in range(1, len(found) + 1)], (doc, found)
            labels += found
            for label in found:  # each exercise has its (folded) solution
                assert re.search(rf"^`{{3,4}}\{{solution\}} {label}\n:class: dropdown", text, re.M), label
    assert len(labels) >= 18
    listed = set(re.findall(r"\{ref\}`(ex-\d+-\d+)`", (BOOK / "instructors.md").read_text(encoding="utf-8")))
    assert set(labels) <= listed, f"not on the instructors' page: {sorted(set(labels) - listed)}"


def test_long_cells_are_folded_and_glue_cells_hidden():
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from book_ext import FOLD_LINES, fold_code_cells

    long_cell = "```{code-cell} ipython3\n" + "x = 1\n" * FOLD_LINES + "```\n"
    short_cell = "```{code-cell} ipython3\nx = 1\n```\n"
    glue_cell = '```{code-cell} ipython3\nglue("a", 1, display=False)\nglue("b", 2,\n     display=False)\n```\n'
    tagged = "```{code-cell} ipython3\n:tags: [remove-cell]\n\n" + "x = 1\n" * FOLD_LINES + "```\n"
    text = "# T\n\n" + long_cell + "\n" + short_cell + "\n" + glue_cell + "\n" + tagged
    out = fold_code_cells(text)
    assert out.count(":tags: [hide-input]") == 1 and out.count(":tags: [remove-input]") == 1
    assert short_cell in out and tagged in out  # left alone
    assert jupytext.reads(out, fmt="md:myst").cells[1].metadata["tags"] == ["hide-input"]
    assert fold_code_cells(out) == out  # idempotent: folded cells carry options now
