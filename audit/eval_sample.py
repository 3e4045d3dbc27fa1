"""Read a drop's evaluation sample (eval.npz, eval.csv or eval.parquet) into an `EvalSample`.

Feature names come from, in order: ``audit.toml`` ``feature_names``, the ``feature_names`` array of an
npz, the columns of a csv/parquet; without any of these they are ``x0, x1, ...``.

Two ``audit.toml`` keys decide what reaches the methods (see docs/reliability.md):

- ``nan_policy``: rows with NaN or inf in X or y are an error naming the file (``"error"``, the
  default) or are dropped and counted (``"drop"``);
- ``max_eval_samples``: a larger sample is reduced to that many rows, drawn without replacement
  with a seed derived from the drop date, so a rerun of the same drop audits the same rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from audit.registry import parse_drop_date
from audit.types import AuditError, DropConfig, EvalSample, FloatArray, NanPolicy

_NPZ_FIX = "save it with np.savez(path, X=..., y=..., feature_names=np.array([...]))"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (eval files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampling_seed(week: dt.date) -> int:
    """Seed of a drop's eval subsample: its date as the number YYYYMMDD (2014-11-03 -> 20141103)."""
    return week.year * 10_000 + week.month * 100 + week.day


def load_eval_sample(
    paths: tuple[Path, ...], config: DropConfig, *, week: dt.date | None = None
) -> EvalSample | None:
    """Load the one eval file of a drop; None when the drop has none.

    Parameters
    ----------
    paths : the drop's eval files (``Drop.eval_paths``); at most one is allowed.
    config : the drop's settings: feature names, target column, ``nan_policy``, ``max_eval_samples``.
    week : the drop date, which seeds the subsample of a sample larger than ``max_eval_samples``;
        default: the date the eval file's folder is named after (seed 0 if it is not a date).

    Returns
    -------
    EvalSample with X of shape (n_samples, n_features) or (n_samples, n_steps, n_features), the
    counts of rows read, dropped (NaN/inf) and used, and the subsample's seed when one was drawn.

    Raises
    ------
    AuditError
        Naming the file, when there are several, or when the content is unusable (unreadable,
        wrong dimensions, non-numeric columns, NaN/inf values under ``nan_policy = "error"``,
        names that do not fit).
    """
    if not paths:
        return None
    if len(paths) > 1:
        names = ", ".join(path.name for path in paths)
        raise AuditError(f"{paths[0].parent}: several eval samples ({names}); keep exactly one")
    path = paths[0]
    if not path.is_file():
        raise AuditError(f"{path}: eval sample not found")
    X, y, stored_names = _read_npz(path) if path.suffix == ".npz" else _read_table(path, config.target)
    _check_shapes(path, X, y)
    feature_names = _resolve_names(path, X, config.feature_names, stored_names)
    n_rows_in_file = int(X.shape[0])
    X, y, n_dropped = _drop_non_finite(path, X, y, config.nan_policy)
    seed = sampling_seed(week) if week is not None else _seed_from_folder(path)
    X, y, used_seed = _cap_rows(X, y, config.max_eval_samples, seed)
    return EvalSample(
        X=X,
        y=y,
        feature_names=feature_names,
        source=path,
        content_hash=file_sha256(path),
        n_rows_in_file=n_rows_in_file,
        n_dropped_rows=n_dropped,
        sampling_seed=used_seed,
    )


def describe_rows(sample: EvalSample) -> str:
    """How many rows the audit uses and why not all of the file's, for the flow log.

    E.g. ``62 eval samples (64 rows in eval.npz, 2 with NaN/inf dropped)``.
    """
    notes = []
    if sample.n_dropped_rows:
        notes.append(f"{sample.n_dropped_rows} with NaN/inf dropped")
    if sample.sampling_seed is not None:
        notes.append(f"sampled to max_eval_samples = {sample.n_samples} with seed {sample.sampling_seed}")
    if not notes:
        return f"{sample.n_samples} eval samples"
    read = f"{sample.n_rows_read} rows in {sample.source.name}"
    return f"{sample.n_samples} eval samples ({read}, {', '.join(notes)})"


def _read_npz(path: Path) -> tuple[FloatArray, FloatArray | None, tuple[str, ...] | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises OSError, ValueError, EOFError, zip errors...
        raise AuditError(f"{path}: not a readable .npz file ({_first_line(error)}); {_NPZ_FIX}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise AuditError(f"{path}: holds a single .npy array, not an .npz archive; {_NPZ_FIX}")
    with archive:
        try:
            return _npz_arrays(path, archive)
        except AuditError:
            raise
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise AuditError(f"{path}: damaged .npz file ({_first_line(error)}); {_NPZ_FIX}") from error
            raise AuditError(
                f"{path}: cannot read without unpickling ({_first_line(error)}); "
                "store strings as a str array, not objects"
            ) from error
        except Exception as error:  # a damaged member: zip, zlib or EOF errors
            raise AuditError(f"{path}: damaged .npz file ({_first_line(error)}); {_NPZ_FIX}") from error


def _npz_arrays(
    path: Path, archive: np.lib.npyio.NpzFile
) -> tuple[FloatArray, FloatArray | None, tuple[str, ...] | None]:
    if "X" not in archive.files:
        found = ", ".join(archive.files) or "nothing"
        raise AuditError(f"{path}: no array named X (found {found}); {_NPZ_FIX}")
    X = _as_float(path, "X", archive["X"])
    y = _as_float(path, "y", archive["y"]) if "y" in archive.files else None
    names = _npz_names(path, archive["feature_names"]) if "feature_names" in archive.files else None
    return X, y, names


def _npz_names(path: Path, array: npt.NDArray[np.generic]) -> tuple[str, ...]:
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise AuditError(f"{path}: feature_names must be a 1-D array of strings; {_NPZ_FIX}")
    return tuple(str(name) for name in array.tolist())


def _read_table(path: Path, target: str) -> tuple[FloatArray, FloatArray | None, tuple[str, ...] | None]:
    try:
        header = _csv_header(path) if path.suffix == ".csv" else list(pq.read_schema(path).names)
    except Exception as error:  # csv and pyarrow raise many types for unreadable files
        raise AuditError(f"{path}: cannot read the table ({_first_line(error)})") from error
    duplicates = sorted(str(name) for name, count in Counter(header).items() if count > 1)
    if duplicates:
        raise AuditError(
            f"{path}: duplicate column names {', '.join(duplicates)}; give every column its own name"
        )
    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as error:  # pandas raises many types for unreadable files
        raise AuditError(f"{path}: cannot read the table ({_first_line(error)})") from error
    y = _as_float(path, target, frame.pop(target).to_numpy()) if target in frame.columns else None
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise AuditError(
            f"{path}: non-numeric column(s) {', '.join(non_numeric)}; encode them as numbers "
            f"(the target column is '{target}', set `target` in audit.toml if it is another)"
        )
    names = tuple(str(column) for column in frame.columns)
    return _as_float(path, "X", frame.to_numpy()), y, names


def _csv_header(path: Path) -> list[str]:
    """The first row of a csv as written: pandas renames repeated names (a, a.1), hiding them."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        return next(csv.reader(stream), [])


def _as_float(path: Path, name: str, array: npt.NDArray[np.generic]) -> FloatArray:
    if array.dtype.kind not in "biuf":
        raise AuditError(f"{path}: {name} has dtype {array.dtype}; it must be numeric")
    return np.asarray(array, dtype=np.float64)


def _check_shapes(path: Path, X: FloatArray, y: FloatArray | None) -> None:
    if X.ndim not in (2, 3):
        raise AuditError(
            f"{path}: X has shape {X.shape}; expected (n_samples, n_features) "
            "or (n_samples, n_steps, n_features)"
        )
    if X.shape[0] == 0:
        raise AuditError(f"{path}: the eval sample has no rows; add samples or remove the file")
    if 0 in X.shape[1:]:
        raise AuditError(f"{path}: X has shape {X.shape}, with no features or no steps; fix the file")
    if y is None:
        return
    if y.ndim == 0 or y.shape[0] != X.shape[0]:
        rows = "a single value" if y.ndim == 0 else f"{y.shape[0]} rows"
        raise AuditError(f"{path}: y has {rows} but X has {X.shape[0]} rows; they must match")


def _resolve_names(
    path: Path, X: FloatArray, configured: tuple[str, ...] | None, stored: tuple[str, ...] | None
) -> tuple[str, ...]:
    n_features = int(X.shape[-1])
    if configured is not None:
        if len(configured) != n_features:
            raise AuditError(
                f"{path}: X has {n_features} features but audit.toml feature_names lists "
                f"{len(configured)}; give one name per feature (last axis of X)"
            )
        return configured  # read_drop_config has refused duplicates
    if stored is None:
        return tuple(f"x{i}" for i in range(n_features))
    if len(stored) != n_features:
        raise AuditError(
            f"{path}: {len(stored)} feature names for {n_features} features in X; "
            "give one name per feature (last axis of X)"
        )
    duplicates = sorted(name for name, count in Counter(stored).items() if count > 1)
    if duplicates:
        raise AuditError(f"{path}: duplicate feature names {', '.join(duplicates)}; names must be unique")
    return stored


def _non_finite_rows(array: FloatArray) -> npt.NDArray[np.bool_]:
    """(n_samples,) mask of the rows holding NaN or inf anywhere."""
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    return np.asarray(~finite, dtype=np.bool_)


def _drop_non_finite(
    path: Path, X: FloatArray, y: FloatArray | None, policy: NanPolicy
) -> tuple[FloatArray, FloatArray | None, int]:
    """X and y without their NaN/inf rows, and how many were dropped; or an error (policy "error")."""
    bad_x = _non_finite_rows(X)
    bad_y = np.zeros_like(bad_x) if y is None else _non_finite_rows(y)
    bad = bad_x | bad_y
    n_bad, n_rows = int(bad.sum()), int(X.shape[0])
    if n_bad == 0:
        return X, y, 0
    where = "X and y" if bad_x.any() and bad_y.any() else "X" if bad_x.any() else "y"
    if policy is NanPolicy.ERROR:
        raise AuditError(
            f"{path}: {n_bad} of {n_rows} rows of {where} hold NaN or inf; clean them, "
            'or set nan_policy = "drop" in audit.toml to drop them (the count is reported)'
        )
    if n_bad == n_rows:
        raise AuditError(
            f"{path}: all {n_rows} rows of {where} hold NaN or inf; nothing is left to audit, fix the file"
        )
    keep = ~bad
    return X[keep], None if y is None else y[keep], n_bad


def _seed_from_folder(path: Path) -> int:
    week = parse_drop_date(path.parent.name)
    return 0 if week is None else sampling_seed(week)


def _cap_rows(
    X: FloatArray, y: FloatArray | None, max_rows: int, seed: int
) -> tuple[FloatArray, FloatArray | None, int | None]:
    """At most `max_rows` rows, drawn without replacement and kept in file order; the seed if drawn."""
    if X.shape[0] <= max_rows:
        return X, y, None
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=max_rows, replace=False))
    return X[rows], None if y is None else y[rows], seed


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
