"""Read a drop's evaluation sample (eval.npz, eval.csv or eval.parquet) into an `EvalSample`.

Feature names come from, in order: ``audit.toml`` ``feature_names``, the ``feature_names`` array of an
npz, the columns of a csv/parquet; without any of these they are ``x0, x1, ...``.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from audit.types import AuditError, DropConfig, EvalSample, FloatArray


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (eval files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_eval_sample(paths: tuple[Path, ...], config: DropConfig) -> EvalSample | None:
    """Load the one eval file of a drop; None when the drop has none.

    Raises `AuditError` naming the file when there are several, or when the content is unusable
    (wrong dimensions, non-numeric columns, NaN/inf values, names that do not fit).
    """
    if not paths:
        return None
    if len(paths) > 1:
        names = ", ".join(path.name for path in paths)
        raise AuditError(f"{paths[0].parent}: several eval samples ({names}); keep exactly one")
    path = paths[0]
    X, y, stored_names = _read_npz(path) if path.suffix == ".npz" else _read_table(path, config.target)
    feature_names = _resolve_names(path, X, config.feature_names or stored_names)
    _check_finite(path, X, "X")
    if y is not None:
        _check_finite(path, y, "y")
        if y.shape[0] != X.shape[0]:
            raise AuditError(f"{path}: y has {y.shape[0]} rows but X has {X.shape[0]}; they must match")
    if X.shape[0] == 0:
        raise AuditError(f"{path}: the eval sample has no rows; add samples or remove the file")
    return EvalSample(X=X, y=y, feature_names=feature_names, source=path, content_hash=file_sha256(path))


def _read_npz(path: Path) -> tuple[FloatArray, FloatArray | None, tuple[str, ...] | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                found = ", ".join(archive.files) or "nothing"
                raise AuditError(f"{path}: no array named X (found {found}); save with np.savez(X=...)")
            X = _as_float(path, "X", archive["X"])
            y = _as_float(path, "y", archive["y"]) if "y" in archive.files else None
            names = _npz_names(path, archive["feature_names"]) if "feature_names" in archive.files else None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise AuditError(f"{path}: not a readable .npz file ({error}); re-save it with np.savez") from error
    except ValueError as error:  # pickled object arrays are refused by allow_pickle=False
        raise AuditError(
            f"{path}: cannot read without unpickling ({error}); store strings as a str array, not objects"
        ) from error
    if X.ndim not in (2, 3):
        raise AuditError(
            f"{path}: X has shape {X.shape}; expected (n_samples, n_features) "
            "or (n_samples, n_steps, n_features)"
        )
    return X, y, names


def _npz_names(path: Path, array: np.ndarray) -> tuple[str, ...]:
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise AuditError(f"{path}: feature_names must be a 1-D array of strings")
    return tuple(str(name) for name in array.tolist())


def _read_table(path: Path, target: str) -> tuple[FloatArray, FloatArray | None, tuple[str, ...] | None]:
    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as error:  # pandas raises many types for unreadable files
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AuditError(f"{path}: cannot read the table ({first_line})") from error
    y = _as_float(path, target, frame.pop(target).to_numpy()) if target in frame.columns else None
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise AuditError(
            f"{path}: non-numeric column(s) {', '.join(non_numeric)}; encode them as numbers "
            f"(the target column is '{target}', set `target` in audit.toml if it is another)"
        )
    names = tuple(str(column) for column in frame.columns)
    return _as_float(path, "X", frame.to_numpy()), y, names


def _as_float(path: Path, name: str, array: np.ndarray) -> FloatArray:
    if array.dtype.kind not in "biuf":
        raise AuditError(f"{path}: {name} has dtype {array.dtype}; it must be numeric")
    return np.asarray(array, dtype=np.float64)


def _resolve_names(path: Path, X: FloatArray, names: tuple[str, ...] | None) -> tuple[str, ...]:
    n_features = int(X.shape[-1])
    if names is None:
        return tuple(f"x{i}" for i in range(n_features))
    if len(names) != n_features:
        raise AuditError(
            f"{path}: {len(names)} feature names for {n_features} features in X; "
            "give one name per feature (last axis of X)"
        )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise AuditError(f"{path}: duplicate feature names {', '.join(duplicates)}; names must be unique")
    return names


def _check_finite(path: Path, array: FloatArray, name: str) -> None:
    bad_rows = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if bad_rows.any():
        raise AuditError(
            f"{path}: {int(bad_rows.sum())} of {array.shape[0]} rows of {name} hold NaN or inf; "
            "clean or drop them before the audit"
        )
