from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from audit.registry import discover_drops, parse_drop_date
from audit.types import AuditError, Drop


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
    assert reasons["2014-11-10"].startswith("no model in the drop (expected model.keras, model.h5,")
    assert "same date as 2014-11-03" in reasons["20141103"]
    assert reasons["notes.txt"] == "not a folder"
    assert "leads out of the registry" in reasons["2014-12-01"]


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"registry .*nowhere does not exist"):
        discover_drops(tmp_path / "nowhere")


def _files(folder: Path, *names: str) -> None:
    """Files and SavedModel folders (names ending in "/") by name; discovery never opens them."""
    for name in names:
        if name.endswith("/"):
            (folder / name).mkdir(parents=True)
            (folder / name / "saved_model.pb").write_bytes(b"x")
        else:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"x")


def _only_drop(registry: Path) -> Drop:
    listing = discover_drops(registry)
    assert len(listing.drops) == 1, listing.skipped
    return listing.drops[0]


@pytest.mark.parametrize(
    ("files", "primary"),
    [
        pytest.param(["model.keras"], "model.keras", id="keras"),
        pytest.param(["model.h5"], "model.h5", id="h5"),
        pytest.param(["model.hdf5"], "model.hdf5", id="hdf5"),
        pytest.param(
            ["0_10.1_structure.json", "0_10.1_weights.h5"], "0_10.1_structure.json", id="keras2-pair"
        ),
        pytest.param(["export/"], "export", id="saved-model"),
        pytest.param(["a.keras", "model.h5", "b.keras"], "model.h5", id="named-model-first"),
        pytest.param(["model_seed2.keras", "model_seed1.keras"], "model_seed1.keras", id="else-alphabetical"),
        pytest.param(
            ["model/", "model.h5", "model.keras"], "model.keras", id="keras-before-h5-before-folder"
        ),
    ],
)
def test_every_format_is_found_and_the_primary_model_is_chosen(
    tmp_path: Path, files: list[str], primary: str
) -> None:
    drop = tmp_path / "2019-01-14"
    _files(drop, *files)
    found = _only_drop(tmp_path)
    assert found.model_path == drop / primary
    assert found.model_paths[0] == found.model_path
    models = {name.rstrip("/") for name in files if not name.endswith("_weights.h5")}
    assert {path.name for path in found.model_paths} == models


def test_drop_model_paths_default_to_the_primary_model(tmp_path: Path) -> None:
    drop = Drop(dt.date(2019, 1, 14), tmp_path, tmp_path / "model.keras", (), None)
    assert drop.model_paths == (tmp_path / "model.keras",)
    with pytest.raises(ValueError, match="must start with the primary model"):
        Drop(
            dt.date(2019, 1, 14),
            tmp_path,
            tmp_path / "a.keras",
            (),
            None,
            model_paths=(tmp_path / "b.keras",),
        )


def test_half_pairs_and_weights_only_files_are_reported(tmp_path: Path) -> None:
    drop = tmp_path / "2019-01-14"
    _files(
        drop, "model.keras", "a_structure.json", "b_weights.h5", "c.weights.h5", "notes.txt", "logs/run.txt"
    )
    listing = discover_drops(tmp_path)
    (found,) = listing.drops
    assert found.model_paths == (drop / "model.keras",)
    reasons = {s.path.name: s.reason for s in listing.skipped}
    assert set(reasons) == {"a_structure.json", "b_weights.h5", "c.weights.h5"}  # other files are not models
    assert "no a_weights.h5 beside it" in reasons["a_structure.json"]
    assert "weights without b_structure.json" in reasons["b_weights.h5"]
    assert "weights only" in reasons["c.weights.h5"]


def test_drop_whose_only_model_is_half_a_pair_is_skipped_with_why(tmp_path: Path) -> None:
    _files(tmp_path / "20190114", "0_10.1_structure.json")
    (skipped,) = discover_drops(tmp_path).skipped
    assert skipped.reason.startswith(
        "no model in the drop (0_10.1_structure.json: no 0_10.1_weights.h5 beside it"
    )


def test_files_that_are_symlinks_out_of_the_registry_are_skipped(tmp_path: Path) -> None:
    registry, outside = tmp_path / "registry", tmp_path / "outside"
    _files(outside, "model.keras", "eval.npz", "audit.toml", "x_weights.h5", "variables/variables.index")
    _files(registry / "2019-01-07", "model.h5")
    os.symlink(outside / "model.keras", registry / "2019-01-07" / "model.keras")
    os.symlink(outside / "eval.npz", registry / "2019-01-07" / "eval.npz")
    os.symlink(outside / "audit.toml", registry / "2019-01-07" / "audit.toml")
    _files(registry / "2019-01-14", "x_structure.json", "saved/")
    os.symlink(outside / "x_weights.h5", registry / "2019-01-14" / "x_weights.h5")
    os.symlink(outside / "variables", registry / "2019-01-14" / "saved" / "variables")
    (registry / "2019-01-21").mkdir()
    os.symlink(outside / "model.keras", registry / "2019-01-21" / "model.keras")

    listing = discover_drops(registry)

    (first,) = [drop for drop in listing.drops if drop.week == dt.date(2019, 1, 7)]
    assert first.model_paths == (registry / "2019-01-07" / "model.h5",)
    assert first.eval_paths == () and first.config_path is None
    assert [drop.week for drop in listing.drops] == [dt.date(2019, 1, 7)]
    reasons = {str(s.path.relative_to(registry)): s.reason for s in listing.skipped}
    outside_reason = "symlink that leads out of the registry"
    for name in ("model.keras", "eval.npz", "audit.toml"):
        assert reasons[f"2019-01-07/{name}"] == outside_reason
    assert reasons["2019-01-14"].startswith("no model in the drop (saved: saved/variables is a symlink")
    assert reasons["2019-01-21"].startswith(f"no model in the drop (model.keras: {outside_reason}")


def test_symlinks_inside_the_registry_are_followed(tmp_path: Path) -> None:
    _files(tmp_path / "2019-01-07", "model.keras", "eval.npz")
    _files(tmp_path / "2019-01-14", "model.keras")
    os.symlink(tmp_path / "2019-01-07" / "eval.npz", tmp_path / "2019-01-14" / "eval.npz")
    listing = discover_drops(tmp_path)
    assert listing.skipped == ()
    assert listing.drops[1].eval_paths == (tmp_path / "2019-01-14" / "eval.npz",)
