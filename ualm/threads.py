"""How many torch threads to give loops of many small tensor operations (fit_mle, MCMC) on the CPU.

Intra-op threads meet at a barrier after every operation. Where they spin while they wait,
2 threads fit faster than 1 on an idle machine; beside another busy process the barrier waits
for a thread that is not running, and 2 threads fit several times slower than 1
(benchmarks/busy_neighbour.py and benchmarks/peer_picasso.py measure both). So such loops use
only the cores that no other process is running on at the time of the call, and only one
thread where the others would have to be woken for every operation."""
from __future__ import annotations

import contextlib
import os
import time

import torch


def _running(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running() -> int:
    """Threads of this process that are running or runnable now (Linux)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                # the state follows the command name, which sits in parentheses
                count += f.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            pass
    return count


def busy_elsewhere() -> int | None:
    """Tasks that other processes are running now (runnable threads in /proc/loadavg, less this
    process's own), or None where the system does not say (not Linux). The least of three reads,
    half a millisecond apart: a process that keeps a core busy is runnable in all three, a
    passing one (or this process's own workers on their way to sleep) is not."""
    reads = []
    for k in range(3):
        if k:
            time.sleep(5e-4)
        before = _own_running()
        total = _running("/proc/loadavg")
        if total is None:
            return None
        # this process's worker threads go to sleep just after an operation: take the larger
        # of its counts before and after the system's, so that they are not counted as others
        reads.append(max(0, total - max(before, _own_running())))
    return min(reads)


def spare_threads(requested: int | None = None) -> int:
    """`requested` threads (default torch.get_num_threads()), fewer if other processes keep the
    machine's cores busy now: at most the cores they leave free, and at least 1."""
    want = torch.get_num_threads() if requested is None else int(requested)
    if want <= 1:
        return 1
    cores = os.cpu_count() or 1
    total = _running("/proc/loadavg")
    if total is None or cores - (total - 1) >= want:  # the quick answer: the reader alone is 1
        return want
    others = busy_elsewhere()
    return want if others is None else max(1, min(want, cores - others))


# Whether torch's OpenMP threads sleep between operations (OMP_WAIT_POLICY=PASSIVE, which
# `import ualm` sets unless torch was imported first or the user chose): set by ualm/__init__.
OPENMP_SLEEPS = False


def small_op_threads(requested: int | None = None) -> int:
    """Threads for a loop of many small operations: 1 where OpenMP's threads sleep between
    operations, else `spare_threads(requested)`. Waking a thread for every operation made
    fit_mle slower on 2 threads than on 1 on an idle machine (4000 7 × 7 spots, fresh
    processes: 24–25k against 32k fits/s at 100 photons); on 11 × 11 windows the two are about
    equal (benchmarks/busy_neighbour.py)."""
    return 1 if OPENMP_SLEEPS else spare_threads(requested)


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device | str = "cpu"):
    """torch.set_num_threads(n) for a `with` block on the CPU, the previous setting restored
    after it; nothing on other devices."""
    old = torch.get_num_threads()
    change = torch.device(device).type == "cpu" and n != old
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change and torch.get_num_threads() != old:
            torch.set_num_threads(old)
