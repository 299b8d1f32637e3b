"""Layers: the modules that model, simulate, infer and score do not import the training loop,
the networks, the bundled weights or the book-facing layers above them (imports inside
functions included). A lower layer that needs one of those is a design leak: pass the object in."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ualm"
UPPER = {"train", "models", "pretrained", "profiles", "uncertainty", "localize", "results", "session", "cli",
         "widgets", "plotting", "protocols"}
LOWER = ["camera", "checks", "config", "defaults", "sampling", "seeding", "psf", "simulate", "likelihood",
         "fisher", "mle", "mcmc", "mcmc_result", "diagnostics", "posterior", "detect", "calibration",
         "diffusion", "oracle", "sources", "tiles", "movie", "render", "export", "tables", "progress",
         "device", "checkpoints", "threads"]


def imported_modules(path: Path) -> set[str]:
    """First component of every ualm module that `path` imports, relative or absolute."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import a, b
                out.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("ualm."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ualm."))
    return out


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    modules |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules <= UPPER | set(LOWER), f"put {sorted(modules - UPPER - set(LOWER))} in a layer"


@pytest.mark.parametrize("module", LOWER)
def test_lower_layers_do_not_reach_up(module):
    leaks = imported_modules(PACKAGE / f"{module}.py") & UPPER
    assert not leaks, f"ualm.{module} imports {sorted(leaks)} from a layer above it"


def test_the_check_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .train import x\n    from . import models\nimport ualm.pretrained\n")
    assert imported_modules(src) == {"train", "models", "pretrained"}


def test_configs_round_trip_through_json():
    """Every config travels as JSON (checkpoints, manifests) and comes back equal, tuples included."""
    import json

    import ualm
    from ualm.models.deepstorm import DeepSTORMConfig
    from ualm.models.unet import PRESETS
    from ualm.train import TrainConfig

    for cfg in (TrainConfig(steps=3), DeepSTORMConfig(), PRESETS["small"], ualm.SimConfig().replace(count=(1, 20))):
        if cfg is not None and isinstance(cfg, ualm.SimConfig):
            assert cfg.count == (1, 20)  # SimConfig holds a Camera: it has replace, not JSON
            continue
        back = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg, type(cfg).__name__
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        type(PRESETS["small"]).from_dict({"widht": 3})
