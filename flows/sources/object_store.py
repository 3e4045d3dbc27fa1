"""Drops in an object store: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///path`` (fsspec).

The layout is a local registry's: one "folder" (key prefix) per drop, named by its date. Listing is
one paginated listing of everything under the prefix (``find``: S3 ListObjectsV2 without a
delimiter, GCS objects.list), never a request per object; staging downloads only the files the
registry contract reads (`audit.sources.registry_files`), once per content (their ETags and sizes).

Credentials come from the standard environment, read by the store's own client: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` (an S3-compatible
server) for S3; ``GOOGLE_APPLICATION_CREDENTIALS`` (or the machine's default credentials) for GCS. Or
from a Prefect block named by ``storage_block``: ``aws-credentials/<name>`` (prefect-aws
``AwsCredentials``) or ``gcp-credentials/<name>`` (prefect-gcp ``GcpCredentials``); a bare name is
looked up as the block type of the registry's scheme. Secrets are never logged, stored or passed as
flow parameters: only the block's name is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec

from audit.sources import (
    RegistryLocation,
    RemoteFolder,
    StoredObject,
    content_key,
    group_objects,
)
from audit.types import AuditError, DropProvenance
from flows.sources import SourceDrop, SourceListing, SourceUnavailable, StagedDrop, read_staged
from flows.sources.staging import stage

#: botocore's retries of one S3 request (connection refused, throttling): few, so an unreachable
#: endpoint fails in seconds; the flow's I/O retries (flows.tasks) try the whole step again.
S3_CLIENT_CONFIG = {
    "retries": {"max_attempts": 2, "mode": "standard"},
    "connect_timeout": 10,
    "read_timeout": 120,
}
#: Block types by scheme, for a bare ``--storage-block`` name.
_BLOCK_TYPES = {"s3": "aws-credentials", "gs": "gcp-credentials"}


class ObjectStoreSource:
    """The drop folders under an object-store prefix."""

    def __init__(self, location: RegistryLocation, *, storage_block: str | None = None) -> None:
        protocol = location.protocol or "file"
        self.location = location
        self.protocol = protocol
        self.root = location.path.rstrip("/") if protocol != "file" else str(Path(location.path))
        self.uri = f"{protocol}://{self.root}" if protocol != "file" else f"file://{self.root}"
        options = _client_options(protocol)
        if storage_block:
            options.update(block_options(protocol, storage_block))
        self._options = options
        self._fs: fsspec.AbstractFileSystem | None = None

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs = fsspec.filesystem(self.protocol, **self._options)
        return self._fs

    def list_drops(self) -> SourceListing:
        try:
            found = self.fs.find(self.root, detail=True, withdirs=False)
        except Exception as error:
            raise store_error(self.uri, error) from error
        if not found:
            raise AuditError(
                f"registry {self.uri}: nothing under this prefix; check the bucket and the prefix "
                "(the drops are <prefix>/<YYYY-MM-DD>/model.keras, ...)"
            )
        objects = [
            StoredObject(_relative(self.root, str(path)), int(info.get("size") or 0), content_tag(info))
            for path, info in found.items()
            if info.get("type", "file") != "directory"
        ]
        listing = group_objects(self.uri, [item for item in objects if item.path])
        drops = tuple(self._source_drop(folder) for folder in listing.folders)
        return SourceListing(drops, listing.skipped)

    def _source_drop(self, folder: RemoteFolder) -> SourceDrop:
        where = f"{self.uri}/{folder.name}"
        etags = {item.path: item.etag for item in folder.objects if item.etag is not None}
        key = content_key(where, [(item.path, item.size, item.etag) for item in folder.objects])
        provenance = DropProvenance(source_uri=where, content_hash=key, etags=etags)
        return SourceDrop(folder.week, where, provenance, handle=folder)

    def stage(self, drop: SourceDrop, cache: Path) -> StagedDrop:
        folder = drop.handle if isinstance(drop.handle, RemoteFolder) else None
        if folder is None or drop.provenance is None:
            raise AuditError(f"{drop.location}: not a drop listed by {self.uri}")
        sizes = {item.path: item.size for item in folder.objects}

        def download(target: Path) -> None:
            remote = [f"{self.root}/{folder.name}/{item.path}" for item in folder.objects]
            local = [str(target / item.path) for item in folder.objects]
            for path in local:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get(remote, local)
            except Exception as error:
                raise store_error(drop.location, error) from error

        staged = stage(cache, drop.provenance.content_hash, folder.name, sizes, download, where=drop.location)
        return read_staged(staged.folder, drop, staged.bytes_downloaded, staged.files_downloaded)


def content_tag(info: Mapping[str, Any]) -> str | None:
    """The listing's content tag of one object: S3's ETag, GCS's md5 hash or generation, a local
    file's modification time (None when the store gives none: the size alone then keys it)."""
    for name in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified"):
        value = info.get(name)
        if value is not None:
            return str(value).strip('"')
    return None


def _relative(root: str, path: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1 :] if path.startswith(root + "/") else ""


def _client_options(protocol: str) -> dict[str, Any]:
    """fsspec options: a fresh listing every time (no instance or listing cache), few retries."""
    options: dict[str, Any] = {"skip_instance_cache": True}
    if protocol == "s3":
        options.update(use_listings_cache=False, config_kwargs=dict(S3_CLIENT_CONFIG))
    elif protocol == "gs":
        options.update(use_listings_cache=False, retries=2)
    return options


def block_options(protocol: str, name: str) -> dict[str, Any]:
    """fsspec credentials from a Prefect block: ``aws-credentials/<name>`` for S3 (key, secret,
    session token, region, endpoint), ``gcp-credentials/<name>`` for GCS (service account, project)."""
    from prefect.blocks.core import Block

    slug = name if "/" in name else f"{_BLOCK_TYPES.get(protocol, 'aws-credentials')}/{name}"
    try:
        block = Block.load(slug)
    except Exception as error:
        reason = " ".join(str(error).split())
        raise AuditError(
            f"--storage-block {name}: cannot load Prefect block {slug} ({reason}); create it with "
            "prefect-aws AwsCredentials(...).save(name) or prefect-gcp GcpCredentials(...).save(name)"
        ) from None
    kind = type(block).__name__
    if kind == "AwsCredentials" and protocol == "s3":
        return _aws_options(block)
    if kind == "GcpCredentials" and protocol == "gs":
        return _gcp_options(block)
    raise AuditError(f"--storage-block {name}: a {kind} block cannot open a {protocol}:// registry")


def _aws_options(block: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if block.aws_access_key_id:
        options["key"] = block.aws_access_key_id
    if block.aws_secret_access_key is not None:
        options["secret"] = block.aws_secret_access_key.get_secret_value()
    if block.aws_session_token:
        options["token"] = block.aws_session_token
    if block.profile_name:
        options["profile"] = block.profile_name
    client: dict[str, Any] = {}
    if block.region_name:
        client["region_name"] = block.region_name
    endpoint = getattr(block.aws_client_parameters, "endpoint_url", None)
    if endpoint:
        client["endpoint_url"] = endpoint
    if client:
        options["client_kwargs"] = client
    return options


def _gcp_options(block: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if block.service_account_info is not None:
        options["token"] = dict(block.service_account_info.get_secret_value())
    elif block.service_account_file is not None:
        options["token"] = str(block.service_account_file)
    if block.project:
        options["project"] = block.project
    return options


def store_error(where: str, error: BaseException) -> AuditError:
    """One line naming `where` and the fix, for an error of the store's client (no secret in it)."""
    kind = type(error).__name__
    reason = " ".join(str(error).split())[:300] or kind
    if isinstance(error, PermissionError) or any(
        code in reason for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403")
    ):
        return AuditError(
            f"registry {where}: access denied ({reason}); check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, or --storage-block)"
        )
    if isinstance(error, FileNotFoundError) or "NoSuchBucket" in reason:
        return AuditError(f"registry {where}: no such bucket or prefix ({reason}); check the URI")
    return SourceUnavailable(
        f"registry {where}: cannot reach the object store ({kind}: {reason}); check the network and "
        "the endpoint (AWS_ENDPOINT_URL for an S3-compatible server)"
    )
