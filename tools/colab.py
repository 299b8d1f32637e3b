"""The Colab install cell that opens every chapter, generated from ``_config.yml``.

Standard library only: ``dev.py`` runs it with the system Python, and the tests import it too.
"""
from __future__ import annotations

import re
from pathlib import Path

FIRST_LINE = "# On Colab, install ualm from the repository (does nothing elsewhere)."
TAG = "remove-cell"

# The first MyST code cell of a chapter: its fence line, its options, its source, its closing fence.
_FIRST_CODE_CELL = re.compile(r"^(`{3,})\{code-cell\}[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)


def is_notebook_source(text: str) -> bool:
    """Whether a book page's Markdown is a jupytext notebook (a chapter: YAML front matter with
    a `jupytext:` key) rather than a plain page."""
    return text.startswith("---") and "\njupytext:" in text.split("\n---", 1)[0]


def repo_url_and_branch(config_path: str | Path = "_config.yml") -> tuple[str, str]:
    """``repository.url`` and ``repository.branch`` (default "main") of a Jupyter Book config."""
    text = Path(config_path).read_text(encoding="utf-8")
    block = re.search(r"^repository:[ \t]*\n((?:[ \t]+\S.*\n?|[ \t]*\n)*)", text, re.M)
    if block is None:
        raise ValueError(f"{config_path}: no 'repository:' section")

    def key(name: str) -> str | None:
        m = re.search(rf"^[ \t]+{name}:[ \t]*[\"']?([^\"'\s#]*)", block.group(1), re.M)
        return m.group(1) if m and m.group(1) else None

    url = key("url")
    if url is None:
        raise ValueError(f"{config_path}: 'repository.url' is not set")
    return url.rstrip("/"), key("branch") or "main"


def colab_cell_source(url: str, branch: str) -> str:
    """Source of the first code cell: installs ualm from ``url@branch`` on Colab only, and
    stops the notebook with pip's message when that fails (a wrong URL or branch, no network)."""
    return "\n".join([
        FIRST_LINE,
        "import sys",
        'if "google.colab" in sys.modules:',
        "    import subprocess",
        f'    spec = "ualm @ git+{url}@{branch}"',
        '    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec],',
        "                         capture_output=True, text=True)",
        "    if pip.returncode:",
        '        raise RuntimeError(f"could not install {spec}:\\n{pip.stderr[-1500:]}\\n"',
        '                           "A fork or a course sets its own repository.url in _config.yml "',
        '                           "and runs `python3 dev.py sync` (see the README).")',
    ])


def set_colab_cell(md_text: str, source: str) -> str:
    """A MyST chapter whose first code cell is the Colab cell ``source``: an older Colab cell
    is replaced, otherwise the cell is inserted before the first code cell."""
    cell = f"```{{code-cell}} ipython3\n:tags: [{TAG}]\n\n{source}\n```"
    first = _FIRST_CODE_CELL.search(md_text)
    if first is None:
        raise ValueError("the chapter has no code cell")
    old = first.group(0)
    keep = "" if "google.colab" in old else "\n\n" + old
    return md_text[: first.start()] + cell + keep + md_text[first.end():]
