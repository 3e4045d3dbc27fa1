from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.config import read_drop_config
from audit.eval_sample import describe_rows, load_eval_sample, sampling_seed
from audit.types import DEFAULT_MAX_EVAL_SAMPLES, AuditError, DropConfig, NanPolicy, Task


def test_npz_with_names_and_targets(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.savez(path, X=X, y=np.array([1.0, 2.0]), feature_names=np.array(["a", "b", "c", "d"]))
    sample = load_eval_sample((path,), DropConfig())
    assert sample is not None
    assert sample.feature_names == ("a", "b", "c", "d")
    assert sample.is_sequence and sample.n_samples == 2
    np.testing.assert_array_equal(sample.X, X)
    np.testing.assert_array_equal(sample.y, [1.0, 2.0])
    assert len(sample.content_hash) == 64


def test_csv_uses_columns_and_target(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    pd.DataFrame({"temp": [1.0, 2.0], "wind": [3.0, 4.0], "target": [0.5, 0.7]}).to_csv(path, index=False)
    sample = load_eval_sample((path,), DropConfig())
    assert sample is not None
    assert sample.feature_names == ("temp", "wind")
    np.testing.assert_array_equal(sample.y, [0.5, 0.7])


def test_config_names_win_and_unnamed_features_get_defaults(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, X=np.zeros((3, 2)))
    assert load_eval_sample((path,), DropConfig()).feature_names == ("x0", "x1")  # type: ignore[union-attr]
    named = load_eval_sample((path,), DropConfig(feature_names=("p", "q")))
    assert named is not None and named.feature_names == ("p", "q")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((3,))}, r"X has shape \(3,\)"),
        ({"X": np.zeros((3, 2)), "feature_names": np.array(["a"])}, "1 feature names for 2 features"),
        ({"X": np.zeros((3, 2)), "feature_names": np.array(["a", "a"])}, "duplicate feature names a"),
        ({"X": np.array([[1.0, np.nan], [0.0, 0.0]])}, "1 of 2 rows of X hold NaN or inf"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, "y has 2 rows but X has 3"),
        ({"Z": np.zeros((3, 2))}, "no array named X"),
    ],
)
def test_bad_npz_contents_name_the_file_and_the_problem(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, **arrays)
    with pytest.raises(AuditError, match=message) as caught:
        load_eval_sample((path,), DropConfig())
    assert str(path) in str(caught.value)


def test_pickled_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, X=np.zeros((2, 2)), feature_names=np.array(["a", {"b": 1}], dtype=object))
    with pytest.raises(AuditError, match="without unpickling"):
        load_eval_sample((path,), DropConfig())


def test_several_eval_files_are_an_error(tmp_path: Path) -> None:
    paths = (tmp_path / "eval.npz", tmp_path / "eval.csv")
    with pytest.raises(AuditError, match="several eval samples"):
        load_eval_sample(paths, DropConfig())


def test_audit_toml(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text('feature_names = ["a", "b"]\ntask = "classification"\nclass_index = 1\n')
    config = read_drop_config(path)
    assert config == DropConfig(feature_names=("a", "b"), task=Task.CLASSIFICATION, class_index=1)
    path.write_text('tsak = "regression"\n')
    with pytest.raises(AuditError, match=r"unknown key.*tsak"):
        read_drop_config(path)
    path.write_text('task = "ranking"\n')
    with pytest.raises(AuditError, match="'ranking' is not one of"):
        read_drop_config(path)


# --- bad input, NaN policy and the row cap (docs/reliability.md) ------------------------------------


def _drop_folder(tmp_path: Path, name: str = "2014-11-03") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_new_audit_toml_keys_and_their_defaults(tmp_path: Path) -> None:
    assert DropConfig().nan_policy is NanPolicy.ERROR
    assert DropConfig().max_eval_samples == DEFAULT_MAX_EVAL_SAMPLES == 20_000
    path = tmp_path / "audit.toml"
    path.write_text('nan_policy = "drop"\nmax_eval_samples = 500\n')
    assert read_drop_config(path) == DropConfig(nan_policy=NanPolicy.DROP, max_eval_samples=500)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nan_policy = "skip"', 'nan_policy = \'skip\' is not one of "error" or "drop"'),
        ("nan_policy = 1", "nan_policy = 1 is not one of"),
        ("max_eval_samples = 0", "max_eval_samples must be a positive integer, got 0"),
        ("max_eval_samples = 1.5", "max_eval_samples must be a positive integer, got 1.5"),
        ("max_eval_samples = true", "max_eval_samples must be a positive integer, got True"),
        ('feature_names = ["a", "b", "a"]', "duplicate feature_names a; give every feature its own name"),
        ('feature_names = ["a", ""]', "feature_names must be a list of non-empty strings"),
        ("max_eval_samples = ", "not valid TOML"),
    ],
)
def test_bad_audit_toml_values_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(text + "\n")
    with pytest.raises(AuditError) as caught:
        read_drop_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def _nan_npz(folder: Path) -> Path:
    path = folder / "eval.npz"
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10.0)
    X[1, 0] = np.nan
    X[4, 1] = -np.inf
    y[4] = np.nan  # same row as an inf in X: counted once
    y[7] = np.inf
    np.savez(path, X=X, y=y)
    return path


def test_non_finite_rows_are_an_error_by_default_and_say_how_to_drop_them(tmp_path: Path) -> None:
    path = _nan_npz(tmp_path)
    with pytest.raises(AuditError) as caught:
        load_eval_sample((path,), DropConfig())
    assert str(caught.value) == (
        f"{path}: 3 of 10 rows of X and y hold NaN or inf; clean them, "
        'or set nan_policy = "drop" in audit.toml to drop them (the count is reported)'
    )


def test_non_finite_rows_are_dropped_and_counted_on_request(tmp_path: Path) -> None:
    sample = load_eval_sample((_nan_npz(tmp_path),), DropConfig(nan_policy=NanPolicy.DROP))
    assert sample is not None
    assert (sample.n_rows_read, sample.n_dropped_rows, sample.n_samples) == (10, 3, 7)
    np.testing.assert_array_equal(sample.y, [0, 2, 3, 5, 6, 8, 9])
    np.testing.assert_array_equal(sample.X[:, 0], [0, 4, 6, 10, 12, 16, 18])
    assert sample.sampling_seed is None
    assert describe_rows(sample) == "7 eval samples (10 rows in eval.npz, 3 with NaN/inf dropped)"


def test_a_sample_with_only_non_finite_rows_is_an_error_even_when_dropping(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, X=np.full((3, 2), np.nan))
    with pytest.raises(AuditError, match="all 3 rows of X hold NaN or inf; nothing is left to audit"):
        load_eval_sample((path,), DropConfig(nan_policy=NanPolicy.DROP))


def test_csv_empty_cells_are_nan(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_text("a,b,target\n1,2,0.5\n3,,0.7\n5,6,\n")
    with pytest.raises(AuditError, match="2 of 3 rows of X and y hold NaN or inf"):
        load_eval_sample((path,), DropConfig())
    sample = load_eval_sample((path,), DropConfig(nan_policy=NanPolicy.DROP))
    assert sample is not None and sample.n_samples == 1 and sample.n_dropped_rows == 2


def _large_npz(folder: Path, n_rows: int = 1000) -> Path:
    path = folder / "eval.npz"
    X = np.arange(n_rows * 2, dtype=np.float64).reshape(n_rows, 2)
    np.savez(path, X=X, y=np.arange(n_rows, dtype=np.float64))
    return path


def test_large_samples_are_capped_without_replacement_in_file_order(tmp_path: Path) -> None:
    path = _large_npz(_drop_folder(tmp_path))
    sample = load_eval_sample((path,), DropConfig(max_eval_samples=100))
    assert sample is not None
    assert (sample.n_rows_read, sample.n_samples, sample.n_dropped_rows) == (1000, 100, 0)
    assert sample.sampling_seed == 20141103 == sampling_seed(dt.date(2014, 11, 3))
    rows = sample.y.astype(int)  # type: ignore[union-attr]
    assert len(set(rows)) == 100 and np.all(np.diff(rows) > 0)  # distinct rows, kept in file order
    np.testing.assert_array_equal(sample.X[:, 0], 2 * rows)  # X and y stay paired
    assert describe_rows(sample) == (
        "100 eval samples (1000 rows in eval.npz, sampled to max_eval_samples = 100 with seed 20141103)"
    )


def test_the_subsample_is_reproducible_and_seeded_by_the_drop_date(tmp_path: Path) -> None:
    config = DropConfig(max_eval_samples=50)
    first = load_eval_sample((_large_npz(_drop_folder(tmp_path, "2014-11-03")),), config)
    again = load_eval_sample((tmp_path / "2014-11-03" / "eval.npz",), config)
    same_day = load_eval_sample((_large_npz(_drop_folder(tmp_path, "20141103")),), config)
    explicit = load_eval_sample((_large_npz(tmp_path),), config, week=dt.date(2014, 11, 3))
    next_week = load_eval_sample((_large_npz(_drop_folder(tmp_path, "2014-11-10")),), config)
    assert first is not None and again is not None and same_day is not None
    assert explicit is not None and next_week is not None
    for other in (again, same_day, explicit):
        np.testing.assert_array_equal(other.y, first.y)  # type: ignore[arg-type]
    assert not np.array_equal(next_week.y, first.y)  # type: ignore[arg-type]
    assert next_week.sampling_seed == 20141110


def test_non_finite_rows_are_dropped_before_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    X = np.ones((30, 2))
    X[:25, 0] = np.nan
    np.savez(path, X=X)
    sample = load_eval_sample((path,), DropConfig(nan_policy=NanPolicy.DROP, max_eval_samples=10))
    assert sample is not None
    assert (sample.n_rows_read, sample.n_dropped_rows, sample.n_samples) == (30, 25, 5)
    assert sample.sampling_seed is None  # 5 usable rows: under the cap, nothing drawn


def test_a_sample_under_the_cap_is_used_whole(tmp_path: Path) -> None:
    sample = load_eval_sample((_large_npz(tmp_path, 20),), DropConfig(max_eval_samples=20))
    assert sample is not None and sample.n_samples == 20 and sample.sampling_seed is None
    assert describe_rows(sample) == "20 eval samples"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((0, 3))}, "the eval sample has no rows; add samples or remove the file"),
        ({"X": np.zeros((4, 0))}, r"X has shape \(4, 0\), with no features or no steps"),
        ({"X": np.zeros((4, 0, 2))}, r"X has shape \(4, 0, 2\), with no features or no steps"),
        ({"X": np.zeros((3, 2)), "y": np.float64(1.0)}, "y has a single value but X has 3 rows"),
        ({"X": np.zeros((3, 2), dtype=np.complex64)}, "X has dtype complex64; it must be numeric"),
        ({"X": np.zeros((3, 2)), "feature_names": np.array([[b"a", b"b"]])}, "1-D array of strings"),
    ],
)
def test_more_bad_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(AuditError, match=message) as caught:
        load_eval_sample((path,), DropConfig())
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable .npz file"),
        (b"PK\x03\x04 truncated zip", "not a readable .npz file"),
        (b"just text, not numpy\n", "not a readable .npz file"),
    ],
)
def test_unreadable_npz_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "eval.npz"
    path.write_bytes(content)
    with pytest.raises(AuditError, match=message) as caught:
        load_eval_sample((path,), DropConfig())
    assert "np.savez" in str(caught.value) and "\n" not in str(caught.value)


def test_a_single_npy_array_saved_as_npz_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    with path.open("wb") as stream:
        np.save(stream, np.zeros((3, 2)))
    with pytest.raises(AuditError, match=r"holds a single \.npy array, not an \.npz archive"):
        load_eval_sample((path,), DropConfig())


def test_damaged_compressed_npz_is_an_audit_error(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez_compressed(path, X=np.random.default_rng(0).normal(size=(200, 4)))
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(40)
    path.write_bytes(bytes(data))
    with pytest.raises(AuditError, match=r"damaged \.npz file|not a readable \.npz file"):
        load_eval_sample((path,), DropConfig())


def test_duplicate_table_columns_are_refused(tmp_path: Path) -> None:
    csv_path = tmp_path / "eval.csv"
    csv_path.write_text("a,b,a,target\n1,2,3,4\n")
    with pytest.raises(AuditError, match="duplicate column names a; give every column its own name"):
        load_eval_sample((csv_path,), DropConfig())

    parquet_path = tmp_path / "eval.parquet"
    table = pa.table([pa.array([1.0]), pa.array([2.0]), pa.array([0.0])], names=["a", "a", "target"])
    pq.write_table(table, parquet_path)
    with pytest.raises(AuditError, match="duplicate column names a"):
        load_eval_sample((parquet_path,), DropConfig())


def test_table_without_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_text("target\n1\n2\n")
    with pytest.raises(AuditError, match=r"X has shape \(2, 0\), with no features"):
        load_eval_sample((path,), DropConfig())


def test_configured_name_count_mismatch_names_audit_toml(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, X=np.zeros((3, 2)))
    with pytest.raises(AuditError) as caught:
        load_eval_sample((path,), DropConfig(feature_names=("a", "b", "c")))
    assert str(caught.value) == (
        f"{path}: X has 2 features but audit.toml feature_names lists 3; "
        "give one name per feature (last axis of X)"
    )
