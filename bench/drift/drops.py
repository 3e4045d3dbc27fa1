"""Weekly drops of a small next-hour PM2.5 forecaster on the real Beijing data, and their audits.

A drop is one retrain: a GRU trained on a group's training window with its own seed (weights and
training-row order), saved with an eval sample drawn from the group's held-out weeks, then audited
with the project's own loader and methods (`audit.loading.load_drop`, `audit.runner.run_method`).
A drop may carry a planted change (`Plant`): one variable (a column, or wind direction's four
one-hot columns) shuffled between training windows, or its feed lagged by some hours in training
and eval data alike. A drop's reseeded copies (`DropSpec.copy`) share its data and differ only in
their training seed.

Everything is cached under ``.cache/drift-benchmark/``: a drop folder holds ``model.keras``,
``eval.npz``, ``audit.toml`` and ``meta.json``; its audit is ``audit.json`` beside them, keyed by
the method options and a digest of ``audit/`` so that a change of the methods recomputes it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(REPO / ".cache" / "keras"))

import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from audit.loading import LoadedDrop, load_drop  # noqa: E402
from audit.runner import run_method, select_methods  # noqa: E402
from audit.types import (  # noqa: E402
    AuditSummary,
    Drop,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelImportances,
)
from flows.demo import DEMO_FEATURES, load_demo_features  # noqa: E402

RESULTS = REPO / "bench" / "results" / "drift"
#: Trained drops and their audits. Not under bench/results/: bench/run_all.sh starts by deleting
#: that folder, and retraining every drop takes a quarter of an hour. .cache/ is gitignored.
CACHE = REPO / ".cache" / "drift-benchmark"
FEATURES: tuple[str, ...] = DEMO_FEATURES
N_STEPS = 24
TARGET = FEATURES.index("pm2.5")

#: The data methods audited on every drop, with options small enough for the benchmark's budget.
METHODS: tuple[str, ...] = (
    "permutation",
    "perturbation",
    "integrated_gradients",
    "gradient_x_input",
    "sensitivity_sweep",
)
METHOD_OPTIONS: Mapping[str, Mapping[str, int | float]] = {
    "permutation": {"n_repeats": 5},
    "perturbation": {"n_repeats": 3},
    "integrated_gradients": {"steps": 16},
    "sensitivity_sweep": {"n_rows": 200, "n_quantiles": 7},
}
#: The flow's default seed: every week's audit uses the same one, as `drift-audit run` does.
AUDIT_SEED = 0
#: Training seeds of a drop's reseeded copies: seed + k x this (far from every drop's own seed).
COPY_SEED_STEP = 100_003

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ModelSettings:
    """Size and training of the forecaster and of the samples it is trained and audited on."""

    units: int = 8
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 5e-3
    #: Days of training targets before the group's date (24 windows a day).
    train_days: int = 120
    #: Days of held-out targets from the group's date, the pool every drop's eval sample comes from.
    eval_pool_days: int = 42
    #: Windows in one drop's eval sample, drawn without replacement from the pool.
    n_eval: int = 600

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


#: The variables of the data and their columns: every column is its own variable except wind
#: direction, one-hot over four columns that always sum to 1 (any of them is 1 minus the others, so
#: a change of one column alone takes no information away: a plant changes all four together).
WIND_DIRECTION = "cbwd"
VARIABLES: Mapping[str, tuple[str, ...]] = {
    **{name: (name,) for name in FEATURES if not name.startswith(f"{WIND_DIRECTION}_")},
    WIND_DIRECTION: tuple(name for name in FEATURES if name.startswith(f"{WIND_DIRECTION}_")),
}


@dataclass(frozen=True)
class Plant:
    """A planted change of one variable (`VARIABLES`: a column, or wind direction's four columns).
    ``shuffle``: the variable's whole 24-hour series is shuffled between the training windows (its
    relation to the target is gone, its values and their time structure stay); ``lag``: its feed is
    `lag_hours` late, in the training and the eval data (a time-stamp bug: the window's step t holds
    the value of hour t - lag)."""

    kind: str
    feature: str
    lag_hours: int = 8
    #: Share of the training windows whose series of the variable are shuffled (among themselves):
    #: 1.0 removes the relation everywhere, 0.25 in a quarter of the windows (a graded change).
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("shuffle", "lag"):
            raise ValueError(f"plant kind must be 'shuffle' or 'lag', got {self.kind!r}")
        if self.feature not in VARIABLES:
            raise ValueError(f"unknown variable {self.feature!r}; one of {tuple(VARIABLES)}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"plant fraction must be in (0, 1], got {self.fraction!r}")
        if self.kind == "lag" and self.fraction != 1.0:
            raise ValueError("a lag plant delays the whole feed: its fraction must be 1.0")

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns the plant changes (a name the rule may rightly name)."""
        return VARIABLES[self.feature]

    @property
    def label(self) -> str:
        fraction = f"-f{self.fraction:g}" if self.fraction != 1.0 else ""
        return (
            f"{self.kind}-{self.feature}" + (f"-{self.lag_hours}h" if self.kind == "lag" else "") + fraction
        )


@dataclass(frozen=True)
class Group:
    """One data window: every drop of the group trains on the same days before `date`."""

    name: str
    date: dt.date


@dataclass(frozen=True)
class DropSpec:
    """One retrain of a group: its seed and, for a planted drop, the change.

    `seed` fixes the drop's data (its eval sample and, for a shuffle plant, the shuffle);
    `model_seed` (default: `seed`) the initial weights and training-row order. The reseeded copies
    of a drop share its data and differ only in `model_seed`.
    """

    group: Group
    name: str
    seed: int
    plant: Plant | None = None
    model_seed: int | None = None

    @property
    def training_seed(self) -> int:
        return self.seed if self.model_seed is None else self.model_seed

    def copy(self, index: int) -> DropSpec:
        """The drop's `index`-th reseeded copy (0-based): same data, another training seed."""
        return dataclasses.replace(
            self, name=f"{self.name}-copy{index + 1}", model_seed=self.seed + COPY_SEED_STEP * (index + 1)
        )


@dataclass(frozen=True)
class AuditedDrop:
    """A built and audited drop: its outcomes, facts and what training reported."""

    spec: DropSpec
    folder: Path
    outcomes: tuple[MethodOutcome, ...]
    meta: Mapping[str, Any]
    loaded: LoadedDrop | None = None
    #: The drop's reseeded copies, audited on the same eval sample (`Design.copies`).
    copies: tuple[AuditedDrop, ...] = ()

    def importance(self, method: str) -> Importance | None:
        for outcome in self.outcomes:
            if outcome.method == method and outcome.importance is not None:
                return outcome.importance
        return None


# --------------------------------------------------------------------------- data


@functools.cache
def hourly_values() -> tuple[Float32Array, tuple[dt.datetime, ...]]:
    """The standardised hourly features of `flows.demo` (rows = hours, columns = `FEATURES`)."""
    frame = load_demo_features()
    return frame.to_numpy(dtype=np.float32), tuple(frame.index.to_pydatetime())


def _row_of(hours: Sequence[dt.datetime], day: dt.date) -> int:
    target = dt.datetime(day.year, day.month, day.day)
    first = hours[0]
    row = int((target - first).total_seconds() // 3600)
    if not 0 <= row < len(hours) or hours[row] != target:
        raise ValueError(f"{day} is not in the data ({first:%Y-%m-%d} to {hours[-1]:%Y-%m-%d})")
    return row


def target_rows(group: Group, settings: ModelSettings) -> tuple[IntArray, IntArray]:
    """Rows of the training targets (the days before the group's date) and of the eval pool."""
    values, hours = hourly_values()
    start = _row_of(hours, group.date)
    train = np.arange(start - settings.train_days * 24, start, dtype=np.int64)
    pool = np.arange(start, start + settings.eval_pool_days * 24, dtype=np.int64)
    if train[0] < N_STEPS + 24 or pool[-1] >= values.shape[0]:
        raise ValueError(f"group {group.name} ({group.date}) needs more data before or after it")
    return train, pool


def windows(
    inputs: Float32Array, labels: Float32Array, targets: IntArray
) -> tuple[Float32Array, Float32Array]:
    """(len(targets), N_STEPS, n_features) windows ending the hour before each target row, and the
    target pm2.5 of that row (as in flows/demo.py)."""
    rows = targets[:, np.newaxis] + np.arange(-N_STEPS, 0)[np.newaxis, :]
    return inputs[rows], labels[targets]


def planted_inputs(values: Float32Array, plant: Plant | None) -> Float32Array:
    """The hourly inputs a drop sees: with a lag plant, the variable's columns delayed by `lag_hours`."""
    if plant is None or plant.kind != "lag":
        return values
    columns = [FEATURES.index(name) for name in plant.columns]
    delayed = values.copy()
    delayed[plant.lag_hours :, columns] = values[: -plant.lag_hours, columns]
    delayed[: plant.lag_hours, columns] = values[0, columns]
    return delayed


def drop_samples(
    spec: DropSpec, settings: ModelSettings
) -> tuple[Float32Array, Float32Array, Float32Array, Float32Array]:
    """Training windows and the eval sample of one drop, with its planted change applied."""
    values, _ = hourly_values()
    inputs = planted_inputs(values, spec.plant)
    labels = values[:, TARGET]  # the target is always the true next-hour pm2.5
    train_rows, pool = target_rows(spec.group, settings)
    X_train, y_train = windows(inputs, labels, train_rows)
    if spec.plant is not None and spec.plant.kind == "shuffle":
        shuffle_windows(X_train, spec.plant, spec.seed)
    # the eval sample is drawn from its own stream: a plant does not change which rows it holds
    eval_rng = np.random.default_rng([spec.seed, 7])
    chosen = np.sort(eval_rng.choice(pool.shape[0], size=min(settings.n_eval, pool.shape[0]), replace=False))
    X_eval, y_eval = windows(inputs, labels, pool[chosen])
    return X_train, y_train, X_eval, y_eval


def shuffle_windows(X_train: Float32Array, plant: Plant, seed: int) -> None:
    """Shuffle the planted variable's 24-hour series between training windows, in place: between
    all of them (fraction 1.0), or among a random `plant.fraction` of them, the others untouched.

    One order for all of the variable's columns, so a one-hot row stays a one-hot row.
    """
    columns = [FEATURES.index(name) for name in plant.columns]
    n_windows = X_train.shape[0]
    if plant.fraction == 1.0:
        order = np.random.default_rng([seed, 11]).permutation(n_windows)
        X_train[:, :, columns] = X_train[order][:, :, columns]
        return
    chosen = np.sort(
        np.random.default_rng([seed, 13]).choice(
            n_windows, size=round(plant.fraction * n_windows), replace=False
        )
    )
    order = chosen[np.random.default_rng([seed, 11]).permutation(chosen.shape[0])]
    series = X_train[order][:, :, columns]
    for offset, column in enumerate(columns):
        X_train[chosen, :, column] = series[:, :, offset]


# --------------------------------------------------------------------------- models


def build_model(settings: ModelSettings, seed: int) -> keras.Model:
    """GRU(units) -> Dense(1): a next-hour forecaster on (24 steps, 11 features)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(N_STEPS, len(FEATURES)), name="window")
    hidden = keras.layers.GRU(settings.units, name="gru")(inputs)
    outputs = keras.layers.Dense(1, name="forecast")(hidden)
    model = keras.Model(inputs, outputs, name="pm25_next_hour")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss="mse")
    return model


def _r_squared(y: Float32Array, predicted: Float32Array) -> float:
    residual = np.mean((y - predicted) ** 2, dtype=np.float64)
    return float(1.0 - residual / np.var(y, dtype=np.float64))


def drop_folder(spec: DropSpec, settings: ModelSettings, root: Path) -> Path:
    digest = hashlib.sha256(settings.key().encode()).hexdigest()[:8]
    return root / f"models-{digest}" / spec.group.name / spec.name


def build_drop(spec: DropSpec, settings: ModelSettings, root: Path, *, fresh: bool = False) -> Path:
    """Train and write the drop (or reuse the cached folder); returns the folder."""
    folder = drop_folder(spec, settings, root)
    meta_path = folder / "meta.json"
    if not fresh and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") == _spec_json(spec):
            return folder
    started = time.perf_counter()
    X_train, y_train, X_eval, y_eval = drop_samples(spec, settings)
    model = build_model(settings, spec.training_seed)
    # shuffle=True with the seed set above: each seed also sees its own training-row order
    model.fit(
        X_train, y_train, epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True, verbose=0
    )
    predicted = np.asarray(model(X_eval, training=False))[:, 0]
    meta = {
        "spec": _spec_json(spec),
        "settings": dataclasses.asdict(settings),
        "n_train": int(X_train.shape[0]),
        "n_eval": int(X_eval.shape[0]),
        "eval_r2": _r_squared(y_eval, predicted),
        "train_seconds": time.perf_counter() - started,
    }
    _write_folder(folder, model, X_eval, y_eval, meta)
    return folder


def _spec_json(spec: DropSpec) -> dict[str, Any]:
    return {
        "group": spec.group.name,
        "date": spec.group.date.isoformat(),
        "name": spec.name,
        "seed": spec.seed,
        "model_seed": spec.training_seed,
        "plant": None if spec.plant is None else dataclasses.asdict(spec.plant),
    }


def _audit_toml() -> str:
    lines = ["# drift benchmark drop (bench/drift): UCI Beijing PM2.5 data, CC BY 4.0", 'task = "regression"']
    for method, options in METHOD_OPTIONS.items():
        lines.append(f"\n[methods.{method}]")
        lines.extend(f"{name} = {value}" for name, value in options.items())
    return "\n".join(lines) + "\n"


def _write_folder(
    folder: Path, model: keras.Model, X_eval: Float32Array, y_eval: Float32Array, meta: Mapping[str, Any]
) -> None:
    """Write into a hidden sibling, then rename into place: an interrupted run leaves no half drop."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model.save(staging / "model.keras")
        np.savez(staging / "eval.npz", X=X_eval, y=y_eval, feature_names=np.array(FEATURES, dtype=str))
        (staging / "audit.toml").write_text(_audit_toml(), encoding="utf-8")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- audits


#: The code that computes the figures: a change here recomputes every cached audit.
FIGURE_CODE: tuple[str, ...] = (
    "audit/methods/*.py",
    "audit/forward.py",
    "audit/gradients.py",
    "audit/targets.py",
)


@functools.cache
def audit_code_digest() -> str:
    """Digest of the code in `FIGURE_CODE` (the rule in audit/drift.py only re-judges)."""
    digest = hashlib.sha256()
    for path in sorted(path for pattern in FIGURE_CODE for path in REPO.glob(pattern)):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_key() -> dict[str, Any]:
    return {
        "methods": list(METHODS),
        "options": METHOD_OPTIONS,
        "seed": AUDIT_SEED,
        "code": audit_code_digest(),
    }


def load(folder: Path) -> LoadedDrop:
    """The drop as the flow loads it (`audit.loading.load_drop`)."""
    model_path = folder / "model.keras"
    drop = Drop(
        week=dt.date(2000, 1, 3),  # the benchmark assigns weeks per scenario; unused when loading
        path=folder,
        model_path=model_path,
        eval_paths=(folder / "eval.npz",),
        config_path=folder / "audit.toml",
    )
    return load_drop(drop)


def run_methods(loaded: LoadedDrop) -> tuple[MethodOutcome, ...]:
    """Every benchmark method on `loaded`, through the runner the flow uses."""
    outcomes = tuple(run_method(loaded, spec, random_state=AUDIT_SEED) for spec in select_methods(METHODS))
    failed = [o for o in outcomes if o.status is not MethodStatus.OK]
    if failed:
        raise RuntimeError("; ".join(f"{o.method}: {o.status} {o.reason}" for o in failed))
    return outcomes


def audit_drop(spec: DropSpec, settings: ModelSettings, root: Path, *, fresh: bool = False) -> AuditedDrop:
    """Build (or reuse) the drop and its audit."""
    folder = build_drop(spec, settings, root, fresh=fresh)
    meta = json.loads((folder / "meta.json").read_text())
    cached = _read_outcomes(folder / "audit.json")
    if cached is not None and not fresh:
        return AuditedDrop(spec, folder, cached, meta)
    loaded = load(folder)
    outcomes = run_methods(loaded)
    _write_outcomes(folder / "audit.json", outcomes)
    return AuditedDrop(spec, folder, outcomes, meta, loaded)


def frozen_importances(
    previous: AuditedDrop, current: AuditedDrop, *, fresh: bool = False
) -> tuple[MethodOutcome, ...]:
    """The previous drop's model audited on the current drop's eval sample (the frozen set)."""
    path = current.folder / f"frozen-{previous.spec.name}.json"
    cached = _read_outcomes(path)
    if cached is not None and not fresh:
        return cached
    loaded_current = current.loaded or load(current.folder)
    model = keras.saving.load_model(previous.folder / "model.keras", compile=False, safe_mode=True)
    outcomes = run_methods(dataclasses.replace(loaded_current, model=model))
    _write_outcomes(path, outcomes)
    return outcomes


def summary(
    drop: AuditedDrop,
    *,
    week: dt.date,
    run_id: int,
    frozen: tuple[MethodOutcome, ...] | None = None,
    with_copies: bool = False,
) -> AuditSummary:
    """The drop's audit as the comparison reads it back from the database (with its reseeded
    copies when `with_copies`, as the flow stores a drop holding ``model_seed*.keras`` files)."""
    from audit.types import ModelFacts, Task

    facts = ModelFacts(
        path=drop.folder / "model.keras",
        content_hash=drop.spec.name,
        input_shape=(None, N_STEPS, len(FEATURES)),
        output_shape=(None, 1),
        n_parameters=0,
        task=Task.REGRESSION,
    )
    frozen_set = None
    if frozen is not None:
        importances = tuple(o.importance for o in frozen if o.importance is not None)
        frozen_set = ModelImportances(
            label=(week - dt.timedelta(weeks=1)).isoformat(), importances=importances
        )
    return AuditSummary(
        model_name="pm25_next_hour",
        week=week,
        run_id=run_id,
        model=facts,
        n_eval_samples=int(drop.meta["n_eval"]),
        eval_source=str(drop.folder / "eval.npz"),
        outcomes=drop.outcomes,
        frozen=frozen_set,
        copies=tuple(
            ModelImportances(
                label=f"{copy.spec.name}.keras",
                importances=tuple(o.importance for o in copy.outcomes if o.importance is not None),
            )
            for copy in (drop.copies if with_copies else ())
        ),
    )


def _importance_json(importance: Importance) -> dict[str, Any]:
    def array(value: npt.NDArray[Any] | None) -> list[Any] | None:
        return None if value is None else np.asarray(value, dtype=np.float64).tolist()

    return {
        "method": importance.method,
        "feature_names": list(importance.feature_names),
        "values": array(importance.values),
        "std": array(importance.std),
        "repeats": array(importance.repeats),
        "profile": array(importance.profile),
        "parameters": dict(importance.parameters),
        "signed": importance.signed,
        "profile_features": None
        if importance.profile_features is None
        else list(importance.profile_features),
    }


def _importance_from(data: Mapping[str, Any]) -> Importance:
    def array(value: list[Any] | None) -> npt.NDArray[np.float64] | None:
        return None if value is None else np.asarray(value, dtype=np.float64)

    values = array(data["values"])
    if values is None:
        raise ValueError("cached importance without values")
    return Importance(
        method=data["method"],
        feature_names=tuple(data["feature_names"]),
        values=values,
        std=array(data["std"]),
        repeats=array(data["repeats"]),
        profile=array(data["profile"]),
        parameters=data["parameters"],
        signed=data["signed"],
        profile_features=None if data["profile_features"] is None else tuple(data["profile_features"]),
    )


def _write_outcomes(path: Path, outcomes: Sequence[MethodOutcome]) -> None:
    payload = {
        "key": _cache_key(),
        "outcomes": [
            {
                "method": o.method,
                "seconds": o.seconds,
                "importance": None if o.importance is None else _importance_json(o.importance),
            }
            for o in outcomes
        ],
    }
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(staging, path)


def _read_outcomes(path: Path) -> tuple[MethodOutcome, ...] | None:
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if payload.get("key") != json.loads(json.dumps(_cache_key())):
        return None
    return tuple(
        MethodOutcome(
            o["method"],
            MethodStatus.OK,
            importance=_importance_from(o["importance"]),
            seconds=o["seconds"],
        )
        for o in payload["outcomes"]
    )


def is_cached(spec: DropSpec, settings: ModelSettings, root: Path) -> bool:
    """The drop is built and its audit is current (nothing to train or audit)."""
    folder = drop_folder(spec, settings, root)
    meta_path = folder / "meta.json"
    if not meta_path.is_file() or json.loads(meta_path.read_text()).get("spec") != _spec_json(spec):
        return False
    return _read_outcomes(folder / "audit.json") is not None


def _warm_one(spec: DropSpec, settings: ModelSettings, root: Path, fresh: bool) -> None:
    audit_drop(spec, settings, root, fresh=fresh)


def warm(
    specs: Sequence[DropSpec], settings: ModelSettings, root: Path, *, workers: int, fresh: bool = False
) -> None:
    """Train and audit `specs` into the cache in `workers` processes (1: nothing to do here; the
    caller's sequential pass builds them). A drop is a small model that one process does not keep
    two cores busy with, so two processes build the benchmark sooner."""
    if not fresh:
        specs = [spec for spec in specs if not is_cached(spec, settings, root)]
    if workers <= 1 or not specs:
        return
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_warm_one, spec, settings, root, fresh) for spec in specs]
        for future in concurrent.futures.as_completed(futures):
            future.result()
