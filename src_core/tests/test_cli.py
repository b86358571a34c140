"""The deepreg-core command: outputs on the fixed grid, one-line errors, no overwriting."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from deepreg_core import cli, synth
from deepreg_core.image import Image
from deepreg_core.interop import load_displacement_nifti
from deepreg_core.io import read_image, write_image


@pytest.fixture
def pair_files(tmp_path):
    pair = synth.synthetic_pair((32, 32), 5, same_contrast=True, max_bias=0.0)
    affine = np.array([[1.2, 0, 0, -10.0], [0, 1.2, 0, 4.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    files = {}
    for role in ("fixed", "moving"):
        files[role] = tmp_path / f"{role}.nii.gz"
        write_image(Image(getattr(pair, role)[0, 0].numpy(), affine[[0, 1, 3]][:, [0, 1, 3]]),
                    files[role])
        files[f"{role}_labels"] = tmp_path / f"{role}_labels.nii.gz"
        labels = getattr(pair, f"{role}_labels")[0, 0].numpy().astype(np.int16)
        write_image(Image(labels, affine[[0, 1, 3]][:, [0, 1, 3]]), files[f"{role}_labels"])
    return files


def test_register_writes_every_output_on_the_fixed_grid(pair_files, model_folder, tmp_path):
    out = tmp_path / "out"
    code = cli.main(["register", str(pair_files["fixed"]), str(pair_files["moving"]), "-o",
                     str(out), "--model", str(model_folder), "--refine-steps", "5",
                     "--fixed-labels", str(pair_files["fixed_labels"]),
                     "--moving-labels", str(pair_files["moving_labels"])])
    assert code == 0
    names = {"warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz", "saliency.nii.gz",
             "metrics.json", "warped_labels.nii.gz"}
    assert names <= {p.name for p in out.iterdir()}
    fixed = read_image(pair_files["fixed"])
    for name in ("warped", "jacobian", "saliency", "warped_labels"):
        img = read_image(out / f"{name}.nii.gz")
        assert img.shape == fixed.shape
        np.testing.assert_allclose(img.affine, fixed.affine, atol=1e-5)
    assert np.issubdtype(read_image(out / "warped_labels.nii.gz").data.dtype, np.integer)
    assert nib.load(out / "displacement.nii.gz").header.get_intent()[0] == "vector"
    u, _ = load_displacement_nifti(out / "displacement.nii.gz", reference=fixed)
    assert u.shape == (2, 32, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ncc_before", "ncc_after", "dice_before", "dice_after", "seconds", "seed"} <= set(metrics)


def test_progress_in_a_log_is_a_few_lines_not_one_per_step(pair_files, model_folder, tmp_path,
                                                             capsys):
    """stderr captured (not a terminal), as in a cluster log: a 60-step run redraws its bar a
    few times, not once per optimiser step, and the bar still ends at 100 %."""
    code = cli.main(["register", str(pair_files["fixed"]), str(pair_files["moving"]), "-o",
                     str(tmp_path / "out"), "--model", str(model_folder), "--refine-steps", "60",
                     "--no-qa"])
    assert code == 0
    err = capsys.readouterr().err
    draws = err.count("step/s") + err.count("?step/s")
    assert 1 <= draws <= 5, err[-2000:]
    assert "100%" in err


def test_results_are_not_overwritten_without_asking(pair_files, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["register", str(pair_files["fixed"]), str(pair_files["moving"]), "-o", str(out),
            "--model", str(model_folder)]
    assert cli.main(args) == 0
    before = (out / "warped.nii.gz").read_bytes()
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert (out / "warped.nii.gz").read_bytes() == before
    assert cli.main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "argv, match",
    [
        (["register", "missing.nii.gz", "missing2.nii.gz", "-o", "x"], "missing.nii.gz"),
        (["register", "{fixed}", "{moving}", "-o", "x", "--model", "nope"], "expected a zoo name"),
        (["register", "{fixed}", "{moving}", "-o", "x", "--device", "tpu"], "device"),
        (["models", "nope"], "expected a zoo name"),
    ],
)
def test_bad_input_ends_with_one_line_and_status_2(argv, match, pair_files, tmp_path, capsys):
    argv = [a.format(fixed=pair_files["fixed"], moving=pair_files["moving"]) for a in argv]
    argv = [str(tmp_path / a) if a == "x" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepreg-core: error:") and match in err[0]


def test_user_models_are_listed(model_folder, monkeypatch, capsys):
    monkeypatch.setenv("DEEPREG_HOME", str(model_folder.parent.parent))
    (model_folder.parent.parent / "models").mkdir(exist_ok=True)
    target = model_folder.parent.parent / "models" / model_folder.name
    if not target.exists():
        model_folder.rename(target)
    assert cli.main(["models"]) == 0
    assert model_folder.name in capsys.readouterr().out


def test_console_script_runs_as_a_process():
    out = subprocess.run([sys.executable, "-m", "deepreg_core.cli", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "register" in out.stdout
