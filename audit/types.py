"""Plain data types shared by every layer: what a drop is, what a method returns, what a comparison says.

Only numpy and the standard library are imported here, so `storage/` and `reports/` can depend on
these types without pulling in TensorFlow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: JSON-serialisable method parameters, stored with every figure so it can be recomputed.
Parameters = Mapping[str, "str | int | float | bool | list[int] | list[float] | list[str] | None"]


class AuditError(Exception):
    """A domain failure with a message fit for a user: it names the bad file or value and the fix."""


class Task(StrEnum):
    """What the model predicts; decides the loss used by data-based methods."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"


class NanPolicy(StrEnum):
    """What to do with eval-sample rows holding NaN or inf in X or y (``nan_policy`` in audit.toml)."""

    #: Refuse the eval sample, naming the file and how many rows are bad (the default).
    ERROR = "error"
    #: Drop those rows; the count is logged, stored with the run and shown in the report.
    DROP = "drop"


#: Default cap on the rows of an eval sample (``max_eval_samples`` in audit.toml).
DEFAULT_MAX_EVAL_SAMPLES = 20_000


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A succeeded run whose figures were replaced by a later re-audit of the same drop.
    SUPERSEDED = "superseded"


class MethodStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Drop:
    """One folder of the registry: a model retrained on `week`, with its optional eval sample."""

    week: dt.date
    path: Path
    #: The primary model (see README, registry contract): the one audited and stored.
    model_path: Path
    #: Every eval.* file found; loading insists on at most one.
    eval_paths: tuple[Path, ...]
    config_path: Path | None
    #: Every model of the drop, the primary first (e.g. reseeded copies); ``(model_path,)`` by default.
    model_paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.model_paths:
            object.__setattr__(self, "model_paths", (self.model_path,))
        elif self.model_paths[0] != self.model_path:
            raise ValueError(f"model_paths must start with the primary model {self.model_path}")


@dataclass(frozen=True)
class SkippedFolder:
    """A registry entry that is not a drop, or a file of a drop that is not used, and why (a warning)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DropConfig:
    """The optional `audit.toml` of a drop (see README, registry contract)."""

    feature_names: tuple[str, ...] | None = None
    task: Task | None = None
    target: str = "target"
    class_index: int | None = None
    output_index: int | None = None
    #: ``[methods.<name>]`` tables: options passed to that method (e.g. n_repeats = 10).
    method_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: Rows of the eval sample with NaN/inf in X or y: an error (default) or dropped and counted.
    nan_policy: NanPolicy = NanPolicy.ERROR
    #: Larger eval samples are subsampled to this many rows, reproducibly (seeded by the drop date).
    max_eval_samples: int = DEFAULT_MAX_EVAL_SAMPLES


@dataclass(frozen=True)
class EvalSample:
    """The evaluation sample of a drop.

    X has shape (n_samples, n_features) or (n_samples, n_steps, n_features); y, when present,
    has n_samples rows (regression targets, or integer class labels).
    """

    X: FloatArray
    y: FloatArray | None
    feature_names: tuple[str, ...]
    source: Path
    content_hash: str
    #: Rows in the file, before NaN/inf rows were dropped and the sample was capped (None: n_samples).
    n_rows_in_file: int | None = None
    #: Rows dropped because X or y held NaN or inf (``nan_policy = "drop"``).
    n_dropped_rows: int = 0
    #: Seed of the subsample drawn when more than ``max_eval_samples`` rows were usable, else None.
    sampling_seed: int | None = None

    @property
    def n_samples(self) -> int:
        """Rows used by the audit (after dropping and capping)."""
        return int(self.X.shape[0])

    @property
    def n_rows_read(self) -> int:
        """Rows in the file, before dropping and capping."""
        return self.n_samples if self.n_rows_in_file is None else self.n_rows_in_file

    @property
    def is_subsampled(self) -> bool:
        return self.sampling_seed is not None

    @property
    def is_sequence(self) -> bool:
        return self.X.ndim == 3


@dataclass(frozen=True)
class ModelFacts:
    """What the report and the database record about a model file."""

    path: Path
    content_hash: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    n_parameters: int
    task: Task


@dataclass(frozen=True)
class Importance:
    """Per-feature importance computed by one method on one model.

    values[i] and std[i] belong to feature_names[i]; std is the standard error of the value over the
    units it averages (samples, sweep rows or repeats), the uncertainty of this drop's figure;
    `repeats` (n_features, n_repeats) holds the raw
    figures of repeated methods; `profile` (n_steps, n_features) is the time x feature attribution of
    sequence methods. `parameters` is everything needed to recompute the figure (seed included).
    """

    method: str
    feature_names: tuple[str, ...]
    values: FloatArray
    std: FloatArray | None = None
    repeats: FloatArray | None = None
    profile: FloatArray | None = None
    parameters: Parameters = field(default_factory=dict)
    #: Signed values (e.g. mean gradient): features are ranked by magnitude.
    signed: bool = False
    #: Labels of the profile's columns when they are not `feature_names`: Grad-CAM's map covers all
    #: features at once, so its result has no per-feature values and one profile column "*".
    profile_features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        if self.profile is not None and self.profile.shape[1:] != (len(self.profile_labels),):
            raise ValueError(
                f"{self.method}: profile has shape {self.profile.shape}, expected (n_steps, "
                f"{len(self.profile_labels)})"
            )
        if self.values.shape != (n,):
            raise ValueError(
                f"{self.method}: values has shape {self.values.shape}, expected ({n},) to match feature_names"
            )
        if self.std is not None and self.std.shape != (n,):
            raise ValueError(f"{self.method}: std has shape {self.std.shape}, expected ({n},)")
        json.dumps(dict(self.parameters))  # fails early if a parameter cannot be stored

    @property
    def profile_labels(self) -> tuple[str, ...]:
        """The label of each profile column."""
        return self.feature_names if self.profile_features is None else self.profile_features

    @property
    def has_values(self) -> bool:
        """False for profile-only results (Grad-CAM): nothing to rank or compare per feature."""
        return len(self.feature_names) > 0

    @property
    def ranks(self) -> npt.NDArray[np.int64]:
        """Rank of each feature, 1 = most important (largest magnitude when `signed`); ties by position."""
        return ranks_of(np.abs(self.values) if self.signed else self.values)


@dataclass(frozen=True)
class MethodOutcome:
    """What happened when a method was asked to run: a result, or why there is none."""

    method: str
    status: MethodStatus
    importance: Importance | None = None
    reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class FeatureChange:
    """One feature of one method between the previous drop and this one."""

    feature: str
    value: float | None
    previous_value: float | None
    rank: int | None
    previous_rank: int | None

    @property
    def delta(self) -> float | None:
        if self.value is None or self.previous_value is None:
            return None
        return self.value - self.previous_value

    @property
    def relative_change(self) -> float | None:
        """delta / previous value; None where the previous value is missing or zero."""
        delta = self.delta
        if delta is None or self.previous_value is None or self.previous_value == 0:
            return None
        return delta / abs(self.previous_value)

    @property
    def rank_change(self) -> int | None:
        """Positive when the feature moved up (to a smaller rank number)."""
        if self.rank is None or self.previous_rank is None:
            return None
        return self.previous_rank - self.rank


@dataclass(frozen=True)
class MethodComparison:
    """One method's importances this week against the previous drop's."""

    method: str
    spearman: float | None
    top_k: int
    top_k_overlap: float | None
    changes: tuple[FeatureChange, ...]

    @property
    def biggest_movers(self) -> tuple[FeatureChange, ...]:
        """Changes ordered by absolute change, largest first; features on one side only come last.

        Absolute, not relative: within one method all values share a unit, and a feature going from
        0.001 to 0.017 (+1600%) matters less than one going from 0.5 to 1.1 (+120%).
        """

        def size(change: FeatureChange) -> float:
            delta = change.delta
            return -1.0 if delta is None or math.isnan(delta) else abs(delta)

        return tuple(sorted(self.changes, key=size, reverse=True))


@dataclass(frozen=True)
class AuditSummary:
    """Everything stored about one audited drop: what the report and the comparison read back."""

    model_name: str
    week: dt.date
    run_id: int
    model: ModelFacts
    n_eval_samples: int | None
    eval_source: str | None
    outcomes: tuple[MethodOutcome, ...]
    #: How the eval sample was read (None when unknown or no sample): rows in the file, rows
    #: dropped for NaN/inf, and the seed of the subsample when it was capped.
    n_eval_rows_in_file: int | None = None
    n_eval_rows_dropped: int | None = None
    eval_sampling_seed: int | None = None

    def importance(self, method: str) -> Importance | None:
        for outcome in self.outcomes:
            if outcome.method == method and outcome.importance is not None:
                return outcome.importance
        return None


@dataclass(frozen=True)
class ReportInput:
    """What a weekly report shows: this drop, the one before it (if any) and their comparison."""

    current: AuditSummary
    previous: AuditSummary | None
    comparisons: tuple[MethodComparison, ...]


def ranks_of(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Rank 1 for the largest value; ties are broken by position so ranks are a permutation."""
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(-array, kind="stable")
    ranks = np.empty(array.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, array.shape[0] + 1)
    return ranks
