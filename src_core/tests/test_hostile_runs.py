"""Interrupted runs, concurrent writers and silently accepted options (issue 13, classes 3 and
4): an output folder holds one run's complete result set or none of it, a second writer fails
fast, a stopped training run always leaves a resumable checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepreg_core import cli, synth
from deepreg_core._outputs import output_lock
from deepreg_core.events import Started
from deepreg_core.image import Image
from deepreg_core.inference import register, register_iter
from deepreg_core.io import write_image
from deepreg_core.training.config import TrainConfig, save_config
from deepreg_core.training.loop import latest_checkpoint


@pytest.fixture
def pair(tmp_path):
    p = synth.synthetic_pair((32, 32), 5, same_contrast=True, max_bias=0.0)
    files = {}
    for role in ("fixed", "moving"):
        files[role] = tmp_path / f"{role}.nii.gz"
        write_image(Image.from_array(getattr(p, role)[0, 0].numpy()), files[role])
        files[f"{role}_labels"] = tmp_path / f"{role}_labels.nii.gz"
        labels = getattr(p, f"{role}_labels")[0, 0].numpy().astype(np.int16)
        write_image(Image.from_array(labels), files[f"{role}_labels"])
    return files


def _register(pair, out, *extra, model=None) -> list[str]:
    argv = ["register", str(pair["fixed"]), str(pair["moving"]), "-o", str(out),
            "--refine-steps", "2", *extra]
    return argv + (["--model", str(model)] if model else [])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepreg-core: error:"), err
    return err[0]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


# ------------------------------------------------------------------------ refused options
@pytest.mark.parametrize("extra, match", [
    (["--refine-steps", "1000000000"], "refine-steps"),
    (["--regularization", "-1000"], "regularization"),
    (["--regularization", "nan"], "regularization"),
    (["--time-budget", "nan"], "time_budget"),
])
def test_unbounded_or_harmful_options_are_refused(pair, tmp_path, capsys, extra, match):
    assert cli.main(_register(pair, tmp_path / "out", *extra)) == 2
    assert match in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_register_iter_bounds_its_options_too():
    img = Image.from_array(np.random.default_rng(0).random((16, 16)).astype(np.float32))
    with pytest.raises(ValueError, match="refine_steps"):
        next(register_iter(img, img, refine_steps=10**9))
    with pytest.raises(ValueError, match="rewards folding"):
        next(register_iter(img, img, regularization=-1.0))


def test_labels_and_points_are_checked_before_any_work(pair, tmp_path, capsys):
    img = Image.from_array(np.random.default_rng(0).random((16, 16)).astype(np.float32))
    wrong = Image.from_array(np.zeros((8, 8), np.int32))
    for kwargs, match in [({"fixed_labels": wrong, "moving_labels": wrong}, "fixed_labels"),
                          ({"moving_labels": wrong}, "moving_labels"),
                          ({"fixed_labels": img}, "without moving_labels"),
                          ({"moving_points": np.zeros((3, 3))}, r"\(N, 2\)"),
                          ({"fixed_points": np.zeros((3, 2))}, "without moving_points")]:
        events = register_iter(img, img, model="deformable", **kwargs)
        with pytest.raises(ValueError, match=match):
            next(events)  # before Started: nothing was registered
    assert cli.main(_register(pair, tmp_path / "out", "--fixed-labels",
                              str(pair["fixed_labels"]))) == 2
    assert "--moving-labels" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_invalid_input_creates_no_output_folder(pair, tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "deep" / "out"
    assert cli.main(["register", str(pair["fixed"]), str(bad), "-o", str(out)]) == 2
    assert "bad.nii.gz" in _one_error_line(capsys)
    assert not out.exists() and not out.parent.exists()


def test_tiny_valued_images_register_without_nan():
    yy, xx = np.mgrid[:32, :32]
    blob = [np.exp(-((yy - 16) ** 2 + (xx - c) ** 2) / 40.0) for c in (14, 17)]
    fixed, moving = (Image.from_array((b * 1e-39).astype(np.float32)) for b in blob)
    result = register(fixed, moving, model="deformable", refine_steps=5)
    assert np.isfinite(result.displacement).all() and np.isfinite(result.warped.data).all()
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]


def test_an_error_after_the_bar_started_is_on_its_own_line(capsys):
    def events():
        yield Started(total_steps=3, config={})
        raise ValueError("boom")

    with pytest.raises(ValueError):
        cli._progress(events(), desc="register")
    err = capsys.readouterr().err
    assert err.endswith("\n")  # the bar was closed: a following message starts a new line


# ------------------------------------------------------------------------ output integrity
def test_a_folder_holding_a_users_file_is_never_overwritten(pair, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    assert cli.main(_register(pair, out, model=model_folder)) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert (out / "metrics.json").read_text() == '{"mine": 1}'
    (out / "notes.txt").write_text("my notes")
    assert cli.main(_register(pair, out, "--overwrite", model=model_folder)) == 2
    assert "notes.txt" in _one_error_line(capsys)
    assert (out / "notes.txt").read_text() == "my notes"


def test_overwrite_leaves_no_file_of_the_older_run(pair, model_folder, tmp_path):
    out = tmp_path / "out"
    assert cli.main(_register(pair, out, "--moving-labels", str(pair["moving_labels"]),
                              model=model_folder)) == 0
    (out / "affine_voxel.txt").write_text("0")  # as an affine run would have left it
    assert (out / "warped_labels.nii.gz").is_file()
    assert cli.main(_register(pair, out, "--overwrite", model=model_folder)) == 0
    names = {p.name for p in out.iterdir()}
    assert "warped_labels.nii.gz" not in names and "affine_voxel.txt" not in names
    assert {"warped.nii.gz", "displacement.nii.gz", "metrics.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_run_that_fails_while_writing_leaves_the_older_results_whole(
        pair, model_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert cli.main(_register(pair, out, model=model_folder)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import deepreg_core.interop as interop

    def disk_full(*args, **kwargs):
        raise PermissionError("disk full (injected)")

    monkeypatch.setattr(interop, "save_displacement_nifti", disk_full)
    capsys.readouterr()
    assert cli.main(_register(pair, out, "--overwrite", "--seed", "3", model=model_folder)) == 2
    err = capsys.readouterr().err.rstrip().splitlines()  # the bar's lines, then the error
    assert err[-1].startswith("deepreg-core: error:") and "disk full" in err[-1]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_a_second_writer_fails_fast(pair, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    with output_lock(out):
        began = time.perf_counter()
        assert cli.main(_register(pair, out, model=model_folder)) == 2
        assert "another deepreg-core run" in _one_error_line(capsys)
        assert time.perf_counter() - began < 30 and not out.exists()
    assert cli.main(_register(pair, out, model=model_folder)) == 0  # the lock was released


def test_leftovers_of_a_killed_run_are_cleaned_or_restored(pair, model_folder, tmp_path):
    out = tmp_path / "out"
    assert cli.main(_register(pair, out, model=model_folder)) == 0
    dead = _dead_pid()
    staging = tmp_path / f".out.staging-{dead}-0123abcd"
    staging.mkdir()
    (staging / "warped.nii.gz").write_bytes(b"half")
    (out / f".warped.nii.gz.tmp-{dead}-89abcdef.nii.gz").write_bytes(b"truncated")
    # killed between moving the old set aside and publishing the new one: out is missing
    replaced = tmp_path / f".out.replaced-{dead}-4567cdef"
    out.rename(replaced)
    assert cli.main(_register(pair, out, "--overwrite", model=model_folder)) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0


@pytest.mark.slow
def test_kill_9_during_register_leaves_a_complete_result_or_none(pair, model_folder, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "deepreg_core.cli", *_register(pair, out, model=model_folder)]
    argv[argv.index("2")] = "400"  # refine long enough to be killed mid-run
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and b"register" not in process.stderr.read1(4096):
        pass
    process.kill()
    process.wait()
    assert not out.exists()  # nothing published
    assert cli.main(_register(pair, out, model=model_folder)) == 0  # and nothing left in the way
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


# ------------------------------------------------------------------------ training
def _config(tmp_path: Path, steps: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"kind": "deformable", "ndim": 2, "features": [4, 8]},
        "data": {"shape": [32, 32], "validation_count": 0}, "optim": {"steps": steps},
        "device": "cpu", "checkpoint_every": 0, "validate_every": 0,
        "output_dir": str(tmp_path / "run"),
    })


def _recipe(tmp_path: Path) -> Path:
    """A long run without periodic checkpoints: only a stop writes one."""
    return save_config(_config(tmp_path, 100_000), tmp_path / "recipe.yaml")


@pytest.mark.slow
def test_ctrl_c_during_training_leaves_a_resumable_checkpoint(tmp_path):
    recipe = _recipe(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "deepreg_core.cli", "train", str(recipe)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline, seen = time.time() + 120, b""
    while time.time() < deadline and b"loss" not in seen:  # a step was done
        seen = seen[-64:] + process.stderr.read1(4096)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and json.loads(out)["event"] == "Stopped"
    checkpoint = latest_checkpoint(tmp_path / "run")
    from deepreg_core.training.checkpoint import load_checkpoint

    assert load_checkpoint(checkpoint).step > 0


def test_stale_checkpoint_temporaries_are_removed_on_the_next_start(tmp_path):
    from deepreg_core.events import drain
    from deepreg_core.training.loop import train

    folder = tmp_path / "run" / "checkpoints" / "step_00000007"
    folder.mkdir(parents=True)
    stale = folder / f".weights.safetensors.tmp-{_dead_pid()}-0123abcd.tmp"
    stale.write_bytes(b"\0" * 1000)
    live = folder / f".weights.safetensors.tmp-{os.getpid()}-89abcdef.tmp"
    live.write_bytes(b"\0")
    cfg = _config(tmp_path, 1)
    drain(train(cfg))
    assert not stale.exists() and live.exists()  # a live writer's file is not touched


@pytest.mark.parametrize("what", ["garbage", "foreign"])
def test_a_bad_optimizer_file_on_resume_is_one_line(tmp_path, capsys, what):
    recipe = _recipe(tmp_path)
    cfg = _config(tmp_path, 2)
    from deepreg_core.events import drain
    from deepreg_core.training.loop import train

    checkpoint = drain(train(cfg)).result["checkpoint"]
    target = checkpoint / "optimizer.safetensors"
    if what == "garbage":
        target.write_bytes(os.urandom(4096))
    else:
        from safetensors.torch import save_file

        save_file({"optimizer/0/exp_avg": torch.zeros(3, 3)}, str(target))
    assert cli.main(["train", str(recipe), "--resume", str(checkpoint)]) == 2
    line = _one_error_line(capsys)
    assert "optimizer" in line


# ------------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_refinement_across_thread_counts_stays_within_the_documented_bound():
    """README: 1 vs 2 threads differ by at most 1e-3 voxel after 20 refinement steps (float
    reductions are summed in a different order; measured 7e-5 on 3D pairs)."""
    p = synth.synthetic_pair((16, 20, 16), 3, same_contrast=True, max_bias=0.0)
    fixed, moving = (Image.from_array(getattr(p, r)[0, 0].numpy()) for r in ("fixed", "moving"))
    threads = torch.get_num_threads()
    try:
        fields = []
        for n in (1, 2):
            torch.set_num_threads(n)
            fields.append(register(fixed, moving, model="affine+deformable", refine_steps=20,
                                   qa=False).displacement)
    finally:
        torch.set_num_threads(threads)
    assert np.abs(fields[0] - fields[1]).max() < 1e-3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_a_killed_writers_staging_is_cleaned_even_while_it_is_a_zombie(tmp_path):
    """A killed worker whose parent died too stays a zombie where nothing reaps orphans (a
    container's first process often does not): its staging folder must still count as left
    by a dead run, while a live writer's is kept."""
    from deepreg_core._files import process_alive
    from deepreg_core._outputs import recover

    child = subprocess.Popen([sys.executable, "-c", "pass"])  # ends; not reaped: a zombie
    try:
        deadline = time.time() + 30
        state = ""
        while time.time() < deadline:
            state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.02)
        assert state == "Z"
        assert not process_alive(child.pid) and process_alive(os.getpid())
        out = tmp_path / "out"
        dead = tmp_path / f".out.staging-{child.pid}-0123abcd"
        live = tmp_path / f".out.staging-{os.getpid()}-4567ef01"
        for folder in (dead, live):
            folder.mkdir()
            (folder / "warped.nii.gz").write_bytes(b"half written")
        with output_lock(out):
            recover(out)
        assert not dead.exists() and live.exists()
    finally:
        child.wait()
