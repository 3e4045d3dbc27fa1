"""Where a registry lives, and how the drops of a remote registry map onto the registry contract.

Pure logic, no I/O: the network clients are in `flows.sources`, which hand these functions what a
listing returned (object names, sizes and ETags; MLflow model versions and their tags) and get back
which drops exist, which files a drop needs, and the key its staged copy is kept under. A staged
drop is a local folder read by `audit.registry.read_drop_folder`, like any folder of a local registry.

- **Object stores** (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///path``): the layout of a
  local registry, one "folder" (key prefix) per drop named by its date.
- **MLflow Model Registry** (``mlflow://<registered model>``): one model version per drop. Its week is
  the version tag ``week`` (``YYYY-MM-DD``) when set, else the version's creation date (UTC). Several
  versions of one week are reseeded copies of one drop when all but at most one carry the tag
  ``reseed`` (the untagged one, else the lowest version, is the primary); otherwise the newest
  version is the week's drop and the others are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

import yaml

from audit.model_formats import (
    ACCEPTED,
    H5_SUFFIXES,
    KERAS3_WEIGHTS_SUFFIX,
    SAVED_MODEL_FILE,
    STRUCTURE_SUFFIX,
    WEIGHTS_SUFFIX,
)
from audit.registry import CONFIG_FILE, EVAL_FILES, parse_drop_date
from audit.types import AuditError

#: The version tag that sets an MLflow version's week, and the one that marks a reseeded copy.
WEEK_TAG = "week"
RESEED_TAG = "reseed"
#: Schemes of object stores read through fsspec (``gcs`` is fsspec's other name for ``gs``).
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "file")
MLFLOW_SCHEME = "mlflow"
#: The file MLflow writes beside every logged model, naming its flavours.
MLMODEL_FILE = "MLmodel"
#: How to log a model the auditor can read, for messages.
HOW_TO_LOG_KERAS = (
    "log the Keras model with mlflow.keras.log_model(model, name='model', registered_model_name=...), "
    "or log a folder that follows the registry contract with mlflow.log_artifacts"
)


class SourceKind(StrEnum):
    """Where the drops are: a local folder, an object store, or an MLflow Model Registry."""

    LOCAL = "local"
    OBJECT_STORE = "object-store"
    MLFLOW = "mlflow"


@dataclass(frozen=True)
class RegistryLocation:
    """A parsed ``--registry`` value: a folder, ``s3://``/``gs://``/``file://`` or ``mlflow://``."""

    kind: SourceKind
    #: The value as given (it never holds a password: `parse_registry` refuses one).
    uri: str
    #: fsspec protocol of an object store (``s3``, ``gs``, ``file``), else None.
    protocol: str | None = None
    #: The object store's bucket/prefix (no scheme, no trailing slash), the local folder, or the
    #: registered model's name.
    path: str = ""
    #: ``mlflow://name@alias``: audit only the versions seen holding this alias.
    alias: str | None = None

    @property
    def default_model_name(self) -> str:
        """The name stored with the figures by default: the registered model's name, else the last
        segment of the folder or prefix."""
        if self.kind is SourceKind.MLFLOW:
            return self.path
        return PurePosixPath(self.path.rstrip("/") or "/").name or self.path.strip("/") or "registry"


def parse_registry(value: str) -> RegistryLocation:
    """Parse a ``--registry`` value; an `AuditError` naming the fix for anything else.

    A value without ``://`` is a local folder. A URI must not hold a password (``user:secret@``):
    the value is a flow parameter, stored by Prefect and shown in logs; credentials come from the
    environment or a Prefect block.
    """
    text = value.strip()
    if "://" not in text:
        if not text:
            raise AuditError(
                "--registry is empty; pass a folder or an s3://, gs://, file:// or mlflow:// URI"
            )
        return RegistryLocation(SourceKind.LOCAL, text, path=text)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    # in mlflow://name@alias the part before "@" is the model's name, not a user
    if parts.password is not None or (parts.username and scheme not in ("file", MLFLOW_SCHEME)):
        raise AuditError(
            f"registry {redact_uri(text)} holds credentials; remove them from the URI and set them in "
            "the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, MLFLOW_TRACKING_TOKEN) or a "
            "Prefect block (--storage-block)"
        )
    if scheme == MLFLOW_SCHEME:
        return _mlflow_location(text, parts)
    if scheme in OBJECT_STORE_SCHEMES:
        path = (parts.netloc + parts.path).rstrip("/") if scheme != "file" else parts.path.rstrip("/")
        if not path or (scheme != "file" and not parts.netloc):
            raise AuditError(f"registry {text}: no bucket; pass {scheme}://<bucket>/<prefix>")
        protocol = "gs" if scheme == "gcs" else scheme
        return RegistryLocation(SourceKind.OBJECT_STORE, text, protocol=protocol, path=path or "/")
    raise AuditError(
        f"registry {redact_uri(text)}: unknown scheme {scheme!r}; pass a folder, s3://bucket/prefix, "
        "gs://bucket/prefix, file:///path or mlflow://<registered model name>"
    )


def _mlflow_location(text: str, parts: urllib.parse.SplitResult) -> RegistryLocation:
    name = urllib.parse.unquote(parts.netloc + parts.path).strip()
    alias = None
    if "@" in name:
        name, alias = (piece.strip() for piece in name.rsplit("@", 1))
        if not alias:
            raise AuditError(f"registry {text}: empty alias after '@'; pass mlflow://<name>@<alias>")
    if not name:
        raise AuditError(f"registry {text}: no model name; pass mlflow://<registered model name>")
    return RegistryLocation(SourceKind.MLFLOW, text, path=name, alias=alias)


def refuse_password(uri: str, what: str) -> str:
    """`uri` unless it holds a password (``user:secret@host``): an `AuditError` naming `what` and the
    fix. For URIs passed as flow parameters, which Prefect stores and shows."""
    try:
        password = urllib.parse.urlsplit(uri).password
    except ValueError:
        password = None
    if password is not None:
        raise AuditError(
            f"{what} {redact_uri(uri)} holds a password; set it in the environment instead "
            "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        )
    return uri


def redact_uri(uri: str) -> str:
    """`uri` with the password of ``user:password@host`` replaced by ``***`` (for logs, messages, SQL)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


# --- object stores -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """One object of a drop folder, as the listing returned it (no content read)."""

    #: Path relative to the drop folder, ``/``-separated (``model.keras``, ``export/saved_model.pb``).
    path: str
    size: int
    #: The store's content tag (S3 ETag, GCS md5/generation; a local file's mtime), None if unknown.
    etag: str | None


@dataclass(frozen=True)
class RemoteFolder:
    """A drop folder of an object store: its name under the prefix, its date, the files it needs."""

    name: str
    week: dt.date
    #: The objects the registry contract reads (models, eval file, audit.toml), by path.
    objects: tuple[StoredObject, ...]


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of a remote listing that is not a drop (or a version not audited), and why."""

    where: str
    reason: str


@dataclass(frozen=True)
class FolderListing:
    """The drop folders of an object-store prefix, oldest first, and the entries that are not drops."""

    folders: tuple[RemoteFolder, ...]
    skipped: tuple[SkippedEntry, ...]


def group_objects(base: str, objects: Iterable[StoredObject]) -> FolderListing:
    """Group a listing of everything under a prefix (paths relative to it) into drop folders.

    The rules of `audit.registry.discover_drops`, judged on names: an entry directly under the
    prefix is "not a folder", a hidden one or one whose name is not a date is skipped, a folder
    without a model-like name has no model, and a second folder for a date already seen is skipped.
    Only the files the registry contract reads are kept (`registry_files`); everything else in a
    drop folder (logs, notes) is never downloaded. `base` is the prefix's URI, for messages.
    """
    by_folder: dict[str, list[StoredObject]] = {}
    skipped: list[SkippedEntry] = []
    for item in objects:
        folder, _, rest = item.path.partition("/")
        if not rest:
            skipped.append(SkippedEntry(f"{base}/{folder}", "not a folder"))
            continue
        by_folder.setdefault(folder, []).append(StoredObject(rest, item.size, item.etag))
    weeks: dict[dt.date, RemoteFolder] = {}
    for name in sorted(by_folder):
        where = f"{base}/{name}"
        week = parse_drop_date(name)
        if name.startswith("."):
            skipped.append(SkippedEntry(where, "hidden entry"))
        elif week is None:
            skipped.append(SkippedEntry(where, "folder name is not a date (YYYY-MM-DD or YYYYMMDD)"))
        elif week in weeks:
            first = weeks[week].name
            skipped.append(SkippedEntry(where, f"same date as {first}; keep one folder per date"))
        else:
            needed = registry_files(by_folder[name])
            if not any(_model_like(item.path) for item in needed):
                skipped.append(SkippedEntry(where, f"no model in the drop (expected {ACCEPTED})"))
            else:
                weeks[week] = RemoteFolder(name, week, needed)
    return FolderListing(tuple(weeks[week] for week in sorted(weeks)), tuple(skipped))


def registry_files(objects: Iterable[StoredObject]) -> tuple[StoredObject, ...]:
    """The objects of a drop folder that `audit.registry.read_drop_folder` reads, in path order.

    Top-level model files (the halves of JSON pairs and weights-only files too, so the registry
    reports them as it does locally), the eval files, ``audit.toml``, and every file of a folder
    holding ``saved_model.pb`` (a SavedModel).
    """
    items = sorted(objects, key=lambda item: item.path)
    saved_models = {
        item.path.rsplit("/", 1)[0]
        for item in items
        if item.path.count("/") == 1 and item.path.endswith("/" + SAVED_MODEL_FILE)
    }
    wanted = []
    for item in items:
        top, _, rest = item.path.partition("/")
        if rest:
            if top in saved_models and not top.startswith("."):
                wanted.append(item)
        elif not top.startswith(".") and (
            top in EVAL_FILES
            or top == CONFIG_FILE
            or _model_like(top)
            or top.endswith((WEIGHTS_SUFFIX, KERAS3_WEIGHTS_SUFFIX))
        ):
            wanted.append(item)
    return tuple(wanted)


def _model_like(path: str) -> bool:
    """Whether `path` names a model (by `audit.model_formats`' rules on names), or a SavedModel's pb."""
    if path.count("/") == 1 and path.endswith("/" + SAVED_MODEL_FILE):
        return True
    if "/" in path:
        return False
    if path.endswith(".keras") or (path.endswith(STRUCTURE_SUFFIX) and len(path) > len(STRUCTURE_SUFFIX)):
        return True
    return path.endswith(H5_SUFFIXES) and not path.endswith((WEIGHTS_SUFFIX, KERAS3_WEIGHTS_SUFFIX))


def content_key(source: str, files: Iterable[tuple[str, int, str | None]]) -> str:
    """The key a staged drop is kept under: a SHA-256 of where it came from and of each file's
    (path, size, content tag). Same key, same content: a drop staged before is not downloaded again;
    a file replaced in the store (a new ETag or size) gives a new key."""
    record = {"source": source, "files": sorted([path, size, tag] for path, size, tag in files)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


# --- MLflow Model Registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    """What the MLflow registry says about one model version (from `search_model_versions`)."""

    version: int
    #: When the version was registered, UTC.
    created: dt.datetime
    tags: Mapping[str, str]
    run_id: str | None
    #: Where its files are (``models:/m-...``, ``runs:/<run>/model``, an artifact URI).
    source: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionDrop:
    """One week's drop of a registered model: its versions, the primary first (then reseeded copies)."""

    week: dt.date
    versions: tuple[ModelVersion, ...]

    @property
    def primary(self) -> ModelVersion:
        return self.versions[0]


@dataclass(frozen=True)
class VersionListing:
    """The weekly drops of a registered model, oldest first, and the versions not audited, with why."""

    drops: tuple[VersionDrop, ...]
    skipped: tuple[SkippedEntry, ...]


def version_week(version: ModelVersion) -> dt.date:
    """The week a version stands for: its ``week`` tag, else its creation date in UTC.

    Raises `AuditError` for a ``week`` tag that is not a date.
    """
    tag = version.tags.get(WEEK_TAG)
    if tag is None:
        return version.created.astimezone(dt.UTC).date()
    week = parse_drop_date(tag.strip())
    if week is None:
        raise AuditError(f"tag week = {tag!r} is not a date; set it to YYYY-MM-DD")
    return week


def group_versions(
    name: str, versions: Iterable[ModelVersion], *, alias: str | None = None, held: Collection[int] = ()
) -> VersionListing:
    """The weekly drops of registered model `name` from its versions (see the module docstring).

    With `alias`, only the versions that hold it now or are in `held` (versions seen holding it
    before, recorded by earlier audits) are considered; the others are not listed at all.
    """
    chosen = [v for v in versions if alias is None or alias in v.aliases or v.version in held]
    by_week: dict[dt.date, list[ModelVersion]] = {}
    skipped: list[SkippedEntry] = []
    for version in sorted(chosen, key=lambda v: v.version):
        try:
            week = version_week(version)
        except AuditError as error:
            skipped.append(SkippedEntry(version_uri(name, version.version), str(error)))
            continue
        by_week.setdefault(week, []).append(version)
    drops = []
    for week in sorted(by_week):
        drop, not_used = _week_drop(name, week, by_week[week])
        drops.append(drop)
        skipped.extend(not_used)
    return VersionListing(tuple(drops), tuple(skipped))


def _week_drop(
    name: str, week: dt.date, versions: Sequence[ModelVersion]
) -> tuple[VersionDrop, list[SkippedEntry]]:
    """One week's versions (in version order) as a drop, and the versions it leaves out."""
    untagged = [v for v in versions if RESEED_TAG not in v.tags]
    if len(versions) == 1 or len(untagged) <= 1:
        primary = untagged[0] if untagged else versions[0]
        copies = tuple(v for v in versions if v is not primary)
        return VersionDrop(week, (primary, *copies)), []
    newest = versions[-1]
    reason = (
        f"same week ({week.isoformat()}) as version {newest.version}, which is audited; tag reseeded "
        f"copies with {RESEED_TAG!r}, or set the {WEEK_TAG!r} tag of each version"
    )
    return VersionDrop(week, (newest,)), [
        SkippedEntry(version_uri(name, v.version), reason) for v in versions[:-1]
    ]


def version_uri(name: str, version: int) -> str:
    """How a model version is named in messages and stored as its drop's source."""
    return f"mlflow://{urllib.parse.quote(name, safe='')}/{version}"


@dataclass(frozen=True)
class ArtifactFile:
    """A file of a model version's artifacts (or of its run's), as listed: path and size."""

    path: str
    size: int


@dataclass(frozen=True)
class StagedName:
    """Where an artifact goes in the staged drop folder: from `source` (relative to the version's
    model folder, or to its run's root when `from_run`) to `target` (relative to the drop folder)."""

    source: str
    target: str
    size: int
    from_run: bool = False


def keras_model_files(
    where: str, mlmodel: str | None, files: Sequence[ArtifactFile]
) -> tuple[ArtifactFile, ...]:
    """The files of a version's model folder that hold its Keras model, judged from its MLmodel.

    - no MLmodel: a folder logged as artifacts that follows the registry contract; its model files
      are the top-level model files (`registry_files`);
    - an MLmodel with the ``keras`` flavour: the ``.keras`` file (or the SavedModel folder) under the
      flavour's data folder, as `mlflow.keras.log_model` writes it (``data/model.keras``);
    - any other flavour (a pickled pyfunc, sklearn, ...): an `AuditError` naming the flavours and how
      to log a Keras model. The MLmodel is YAML read with ``safe_load``; nothing is unpickled.
    """
    if mlmodel is None:
        return tuple(
            ArtifactFile(item.path, item.size)
            for item in registry_files(StoredObject(f.path, f.size, None) for f in files)
            if _model_like(item.path) or item.path.endswith(WEIGHTS_SUFFIX)
        )
    flavors = _flavors(where, mlmodel)
    if "keras" not in flavors:
        named = ", ".join(sorted(flavors)) or "none"
        raise AuditError(f"{where}: not a Keras model (MLflow flavours: {named}); {HOW_TO_LOG_KERAS}")
    keras_flavor = flavors["keras"]
    data = str(keras_flavor.get("data", "data") if isinstance(keras_flavor, dict) else "data").strip("/")
    inside = [f for f in files if f.path.startswith(data + "/")]
    keras_files = [f for f in inside if f.path.endswith(".keras")]
    if keras_files:
        return tuple(keras_files[:1])
    saved = [f for f in inside if f.path.endswith("/" + SAVED_MODEL_FILE)]
    if saved:
        folder = saved[0].path.rsplit("/", 1)[0]
        return tuple(f for f in inside if f.path.startswith(folder + "/"))
    raise AuditError(
        f"{where}: the keras flavour's folder {data}/ holds no .keras file or SavedModel; {HOW_TO_LOG_KERAS}"
    )


def _flavors(where: str, mlmodel: str) -> dict[str, object]:
    try:
        document = yaml.safe_load(mlmodel)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise AuditError(f"{where}: MLmodel is not valid YAML ({reason}); log the model again") from None
    flavors = document.get("flavors") if isinstance(document, dict) else None
    if not isinstance(flavors, dict):
        raise AuditError(f"{where}: MLmodel names no flavours; {HOW_TO_LOG_KERAS}")
    return {str(key): value for key, value in flavors.items()}


def staged_names(
    model_files: Sequence[ArtifactFile],
    model_folder: Sequence[ArtifactFile],
    run_root: Sequence[ArtifactFile],
    *,
    copy_index: int = 0,
    version: int = 0,
    with_extras: bool = True,
) -> tuple[StagedName, ...]:
    """Where each file of one version goes in the drop folder.

    The model keeps its file name in a registry-contract folder; a flavour's ``data/model.keras``
    becomes ``model.keras``. A reseeded copy (`copy_index` > 0) is renamed ``model_v<version>`` so
    that the primary stays the model named ``model``. The eval file and ``audit.toml`` (of the
    primary only, `with_extras`) come from the model folder, else from the run's root.
    """
    names: list[StagedName] = []
    for item in model_files:
        target = _model_target(item.path, model_files)
        if copy_index:
            target = _renamed_copy(target, version)
        names.append(StagedName(item.path, target, item.size))
    if not with_extras:
        return tuple(names)
    for wanted in (*EVAL_FILES, CONFIG_FILE):
        here = next((f for f in model_folder if f.path == wanted), None)
        there = next((f for f in run_root if f.path == wanted), None)
        if here is not None:
            names.append(StagedName(here.path, wanted, here.size))
        elif there is not None:
            names.append(StagedName(there.path, wanted, there.size, from_run=True))
    return tuple(names)


def _model_target(path: str, model_files: Sequence[ArtifactFile]) -> str:
    """``data/model.keras`` -> ``model.keras``; a SavedModel folder keeps its own name and layout;
    files of a registry-contract folder keep their paths."""
    saved = [f.path for f in model_files if f.path.endswith("/" + SAVED_MODEL_FILE)]
    if saved:
        folder = saved[0].rsplit("/", 1)[0]
        parent = folder.rsplit("/", 1)[0] + "/" if "/" in folder else ""
        return path[len(parent) :]
    return path.rsplit("/", 1)[-1] if path.startswith("data/") and path.endswith(".keras") else path


def _renamed_copy(target: str, version: int) -> str:
    top, sep, rest = target.partition("/")
    for suffix in (STRUCTURE_SUFFIX, WEIGHTS_SUFFIX, ".keras", *H5_SUFFIXES):
        if not sep and top.endswith(suffix):
            return f"{top[: -len(suffix)]}_v{version}{suffix}"
    return f"{top}_v{version}{sep}{rest}"


_ALIAS = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_alias(alias: str) -> str:
    """`alias` when it is a valid MLflow alias name, else an `AuditError`."""
    if not _ALIAS.match(alias):
        raise AuditError(f"alias {alias!r} is not an MLflow alias name (letters, digits, _ and -)")
    return alias
