#!/usr/bin/env python3
"""Set up a virtual environment, then test the package or build the book. Standard library only.

    python3 dev.py test [PYTEST ARGS]  # pytest in the venv, UALM_PROFILE=quick
    python3 dev.py book [--clean]      # jupyter-book build . -W --keep-going  ->  _build/html
    python3 dev.py sync                # Colab cells from _config.yml, then .md -> .ipynb pairs

The venv is .venv (or $UALM_VENV). Torch is installed first, from $UALM_TORCH_SPEC (default
torch==2.13.0, a CPU build on the project's machines; a bare `pip install torch` would pull a
CUDA build of several GB), then `pip install -e .[book,test]`, again only when pyproject.toml
changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("UALM_VENV") or ROOT / ".venv")
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = str(BIN / "python")
TORCH_SPEC = os.environ.get("UALM_TORCH_SPEC", "torch==2.13.0")
STAMP = VENV / ".ualm-pyproject.sha256"


def run(*cmd: str, env: dict | None = None) -> int:
    print("+", shlex.join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def check(*cmd: str) -> None:
    if run(*cmd):
        sys.exit(f"dev.py: command failed: {shlex.join(cmd)}")


def setup() -> dict:
    """Create and fill the venv where needed; return an environment that runs inside it."""
    if not Path(PY).exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.call([PY, "-c", "import torch"], **quiet):
        check(PY, "-m", "pip", "install", TORCH_SPEC)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        check(PY, "-m", "pip", "install", "-e", ".[book,test]")
        STAMP.write_text(digest + "\n")
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHOME", None)
    # Quick-mode tensors are small: one BLAS/OpenMP thread is as fast and far steadier when the
    # CPU is shared. Set OMP_NUM_THREADS yourself to override.
    env.setdefault("OMP_NUM_THREADS", "1")
    # Sleeping rather than spinning OpenMP threads, as `import ualm` sets for the chapters.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def test(args: list[str]) -> int:
    env = setup()
    env.update(UALM_PROFILE="quick", MPLBACKEND="Agg")
    return run(PY, "-m", "pytest", "-q", *args, env=env)


def book(args: list[str]) -> int:
    if args not in ([], ["--clean"]):
        sys.exit("usage: python3 dev.py book [--clean]")
    env = setup()
    env.setdefault("UALM_PROFILE", "quick")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend puts the figures in the book
    # Progress bars help someone running a notebook; on a web page they are noise.
    env.setdefault("TQDM_DISABLE", "1")
    # Explorers in the rendered book have no kernel: they show precomputed states instead.
    env.setdefault("UALM_STATIC_WIDGETS", "1")
    if args and (ROOT / "_build").exists():
        print("dev.py: removing _build", flush=True)
        shutil.rmtree(ROOT / "_build")
    code = run(str(BIN / "jupyter-book"), "build", ".", "-W", "--keep-going", env=env)
    print(f"dev.py: book {'built in _build/html' if code == 0 else 'FAILED'}", flush=True)
    return code


def strip_outputs(path: Path) -> None:
    """Clear outputs and execution counts of a notebook, written as nbformat writes it."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    new = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        print(f"dev.py: outputs stripped from {path.relative_to(ROOT)}", flush=True)
        path.write_text(new, encoding="utf-8")


def sync(args: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tools.colab import colab_cell_source, is_notebook_source, repo_url_and_branch, set_colab_cell

    setup()
    # Chapters are the jupytext pairs; plain pages (notation, conclusion, ...) have no notebook.
    chapters = sorted(p for p in (ROOT / "book").glob("*.md")
                      if is_notebook_source(p.read_text(encoding="utf-8")))
    jupytext = [str(BIN / "jupytext"), "--sync"]
    # Take in edits made on either side of each pair (the newer file wins; cell ids are kept) ...
    check(*jupytext, *(str(p.relative_to(ROOT)) for p in chapters))
    # ... set the Colab cell from _config.yml in the .md, and carry it over to the .ipynb ...
    source = colab_cell_source(*repo_url_and_branch(ROOT / "_config.yml"))
    for path in chapters:
        old = path.read_text(encoding="utf-8")
        new = set_colab_cell(old, source)
        if new != old:
            print(f"dev.py: Colab cell of {path.relative_to(ROOT)} updated", flush=True)
            path.write_text(new, encoding="utf-8")
            check(*jupytext, str(path.relative_to(ROOT)))
    # ... and keep the notebooks free of outputs.
    for path in chapters:
        strip_outputs(path.with_suffix(".ipynb"))
    return 0


COMMANDS = {"test": test, "book": book, "sync": sync}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
