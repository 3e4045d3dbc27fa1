from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from audit.registry import discover_drops, parse_drop_date
from audit.types import AuditError


def _drop(registry: Path, name: str, *files: str) -> Path:
    folder = registry / name
    folder.mkdir(parents=True)
    for file in ("model.keras", *files):
        (folder / file).write_bytes(b"x")
    return folder


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2014-11-03", dt.date(2014, 11, 3)),
        ("20190114", dt.date(2019, 1, 14)),
        ("2014-1103", None),
        ("2014-13-01", None),
        ("20190230", None),
        ("latest", None),
        ("2014-11-03-old", None),
        ("2014_11_03", None),
    ],
)
def test_parse_drop_date(name: str, expected: dt.date | None) -> None:
    assert parse_drop_date(name) == expected


def test_discovers_drops_oldest_first_with_their_files(tmp_path: Path) -> None:
    _drop(tmp_path, "2014-11-10", "eval.npz", "audit.toml")
    _drop(tmp_path, "20141103")
    listing = discover_drops(tmp_path)
    assert [d.week for d in listing.drops] == [dt.date(2014, 11, 3), dt.date(2014, 11, 10)]
    first, second = listing.drops
    assert first.eval_paths == () and first.config_path is None
    assert second.eval_paths == (tmp_path / "2014-11-10" / "eval.npz",)
    assert second.config_path == tmp_path / "2014-11-10" / "audit.toml"
    assert listing.skipped == ()


def test_bad_entries_are_skipped_with_a_reason(tmp_path: Path) -> None:
    _drop(tmp_path, "2014-11-03")
    _drop(tmp_path, "latest")
    (tmp_path / "2014-11-10").mkdir()  # no model yet
    _drop(tmp_path, "20141103")  # same date as 2014-11-03
    (tmp_path / "notes.txt").write_text("hello")
    outside = tmp_path.parent / f"{tmp_path.name}-outside" / "2014-12-01"
    outside.mkdir(parents=True)
    (outside / "model.keras").write_bytes(b"x")
    os.symlink(outside, tmp_path / "2014-12-01")

    listing = discover_drops(tmp_path)

    assert [d.path.name for d in listing.drops] == ["2014-11-03"]
    reasons = {s.path.name: s.reason for s in listing.skipped}
    assert "not a date" in reasons["latest"]
    assert "no model.keras" in reasons["2014-11-10"]
    assert "same date as 2014-11-03" in reasons["20141103"]
    assert reasons["notes.txt"] == "not a folder"
    assert "leads out of the registry" in reasons["2014-12-01"]


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"registry .*nowhere does not exist"):
        discover_drops(tmp_path / "nowhere")
