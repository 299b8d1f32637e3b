"""The markdown table helper of the chapters."""
import pytest

from ualm.tables import markdown_table, readable


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


def test_numbers_read_as_people_write_them():
    """E-notation becomes a power of ten that does not break across lines; NaN and None are "—"."""
    rows = [{"mse": 6.45e-3, "big": 1.2e12, "none": None, "nan": float("nan"), "one": 3.0e0}]
    text = markdown_table(rows, formats={"mse": ".2e", "big": ".1e", "one": ".1e"}).splitlines()[-1]
    assert text == "| 6.45\u00a0×\u00a010⁻³ | 1.2\u00a0×\u00a010¹² | — | — | 3.0 |"
    assert readable("0.0065") == "0.0065" and readable("method nan-free") == "method nan-free"


def test_sci_shows_as_a_power_of_ten_and_stays_a_number():
    from ualm.tables import Sci
    v = Sci(3.24e-7, ".1e")
    assert repr(v) == str(v) == "3.2\u00a0×\u00a010⁻⁷"
    assert v == 3.24e-7 and v * 2 == 6.48e-7
