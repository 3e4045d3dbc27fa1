"""Drops in an MLflow Model Registry: ``mlflow://<registered model>[@alias]``, one version per drop.

Listing is `MlflowClient.search_model_versions`, paginated (metadata only). Staging one week's drop
lists each version's artifacts, reads the ``MLmodel`` file as YAML (``safe_load``) to find the Keras
model (`audit.sources.keras_model_files`), and downloads only the model file, the eval sample and
``audit.toml`` (from the model's artifact folder, else from its run's root) into a local folder
that the registry code reads. MLflow's own model loaders (pyfunc, cloudpickle,
``mlflow.keras.load_model``) are never called: downloading artifacts unpickles nothing, and the
model is loaded by the project's safe loader like any ``model.keras``.

The tracking server is ``MLFLOW_TRACKING_URI`` (or ``--mlflow-tracking-uri``); its credentials come
from MLflow's own environment variables (``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``), read by MLflow's client and never logged or stored here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from audit.registry import CONFIG_FILE, EVAL_FILES
from audit.sources import (
    MLMODEL_FILE,
    ArtifactFile,
    ModelVersion,
    RegistryLocation,
    StagedName,
    VersionDrop,
    content_key,
    group_versions,
    keras_model_files,
    redact_uri,
    staged_names,
    version_uri,
)
from audit.types import AuditError, DropProvenance
from flows.sources import SourceDrop, SourceListing, SourceUnavailable, StagedDrop, read_staged
from flows.sources.staging import stage, staged_folder

#: MLflow's HTTP retries, unless the environment sets them: MLflow retries a refused connection 7
#: times with a backoff factor of 2 (minutes); an unreachable server should fail in seconds, and
#: the flow's I/O retries (flows.tasks) try the step again.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
#: Versions asked for per page of `search_model_versions`.
PAGE_SIZE = 200


class MlflowSource:
    """The versions of one registered model, grouped into weekly drops (`audit.sources.group_versions`)."""

    def __init__(
        self,
        location: RegistryLocation,
        *,
        tracking_uri: str | None = None,
        held_versions: Collection[int] = (),
    ) -> None:
        from mlflow import MlflowClient

        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.name = location.path
        self.alias = location.alias
        self.held_versions = frozenset(held_versions)
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not self.tracking_uri:
            raise AuditError(
                f"registry {location.uri}: no MLflow tracking server; set MLFLOW_TRACKING_URI or pass "
                "--mlflow-tracking-uri http://host:5000"
            )
        self.server = redact_uri(self.tracking_uri)
        self.uri = location.uri
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def list_drops(self) -> SourceListing:
        versions = [_version(found) for found in self._search_versions()]
        if not versions:
            self._check_model_exists()
        if self.alias is not None:  # search results do not carry aliases: ask for the holder
            holders = self.held_versions | {self._alias_holder()}
            versions = [
                replace(v, aliases=(*v.aliases, self.alias))
                if v.version in holders and self.alias not in v.aliases
                else v
                for v in versions
            ]
        listing = group_versions(self.name, versions, alias=self.alias, held=self.held_versions)
        if self.alias is not None and not listing.drops:
            raise AuditError(
                f"registry {self.uri}: no version of {self.name!r} holds alias {self.alias!r} on "
                f"{self.server}; set it with MlflowClient().set_registered_model_alias(name, alias, version)"
            )
        drops = tuple(self._source_drop(drop) for drop in listing.drops)
        return SourceListing(drops, listing.skipped)

    def _search_versions(self) -> list[Any]:
        """Every version of the model: `search_model_versions`, page by page."""
        escaped = self.name.replace("'", "\\'")
        found: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(
                lambda token=token: self._client.search_model_versions(
                    filter_string=f"name = '{escaped}'", max_results=PAGE_SIZE, page_token=token
                )
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def _alias_holder(self) -> int | None:
        """The version holding the alias now (MLflow knows no earlier holder), None when none does."""
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_model_version_by_alias(self.name, str(self.alias))
        except MlflowException as error:
            if getattr(error, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise mlflow_error(self.uri, self.server, error) from error
        except Exception as error:
            raise mlflow_error(self.uri, self.server, error) from error
        return int(found.version)

    def _check_model_exists(self) -> None:
        """A model with no version exists but is empty; a missing one is an error listing the names
        that do exist."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.name)
        except MlflowException as error:
            if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise mlflow_error(self.uri, self.server, error) from error
            names = sorted(model.name for model in self._call(self._client.search_registered_models))
            shown = ", ".join(repr(name) for name in names[:20]) or "none"
            raise AuditError(
                f"registry {self.uri}: no registered model {self.name!r} on {self.server}; registered "
                f"models: {shown}"
            ) from None
        raise AuditError(
            f"registry {self.uri}: registered model {self.name!r} has no version yet; register one "
            "with mlflow.keras.log_model(..., registered_model_name=...)"
        )

    def _call(self, request: Any) -> Any:
        try:
            return request()
        except AuditError:
            raise
        except Exception as error:
            raise mlflow_error(self.uri, self.server, error) from error

    def _source_drop(self, drop: VersionDrop) -> SourceDrop:
        primary = drop.primary
        provenance = DropProvenance(
            source_uri=version_uri(self.name, primary.version),
            mlflow_version=primary.version,
            mlflow_run_id=primary.run_id,
            mlflow_aliases=primary.aliases,
        )
        return SourceDrop(drop.week, provenance.source_uri, provenance, handle=drop)

    def stage(self, drop: SourceDrop, cache: Path) -> StagedDrop:
        week = drop.handle if isinstance(drop.handle, VersionDrop) else None
        if week is None or drop.provenance is None:
            raise AuditError(f"{drop.location}: not a drop listed by {self.uri}")
        listed = [self._listed(version, index) for index, version in enumerate(week.versions)]
        # the key comes from the listings alone: a drop staged before is read without any download
        key = content_key(drop.location, [entry for files in listed for entry in files.fingerprint()])
        name = f"version-{week.primary.version}"
        provenance = replace(drop.provenance, content_hash=key)
        located = replace(drop, provenance=provenance)
        folder = staged_folder(cache, key, name)
        if folder.is_dir():
            return read_staged(folder, located)
        plans = [files.plan(self, index) for index, files in enumerate(listed)]
        sizes = {item.target: item.size for plan in plans for item in plan.names}

        def download(target: Path) -> None:
            for plan in plans:
                plan.download(target)

        staged = stage(cache, key, name, sizes, download, where=drop.location)
        return read_staged(staged.folder, located, staged.bytes_downloaded, staged.files_downloaded)

    def _listed(self, version: ModelVersion, index: int) -> _VersionListing:
        """The artifacts of `version` (and, for the week's primary, its run's root): metadata only."""
        where = version_uri(self.name, version.version)
        download_uri = self._call(
            lambda: self._client.get_model_version_download_uri(self.name, str(version.version))
        )
        repository = self._repository(download_uri)
        files = self._list(repository, where)
        run_repository, run_files = None, []
        if index == 0 and version.run_id:
            run_repository = self._run_repository(version.run_id)
            if run_repository is not None:
                run_files = [
                    item
                    for item in self._list(run_repository, where, recursive=False)
                    if item.path in (*EVAL_FILES, CONFIG_FILE)
                ]
        return _VersionListing(where, version.version, repository, files, run_repository, run_files)

    def _repository(self, artifact_uri: str) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return self._call(lambda: get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri))

    def _run_repository(self, run_id: str) -> Any:
        """The artifact repository of the run that logged a version (None when the run is gone)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException as error:
            if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise mlflow_error(self.uri, self.server, error) from error
        except Exception as error:
            raise mlflow_error(self.uri, self.server, error) from error
        return self._repository(run.info.artifact_uri)

    def _list(self, repository: Any, where: str, *, recursive: bool = True) -> list[ArtifactFile]:
        """The files of an artifact folder, with sizes (one listing per sub-folder)."""
        found: list[ArtifactFile] = []
        pending: list[str | None] = [None]
        while pending:
            folder = pending.pop()
            for info in self._call(lambda folder=folder: repository.list_artifacts(folder)):
                if info.is_dir:
                    if recursive:
                        pending.append(info.path)
                else:
                    found.append(ArtifactFile(info.path, int(info.file_size or 0)))
        return sorted(found, key=lambda item: item.path)

    def _read_text(self, repository: Any, path: str, where: str) -> str:
        with tempfile.TemporaryDirectory(prefix="drift-audit-mlmodel-") as folder:
            local = self._call(lambda: repository.download_artifacts(path, dst_path=folder))
            try:
                return Path(local).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise AuditError(f"{where}: cannot read its {path} ({error}); log the model again") from None


@dataclass(frozen=True)
class _VersionListing:
    """What one version's artifact listings say: its model folder's files and its run root's."""

    uri: str
    version: int
    repository: Any
    files: tuple[ArtifactFile, ...] | list[ArtifactFile]
    run_repository: Any
    run_files: tuple[ArtifactFile, ...] | list[ArtifactFile]

    def fingerprint(self) -> list[tuple[str, int, str | None]]:
        """(path, size, where) of every listed file: the staging key's input."""
        model: list[tuple[str, int, str | None]] = [
            (f"{self.uri}/{item.path}", item.size, None) for item in self.files
        ]
        run = [(f"{self.uri}/run/{item.path}", item.size, None) for item in self.run_files]
        return [*model, *run]

    def plan(self, source: MlflowSource, index: int) -> _VersionFiles:
        """Which files go where in the drop folder; reads the version's MLmodel (a small YAML file)
        to find the Keras model, and refuses other flavours."""
        mlmodel = (
            source._read_text(self.repository, MLMODEL_FILE, self.uri)
            if _has(self.files, MLMODEL_FILE)
            else None
        )
        model_files = keras_model_files(self.uri, mlmodel, self.files)
        if not model_files:
            raise AuditError(
                f"{self.uri}: no model file in the version's artifacts ({_listed(self.files)}); log the "
                "model with mlflow.keras.log_model, or a registry-contract folder holding model.keras"
            )
        top = [item for item in self.files if "/" not in item.path]
        names = staged_names(
            model_files, top, self.run_files, copy_index=index, version=self.version, with_extras=index == 0
        )
        return _VersionFiles(self.repository, self.run_repository, names, source)


class _VersionFiles:
    """The files of one version to stage, and how to fetch them."""

    def __init__(
        self, repository: Any, run_repository: Any, names: Sequence[StagedName], source: MlflowSource
    ) -> None:
        self.repository = repository
        self.run_repository = run_repository
        self.names = tuple(names)
        self._source = source

    def download(self, folder: Path) -> None:
        """Download each file into a scratch folder, then move it to its place in `folder`."""
        with tempfile.TemporaryDirectory(prefix="drift-audit-artifacts-", dir=folder.parent) as scratch:
            for name in self.names:
                repository = self.run_repository if name.from_run else self.repository
                local = self._source._call(
                    lambda name=name, repository=repository: repository.download_artifacts(
                        name.source, dst_path=scratch
                    )
                )
                target = folder / name.target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(local, target)


def _version(found: Any) -> ModelVersion:
    created = dt.datetime.fromtimestamp(int(found.creation_timestamp) / 1000, tz=dt.UTC)
    return ModelVersion(
        version=int(found.version),
        created=created,
        tags=dict(found.tags or {}),
        run_id=found.run_id or None,
        source=str(found.source or ""),
        aliases=tuple(getattr(found, "aliases", None) or ()),
    )


def _has(files: Sequence[ArtifactFile], path: str) -> bool:
    return any(item.path == path for item in files)


def _listed(files: Sequence[ArtifactFile]) -> str:
    names = [item.path for item in files][:8]
    return "found: " + ", ".join(names) if names else "it has none"


def mlflow_error(uri: str, server: str, error: BaseException) -> AuditError:
    """One line naming the registry, the server and the fix for an error of MLflow's client."""
    reason = " ".join(str(error).split())
    short = reason[:240] + ("..." if len(reason) > 240 else "")
    if any(code in reason for code in (" 401", "401 ", "Unauthorized", "UNAUTHENTICATED")):
        token = (
            "refused the token in MLFLOW_TRACKING_TOKEN"
            if os.environ.get("MLFLOW_TRACKING_TOKEN")
            else "needs a token"
        )
        return AuditError(
            f"registry {uri}: the MLflow server {server} {token} (401 Unauthorized); set "
            "MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) in the "
            "environment of the flow"
        )
    if any(code in reason for code in (" 403", "403 ", "Forbidden", "PERMISSION_DENIED")):
        return AuditError(
            f"registry {uri}: the MLflow server {server} denied access (403 Forbidden); give the "
            "token's user read access to the model"
        )
    if any(
        text in reason
        for text in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out")
    ):
        return SourceUnavailable(
            f"registry {uri}: cannot reach the MLflow tracking server {server} ({short}); check "
            "MLFLOW_TRACKING_URI (or --mlflow-tracking-uri) and that the server runs"
        )
    return AuditError(f"registry {uri}: MLflow server {server}: {short}")
