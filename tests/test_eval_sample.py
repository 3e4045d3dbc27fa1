from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.config import read_drop_config
from audit.eval_sample import load_eval_sample
from audit.types import AuditError, DropConfig, Task


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
