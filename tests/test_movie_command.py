"""`python -m ualm localize`: a movie localized in resumable chunks, by one process or by two
torchrun ranks sharing the chunks, merged into the same table either way."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ualm
from ualm import make_generator, movie
from ualm.localize import COLUMNS, merge_parts


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    d = tmp_path_factory.mktemp("acq")
    cfg = movie.MovieConfig(shape=(24, 24), frames=48, dark_frames=200, n_structures=2, length=18.0, p_on=0.01)
    m = movie.simulate_movie(cfg, generator=make_generator(21))
    movie.save_movie(m, d)
    return d, m


def run_cli(args, torchrun: int = 0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ualm.__file__).parents[1])}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m"] \
        if torchrun else [sys.executable, "-m"]
    proc = subprocess.run([*launch, "ualm", "localize", *args, "--threads", "1", "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_one_process_and_two_ranks_give_the_same_table(acquisition, tmp_path):
    d, m = acquisition
    common = [str(d / "movie.tif"), "--dark", str(d / "dark.tif"), "--chunk", "8"]
    out = run_cli([*common, "--out", str(tmp_path / "one")])
    assert "localizations in 48 frames" in out and (tmp_path / "one" / "locs.csv").is_file()
    run_cli([*common, "--out", str(tmp_path / "two")], torchrun=2)
    one, two = merge_parts(tmp_path / "one", 48, 8), merge_parts(tmp_path / "two", 48, 8)
    assert len(one["x"]) > 20
    for c in COLUMNS:
        np.testing.assert_array_equal(one[c], two[c])
    assert (tmp_path / "two" / "locs.hdf5").is_file()


def test_an_interrupted_run_resumes_with_the_missing_chunks_only(acquisition, tmp_path):
    d, _ = acquisition
    args = [str(d / "movie.tif"), "--dark", str(d / "dark.tif"), "--chunk", "16", "--out", str(tmp_path)]
    run_cli(args)
    parts = sorted((tmp_path / "parts").glob("*.npz"))
    assert len(parts) == 3
    before = merge_parts(tmp_path, 48, 16)
    parts[1].unlink()  # as if the run had stopped before its second chunk
    with pytest.raises(FileNotFoundError, match="1 of 3 chunks"):
        merge_parts(tmp_path, 48, 16)
    kept = {p: p.stat().st_mtime_ns for p in (parts[0], parts[2])}
    run_cli(args)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # not redone
    after = merge_parts(tmp_path, 48, 16)
    for c in COLUMNS:
        np.testing.assert_array_equal(before[c], after[c])
