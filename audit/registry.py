"""Find the drops of a registry: one folder per retrain, named by its date.

Contract (README, "The registry"): ``<registry>/<YYYY-MM-DD or YYYYMMDD>/model.keras`` with an
optional ``eval.npz`` / ``eval.csv`` / ``eval.parquet`` and an optional ``audit.toml``. Anything else
is reported as a skipped folder with its reason, never dropped silently.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from audit.types import AuditError, Drop, SkippedFolder

MODEL_FILE = "model.keras"
EVAL_FILES = ("eval.npz", "eval.csv", "eval.parquet")
CONFIG_FILE = "audit.toml"

_DATE_NAME = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


@dataclass(frozen=True)
class RegistryListing:
    """The drops of a registry in date order, and the entries that are not drops."""

    drops: tuple[Drop, ...]
    skipped: tuple[SkippedFolder, ...]


def parse_drop_date(name: str) -> dt.date | None:
    """The retrain date a folder name stands for (``2014-11-03`` or ``20141103``), else None."""
    match = _DATE_NAME.match(name)
    if match is None or (("-" in name) and name.count("-") != 2):
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def discover_drops(registry: Path) -> RegistryListing:
    """List the drops of `registry`, oldest first.

    Folders whose names are not dates, date folders without a model, symlinks that lead out of the
    registry, and a second folder for a date already seen are returned in `skipped` with a reason.
    """
    if not registry.exists():
        raise AuditError(f"registry {registry} does not exist; pass the folder that holds the drops")
    if not registry.is_dir():
        raise AuditError(f"registry {registry} is not a folder; pass the folder that holds the drops")
    root = registry.resolve()
    drops: dict[dt.date, Drop] = {}
    skipped: list[SkippedFolder] = []
    for entry in sorted(registry.iterdir()):
        outcome = _read_entry(entry, root)
        if isinstance(outcome, SkippedFolder):
            skipped.append(outcome)
        elif outcome.week in drops:
            first = drops[outcome.week].path.name
            skipped.append(SkippedFolder(entry, f"same date as {first}; keep one folder per date"))
        else:
            drops[outcome.week] = outcome
    ordered = tuple(drops[week] for week in sorted(drops))
    return RegistryListing(drops=ordered, skipped=tuple(skipped))


def _read_entry(entry: Path, root: Path) -> Drop | SkippedFolder:
    if entry.name.startswith("."):
        return SkippedFolder(entry, "hidden entry")
    if not entry.is_dir():
        return SkippedFolder(entry, "not a folder")
    if entry.is_symlink() and not entry.resolve().is_relative_to(root):
        return SkippedFolder(entry, "symlink that leads out of the registry")
    week = parse_drop_date(entry.name)
    if week is None:
        return SkippedFolder(entry, "folder name is not a date (YYYY-MM-DD or YYYYMMDD)")
    model_path = entry / MODEL_FILE
    if not model_path.is_file():
        return SkippedFolder(entry, f"no {MODEL_FILE} in the drop")
    eval_paths = tuple(entry / name for name in EVAL_FILES if (entry / name).is_file())
    config_path = entry / CONFIG_FILE
    return Drop(
        week=week,
        path=entry,
        model_path=model_path,
        eval_paths=eval_paths,
        config_path=config_path if config_path.is_file() else None,
    )
