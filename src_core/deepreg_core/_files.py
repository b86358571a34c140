"""Atomic file writes shared by every module that saves something.

A file is written under a temporary name beside its target, flushed to disk, then moved onto the
target with ``os.replace``; on any error the temporary file is removed and the target (if it
existed) is left untouched.
"""

from __future__ import annotations

import os
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
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")
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
