"""Sphinx additions for the book, loaded through `sphinx: local_extensions` in _config.yml.

- `ualm_author_year`: a bibliography style whose labels read like the author–year citations in
  the text ("Huang et al., 2013" instead of "[HSL+13]"), sorted by author and year.
- MathJax from a local copy when UALM_MATHJAX_DIR names MathJax 3's `es5` folder (npm package
  `mathjax`): it is copied to `_static/mathjax/` and the pages load it from there, so that the
  book renders its equations offline (and the browser test can check them); otherwise the
  pages load MathJax from its CDN as usual.
- Long code cells folded and glue-only cells hidden, book-wide (`fold_code_cells`).
- The sphinx-thebe configuration script is added once per page: it is registered on every
  `env-before-read-docs`, which fires more than once in a build, and a second copy makes every
  page log "Identifier 'THEBE_JS_URL' has already been declared".
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

from colab import is_notebook_source  # tools/ is on sys.path: it is this extension's folder
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    """'Cover 2006', 'Cover & Thomas 2006' or 'Huang et al. 2013' from a pybtex entry."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        who = entry.fields.get("organization") or entry.fields.get("title", "Anon.")
        who = Text.from_latex(who).render_as("text")
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} & {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        seen, counts = Counter(), Counter(labels)
        for label in labels:
            if counts[label] > 1:  # two papers of the same authors and year: 2013a, 2013b
                seen[label] += 1
                label = f"{label}{'abcdefghij'[seen[label] - 1]}"
            yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def _dedupe_inline_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        body = getattr(js, "attributes", {}).get("body")
        key = ("body", body) if body else ("file", str(js))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    scripts[:] = kept


def _local_mathjax(app):
    source = os.environ.get("UALM_MATHJAX_DIR")
    if not source or app.builder.format != "html":
        return
    source = Path(source)
    if not (source / "tex-chtml.js").is_file():
        raise FileNotFoundError(f"UALM_MATHJAX_DIR={source} has no tex-chtml.js (MathJax 3's es5 folder)")
    target = Path(app.outdir) / "_static" / "mathjax"
    shutil.copytree(source, target, dirs_exist_ok=True)
    app.config.mathjax_path = "mathjax/tex-chtml.js"  # relative to _static


# Folding, book-wide: a code cell with at least FOLD_LINES lines of source is shown folded
# (its output stays visible, "Show code cell source" opens it); a cell that only glues numbers
# for the prose is not shown at all. A cell that sets its own tags or options is left alone.
FOLD_LINES = 15
_CELL = re.compile(r"^(?P<fence>`{3,})\{code-cell\}(?P<head>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.M | re.S)


def fold_code_cells(text: str) -> str:
    """MyST notebook source with `:tags: [hide-input]` on long cells and `[remove-input]` on
    glue-only cells (see FOLD_LINES)."""
    def fold(m):
        body = m.group("body")
        if body.startswith((":", "---")):  # options of its own (tags, mystnb, ...)
            return m.group(0)
        lines = [line for line in body.splitlines() if line.strip()]
        code = [line for line in lines if not line.lstrip().startswith("#")]
        if code and all(line.startswith(("glue(", " ")) for line in code) and code[0].startswith("glue("):
            tag = "remove-input"
        elif len(lines) >= FOLD_LINES:
            tag = "hide-input"
        else:
            return m.group(0)
        return f"{m.group('fence')}{{code-cell}}{m.group('head')}\n:tags: [{tag}]\n\n{body}{m.group('fence')}"
    return _CELL.sub(fold, text)


def _fold_source(app, docname, source):
    if source and is_notebook_source(source[0]):
        source[0] = fold_code_cells(source[0])


def setup(app):
    app.connect("source-read", _fold_source)
    app.connect("builder-inited", _local_mathjax)
    register_plugin("pybtex.style.formatting", "ualm_author_year", AuthorYearStyle)
    app.connect("html-page-context", _dedupe_inline_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
