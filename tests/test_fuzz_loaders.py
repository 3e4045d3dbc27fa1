"""Property-based tests of the loaders: whatever bytes or shapes a drop holds, only `AuditError` comes out.

Each loader is fed random bytes, damaged copies of good files, and random but well-formed content
(arrays of any shape and dtype, tables with odd columns, TOML with odd values). It must either
return something that satisfies the documented invariants or raise `AuditError`: never a numpy,
pandas, pyarrow, zipfile or Keras exception, which the flow would report as a crash.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip(
    "hypothesis",
    reason="hypothesis is not installed in the project venv (it belongs in the dev extras); "
    "the loader fuzz tests need it",
)

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from audit.config import read_drop_config
from audit.eval_sample import load_eval_sample
from audit.loading import load_model
from audit.types import AuditError, DropConfig, EvalSample, NanPolicy
from tests.helpers import linear_model

#: Examples per loader: 60 keeps the suite fast; raise it for a deeper search, e.g.
#: DRIFT_AUDIT_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest tests/test_fuzz_loaders.py
EXAMPLES = int(os.environ.get("DRIFT_AUDIT_FUZZ_EXAMPLES", "60"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 60,  # the default run sees the same examples every time: reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Bytes that make a reader take its real path (zip, .npy, parquet, HDF5) before the garbage.
MAGIC = [b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"PAR1", b"\x89HDF\r\n\x1a\n", b"a,b,target\n"]


@contextmanager
def drop_file(name: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        path = Path(folder) / "2014-11-03" / name
        path.parent.mkdir()
        path.write_bytes(content)
        yield path


def random_bytes() -> st.SearchStrategy[bytes]:
    return st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGIC), st.binary(max_size=2048))


def damaged(good: bytes) -> st.SearchStrategy[bytes]:
    """`good` cut short, or with a few bytes overwritten."""
    truncated = st.integers(0, len(good) - 1).map(lambda n: good[:n])
    flipped = st.lists(
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ).map(lambda edits: _overwrite(good, edits))
    return st.one_of(truncated, flipped)


def _overwrite(good: bytes, edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(good)
    for position, value in edits:
        data[position] = value
    return bytes(data)


def configs() -> st.SearchStrategy[DropConfig]:
    return st.builds(
        DropConfig,
        nan_policy=st.sampled_from(list(NanPolicy)),
        max_eval_samples=st.integers(1, 8),
    )


def check_sample(sample: EvalSample | None, config: DropConfig) -> None:
    """What every returned sample guarantees to the methods."""
    assert sample is not None
    assert sample.X.ndim in (2, 3) and sample.X.dtype == np.float64
    assert 0 < sample.n_samples <= config.max_eval_samples
    assert 0 not in sample.X.shape
    assert np.isfinite(sample.X).all()
    assert len(sample.feature_names) == sample.X.shape[-1]
    assert len(set(sample.feature_names)) == len(sample.feature_names)
    assert sample.n_rows_read == sample.n_samples + sample.n_dropped_rows or sample.is_subsampled
    if sample.y is not None:
        assert sample.y.shape[0] == sample.n_samples and np.isfinite(sample.y).all()


def load_or_audit_error(path: Path, config: DropConfig) -> EvalSample | None:
    try:
        sample = load_eval_sample((path,), config)
    except AuditError as error:
        assert str(path) in str(error) or str(path.parent) in str(error)
        return None
    check_sample(sample, config)
    return sample


# --- eval samples ------------------------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from([".npz", ".csv", ".parquet"]), content=random_bytes(), config=configs())
def test_eval_sample_from_random_bytes(suffix: str, content: bytes, config: DropConfig) -> None:
    with drop_file(f"eval{suffix}", content) as path:
        load_or_audit_error(path, config)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


GOOD_NPZ = _npz_bytes(
    X=np.arange(24.0).reshape(6, 4), y=np.arange(6.0), feature_names=np.array(["a", "b", "c", "d"])
)
GOOD_NPZ_COMPRESSED = io.BytesIO()
np.savez_compressed(GOOD_NPZ_COMPRESSED, X=np.ones((6, 3, 4)), y=np.zeros(6))


@FUZZ
@given(
    content=st.one_of(damaged(GOOD_NPZ), damaged(GOOD_NPZ_COMPRESSED.getvalue())),
    config=configs(),
)
def test_damaged_npz(content: bytes, config: DropConfig) -> None:
    with drop_file("eval.npz", content) as path:
        load_or_audit_error(path, config)


DTYPES = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex64, "U3", "S2", "M8[D]"]
)


def arrays() -> st.SearchStrategy[np.ndarray]:
    return DTYPES.flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5), unique=False
        )
    )


@FUZZ
@given(
    X=st.one_of(arrays(), hnp.arrays(np.float64, st.tuples(st.integers(0, 12), st.integers(0, 4)))),
    y=st.none() | arrays(),
    names=st.none() | arrays() | st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=5).map(np.array),
    config=configs(),
)
def test_npz_with_random_shapes_and_dtypes(
    X: np.ndarray, y: np.ndarray | None, names: np.ndarray | None, config: DropConfig
) -> None:
    arrays_ = {
        "X": X,
        **({} if y is None else {"y": y}),
        **({} if names is None else {"feature_names": names}),
    }
    with drop_file("eval.npz", _npz_bytes(**arrays_)) as path:
        load_or_audit_error(path, config)


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "target", "", "a.1"]), max_size=5))
    n_rows = draw(st.integers(0, 12))
    columns = [draw(st.lists(CELLS, min_size=n_rows, max_size=n_rows)) for _ in names]
    frame = pd.DataFrame(dict(enumerate(columns)) if names else {}, index=range(n_rows))
    frame.columns = names
    return frame


def _table_bytes(frame: pd.DataFrame, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        try:
            frame.to_parquet(buffer, index=False)
        except Exception:  # mixed-type columns and repeated names cannot be written as parquet
            assume(False)
    return buffer.getvalue()


@FUZZ
@given(frame=frames(), suffix=st.sampled_from([".csv", ".parquet"]), config=configs())
def test_tables_with_odd_columns(frame: pd.DataFrame, suffix: str, config: DropConfig) -> None:
    with drop_file(f"eval{suffix}", _table_bytes(frame, suffix)) as path:
        load_or_audit_error(path, config)


# --- audit.toml --------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "feature_names",
        "task",
        "target",
        "class_index",
        "output_index",
        "nan_policy",
        "max_eval_samples",
        "methods",
        "tsak",
    ]
)
TOML_VALUES = st.sampled_from(
    [
        '"regression"',
        '"classification"',
        '"drop"',
        '"error"',
        '""',
        "0",
        "-1",
        "20000",
        "1.5",
        "nan",
        "true",
        '["a", "b"]',
        '["a", "a"]',
        "[1, 2]",
        "[]",
        "{ permutation = { n_repeats = 3 } }",
        "{ a = 1 }",
        "1979-05-27",
        "'''x'''",
    ]
)


@st.composite
def toml_texts(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pair", "pair", "table", "noise"]))
        if kind == "pair":
            lines.append(f"{draw(KEYS)} = {draw(TOML_VALUES)}")
        elif kind == "table":
            lines.append(draw(st.sampled_from(["[methods.permutation]", "[methods]", "[[methods]]", "[x"])))
        else:
            lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines)


@FUZZ
@given(
    content=st.one_of(
        toml_texts().map(lambda text: text.encode("utf-8", "surrogatepass")),
        random_bytes(),
    )
)
def test_audit_toml_from_random_text(content: bytes) -> None:
    with drop_file("audit.toml", content) as path:
        try:
            config = read_drop_config(path)
        except AuditError as error:
            assert str(path) in str(error)
            return
        assert isinstance(config, DropConfig)
        assert config.max_eval_samples >= 1 and config.nan_policy in set(NanPolicy)


# --- model files -------------------------------------------------------------------------------


def _good_model_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        linear_model([1.0, 2.0]).save(path)
        return path.read_bytes()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
).map(lambda value: repr(value).replace("'", '"').replace("None", "null").encode())


@pytest.fixture(scope="module")
def good_model() -> bytes:
    return _good_model_bytes()


@FUZZ
@given(data=st.data())
def test_load_model_from_random_bytes(good_model: bytes, data: st.DataObject) -> None:
    content = data.draw(
        st.one_of(
            random_bytes(),
            damaged(good_model),
            st.dictionaries(
                st.sampled_from(["config.json", "metadata.json", "model.weights.h5"]),
                st.one_of(JSON_TEXT, st.binary(max_size=64)),
                max_size=3,
            ).map(_zip_bytes),
        )
    )
    with drop_file("model.keras", content) as path:
        try:
            model = load_model(path)
        except AuditError as error:
            assert str(path) in str(error)
            return
        assert len(model.inputs) == 1  # a damage that left a loadable model (e.g. a flipped weight)


@FUZZ
@given(content=random_bytes(), name=st.sampled_from(["model.h5", "model.hdf5", "m_structure.json"]))
def test_load_model_other_formats_from_random_bytes(content: bytes, name: str) -> None:
    with drop_file(name, content) as path:
        if name.endswith("_structure.json"):
            (path.parent / "m_weights.h5").write_bytes(content[::-1])
        try:
            model = load_model(path)
        except AuditError as error:
            assert str(path) in str(error)
            return
        assert len(model.inputs) == 1  # a damage that left a loadable model (e.g. a flipped weight)
