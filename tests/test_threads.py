"""Thread choice for loops of small ops: fewer threads when other processes keep the cores busy,
the user's setting restored after, and fits that do not depend on it."""
import os
import subprocess
import sys
import time

import pytest
import torch

import ualm
from ualm import threads


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: `cores` CPUs, `others` runnable tasks elsewhere, this process's reader."""
    state = {"cores": 4, "others": 0}
    monkeypatch.setattr(os, "cpu_count", lambda: state["cores"])
    monkeypatch.setattr(threads, "_running", lambda path: state["others"] + 1)
    monkeypatch.setattr(threads, "_own_running", lambda: 1)
    return state


def test_spare_threads_leaves_the_busy_cores(machine):
    assert threads.spare_threads(4) == 4
    machine["others"] = 1
    assert threads.spare_threads(4) == 3
    assert threads.spare_threads(2) == 2  # enough cores left
    machine["others"] = 3
    assert threads.spare_threads(2) == 1
    machine["others"] = 9  # oversubscribed: still one thread
    assert threads.spare_threads(4) == 1
    assert threads.spare_threads(1) == 1


def test_spare_threads_defaults_to_torch_and_keeps_it_where_nothing_is_known(machine, monkeypatch):
    n = torch.get_num_threads()
    assert threads.spare_threads() == min(n, 4)
    monkeypatch.setattr(threads, "_running", lambda path: None)  # not Linux
    machine["others"] = 9
    assert threads.busy_elsewhere() is None
    assert threads.spare_threads(3) == 3


def test_own_threads_are_not_counted_as_others(monkeypatch):
    monkeypatch.setattr(threads, "_running", lambda path: 3)
    monkeypatch.setattr(threads, "_own_running", lambda: 3)  # e.g. our own workers, still spinning
    assert threads.busy_elsewhere() == 0


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux /proc")
def test_a_spinning_process_is_seen():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        seen = [threads.busy_elsewhere() for _ in range(5)]
    finally:
        spin.kill()
        spin.wait()
    assert max(seen) >= 1, seen
    assert threads._own_running() >= 1  # the reading thread itself


def test_cpu_threads_restores_the_setting_after_an_error():
    n = torch.get_num_threads()
    want = 1 if n != 1 else 2
    with pytest.raises(RuntimeError):
        with threads.cpu_threads(want):
            assert torch.get_num_threads() == want
            raise RuntimeError
    assert torch.get_num_threads() == n
    with threads.cpu_threads(want, "meta"):  # not the CPU: left alone
        assert torch.get_num_threads() == n


def test_fit_mle_threads_do_not_change_the_fit():
    gen = ualm.make_generator(5)
    theta = 3 + 0.5 * (torch.rand((300, 1, 2), generator=gen, dtype=torch.float64) - 0.5)
    x = ualm.PAPER_CAMERA.sample(ualm.expected_frame(theta, 300.0, 0.92, 10.0, (7, 7)), gen)
    n = torch.get_num_threads()
    one, two = ualm.fit_mle(x, num_threads=1), ualm.fit_mle(x, num_threads=2)
    assert torch.get_num_threads() == n
    torch.testing.assert_close(one.theta, two.theta, rtol=0, atol=1e-9)
    torch.testing.assert_close(one.std, two.std, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="num_threads"):
        ualm.fit_mle(x, num_threads=0)


def test_fit_mle_in_chunks_equals_one_call(monkeypatch):
    gen = ualm.make_generator(6)
    theta = 3 + 0.5 * (torch.rand((250, 1, 2), generator=gen, dtype=torch.float64) - 0.5)
    x = ualm.PAPER_CAMERA.sample(ualm.expected_frame(theta, 150.0, 0.92, 10.0, (7, 7)), gen)
    init = torch.cat((theta[:, 0] + 0.2, torch.full((250, 1), 120.0), torch.full((250, 1), 8.0)), 1)
    whole = ualm.fit_mle(x, init=init)
    monkeypatch.setattr(ualm.mle, "CPU_CHUNK", 100)  # chunks of 100, 100 and 50 frames
    parts = ualm.fit_mle(x, init=init)
    assert parts.iterations == whole.iterations
    for name in ("theta", "photons", "background", "nll", "std", "chi2", "chi2_std", "llr"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), rtol=1e-9, atol=1e-9)
    for name in ("converged", "at_bound", "chi2_mean"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name
    with pytest.raises(ValueError, match="init"):
        ualm.fit_mle(x, init=init[:10])


def test_small_op_loops_use_one_thread_where_openmp_sleeps(machine, monkeypatch):
    monkeypatch.setattr(threads, "OPENMP_SLEEPS", True)
    assert threads.small_op_threads(4) == 1
    monkeypatch.setattr(threads, "OPENMP_SLEEPS", False)
    assert threads.small_op_threads(4) == 4
    machine["others"] = 3
    assert threads.small_op_threads(4) == 1


@pytest.mark.parametrize("code, env, sleeps", [
    ("import ualm", {}, True),  # the book's order: ualm sets PASSIVE before torch loads OpenMP
    ("import torch, ualm", {}, False),  # too late: OpenMP keeps its default wait
    ("import ualm", {"OMP_WAIT_POLICY": "active"}, False),  # the user's choice stands
    ("import torch, ualm", {"OMP_WAIT_POLICY": "passive"}, True),
    ("import ualm", {"OMP_WAIT_POLICY": ""}, False),  # set but empty: OpenMP keeps its default
])
def test_import_records_whether_openmp_sleeps(code, env, sleeps):
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", f"{code}; print(ualm.threads.OPENMP_SLEEPS)"],
                         env={**base, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sleeps)
