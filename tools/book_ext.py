"""Sphinx additions for the book, loaded through `sphinx: local_extensions` in _config.yml.

- `ualm_author_year`: a bibliography style whose labels read like the author–year citations in
  the text ("Huang et al., 2013" instead of "[HSL+13]"), sorted by author and year.
- The sphinx-thebe configuration script is added once per page: it is registered on every
  `env-before-read-docs`, which fires more than once in a build, and a second copy makes every
  page log "Identifier 'THEBE_JS_URL' has already been declared".
"""
from __future__ import annotations

from collections import Counter

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


def setup(app):
    register_plugin("pybtex.style.formatting", "ualm_author_year", AuthorYearStyle)
    app.connect("html-page-context", _dedupe_inline_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
