"""Batch registration on a real dask LocalCluster with two worker processes.

Every pair runs on a worker process; the tests kill a worker mid-run and the client mid-run and
check that every pair ends up done exactly once with loadable outputs.
"""

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

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402
from model_folders import make_model_folder  # noqa: E402

from deepreg_core import batch as batch_mod  # noqa: E402
from deepreg_core.batch import Pair, batch, batch_iter, folder_pairs, read_pairs  # noqa: E402
from deepreg_core.cli import main  # noqa: E402
from deepreg_core.events import Finished, Progress  # noqa: E402
from deepreg_core.image import Image  # noqa: E402
from deepreg_core.io import read_image, write_image  # noqa: E402

OPTIONS = {"refine_steps": 6, "qa": False}


def _pairs(root: Path, n: int, model: Path) -> Path:
    """``n`` tiny 2D pairs and their CSV; returns the CSV."""
    rng = np.random.default_rng(0)
    rows = ["id,fixed,moving"]
    for i in range(n):
        image = rng.random((24, 24)).astype(np.float32)
        write_image(Image.from_array(image, spacing=(1.0, 1.0)), root / f"f{i}.nii.gz")
        write_image(Image.from_array(np.roll(image, 1, 0), spacing=(1.0, 1.0)),
                    root / f"m{i}.nii.gz")
        rows.append(f"p{i},f{i}.nii.gz,m{i}.nii.gz")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def _check_done_once(out: Path, ids: list[str]) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert [row["id"] for row in summary["pairs"]] == ids  # each pair exactly once
    assert summary["totals"] == {"done": len(ids), "failed": 0, "pending": 0}
    for pid in ids:
        folder = out / "pairs" / pid
        assert read_image(folder / "warped.nii.gz").shape == (24, 24)
        assert json.loads((folder / "metrics.json").read_text())["ncc_after"] > -1
        assert json.loads((out / "records" / f"{pid}.json").read_text())["status"] == "done"
    leftovers = [p.name for p in (out / "pairs").iterdir() if p.name.startswith(".")
                 and not p.name.endswith(".lock")]
    assert not leftovers


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("models"), "tiny-2d", kind="deformable",
                             ndim=2)


def test_a_batch_completes_with_a_summary_and_a_failed_pair(tmp_path, client, model):
    csv_path = _pairs(tmp_path, 4, model)
    with open(csv_path, "a") as handle:
        handle.write("broken,f0.nii.gz,missing.nii.gz\n")
    pairs = read_pairs(csv_path)
    summary = batch(pairs, tmp_path / "out", scheduler=client, model=str(model), **OPTIONS)
    assert (summary.done, summary.failed, summary.skipped) == (4, 1, 0)
    broken = next(row for row in summary.rows if row["id"] == "broken")
    assert broken["status"] == "failed" and "missing.nii.gz" in broken["reason"]
    assert "\n" not in broken["reason"]
    register_files = {"warped.nii.gz", "displacement.nii.gz", "metrics.json", "affine_voxel.txt"}
    assert register_files <= {p.name for p in (tmp_path / "out/pairs/p0").iterdir()}
    csv_rows = (tmp_path / "out/summary.csv").read_text().splitlines()
    assert csv_rows[0].startswith("id,status,reason,seconds") and len(csv_rows) == 6
    # each worker loaded the model once and reused it for its next pairs
    loads = [json.loads((tmp_path / f"out/records/p{i}.json").read_text())["model_loads"]
             for i in range(4)]
    assert set(loads) == {1}
    # a rerun skips what is done and retries only the failed pair
    again = batch(pairs, tmp_path / "out", scheduler=client, model=str(model), **OPTIONS)
    assert (again.done, again.failed, again.skipped) == (4, 1, 4)


def test_killing_a_worker_mid_run_still_completes_every_pair_once(tmp_path, client, model):
    pairs = read_pairs(_pairs(tmp_path, 8, model))
    pids = client.run(os.getpid)
    killed = None
    for event in batch_iter(pairs, tmp_path / "out", scheduler=client, model=str(model),
                            **OPTIONS):
        if isinstance(event, Progress) and killed is None:
            busy = [w for w, tasks in client.processing().items() if tasks] or list(pids)
            killed = pids[busy[0]]
            os.kill(killed, signal.SIGKILL)
        last = event
    assert killed is not None and isinstance(last, Finished)
    assert last.result.done == 8 and last.result.failed == 0
    _check_done_once(tmp_path / "out", [p.id for p in pairs])
    hosts = {json.loads((tmp_path / f"out/records/{p.id}.json").read_text())["pid"]
             for p in pairs}
    assert killed not in hosts or len(hosts) > 1  # the nanny restarted it; others took over


@pytest.mark.slow
def test_killing_the_client_and_rerunning_finishes_only_what_was_missing(tmp_path, client,
                                                                         model):
    # 12 pairs of 150 refinement steps in the killed run (a few seconds of work after the
    # second record even on idle cores), so that a test process starved by other load cannot
    # wake up after all of them are done; and a deadline for a slow start under load.
    n = 12
    csv_path = _pairs(tmp_path, n, model)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "deepreg_core.cli", "batch", str(csv_path), "-o", str(out),
           "--workers", "2", "--model", str(model), "--refine-steps", "150", "--no-qa"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 600
    while time.time() < deadline:
        done = [p for p in (out / "records").glob("*.json")] if (out / "records").is_dir() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers
    proc.wait()
    first = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert 2 <= len(first) < n, "the kill came too late to test a resume"
    pairs = read_pairs(csv_path)
    summary = batch(pairs, out, scheduler=client, model=str(model), **OPTIONS)
    assert summary.skipped == len(first) and summary.done == n
    for pid, record in first.items():  # done pairs were not redone
        assert json.loads((out / "records" / f"{pid}.json").read_text()) == record
    _check_done_once(out, [p.id for p in pairs])


def test_folder_and_atlas_and_the_cli(tmp_path, model, capsys):
    _pairs(tmp_path, 2, model)
    pairs = folder_pairs(tmp_path, tmp_path / "f0.nii.gz")
    assert [p.id for p in pairs] == ["f1", "m0", "m1"]
    assert all(p.fixed == str(tmp_path / "f0.nii.gz") for p in pairs)
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "pass --atlas" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("fixed\na.nii.gz\n", "expected a header with the columns fixed, moving"),
    ("fixed,moving,colour\na,b,c\n", "unknown column(s) colour"),
    ("fixed,moving\n", "expected at least one pair"),
    ("fixed,moving\na.nii.gz,\n", "line 2: expected a fixed and a moving path"),
])
def test_bad_tables_are_one_line_errors_with_status_2(tmp_path, capsys, text, message):
    (tmp_path / "p.csv").write_text(text)
    assert main(["batch", str(tmp_path / "p.csv"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepreg-core: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_repeated_ids_get_suffixes_and_options_are_checked(tmp_path):
    (tmp_path / "p.csv").write_text("fixed,moving\na.nii,s/b.nii\nc.nii,t/b.nii\n")
    assert [p.id for p in read_pairs(tmp_path / "p.csv")] == ["b", "b-2"]
    with pytest.raises(TypeError, match="unexpected option"):
        next(batch_iter([Pair("a", "f", "m")], tmp_path / "o", colour="red"))
    with pytest.raises(ValueError, match="unique ids"):
        next(batch_iter([Pair("a", "f", "m")] * 2, tmp_path / "o"))


def test_a_pair_runs_outside_a_worker_and_is_done_once(tmp_path, model):
    _pairs(tmp_path, 1, model)
    pair = Pair("p0", str(tmp_path / "f0.nii.gz"), str(tmp_path / "m0.nii.gz"))
    record = batch_mod.run_pair(pair, tmp_path / "out", {"model": str(model), **OPTIONS}, "r1")
    assert record["status"] == "done" and batch_mod.is_done(tmp_path / "out", "p0")
    assert batch_mod.run_pair(pair, tmp_path / "out", {}, "r2")["skipped"] is True
