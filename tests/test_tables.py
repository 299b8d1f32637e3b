"""The markdown table helper of the chapters."""
import pytest

from ualm.tables import markdown_table


class _Result:
    def as_row(self):
        return {"tp": 1, "recall": 1.0, "frames": [1, 2]}


def test_markdown_table():
    rows = [{"name": "a", "n": 3, "x": 0.12345}, {"name": "b", "n": 10, "x": 2.0}]
    assert markdown_table(rows) == ("| name | n | x |\n|---|---|---|\n"
                                    "| a | 3 | 0.1235 |\n| b | 10 | 2 |")
    text = markdown_table(rows, {"x": "x (px)", "name": "method"},
                          formats={"x": ".2f", "name": str.upper})
    assert text.splitlines() == ["| x (px) | method |", "|---|---|", "| 0.12 | A |", "| 2.00 | B |"]
    assert markdown_table([_Result()], ["tp", "recall"]).splitlines()[-1] == "| 1 | 1 |"
    with pytest.raises(KeyError, match="missing"):
        markdown_table(rows, ["missing"])
