"""Stage a drop into ``<out>/.cache/sources/<key>/<name>/``: atomically, read-only, once per content.

A source hands over the drop's content key (`audit.sources.content_key`: the source and each
file's path, size and content tag) and a function that downloads the files into a folder. When a
folder with that key exists, the drop was staged before with the same content and nothing is
downloaded. Otherwise the files go into a temporary folder beside it, their sizes are checked
against the listing, they are made read-only, and the folder is renamed into place: a staged
folder is complete or absent, never half-written, and two runs staging the same drop at once end
with one copy.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from audit.types import AuditError

#: File mode of staged files: read-only for everyone (folders stay writable, so `rm -r` works).
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


@dataclass(frozen=True)
class Staged:
    """A staged drop folder and what staging it downloaded (0 and 0 when it was staged before)."""

    folder: Path
    bytes_downloaded: int
    files_downloaded: int


def staged_folder(cache: Path, key: str, name: str) -> Path:
    """Where the drop with content `key` is staged: ``<cache>/<key[:2]>/<key>/<name>``."""
    return cache / key[:2] / key / name


def stage(
    cache: Path,
    key: str,
    name: str,
    expected_sizes: Mapping[str, int],
    download: Callable[[Path], None],
    *,
    where: str,
) -> Staged:
    """The folder holding the drop `key`; `download(folder)` fills a fresh one unless it exists.

    `expected_sizes` maps each file's path in the drop folder to its size in the listing; a file
    missing or of another size after the download (replaced while it was read) is an `AuditError`
    naming `where`, and nothing is kept.
    """
    final = staged_folder(cache, key, name)
    if final.is_dir():
        return Staged(final, 0, 0)
    parent = final.parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    temporary = parent / f".staging-{key}-{uuid.uuid4().hex[:8]}"
    try:
        (temporary / name).mkdir(parents=True)
        download(temporary / name)
        total = _check_sizes(temporary / name, expected_sizes, where)
        _make_read_only(temporary)
        try:
            os.rename(temporary, final.parent)
        except OSError:
            if not final.is_dir():  # not another run's identical copy: a real failure
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return Staged(final, total, len(expected_sizes))


def _check_sizes(folder: Path, expected: Mapping[str, int], where: str) -> int:
    total = 0
    for relative, size in sorted(expected.items()):
        path = folder / relative
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            got = "missing" if found is None else f"{found} bytes"
            raise AuditError(
                f"{where}/{relative}: listed with {size} bytes but {got} after the download "
                "(replaced while it was read?); run the audit again"
            )
        total += size
    return total


def _make_read_only(folder: Path) -> None:
    for directory, _, files in os.walk(folder):
        for file in files:
            os.chmod(Path(directory) / file, READ_ONLY)
