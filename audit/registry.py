"""Find the drops of a registry: one folder per retrain, named by its date.

Contract (README, "The registry contract"): ``<registry>/<YYYY-MM-DD or YYYYMMDD>/`` holding one
or more models (`audit.model_formats`: ``model.keras``, ``model.h5``, the Keras 2 pair
``<name>_structure.json`` + ``<name>_weights.h5``, a SavedModel folder), an optional ``eval.npz`` /
``eval.csv`` / ``eval.parquet`` and an optional ``audit.toml``. Anything not used is reported as
skipped with its reason, never dropped silently.

The registry is the only place files are read from: symlinks that lead out of it (a drop folder,
a model file, a file inside a SavedModel folder, an eval file, ``audit.toml``) are skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from audit.model_formats import (
    ACCEPTED,
    KERAS3_WEIGHTS_SUFFIX,
    WEIGHTS_SUFFIX,
    ModelFormat,
    model_format,
    primary_first,
    structure_file,
    weights_file,
)
from audit.types import AuditError, Drop, SkippedFolder

EVAL_FILES = ("eval.npz", "eval.csv", "eval.parquet")
CONFIG_FILE = "audit.toml"

_DATE_NAME = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_OUTSIDE = "symlink that leads out of the registry"


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
    registry, and a second folder for a date already seen are returned in `skipped` with a reason;
    so are the files of a drop that are not used (a symlink out of the registry, half a pair).
    """
    if not registry.exists():
        raise AuditError(f"registry {registry} does not exist; pass the folder that holds the drops")
    if not registry.is_dir():
        raise AuditError(f"registry {registry} is not a folder; pass the folder that holds the drops")
    root = registry.resolve()
    drops: dict[dt.date, Drop] = {}
    skipped: list[SkippedFolder] = []
    for entry in sorted(registry.iterdir()):
        outcome, skipped_files = _read_entry(entry, root)
        skipped.extend(skipped_files)
        if isinstance(outcome, SkippedFolder):
            skipped.append(outcome)
        elif outcome.week in drops:
            first = drops[outcome.week].path.name
            skipped.append(SkippedFolder(entry, f"same date as {first}; keep one folder per date"))
        else:
            drops[outcome.week] = outcome
    ordered = tuple(drops[week] for week in sorted(drops))
    return RegistryListing(drops=ordered, skipped=tuple(skipped))


def _read_entry(entry: Path, root: Path) -> tuple[Drop | SkippedFolder, list[SkippedFolder]]:
    """The drop in `entry` (or why it is not one), and the files of the drop that are not used."""
    if entry.name.startswith("."):
        return SkippedFolder(entry, "hidden entry"), []
    if not entry.is_dir():
        return SkippedFolder(entry, "not a folder"), []
    if entry.is_symlink() and not entry.resolve().is_relative_to(root):
        return SkippedFolder(entry, _OUTSIDE), []
    week = parse_drop_date(entry.name)
    if week is None:
        return SkippedFolder(entry, "folder name is not a date (YYYY-MM-DD or YYYYMMDD)"), []
    return read_drop_folder(entry, week, root)


def read_drop_folder(
    folder: Path, week: dt.date, root: Path | None = None
) -> tuple[Drop | SkippedFolder, list[SkippedFolder]]:
    """The drop of `week` held by `folder` (or why it is not one), and its files that are not used.

    The one reading of a drop folder: a local registry's folders and the folders a remote source
    (`flows.sources`) stages are read by it alike. Files are only taken from inside `root` (default:
    `folder` itself): a symlink that leads out of it is skipped with the reason.
    """
    root = folder.resolve() if root is None else root
    models, skipped = _find_models(folder, root)
    if not models:
        found = f"{skipped[0].path.name}: {skipped[0].reason}; " if skipped else ""
        return SkippedFolder(folder, f"no model in the drop ({found}expected {ACCEPTED})"), []
    eval_paths = tuple(path for name in EVAL_FILES if (path := _inside(folder / name, root, skipped)))
    config_path = _inside(folder / CONFIG_FILE, root, skipped)
    ordered = primary_first(models)
    drop = Drop(
        week=week,
        path=folder,
        model_path=ordered[0],
        eval_paths=eval_paths,
        config_path=config_path,
        model_paths=ordered,
    )
    return drop, skipped


def _inside(path: Path, root: Path, skipped: list[SkippedFolder]) -> Path | None:
    """`path` when it is a file inside the registry; a symlink out of it is added to `skipped`."""
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        skipped.append(SkippedFolder(path, _OUTSIDE))
        return None
    return path if path.is_file() else None


def _find_models(folder: Path, root: Path) -> tuple[list[Path], list[SkippedFolder]]:
    """The models in a drop folder, and the model-like files that cannot be used, with why."""
    models: list[Path] = []
    skipped: list[SkippedFolder] = []
    for item in sorted(folder.iterdir()):
        if item.name.startswith("."):
            continue
        form = model_format(item)
        problem = _not_a_model(item) if form is None else _model_problem(item, form, root)
        if problem is not None:
            skipped.append(SkippedFolder(item, problem))
        elif form is not None:
            models.append(item)
    return models, skipped


def _not_a_model(item: Path) -> str | None:
    """Why a file that looks like part of a model is not one; None for files that are not models."""
    if item.name.endswith(KERAS3_WEIGHTS_SUFFIX):
        return "weights only (Keras 3 save_weights), no architecture; ship the model as model.keras"
    if item.name.endswith(WEIGHTS_SUFFIX) and not structure_file(item).exists():
        return f"weights without {structure_file(item).name} (the model.to_json() half of the pair)"
    return None


def _model_problem(item: Path, form: ModelFormat, root: Path) -> str | None:
    if form is not ModelFormat.SAVED_MODEL and not item.is_file():
        return "not a file"
    if form is ModelFormat.KERAS2_JSON and not weights_file(item).is_file():
        return f"no {weights_file(item).name} beside it (the model.save_weights() half of the pair)"
    files = [item, weights_file(item)] if form is ModelFormat.KERAS2_JSON else [item]
    if form is ModelFormat.SAVED_MODEL:
        files.extend(_tree(item))
    for file in files:
        if file.is_symlink() and not file.resolve().is_relative_to(root):
            where = "" if file == item else f"{file.relative_to(item.parent)} is a "
            return f"{where}{_OUTSIDE}"
    return None


def _tree(folder: Path) -> list[Path]:
    """Every entry under `folder`, without following symlinks (they are checked, not entered)."""
    entries: list[Path] = []
    for directory, folders, files in os.walk(folder, followlinks=False):
        entries.extend(Path(directory) / name for name in (*folders, *files))
    return entries
