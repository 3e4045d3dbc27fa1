"""Where the weekly drops come from: a local folder, an object store, or an MLflow Model Registry.

A *source* lists the drops it can see (metadata only) and stages one drop into a local, read-only
folder keyed by its content, which `audit.registry.read_drop_folder` then reads like any folder of
a local registry: safe loading, every model format, eval samples, ``audit.toml``, reseeded copies and
the whole bad-input catalogue stay one code path. Network clients live here, at the edge; what a
listing means (which folders are drops, how MLflow versions group into weeks, the staging key) is
pure logic in `audit.sources`.

- `LocalSource`: a folder (the registry contract); nothing is staged, the folder is read in place.
- `flows.sources.object_store.ObjectStoreSource`: ``s3://``, ``gs://``, ``file://`` through fsspec.
- `flows.sources.mlflow_registry.MlflowSource`: ``mlflow://<registered model>[@alias]``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from audit.registry import discover_drops, read_drop_folder
from audit.sources import SkippedEntry, SourceKind, parse_registry
from audit.types import AuditError, Drop, DropProvenance, SkippedFolder

#: Where staged drops are kept, under the flow's output folder.
STAGING_DIR = Path(".cache") / "sources"


@dataclass(frozen=True)
class SourceDrop:
    """A drop as a source lists it, before anything is downloaded."""

    week: dt.date
    #: Where it is, for messages and `model_drops.path` until it is staged: a folder or a URI.
    location: str
    #: What the listing says about where it came from (None for a local folder).
    provenance: DropProvenance | None = None
    #: A local registry's drop, read in place (None for a remote drop: `Source.stage` fetches it).
    local: Drop | None = None
    #: What the source needs to stage it: the listed objects of a folder, the versions of a week.
    handle: object = None


@dataclass(frozen=True)
class SourceListing:
    """The drops of a source, oldest first, and the entries that are not drops, with why."""

    drops: tuple[SourceDrop, ...]
    skipped: tuple[SkippedEntry, ...]


@dataclass(frozen=True)
class StagedDrop:
    """A drop ready for the loader: a local folder read by the registry code, and its provenance."""

    drop: Drop
    provenance: DropProvenance | None = None
    #: Files of the drop the registry does not use (half a pair, ...), reported as warnings.
    skipped: tuple[SkippedFolder, ...] = ()
    #: What staging it downloaded: 0 when the same content was staged before.
    bytes_downloaded: int = 0
    files_downloaded: int = 0


def read_staged(folder: Path, drop: SourceDrop, n_bytes: int = 0, n_files: int = 0) -> StagedDrop:
    """Read a staged folder with the registry's own code (`audit.registry.read_drop_folder`). A
    folder that holds no usable model fails the drop with the registry's reason: the remote drop
    was listed because it looked like one."""
    found, skipped = read_drop_folder(folder, drop.week)
    if isinstance(found, SkippedFolder):
        raise AuditError(f"{drop.location}: {found.reason}")
    return StagedDrop(found, drop.provenance, tuple(skipped), n_bytes, n_files)


class Source(Protocol):
    """Lists the drops of a registry and stages one of them into a local folder."""

    #: The registry as shown in logs and stored in SQL (no credentials).
    uri: str

    def list_drops(self) -> SourceListing:
        """The drops it can see, from metadata only (one paginated listing)."""
        ...

    def stage(self, drop: SourceDrop, cache: Path) -> StagedDrop:
        """The drop in a local read-only folder under `cache`, downloaded unless staged before."""
        ...


class LocalSource:
    """A registry folder on this machine: listed with `audit.registry.discover_drops`, read in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.uri = str(folder)

    def list_drops(self) -> SourceListing:
        listing = discover_drops(self.folder)
        drops = tuple(SourceDrop(drop.week, str(drop.path), None, drop) for drop in listing.drops)
        skipped = tuple(SkippedEntry(str(entry.path), entry.reason) for entry in listing.skipped)
        return SourceListing(drops, skipped)

    def stage(self, drop: SourceDrop, cache: Path) -> StagedDrop:
        if drop.local is None:
            raise AuditError(f"{drop.location}: not a drop of the local registry {self.folder}")
        return StagedDrop(drop.local)


class SourceUnavailable(AuditError, ConnectionError):
    """The source cannot be reached (network, server down): transient, so the flow's I/O retries
    (`flows.tasks.is_transient_error`) try the step again before it fails with this one line."""


@dataclass
class Catalog:
    """A run's view of its source: the listing, and the drops staged so far (each once per run).

    The flow stages only what it needs: the drops it audits, the previous drop's model for the
    frozen set, the ``audit.toml`` of a week it compares again.
    """

    source: Source
    listing: SourceListing
    #: ``<out>/.cache/sources``.
    cache: Path
    _staged: dict[dt.date, StagedDrop] = field(default_factory=dict)

    def find(self, week: dt.date) -> SourceDrop | None:
        return next((drop for drop in self.listing.drops if drop.week == week), None)

    def stage(self, drop: SourceDrop) -> StagedDrop:
        if drop.week not in self._staged:
            self._staged[drop.week] = self.source.stage(drop, self.cache)
        return self._staged[drop.week]


def source_for(
    registry: str,
    *,
    mlflow_tracking_uri: str | None = None,
    storage_block: str | None = None,
    held_versions: Collection[int] = (),
) -> Source:
    """The source of a ``--registry`` value: a folder, ``s3://``, ``gs://``, ``file://`` or ``mlflow://``.

    `mlflow_tracking_uri` defaults to ``MLFLOW_TRACKING_URI``; `storage_block` names a Prefect
    ``AwsCredentials`` or ``GcpCredentials`` block for an object store; `held_versions` are the MLflow
    versions earlier audits saw holding the alias of ``mlflow://name@alias``.
    """
    location = parse_registry(registry)
    if location.kind is SourceKind.LOCAL:
        if storage_block:
            raise AuditError(
                f"--storage-block {storage_block} is for s3:// or gs:// registries, not a folder"
            )
        return LocalSource(Path(location.path))
    if location.kind is SourceKind.OBJECT_STORE:
        from flows.sources.object_store import ObjectStoreSource

        return ObjectStoreSource(location, storage_block=storage_block)
    if storage_block:
        raise AuditError(f"--storage-block {storage_block} is for s3:// or gs:// registries, not MLflow")
    from flows.sources.mlflow_registry import MlflowSource

    return MlflowSource(location, tracking_uri=mlflow_tracking_uri, held_versions=held_versions)
