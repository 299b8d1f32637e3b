"""The detector sweep that chapter 4's oracle claim rests on. The chapters' other claims are
numbers, glued into the prose and checked by hidden asserts when the chapters execute
(tests/test_book.py), not phrases searched for in the text."""
import pytest
import torch

import ualm
from ualm import detect, protocols


def test_detector_sweep_shows_the_oracle_depends_on_the_settings():
    """On 40 frames of the paper's protocol the oracle's recall at the paper's LoG settings is
    one point of a range: smaller scales with more overlap split merged pairs."""
    gen = ualm.make_generator(11)
    data = ualm.simulate_batch(40, ualm.SimConfig(), generator=gen, dtype=torch.float32)
    y = detect.oracle_kdes(data["theta"], data["mask"], 3.0)
    rows = protocols.detector_sweep(y, data["theta"], data["mask"], 3.0,
                                    min_sigmas=(1.5, 0.5), overlaps=(0.5, 1.0))
    assert [(r["min_sigma"], r["overlap"]) for r in rows] == [(1.5, 0.5), (1.5, 1.0),
                                                               (0.5, 0.5), (0.5, 1.0)]
    assert [r["default"] for r in rows] == [True, False, False, False]
    reference = detect.evaluate_kdes(y, data["theta"], data["mask"], 3.0)
    assert rows[0]["recall"] == reference.recall and rows[0]["precision"] == reference.precision
    assert max(r["recall"] for r in rows) > rows[0]["recall"] + 0.05
    with pytest.raises(ValueError, match="overlaps"):
        protocols.detector_sweep(y, data["theta"], data["mask"], 3.0, (1.5,), (1.5,))
