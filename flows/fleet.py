"""A fleet: the models one run audits, from repeated ``--registry`` values and a ``--fleet`` root.

A team owns many models. ``--registry`` may be given several times (one model each: a folder, an
object-store prefix, an ``mlflow://`` registered model), and ``--fleet ROOT`` names a root whose
sub-folders are model registries (``<root>/<model>/<drop>/``, a local folder or an object-store
prefix). Each model's name is its registry's (the sub-folder, the registry folder, the registered
model's name); each model's reports go to ``<out>/<model>/<week>/report.html`` and the digest to
``<out>/fleet/<week>/index.html``.

This module imports no Prefect and no TensorFlow: the command line resolves a fleet before the
flow starts (`flows.preflight`), and the flow resolves it again (a deployment run does not go
through the command line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audit.sources import SourceKind, parse_registry
from audit.types import AuditError

#: The folder under ``--out`` that holds the digest; no model may have this name.
DIGEST_DIR = "fleet"
#: What a model name may be to be its own folder under ``--out`` as it is.
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class FleetUsageError(AuditError):
    """Options that do not go together (the command line exits with status 2, as for a usage error)."""


@dataclass(frozen=True)
class FleetMember:
    """One model of a run: its name (stored with the figures) and where its drops are."""

    name: str
    registry: str

    @property
    def folder(self) -> str:
        """The model's folder under ``--out`` (`model_folder`)."""
        return model_folder(self.name)


@dataclass(frozen=True)
class Fleet:
    """The models of one run, in the order they were given (``--registry`` values, then the
    fleet root's sub-folders by name). `is_fleet` is False for the single ``--registry`` of a plain
    run, whose reports stay at ``<out>/<week>/report.html``."""

    members: tuple[FleetMember, ...]
    is_fleet: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(member.name for member in self.members)


def model_folder(name: str) -> str:
    """`name` as one path segment under ``--out``: itself when it is plain (letters, digits, dot,
    dash, underscore), else a slug of it (a registered model's name may hold slashes or spaces)."""
    if _SAFE_SEGMENT.match(name) and name not in (".", ".."):
        return name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return slug[:100]


def resolve_fleet(
    registries: Sequence[str],
    fleet_root: str | None,
    model_name: str | None,
    *,
    storage_block: str | None = None,
) -> Fleet:
    """The models of a run; an `AuditError` naming the fix for a usage error.

    `model_name` (``--model-name``) names the one model of a single registry; with more than one
    registry, or with a fleet root, it is refused. Two models of the same name (two registries
    whose folders share a name) are refused: their figures would mix.
    """
    if not registries and fleet_root is None:
        raise FleetUsageError("no registry: pass --registry DIR|URI (repeatable) or --fleet ROOT")
    is_fleet = len(registries) > 1 or fleet_root is not None
    if is_fleet and model_name is not None:
        raise FleetUsageError(
            "--model-name names the model of a single --registry; with several registries or --fleet "
            "each model is named after its registry (its folder or registered model): drop --model-name"
        )
    members = [FleetMember(model_name or default_model_name(registry), registry) for registry in registries]
    if fleet_root is not None:
        members.extend(fleet_members(fleet_root, storage_block=storage_block))
    _check_names(members, is_fleet)
    return Fleet(tuple(members), is_fleet)


def default_model_name(registry: str) -> str:
    """The model name stored by default: a folder's name, a prefix's last segment, or the
    registered model's name."""
    location = parse_registry(registry)
    if location.kind is SourceKind.LOCAL:
        return Path(location.path).resolve().name
    return location.default_model_name


def fleet_members(root: str, *, storage_block: str | None = None) -> list[FleetMember]:
    """The model registries under a fleet root: its sub-folders, by name (hidden ones skipped)."""
    location = parse_registry(root)
    if location.kind is SourceKind.MLFLOW:
        raise AuditError(
            f"--fleet {root}: an MLflow registry is one model; pass each registered model as its own "
            "--registry mlflow://<name>"
        )
    if location.kind is SourceKind.LOCAL:
        folder = Path(location.path)
        if not folder.is_dir():
            raise AuditError(
                f"fleet root {root} is not a folder; pass the folder that holds one registry folder per model"
            )
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        members = [FleetMember(name, str(folder / name)) for name in names]
    else:
        members = _store_members(location.uri, storage_block)
    if not members:
        raise AuditError(
            f"fleet root {root} holds no model folder; the layout is <root>/<model>/<YYYY-MM-DD>/model.keras"
        )
    return members


def _store_members(uri: str, storage_block: str | None) -> list[FleetMember]:
    """The sub-prefixes of an object-store root, each a model registry."""
    from flows.sources.object_store import ObjectStoreSource, store_error

    source = ObjectStoreSource(parse_registry(uri), storage_block=storage_block)
    try:
        entries = source.fs.ls(source.root, detail=True)
    except Exception as error:
        raise store_error(source.uri, error) from error
    names = sorted(
        str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        for entry in entries
        if entry.get("type") == "directory"
    )
    return [FleetMember(name, f"{source.uri}/{name}") for name in names if name and not name.startswith(".")]


def _check_names(members: Sequence[FleetMember], is_fleet: bool) -> None:
    """Distinct model names (and folders), none of them the digest's folder."""
    seen: dict[str, FleetMember] = {}
    for member in members:
        if is_fleet and member.folder == DIGEST_DIR:
            raise AuditError(
                f"model {member.name!r} ({member.registry}) has the name of the digest folder "
                f"<out>/{DIGEST_DIR}/; rename its registry folder"
            )
        key = member.folder.lower()  # case-insensitive filesystems would mix their reports
        if key in seen:
            raise AuditError(
                f"two models named {member.name!r}: {seen[key].registry} and {member.registry}; each model "
                "of a fleet is named after its registry folder, so rename one of the folders"
            )
        seen[key] = member
