"""A run's result folder: one writer at a time, published whole or not at all.

``deepreg-core register -o OUT`` (and anything else that writes a result *set*) goes through
three steps:

1. :func:`check_output_folder` before any work: ``OUT`` is new, empty, or (with ``overwrite``)
   holds only files a run writes (:data:`RESULT_FILES`); nothing is created yet.
2. :func:`output_lock` for the whole run: an exclusive, non-blocking lock on ``OUT``, held in
   ``.OUT.lock`` beside it (``fcntl.flock``; released by the kernel if the process dies), so a
   second run into the same folder fails at once instead of mixing its files with the first's.
3. :func:`staged_folder`: the results are written into a hidden staging folder beside ``OUT``
   (``.OUT.staging-<pid>-<hex>``) and published with ``os.rename``; an older ``OUT`` is first
   renamed aside (``.OUT.replaced-<pid>-<hex>``) and removed after. A folder therefore holds one
   run's complete result set or nothing of it, and no file of an older run survives
   ``overwrite``. Leftovers of a killed run are removed by the next run into the same folder
   (a result set that was renamed aside but not yet replaced is put back).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepreg_core._files import is_stale_temporary, process_alive, remove_stale_temporaries

RESULT_FILES = (
    "warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz", "saliency.nii.gz",
    "warped_labels.nii.gz", "affine_voxel.txt", "metrics.json",
    # register --channel-axis; series
    "warped_channels.nii.gz", "warped_channels.tif",
    "corrected.nii.gz", "corrected.tif", "metrics.csv", "drift.csv",
)
"""Every file a registration run (``register``, ``series``) may write into its output folder."""


def write_result_set(result, fixed, folder: Path, *, fixed_path: str | os.PathLike[str],
                     moving_path: str | os.PathLike[str]) -> dict:
    """Write a registration's result set (:data:`RESULT_FILES`) into ``folder``.

    ``result`` is a :class:`~deepreg_core.inference.RegistrationResult` of ``fixed``; the paths
    are recorded in ``metrics.json``. ``deepreg-core register -o`` and every pair folder of
    ``deepreg-core batch`` hold the same files. Returns the metrics summary written.
    """
    import json

    import numpy as np

    from deepreg_core._files import atomic_write_text
    from deepreg_core.interop import save_displacement_nifti
    from deepreg_core.io import write_image

    folder = Path(folder)
    write_image(result.warped, folder / "warped.nii.gz", reference=fixed)
    save_displacement_nifti(result.displacement, fixed, folder / "displacement.nii.gz")
    if result.jacobian is not None:
        write_image(fixed.with_data(result.jacobian), folder / "jacobian.nii.gz", reference=fixed)
    if result.saliency is not None:
        write_image(fixed.with_data(result.saliency), folder / "saliency.nii.gz", reference=fixed)
    if result.warped_labels is not None:
        write_image(result.warped_labels, folder / "warped_labels.nii.gz", reference=fixed)
    if result.affine is not None:
        np.savetxt(folder / "affine_voxel.txt", result.affine)
    summary = {"model": result.model_name, "preset": result.preset, "device": result.device,
               "seed": result.seed, "fixed": str(fixed_path), "moving": str(moving_path),
               **result.metrics, "warnings": list(result.warnings), "notes": list(result.notes)}
    atomic_write_text(folder / "metrics.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _entries(folder: Path) -> list[str]:
    """Names in ``folder``, hidden ones included, except temporary files of dead writers."""
    return sorted(p.name for p in folder.iterdir() if not is_stale_temporary(p))


def check_output_folder(folder: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an output folder that a run must not write into; create nothing.

    Raises
    ------
    NotADirectoryError
        ``folder`` is an existing file.
    ValueError
        ``folder`` holds anything and ``overwrite`` is False, or holds files other than
        :data:`RESULT_FILES` (a run never deletes what it did not write).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"-o: expected a folder, got the existing file {folder}.")
    present = _entries(folder) if folder.is_dir() else []
    if present and not overwrite:
        raise ValueError(
            f"-o: the folder {folder} is not empty ({', '.join(present[:3])}"
            f"{', ...' if len(present) > 3 else ''}). Choose a new folder or pass --overwrite."
        )
    foreign = [name for name in present if name not in RESULT_FILES]
    if foreign:
        raise ValueError(
            f"-o: the folder {folder} holds files a run does not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); --overwrite replaces result folders only. "
            "Choose a new folder."
        )
    return folder


def _sibling(folder: Path, kind: str, pid: int | None = None) -> Path:
    pid = os.getpid() if pid is None else pid
    return folder.with_name(f".{folder.name}.{kind}-{pid}-{secrets.token_hex(4)}")


def _leftovers(folder: Path, kind: str) -> list[Path]:
    """Sibling folders of ``kind`` left by runs that no longer run, oldest first."""
    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.{kind}-(\d+)-[0-9a-f]{{8}}$")
    found = []
    for path in folder.parent.iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir() and not process_alive(int(match.group(1))):
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(folder: str | os.PathLike[str]) -> None:
    """Clean what killed runs left around ``folder`` (call it holding :func:`output_lock`).

    Staging folders are removed; a result set renamed aside just before a kill is put back when
    ``folder`` is missing (else removed); temporary files inside ``folder`` are removed.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    for path in _leftovers(folder, "staging"):
        shutil.rmtree(path, ignore_errors=True)
    replaced = _leftovers(folder, "replaced")
    if replaced and not folder.exists():
        os.rename(replaced.pop(), folder)
    for path in replaced:
        shutil.rmtree(path, ignore_errors=True)
    remove_stale_temporaries(folder)


@contextmanager
def output_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its parent is created); fail at once if held.

    Raises
    ------
    ValueError
        Another process holds the lock (another run is writing into ``folder``).
    """
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(f".{folder.name}.lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        yield
        return
    for _ in range(10):  # the file may be replaced between open and flock (see below)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ValueError(
                f"-o: another deepreg-core run is writing into {folder} (it holds {path.name}). "
                "Wait for it to finish or choose another folder."
            ) from None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)  # the holder unlinked it as we opened it: take the new file
    else:  # pragma: no cover - only under constant contention
        raise ValueError(f"-o: could not lock {folder}; try again.")
    try:
        os.write(handle, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then re-opens a fresh file
        os.close(handle)


@contextmanager
def staged_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; publish it as ``folder`` on success.

    On an exception the staging folder is removed and ``folder`` is left as it was. Call it
    holding :func:`output_lock`.
    """
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, "staging")
    staging.mkdir()
    try:
        yield staging
        if folder.exists():
            aside = _sibling(folder, "replaced")
            os.rename(folder, aside)
            os.rename(staging, folder)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
