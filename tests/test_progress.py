"""Progress bars follow `progress=` unless TQDM_DISABLE is set (the book build sets it)."""
import pytest
import torch

from ualm.mcmc import rwmh
from ualm.progress import show_progress


@pytest.mark.parametrize("env, progress, shown", [(None, True, True), (None, False, False),
                                                  ("1", True, False), ("true", True, False),
                                                  ("0", True, True), ("", True, True)])
def test_show_progress(monkeypatch, env, progress, shown):
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert show_progress(progress) is shown


def test_no_bar_when_disabled(monkeypatch, capsys):
    def log_prob(z):
        return -0.5 * (z ** 2).sum(-1)

    init = torch.zeros(2, 1, dtype=torch.float64)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    rwmh(log_prob, init, n_iter=50, burn_in=10, progress=True)
    assert "it/s" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    rwmh(log_prob, init, n_iter=50, burn_in=10, progress=True)
    assert "%|" in capsys.readouterr().err


def test_chapter_bars_follow_the_rule(monkeypatch):
    from ualm.progress import tqdm

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert tqdm(range(3)).disable
    monkeypatch.delenv("TQDM_DISABLE")
    assert not tqdm(range(3), file=open("/dev/null", "w")).disable
