"""The wheel that the Colab cell installs: it carries the bundled weights and their manifests,
and `ualm.pretrained.load` works from it in an environment that has never seen the repository."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "ualm" / "pretrained"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so that setuptools' build/ and egg-info
    # land in the temporary folder, not in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ualm", src / "ualm", ignore=shutil.ignore_patterns("__pycache__"))
    # No build isolation: nothing may be downloaded; setuptools comes with the environment.
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
           "-q", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = list(out.glob("ualm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_weights_and_manifests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = sorted(p.name for p in PRETRAINED.iterdir() if p.suffix in (".pt", ".json"))
    assert bundled, "no bundled weights in the repository"
    missing = [n for n in bundled if f"ualm/pretrained/{n}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert "ualm/pretrained/README.md" in names  # the commands and metrics travel with them
    assert not any(n.startswith(("tests/", "book/", "benchmarks/", "runs/")) for n in names)


def test_wheel_loads_weights_in_a_clean_environment(wheel, tmp_path):
    """A fresh venv holding only the wheel: the repository is not on its path, torch and the
    other dependencies come from this environment's site-packages (a .pth line, which adds the
    directory without running its editable-install hooks)."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        "import json, pathlib, ualm\n"
        "from ualm import pretrained\n"
        "print(json.dumps({'file': ualm.__file__, 'names': sorted(pretrained.available()),\n"
        "                  'params': sum(p.numel() for p in pretrained.load('deepstorm_quick').parameters())}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(py), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).is_relative_to(site), f"ualm imported from {info['file']}, not the wheel"
    assert "deepstorm_quick" in info["names"] and "diffusion_quick" in info["names"]
    assert info["params"] > 0
