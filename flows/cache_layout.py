"""Where a run keeps its method cache under ``--out``, and which drop uses which cache entry.

The method tasks' results are files ``<out>/.cache/methods/<key>`` (Prefect's result storage; the
key: `flows.method_tasks.method_cache_key`). A key names content, not a drop: a reseeded copy that
did not change between two drops is one entry for both. So each drop's run records the keys of its
method tasks in ``<out>/.cache/methods/drops/<model hash>.keys`` (one key a line; the drop's
primary model's content hash, ``model_drops.content_hash``), and `drift-audit prune` removes the
entries of pruned drops that no other drop's list names (flows/retention.py). Entries written before
these lists existed are named by no list and stay (they are reused only for 30 days).

Light on purpose (no Prefect, no TensorFlow): `drift-audit prune` reads the lists at the command
line's start-up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

#: Where cached figures live, under the flow's output folder.
METHOD_CACHE_DIR = Path(".cache") / "methods"
#: The lists of keys per drop, inside the method cache folder.
DROP_KEYS_DIR = "drops"


def drop_keys_file(cache: Path, drop_model_hash: str) -> Path:
    """The list of cache keys of the drop whose primary model has content hash `drop_model_hash`."""
    return cache / DROP_KEYS_DIR / f"{drop_model_hash}.keys"


def read_drop_keys(path: Path) -> set[str]:
    """The keys listed in `path` (empty when it does not exist)."""
    try:
        return {line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


def record_drop_keys(cache: Path, drop_model_hash: str, keys: Iterable[str]) -> None:
    """Add `keys` to the drop's list, atomically (a temporary file renamed into place)."""
    path = drop_keys_file(cache, drop_model_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = sorted(read_drop_keys(path) | set(keys))
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".keys.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(f"{key}\n" for key in merged))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
