"""The pure logic of remote registries (audit/sources.py) and the staging of a drop
(flows/sources/staging.py), without any server; the local source and file:// through fsspec."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

import flows.weekly_audit  # noqa: F401  (Prefect sets up its logging on the real stderr, before capsys)
from audit.registry import read_drop_folder
from audit.sources import (
    ArtifactFile,
    ModelVersion,
    SourceKind,
    StoredObject,
    content_key,
    group_objects,
    group_versions,
    keras_model_files,
    parse_registry,
    redact_uri,
    refuse_password,
    registry_files,
    staged_names,
    version_week,
)
from audit.types import AuditError, Drop, SkippedFolder
from flows.cli import main
from flows.sources import LocalSource, source_for
from flows.sources.staging import stage, staged_folder
from tests.helpers import linear_model, small_registry

UTC = dt.UTC


# --- --registry values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "protocol", "path", "alias", "name"),
    [
        ("/models/pm25", SourceKind.LOCAL, None, "/models/pm25", None, "pm25"),
        ("s3://bucket/team/pm25/", SourceKind.OBJECT_STORE, "s3", "bucket/team/pm25", None, "pm25"),
        ("s3://bucket", SourceKind.OBJECT_STORE, "s3", "bucket", None, "bucket"),
        ("gs://bucket/pm25", SourceKind.OBJECT_STORE, "gs", "bucket/pm25", None, "pm25"),
        ("gcs://bucket/pm25", SourceKind.OBJECT_STORE, "gs", "bucket/pm25", None, "pm25"),
        ("file:///data/registry", SourceKind.OBJECT_STORE, "file", "/data/registry", None, "registry"),
        ("mlflow://pm25-forecaster", SourceKind.MLFLOW, None, "pm25-forecaster", None, "pm25-forecaster"),
        ("mlflow://PM%2025@champion", SourceKind.MLFLOW, None, "PM 25", "champion", "PM 25"),
    ],
)
def test_registry_values(
    value: str, kind: SourceKind, protocol: str | None, path: str, alias: str | None, name: str
) -> None:
    location = parse_registry(value)
    assert (location.kind, location.protocol, location.path, location.alias) == (kind, protocol, path, alias)
    assert location.default_model_name == name


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("s3://key:secret@bucket/p", r"registry s3://key:\*\*\*@bucket/p holds credentials; remove them"),
        ("mlflow://user:pw@model", r"holds credentials"),
        ("ftp://host/models", r"unknown scheme 'ftp'; pass a folder, s3://bucket/prefix"),
        ("mlflow://", r"no model name; pass mlflow://<registered model name>"),
        ("mlflow://model@", r"empty alias after '@'"),
        ("s3:///prefix", r"no bucket; pass s3://<bucket>/<prefix>"),
        ("  ", r"--registry is empty"),
    ],
)
def test_bad_registry_values_name_the_fix(value: str, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        parse_registry(value)


def test_a_tracking_uri_with_a_password_is_refused() -> None:
    assert refuse_password("http://127.0.0.1:5000", "--mlflow-tracking-uri") == "http://127.0.0.1:5000"
    with pytest.raises(AuditError, match=r"--mlflow-tracking-uri https://u:\*\*\*@host holds a password"):
        refuse_password("https://u:pw@host", "--mlflow-tracking-uri")


def test_redact_uri_hides_only_the_password() -> None:
    assert redact_uri("https://alice:s3cret@mlflow.example.com/x") == "https://alice:***@mlflow.example.com/x"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


# --- object stores ------------------------------------------------------------------------------


def _objects(*paths: str) -> list[StoredObject]:
    return [StoredObject(path, 10 + i, f"etag{i}") for i, path in enumerate(paths)]


def test_object_listing_follows_the_registry_rules() -> None:
    listing = group_objects(
        "s3://b/p",
        _objects(
            "2014-11-10/model.keras",
            "2014-11-10/eval.npz",
            "2014-11-10/audit.toml",
            "2014-11-10/notes.txt",
            "2014-11-10/logs/train.log",
            "20141103/export/saved_model.pb",
            "20141103/export/variables/variables.index",
            "2014-11-03/model.keras",
            "latest/model.keras",
            "2014-11-17/eval.npz",
            ".trash/model.keras",
            "README.md",
        ),
    )
    assert [(f.name, f.week) for f in listing.folders] == [
        ("2014-11-03", dt.date(2014, 11, 3)),
        ("2014-11-10", dt.date(2014, 11, 10)),
    ]
    assert [o.path for o in listing.folders[1].objects] == ["audit.toml", "eval.npz", "model.keras"]
    reasons = {entry.where: entry.reason for entry in listing.skipped}
    assert reasons["s3://b/p/README.md"] == "not a folder"
    assert reasons["s3://b/p/latest"].startswith("folder name is not a date")
    assert reasons["s3://b/p/.trash"] == "hidden entry"
    assert reasons["s3://b/p/2014-11-17"].startswith("no model in the drop (expected model.keras")
    assert reasons["s3://b/p/20141103"] == "same date as 2014-11-03; keep one folder per date"


def test_registry_files_keep_saved_models_pairs_and_weights_only_files() -> None:
    kept = registry_files(
        _objects(
            "m_structure.json",
            "m_weights.h5",
            "c.weights.h5",
            "export/saved_model.pb",
            "export/variables/variables.data-00000-of-00001",
            "other/readme.txt",
            "eval.parquet",
        )
    )
    assert [item.path for item in kept] == [
        "c.weights.h5",
        "eval.parquet",
        "export/saved_model.pb",
        "export/variables/variables.data-00000-of-00001",
        "m_structure.json",
        "m_weights.h5",
    ]


def test_content_key_changes_with_any_tag_size_or_path() -> None:
    files = [("model.keras", 100, "a"), ("eval.npz", 50, "b")]
    key = content_key("s3://b/p/2014-11-03", files)
    assert key == content_key("s3://b/p/2014-11-03", list(reversed(files))) and len(key) == 64
    assert key != content_key("s3://b/p/2014-11-03", [("model.keras", 100, "c"), ("eval.npz", 50, "b")])
    assert key != content_key("s3://b/p/2014-11-03", [("model.keras", 101, "a"), ("eval.npz", 50, "b")])
    assert key != content_key("s3://b/q/2014-11-03", files)


# --- MLflow versions ----------------------------------------------------------------------------


def _version(number: int, created: str, **tags: str) -> ModelVersion:
    return ModelVersion(
        number, dt.datetime.fromisoformat(created).replace(tzinfo=UTC), tags, "run", "models:/m"
    )


def test_a_version_week_is_its_tag_else_its_utc_creation_date() -> None:
    assert version_week(_version(1, "2014-11-05T23:30", week="2014-11-03")) == dt.date(2014, 11, 3)
    late_evening_in_new_york = dt.datetime(2014, 11, 3, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    version = ModelVersion(1, late_evening_in_new_york, {}, None, "")
    assert version_week(version) == dt.date(2014, 11, 4)
    with pytest.raises(AuditError, match=r"tag week = 'monday' is not a date; set it to YYYY-MM-DD"):
        version_week(_version(1, "2014-11-05", week="monday"))


def test_versions_group_into_weeks_with_reseeded_copies() -> None:
    listing = group_versions(
        "pm25",
        [
            _version(4, "2014-11-12", reseed="1"),
            _version(3, "2014-11-10"),
            _version(5, "2014-11-13", week="2014-11-10", reseed="2"),
            _version(1, "2014-11-03"),
            _version(2, "2014-11-03T12:00"),  # a second untagged version that week: version 2 wins
            _version(6, "2014-11-20", week="bad"),
            _version(7, "2014-11-24", reseed="x"),  # only reseed-tagged: the lowest is the primary
            _version(8, "2014-11-24", reseed="y"),
        ],
    )
    weeks = [(drop.week.isoformat(), [v.version for v in drop.versions]) for drop in listing.drops]
    # version 4 has no week tag: its creation date makes it a week of its own
    assert weeks == [("2014-11-03", [2]), ("2014-11-10", [3, 5]), ("2014-11-12", [4]), ("2014-11-24", [7, 8])]
    reasons = {entry.where: entry.reason for entry in listing.skipped}
    assert reasons["mlflow://pm25/1"].startswith("same week (2014-11-03) as version 2, which is audited; tag")
    assert reasons["mlflow://pm25/6"] == "tag week = 'bad' is not a date; set it to YYYY-MM-DD"


def test_an_alias_keeps_its_holder_and_the_versions_seen_holding_it() -> None:
    versions = [
        ModelVersion(1, dt.datetime(2014, 11, 3, tzinfo=UTC), {}, None, ""),
        ModelVersion(2, dt.datetime(2014, 11, 10, tzinfo=UTC), {}, None, ""),
        ModelVersion(3, dt.datetime(2014, 11, 17, tzinfo=UTC), {}, None, "", aliases=("champion",)),
    ]
    holder = group_versions("m", versions, alias="champion")
    assert [drop.primary.version for drop in holder.drops] == [3]
    seen = group_versions("m", versions, alias="champion", held={1})
    assert [drop.primary.version for drop in seen.drops] == [1, 3]


MLMODEL_KERAS = """
flavors:
  keras: {data: data, keras_backend: tensorflow, keras_version: 3.15.1, save_exported_model: false}
  python_function: {loader_module: mlflow.keras, env: {conda: conda.yaml}}
"""
MLMODEL_PYFUNC = """
flavors:
  python_function:
    cloudpickle_version: 3.1.2
    loader_module: mlflow.pyfunc.model
    python_model: python_model.pkl
"""


def _files(*paths: str) -> list[ArtifactFile]:
    return [ArtifactFile(path, 100 + i) for i, path in enumerate(paths)]


def test_the_keras_flavour_names_its_model_file() -> None:
    files = _files("MLmodel", "conda.yaml", "data/keras_module.txt", "data/model.keras", "requirements.txt")
    assert [f.path for f in keras_model_files("mlflow://m/1", MLMODEL_KERAS, files)] == ["data/model.keras"]
    exported = _files("MLmodel", "data/model/saved_model.pb", "data/model/variables/variables.index")
    assert [f.path for f in keras_model_files("mlflow://m/1", MLMODEL_KERAS, exported)] == [
        "data/model/saved_model.pb",
        "data/model/variables/variables.index",
    ]
    folder = _files("model.keras", "model_seed1.keras", "eval.npz", "notes.txt")
    assert [f.path for f in keras_model_files("mlflow://m/1", None, folder)] == [
        "model.keras",
        "model_seed1.keras",
    ]


@pytest.mark.parametrize(
    ("mlmodel", "message"),
    [
        (
            MLMODEL_PYFUNC,
            r"mlflow://m/2: not a Keras model \(MLflow flavours: python_function\); log the Keras",
        ),
        ("flavors:\n  sklearn: {}\n  python_function: {}\n", r"flavours: python_function, sklearn\)"),
        ("flavors: [", r"MLmodel is not valid YAML"),
        ("artifact_path: x\n", r"MLmodel names no flavours"),
        ("flavors: !!python/object:os.system {}\n", r"MLmodel is not valid YAML"),  # safe_load: no objects
        (MLMODEL_KERAS, r"the keras flavour's folder data/ holds no .keras file or SavedModel"),
    ],
)
def test_other_flavours_are_refused_with_the_fix(mlmodel: str, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        keras_model_files("mlflow://m/2", mlmodel, _files("MLmodel", "python_model.pkl"))


def test_staged_names_rename_copies_and_take_the_eval_sample_from_the_model_folder_first() -> None:
    model = _files("data/model.keras")
    top = _files("MLmodel", "audit.toml")
    run = _files("eval.npz", "audit.toml")
    names = staged_names(model, top, run)
    assert [(n.source, n.target, n.from_run) for n in names] == [
        ("data/model.keras", "model.keras", False),
        ("eval.npz", "eval.npz", True),
        ("audit.toml", "audit.toml", False),
    ]
    copy = staged_names(model, top, run, copy_index=1, version=7, with_extras=False)
    assert [(n.source, n.target) for n in copy] == [("data/model.keras", "model_v7.keras")]
    pair = staged_names(_files("m_structure.json", "m_weights.h5"), [], [], copy_index=1, version=3)
    assert [n.target for n in pair] == ["m_v3_structure.json", "m_v3_weights.h5"]


# --- staging ------------------------------------------------------------------------------------


def test_staging_is_atomic_read_only_and_done_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calls: list[Path] = []

    def download(folder: Path) -> None:
        calls.append(folder)
        (folder / "model.keras").write_bytes(b"x" * 5)

    first = stage(cache, "ab" * 32, "2014-11-03", {"model.keras": 5}, download, where="s3://b/p/2014-11-03")
    assert first.folder == staged_folder(cache, "ab" * 32, "2014-11-03") and first.bytes_downloaded == 5
    assert not (first.folder / "model.keras").stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    again = stage(cache, "ab" * 32, "2014-11-03", {"model.keras": 5}, download, where="s3://b/p/2014-11-03")
    assert (again.folder, again.bytes_downloaded, again.files_downloaded, len(calls)) == (
        first.folder,
        0,
        0,
        1,
    )
    assert [p.name for p in (cache / "ab").iterdir()] == ["ab" * 32]  # no temporary folder left

    def interrupted(folder: Path) -> None:
        (folder / "model.keras").write_bytes(b"x")
        raise ConnectionResetError("the connection dropped")

    with pytest.raises(ConnectionResetError):
        stage(cache, "cd" * 32, "2014-11-10", {"model.keras": 5}, interrupted, where="s3://b/p/2014-11-10")
    assert list((cache / "cd").iterdir()) == []  # nothing half-written
    with pytest.raises(AuditError, match=r"s3://b/p/2014-11-17/model.keras: listed with 6 bytes but 5 bytes"):
        stage(cache, "ef" * 32, "2014-11-17", {"model.keras": 6}, download, where="s3://b/p/2014-11-17")
    assert list((cache / "ef").iterdir()) == []


def test_read_drop_folder_is_discovery_without_the_name(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, [dt.date(2014, 11, 3)])
    folder = registry / "2014-11-03"
    found, skipped = read_drop_folder(folder, dt.date(2014, 11, 3))
    assert isinstance(found, Drop) and found.model_path == folder / "model.keras" and skipped == []
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing, _ = read_drop_folder(empty, dt.date(2014, 11, 3))
    assert isinstance(nothing, SkippedFolder) and nothing.reason.startswith("no model in the drop")


def test_a_local_folder_and_file_uri_list_the_same_drops(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, [dt.date(2014, 11, 3), dt.date(2014, 11, 10)])
    linear_model([1.0]).save(registry / "2014-11-10" / "model_seed1.keras")
    local = source_for(str(registry))
    assert isinstance(local, LocalSource)
    staged_in_place = local.stage(local.list_drops().drops[0], tmp_path / "unused")
    assert staged_in_place.drop.path == registry / "2014-11-03" and not (tmp_path / "unused").exists()

    remote = source_for(f"file://{registry}")
    listing = remote.list_drops()
    assert [d.week for d in listing.drops] == [d.week for d in local.list_drops().drops]
    staged = remote.stage(listing.drops[1], tmp_path / "cache")
    assert staged.provenance is not None and staged.provenance.source_uri == f"file://{registry}/2014-11-10"
    assert [p.name for p in staged.drop.model_paths] == ["model.keras", "model_seed1.keras"]
    assert staged.files_downloaded == 3 and staged.drop.path.is_relative_to(tmp_path / "cache")
    assert remote.stage(listing.drops[1], tmp_path / "cache").bytes_downloaded == 0
    os.utime(registry / "2014-11-10" / "eval.npz")  # touched: a new content tag, so staged again
    touched = remote.list_drops().drops[1]
    assert (
        touched.provenance is not None and touched.provenance.content_hash != staged.provenance.content_hash
    )


def test_a_storage_block_is_only_for_object_stores(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"--storage-block b is for s3:// or gs:// registries, not a folder"):
        source_for(str(tmp_path), storage_block="b")
    with pytest.raises(AuditError, match=r"no MLflow tracking server; set MLFLOW_TRACKING_URI"):
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        source_for("mlflow://m").list_drops()


def test_the_cli_refuses_a_password_before_prefect_stores_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--registry", "s3://key:s3cret@bucket/p", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "registry s3://key:***@bucket/p holds credentials" in err and "s3cret" not in err
    args = [
        "run",
        "--registry",
        "mlflow://m",
        "--mlflow-tracking-uri",
        "https://u:s3cret@h",
        "--out",
        str(out),
    ]
    assert main([*args, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--mlflow-tracking-uri https://u:***@h holds a password" in err and "s3cret" not in err
    assert not out.exists()  # failed before the flow (and its database) started
