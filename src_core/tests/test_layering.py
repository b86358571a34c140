"""The seams: the plugin talks to the core through the facade, models describe themselves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepreg_core import api, synth, zoo
from deepreg_core.image import Image
from deepreg_core.inference import register
from deepreg_core.models import AffineNet, build_model
from deepreg_core.training.config import TrainConfig
from deepreg_core.zoo.spec import SPEC_KEY, LoadedModel, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"deepreg_core": ROOT / "src_core" / "deepreg_core",
            "napari_deepreg": ROOT / "napari_deepreg"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_the_plugin_imports_only_the_core_facade():
    found = []
    for path in PACKAGES["napari_deepreg"].rglob("*.py"):
        for module, names in _imports(path):
            if module == "deepreg_core":
                found += [(path.name, f"deepreg_core.{n}") for n in names if n != "api"]
            elif module.startswith("deepreg_core.") and module != "deepreg_core.api":
                found.append((path.name, module))
    assert found == []


def test_no_module_imports_a_private_name_from_another():
    found = []
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            for module, names in _imports(path):
                if module.split(".")[0] not in PACKAGES:
                    continue
                # private *modules* of a package are its own business; private names are not
                found += [(path.name, module, n) for n in names
                          if n.startswith("_") and not n.startswith("__")
                          and not (folder / f"{n}.py").exists()]
    assert found == []


def test_the_facade_names_resolve_and_import_lazily():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    code = ("import sys, deepreg_core.api; "
            "print('torch' in sys.modules, 'deepreg_core.inference' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_shipped_weights_carry_their_spec_and_it_matches_the_config():
    from deepreg_core.training.checkpoint import tensor_metadata

    for name in ("affine-2d", "affine-3d", "deformable-2d", "deformable-3d", "global-local-2d"):
        entry = zoo.get(name)
        stored = tensor_metadata(entry.path / "weights.safetensors")[SPEC_KEY]
        spec = ModelSpec.from_json(stored)
        assert spec == ModelSpec.from_config(name, entry.config())
        loaded = zoo.load(name)
        assert isinstance(loaded, LoadedModel) and loaded.spec == spec
        assert loaded.working_shape((500, 500, 500)[: spec.ndim]) == spec.working_shape


def test_resolve_name_is_the_one_kind_to_model_mapping():
    assert api.resolve_model_name("affine", 2) == "affine-2d"
    assert api.resolve_model_name("global-local", 2) == "global-local-2d"
    assert api.resolve_model_name("auto", 3) == "deformable-3d"
    assert api.resolve_model_name("deformable-2d", 3) == "deformable-2d"


def _tiny_run(tmp_path: Path, kind: str = "deformable") -> Path:
    """A checkpoint folder: config.yaml + weights.safetensors of an untrained tiny model."""
    from deepreg_core.training.checkpoint import CONFIG, WEIGHTS
    from deepreg_core.training.config import save_config

    config = TrainConfig(model={"kind": kind, "ndim": 2, "features": [4, 8],
                                "affine_features": [4, 8]},
                         data={"shape": [24, 24]}, output_dir=tmp_path / "run")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_config(config, folder / CONFIG)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in build_model(config.model).state_dict().items()},
              str(folder / WEIGHTS))
    return folder


def test_publish_writes_a_complete_self_describing_model(tmp_path):
    target = tmp_path / "models" / "tiny-2d"
    zoo.publish(_tiny_run(tmp_path), target, "# tiny\n")
    assert sorted(p.name for p in target.iterdir()) == ["card.md", "config.yaml",
                                                        "weights.safetensors"]
    loaded = zoo.load(target)
    assert loaded.spec == ModelSpec("tiny-2d", "deformable", 2, (24, 24))
    image = synth.synthetic_pair((24, 24), 0).fixed
    with torch.no_grad():
        assert loaded(image, image).displacement.abs().max() < 1e-2


def test_a_spec_that_contradicts_the_config_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    target = tmp_path / "mixed"
    zoo.publish(_tiny_run(tmp_path), target, "# mixed\n")
    weights = target / "weights.safetensors"
    lying = ModelSpec("mixed", "affine", 2, (24, 24))
    save_file(load_file(str(weights)), str(weights), metadata={SPEC_KEY: lying.to_json()})
    with pytest.raises(ValueError, match="mixes two models"):
        zoo.load(target)
    save_file(load_file(str(weights)), str(weights), metadata={SPEC_KEY: "{not json"})
    with pytest.raises(ValueError, match="spec is not valid"):
        zoo.load(target)


def test_a_bare_network_registers_on_its_own_grid():
    """A network built in a script (no zoo, no spec stored) gets a spec from what it is."""
    net = build_model(TrainConfig(model={"kind": "affine", "ndim": 2, "features": [4, 8],
                                         "affine_features": [4, 8]}).model)
    assert isinstance(net, AffineNet)
    spec = ModelSpec.of_network(net)
    assert spec.kind == "affine" and spec.ndim == 2 and spec.working_shape is None
    rng = np.random.default_rng(0)
    image = Image.from_array(rng.random((20, 22)).astype(np.float32))
    result = register(image, image, model=net, preset="fast", qa=False)
    assert result.model_name == "AffineNet" and result.affine is not None
    with pytest.raises(TypeError, match="deepreg_core network"):
        ModelSpec.of_network(torch.nn.Linear(2, 2))
