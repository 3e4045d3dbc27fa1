"""Where a run keeps its method cache under ``--out``, and how an entry names its drop.

Light on purpose (no Prefect, no TensorFlow): `drift-audit prune` finds a pruned drop's entries with
it at the command line's start-up. The cache itself: flows/method_tasks.py.
"""

from __future__ import annotations

from pathlib import Path

#: Where cached figures live, under the flow's output folder.
METHOD_CACHE_DIR = Path(".cache") / "methods"


def method_cache_prefix(drop_model_hash: str) -> str:
    """How the cache entries of a drop begin: the content hash of its primary model
    (``model_drops.content_hash``), so `drift-audit prune` finds a pruned drop's entries by name."""
    return f"{drop_model_hash}-"
