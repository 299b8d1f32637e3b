"""Markdown tables of results, for the book: `markdown_table(rows, columns, formats)`.

Rows are dicts or results with `as_row()` (the protocol results of `ualm.protocols`, the
metrics of `ualm.detect`). Show the table in a notebook with
`IPython.display.Markdown(markdown_table(...))`.
"""
from __future__ import annotations

import math
import re
from numbers import Integral, Real

__all__ = ["Sci", "markdown_table", "readable"]

_E_NOTATION = re.compile(r"^([-+]?\d+(?:\.\d+)?)e([-+])0*(\d+)$")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
NBSP = "\u00a0"  # keeps "6.5 × 10⁻³" on one line in a narrow column


def readable(text: str) -> str:
    """A formatted number as a reader writes it: "6.45e-03" -> "6.45 × 10⁻³", "nan" -> "—"."""
    if text.strip().lower() in ("nan", "-nan"):
        return "—"
    m = _E_NOTATION.match(text.strip())
    if not m:
        return text
    mantissa, sign, exponent = m.groups()
    if exponent == "0":
        return mantissa
    power = ("-" if sign == "-" else "") + exponent
    return f"{mantissa}{NBSP}×{NBSP}10{power.translate(_SUPERSCRIPT)}"


class Sci(float):
    """A number that shows as a reader writes it: `glue("err", Sci(3.2e-7, ".1e"))` puts
    "3.2 × 10⁻⁷" in the prose through `{glue:text}`err`` (no format spec: the text is the repr)."""

    def __new__(cls, value, spec: str = ".1e"):
        self = super().__new__(cls, value)
        self.spec = spec
        return self

    def __repr__(self) -> str:
        return readable(format(float(self), self.spec))

    __str__ = __repr__


def _cell(value, fmt) -> str:
    # a "|" inside a cell would end it and shift the row ("mean |z|"): escape it
    return readable(_text(value, fmt)).replace("|", "\\|")


def _text(value, fmt) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if callable(fmt):
        return str(fmt(value))
    if fmt is not None:
        return format(value, fmt)
    if isinstance(value, (bool, Integral, str)):
        return str(value)
    if isinstance(value, Real):
        return format(value, ".4g")
    return str(value)


def markdown_table(rows, columns=None, formats=None) -> str:
    """A GitHub-flavoured markdown table, one line per row.

    rows: dicts, or objects with `as_row()` returning one.
    columns: the keys to show, in order, as a list (the key is the header) or a dict
      key -> header; default every key of the first row.
    formats: key -> format spec (".3f") or a function of the value returning the cell text;
      without one, ints and text print as they are and other numbers with ".4g".
    """
    rows = [r.as_row() if hasattr(r, "as_row") else r for r in rows]
    if columns is None:
        columns = list(rows[0]) if rows else []
    if not isinstance(columns, dict):
        columns = {k: k for k in columns}
    formats = formats or {}
    missing = [k for k in columns if any(k not in r for r in rows)]
    if missing:
        raise KeyError(f"rows lack the columns {missing}")
    lines = ["| " + " | ".join(_cell(str(h), None) for h in columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[k], formats.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)
