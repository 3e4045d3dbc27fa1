"""Tiny deterministic Keras models and registries with known answers, shared by the tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import sqlalchemy as sa

# free_port lives with the servers (tests/servers.py, imported by conftest without Keras); the tests
# that import it from here keep working.
from tests.servers import free_port as free_port


def linear_model(weights: Sequence[float], bias: float = 0.0) -> keras.Model:
    """y = x @ weights + bias, exactly: a Dense(1) with its weights set by hand."""
    model = keras.Sequential([keras.Input((len(weights),)), keras.layers.Dense(1)])
    model.layers[0].set_weights(
        [np.asarray(weights, dtype=np.float32)[:, None], np.array([bias], np.float32)]
    )
    return model


def mlp_ignoring(n_features: int, ignored: int, *, seed: int = 0) -> keras.Model:
    """A random tanh MLP whose first-layer weights from feature `ignored` are exactly zero."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((n_features,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    kernel, bias = model.layers[0].get_weights()
    kernel[ignored, :] = 0.0
    model.layers[0].set_weights([kernel, bias])
    return model


def write_drop(
    registry: Path,
    week: dt.date | str,
    model: keras.Model,
    *,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    config: str | None = None,
) -> Path:
    """A drop folder as the registry contract describes it."""
    folder = registry / (week.isoformat() if isinstance(week, dt.date) else week)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    if X is not None:
        arrays: dict[str, np.ndarray] = {"X": X.astype(np.float32)}
        if y is not None:
            arrays["y"] = y.astype(np.float32)
        if feature_names is not None:
            arrays["feature_names"] = np.array(feature_names)
        np.savez(folder / "eval.npz", **arrays)
    if config is not None:
        (folder / "audit.toml").write_text(config, encoding="utf-8")
    return folder


def small_registry(root: Path, weeks: Sequence[dt.date], *, n_features: int = 4, ignored: int = 3) -> Path:
    """Weekly MLP drops that ignore feature `ignored`, each with a 64-sample eval set and targets."""
    registry = root / "registry"
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(n_features)]
    for index, week in enumerate(weeks):
        model = mlp_ignoring(n_features, ignored, seed=index)
        X = rng.normal(size=(64, n_features)).astype(np.float32)
        y = model.predict(X, verbose=0)[:, 0] + rng.normal(scale=0.05, size=64)
        write_drop(registry, week, model, X=X, y=y, feature_names=names)
    return registry


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Row count of every table of the schema (alembic's own table aside)."""
    names = [
        "model_drops",
        "audit_runs",
        "method_results",
        "importances",
        "profiles",
        "comparisons",
        "feature_drifts",
        "feature_verdicts",
        "drop_verdicts",
        "method_agreement",
        "model_importances",
        "model_profiles",
        "features",
        # not report_deliveries: a log that grows whenever a report is written, re-runs included
    ]
    with engine.connect() as connection:
        return {
            name: connection.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in names
        }
