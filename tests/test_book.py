"""The book: each chapter in _toc.yml is a jupytext pair (.md + .ipynb) in sync, the notebook is
free of outputs, the first code cell is the Colab cell generated from _config.yml, and the
chapter executes top to bottom. `python3 dev.py sync` repairs the first three."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tools.colab import TAG, colab_cell_source, repo_url_and_branch, set_colab_cell

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


CHAPTERS = toc_documents()


def pair(doc: str) -> tuple[Path, Path]:
    return ROOT / f"{doc}.md", ROOT / f"{doc}.ipynb"


def cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_toc_lists_chapters_in_book():
    assert CHAPTERS[0] == "book/intro"
    assert all(doc.startswith("book/") for doc in CHAPTERS), CHAPTERS


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


def test_colab_cell_follows_config(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: t\nrepository:\n  url: https://example.org/a/b/  # c\n"
                      "  path_to_book: ''\n  branch: dev\nhtml:\n  url: no\n")
    url, branch = repo_url_and_branch(config)
    assert (url, branch) == ("https://example.org/a/b", "dev")
    source = colab_cell_source(url, branch)
    assert source.splitlines()[-1] == '    %pip install -q "ualm @ git+https://example.org/a/b@dev"'

    old = "# T\n\n```{code-cell} ipython3\n:tags: [remove-cell]\n\nimport sys  # google.colab\n```\n"
    new = set_colab_cell(old, source)
    assert new == f"# T\n\n```{{code-cell}} ipython3\n:tags: [{TAG}]\n\n{source}\n```\n"
    assert set_colab_cell(new, source) == new
    # A chapter without a Colab cell gets one in front of its first code cell.
    plain = "# T\n\n```{code-cell} ipython3\nx = 1\n```\n"
    assert set_colab_cell(plain, source).endswith("```\n\n```{code-cell} ipython3\nx = 1\n```\n")


@pytest.mark.slow
@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_executes(doc, monkeypatch):
    """Top to bottom in a fresh python3 kernel, in quick mode, from book/ as the book build does."""
    monkeypatch.setenv("UALM_PROFILE", "quick")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(pair(doc)[0])
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(BOOK)}})
    try:
        client.execute()
        error = None
    except CellExecutionError as err:  # its message holds the cell's source and traceback
        error = ANSI.sub("", str(err))
    if error:
        pytest.fail(f"{doc} failed to execute:\n{error}", pytrace=False)
    # Glued numbers are formatted by the book from their repr: numpy and torch scalars
    # ("np.float64(...)", "tensor(...)") cannot be, and only fail the book build. Catch them here.
    bad = [out["data"][key] for cell in nb.cells for out in cell.get("outputs", [])
           for key in out.get("data", {}) if key.endswith("papermill.record/text/plain")
           and str(out["data"][key]).startswith(("np.", "tensor("))]
    assert not bad, f"{doc} glues values the book cannot format (wrap them in float()): {bad}"
