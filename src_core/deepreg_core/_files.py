"""Atomic file writes shared by every module that saves something.

A file is written under a temporary name beside its target, flushed to disk, then moved onto the
target with ``os.replace``; on any error the temporary file is removed and the target (if it
existed) is left untouched. The temporary name holds the writer's process id,
``.<name>.tmp-<pid>-<random><suffix>``, so a later writer can tell the leftovers of a killed one
(:func:`remove_stale_temporaries`) from the files of a writer that is still running.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only once fully written.

    ``suffix`` ends the temporary name, so writers that pick a format by suffix (nibabel) work.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"{path}: the folder {path.parent} does not exist. Create it first."
        )
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_target(Path(path)) as temporary:
        temporary.write_text(text, encoding="utf-8")


_TEMPORARY = re.compile(r"^\..+\.tmp-(?:(\d+)-)?[0-9a-f]{8}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a pid we may not signal counts).

    A zombie does not run: a killed worker whose parent died too stays one for good where the
    container's first process reaps no orphans (seen on this project's CI machines), and
    counting it alive kept a killed run's staging folders from ever being cleaned.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    try:  # Linux: the state letter follows the command name in parentheses
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust the signal
    return state not in ("Z", "X")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_target` writers that no longer run.

    A temporary file whose name holds the id of a live process (this one included) is kept: its
    writer may be busy. One of a dead process, or of the older form without an id, is removed.
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [path for path in folder.iterdir() if is_stale_temporary(path)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def is_stale_temporary(path: Path) -> bool:
    """Whether ``path`` is an :func:`atomic_target` temporary file whose writer is gone."""
    match = _TEMPORARY.match(path.name)
    if match is None or not path.is_file():
        return False
    pid = int(match.group(1)) if match.group(1) else 0
    return not (pid and process_alive(pid))
