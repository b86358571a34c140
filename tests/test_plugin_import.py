"""The plugin is cheap to import and its manifest is valid (STYLE.md rule 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MANIFEST_MODULES = [
    "napari_deepreg",
    "napari_deepreg._reader",
    "napari_deepreg._writer",
    "napari_deepreg._sample_data",
    "napari_deepreg._register_widget",
    "napari_deepreg._inspect_widget",
]


@pytest.mark.parametrize("module", MANIFEST_MODULES)
def test_import_does_not_load_torch(module):
    heavy = ("torch", "deepreg_core.inference", "nilearn")
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_package_import_loads_neither_napari_nor_qt():
    code = "import sys, napari_deepreg; print([m for m in ('napari', 'qtpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_manifest_is_valid_and_points_at_real_callables():
    from npe2 import PluginManifest

    path = Path(__file__).parents[1] / "napari_deepreg" / "napari.yaml"
    manifest = PluginManifest.from_file(path)
    manifest.validate_imports()  # every python_name resolves
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Register", "Inspect deformation", "Time series", "Train"}
    assert {s.display_name for s in contributions.sample_data} == {"2D brain pair",
                                                                    "3D brain pair"}
    reader = contributions.readers[0]
    assert set(reader.filename_patterns) == {"*.nii", "*.nii.gz", "*.tif", "*.tiff"}
    assert reader.accepts_directories is False
    image_writer = next(w for w in contributions.writers if w.layer_types == ["image"])
    assert set(image_writer.filename_extensions) == {".nii", ".nii.gz", ".tif"}
