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
    #: A running audit whose process stopped renewing its lease (killed, machine lost): see
    #: storage.leases. Never holds figures.
    INTERRUPTED = "interrupted"


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
    #: ``[methods.<name>]`` tables as written (e.g. n_repeats = 10); checked against each method's
    #: declared options by `audit.loading.load_drop`, typed and defaults filled by `MethodSpec.context`.
    method_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: Rows of the eval sample with NaN/inf in X or y: an error (default) or dropped and counted.
    nan_policy: NanPolicy = NanPolicy.ERROR
    #: Larger eval samples are subsampled to this many rows, reproducibly (seeded by the drop date).
    max_eval_samples: int = DEFAULT_MAX_EVAL_SAMPLES
    #: ``[drift]``: thresholds of the drift call.
    drift: DriftConfig = field(default_factory=lambda: DriftConfig())


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
    #: Version of the method's definition the figure was computed with: figures of two versions
    #: are never compared (saliency is 2 since it became the mean |gradient|; every other method 1).
    method_version: int = 1
    #: Signed per-feature direction beside magnitude values (saliency: the signed mean gradient,
    #: whose sign says whether the feature pushes the output up or down); None for other methods.
    direction: FloatArray | None = None

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
        if self.direction is not None and self.direction.shape != (n,):
            raise ValueError(f"{self.method}: direction has shape {self.direction.shape}, expected ({n},)")
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


#: SageMaker Clarify's feature-attribution drift monitor alerts when nDCG falls below this.
CLARIFY_NDCG_THRESHOLD = 0.90
#: The method whose nDCG is the figure Clarify and Vertex AI users know (Shapley-value attributions
#: ranked by mean |attribution|): the report and the ``clarify_ndcg`` view label it as such.
CLARIFY_METHOD = "gradient_shap"


@dataclass(frozen=True)
class MethodComparison:
    """One method's importances this week against the previous drop's."""

    method: str
    spearman: float | None
    top_k: int
    top_k_overlap: float | None
    changes: tuple[FeatureChange, ...]
    kendall: float | None = None
    #: SageMaker Clarify's nDCG: relevance = the previous drop's values, order = this drop's ranking.
    ndcg: float | None = None
    #: Mean over features of the earth mover's distance (in steps) between the normalised time
    #: profiles of the two drops (which lags the model relies on); None without profiles.
    profile_distance: float | None = None
    #: The method's version in this drop and in the previous one (`Importance.method_version`):
    #: figures of two versions are not comparable, and such a comparison holds no statistics.
    method_version: int = 1
    previous_method_version: int = 1

    @property
    def comparable(self) -> bool:
        """False when the two drops' figures come from different definitions of the method."""
        return self.method_version == self.previous_method_version

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
class ModelImportances:
    """Importances of one more model on the drop's eval sample, beside the primary model's.

    Either a reseeded copy of this week's model (`AuditSummary.copies`: their spread is a direct
    measure of retraining noise) or the previous drop's model scored on this week's sample
    (`AuditSummary.frozen`: it separates "the model changed" from "the data changed").
    """

    #: The model's file name (copies) or the previous drop's week, ISO format (frozen set).
    label: str
    importances: tuple[Importance, ...]

    def importance(self, method: str) -> Importance | None:
        for importance in self.importances:
            if importance.method == method:
                return importance
        return None


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the drift call (audit/drift.py); ``[drift]`` in audit.toml overrides them."""

    #: A change is beyond noise when |change| > threshold * scale of its noise band.
    threshold: float = 5.0
    #: Past week-to-week changes of a feature needed before its own history sets its band.
    min_history: int = 4
    #: How many past week-to-week comparisons to learn the noise from.
    history_weeks: int = 8
    #: Noise scale (log ratio) with no history and no reseeded copies: about +-30% per sd.
    default_scale: float = 0.3
    #: Lower bound of any scale, so that identical past figures do not make every change an alert.
    min_scale: float = 0.02
    #: How many observations the scale pooled over all features counts for when a feature's own
    #: history sets its band (shrinkage: a few past changes can all be small by chance).
    pooled_weight: float = 4.0
    #: Added to every value, as a share of the method's total importance, before log ratios are
    #: taken, so features the model ignores do not swing wildly between near-zero values.
    epsilon_fraction: float = 0.01
    #: A feature below this share of the method's total in both drops is never flagged.
    min_share: float = 0.01
    #: Methods that must flag a feature for it to be "changed" (fewer when fewer methods judge).
    min_agreeing_methods: int = 3
    #: Profile-distance band (steps) with no history and no copies, as a share of the steps.
    default_profile_fraction: float = 0.1
    #: Methods whose changes decide verdicts; None = every unsigned data method with per-feature
    #: values but gradient_shap and saliency (`audit.drift.NON_VOTING_METHODS`; weight-only methods
    #: when no data method ran).
    verdict_methods: tuple[str, ...] | None = None
    #: Score the previous drop's model on this week's eval sample too (the frozen-set comparison:
    #: "the model changed" or "the data changed"); costs one more run of the data methods.
    frozen_set: bool = True
    #: Noise scale (log ratio) of the eval loss with too little history: about +-5% per sd, so a
    #: loss must rise by about 28% (threshold 5) plus its sampling noise to be called worse.
    default_performance_scale: float = 0.05
    #: The copies advice (audit/sensitivity.py) says how many reseeded copies per drop, or eval rows,
    #: would let the rule see a rise or fall of this size (0.5 = 50%) of the top features.
    target_detectable_change: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "threshold",
            "default_scale",
            "default_performance_scale",
            "min_scale",
            "epsilon_fraction",
            "min_share",
            "default_profile_fraction",
            "target_detectable_change",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"drift.{name} must be a positive number, got {value!r}")
        for name in ("min_history", "history_weeks", "min_agreeing_methods"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"drift.{name} must be a whole number >= 1, got {value!r}")
        if not (math.isfinite(self.pooled_weight) and self.pooled_weight >= 0):
            raise ValueError(f"drift.pooled_weight must be a number >= 0, got {self.pooled_weight!r}")


@dataclass(frozen=True)
class ModelEvaluation:
    """How well the model fits its eval sample: the loss and one headline metric, both on `n_samples`.

    Regression: loss "mse", metric "r2". Classification: loss "cross_entropy", metric "accuracy".
    Shown in the report's model facts so a reader can tell a model that got worse from one that
    merely relies on other features.
    """

    loss_name: str
    loss: float
    metric_name: str
    metric: float
    n_samples: int
    #: Standard error of `loss` (sd of the per-sample losses / sqrt(n)): its sampling noise.
    loss_se: float | None = None


@dataclass(frozen=True)
class DropProvenance:
    """Where a drop staged from a remote source came from (`flows.sources`): stored with its runs
    and shown in the report's model facts. None for a drop of a local registry folder."""

    #: The drop's URI: ``s3://bucket/prefix/2014-11-03``, ``mlflow://<name>/<version>`` (no secrets).
    source_uri: str
    #: The key its staged copy is kept under (`audit.sources.content_key`): SHA-256 of the source
    #: and each file's path, size and content tag. Empty until the drop is staged.
    content_hash: str = ""
    #: MLflow: the primary model version and the run that logged it.
    mlflow_version: int | None = None
    mlflow_run_id: str | None = None
    #: MLflow: the aliases the version held when it was listed (``champion``, ...).
    mlflow_aliases: tuple[str, ...] = ()
    #: Object stores: the content tag (S3 ETag, GCS md5) of each staged file, by its path in the drop.
    etags: Mapping[str, str] = field(default_factory=dict)


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
    #: The drop's reseeded copies of the model, scored with the same methods on the same sample.
    copies: tuple[ModelImportances, ...] = ()
    #: The previous drop's model scored on this drop's eval sample (the frozen-set comparison).
    frozen: ModelImportances | None = None
    #: Loss and metric of the model on its eval sample (None: no sample, or audited before 0006).
    evaluation: ModelEvaluation | None = None
    #: The previous drop's model on this drop's eval sample (the frozen set; None: not scored).
    frozen_evaluation: ModelEvaluation | None = None
    #: Each feature's eval values, summarised for input drift (empty: no sample, or before 0009).
    input_summaries: tuple[FeatureSummary, ...] = ()
    #: Where the drop came from when a remote source staged it (None: a local registry folder).
    provenance: DropProvenance | None = None

    def importance(self, method: str) -> Importance | None:
        for outcome in self.outcomes:
            if outcome.method == method and outcome.importance is not None:
                return outcome.importance
        return None


class FeatureVerdict(StrEnum):
    """What happened to one feature (of one method, or over all methods) since the previous drop."""

    STABLE = "stable"
    CHANGED = "changed"
    #: In this drop only, or in the previous drop only: features are aligned by name.
    NEW = "new"
    REMOVED = "removed"


class DropVerdict(StrEnum):
    """The headline of an audited drop."""

    #: No change beyond the noise band.
    OK = "ok"
    #: Weak evidence: a change (in value or time profile) seen by one method only.
    WARN = "warn"
    #: A feature's importance changed beyond the noise band in several methods, or features were
    #: added or removed.
    ALERT = "alert"


class BandSource(StrEnum):
    """Where a noise band's retraining-noise scale came from (audit/drift.py, strongest first)."""

    #: Robust spread (MAD) of this feature's own past week-to-week changes (enough history).
    HISTORY = "history"
    #: Too few past changes of this feature: their spread pooled over all features of the method.
    POOLED_HISTORY = "pooled_history"
    #: Spread between the drop's reseeded copies of the model (e.g. model_seed*.keras).
    RESEED = "reseed"
    #: No history and no copies: the configured default scale (`DriftConfig.default_scale`).
    DEFAULT = "default"


class Cause(StrEnum):
    """Frozen-set comparison: why a feature's importance moved (see audit/drift.py)."""

    #: The previous model, scored on this week's data, does not show the change: the model changed.
    MODEL = "model"
    #: The previous model on this week's data shows the change too: the data changed.
    DATA = "data"
    BOTH = "both"
    UNCLEAR = "unclear"


@dataclass(frozen=True)
class NoiseBand:
    """How far one feature's change may go before it is more than noise, on the change's scale.

    Changes are log ratios (see `FeatureDrift.change`); `scale` is one standard deviation of a
    noise-only change, `half_width` = threshold * scale is where "changed" starts.
    """

    scale: float
    half_width: float
    source: BandSource
    #: Past changes (or copies) the scale was estimated from.
    n_observations: int
    #: The part of `scale` due to sampling (the standard errors of the two figures).
    sampling_scale: float = 0.0
    #: The retraining-noise scale the source gave, before sampling was added (history and pooled
    #: history measure past changes of figures, so theirs includes those figures' sampling noise).
    retrain_scale: float = 0.0

    @property
    def percent(self) -> float:
        """The band's upper edge as a relative change: exp(half_width) - 1 (0.18 = +18%)."""
        return math.expm1(self.half_width)

    @property
    def low_percent(self) -> float:
        """The band's lower edge as a relative change: exp(-half_width) - 1 (-0.15 = -15%)."""
        return math.expm1(-self.half_width)

    def describe(self) -> str:
        """ "+-18%" for a narrow band, "-72% to +255%" where the log scale makes it lopsided."""
        high, low = self.percent, self.low_percent
        if high + low < 0.05:
            return f"\u00b1{high:.0%}"
        return f"{low:+.0%} to {high:+.0%}"


@dataclass(frozen=True)
class DetectableChange:
    """The smallest rise and the smallest fall of a feature's own importance the drift rule would
    flag this week, as plain relative changes of its value against last week's (0.45 = 45%).

    None in a direction where no change of any size would be flagged (e.g. a fall to zero stays
    inside a wide band, or a feature holding most of the importance cannot rise far enough above
    the rule's floor). See audit/sensitivity.py.
    """

    rise: float | None
    fall: float | None

    def describe(self) -> str:
        """ "rise 35% or fall 30%", "fall 30% (no rise of any size)", "no change of any size"."""
        if self.rise is not None and self.fall is not None:
            return f"rise {self.rise:.0%} or fall {self.fall:.0%}"
        if self.fall is not None:
            return f"fall {self.fall:.0%} (no rise of any size)"
        if self.rise is not None:
            return f"rise {self.rise:.0%} (no fall, even to zero)"
        return "no change of any size"

    @property
    def largest(self) -> float:
        """The larger of the two (inf where a direction is undetectable): what the copies advice
        brings under its target."""
        return max(math.inf if self.rise is None else self.rise, math.inf if self.fall is None else self.fall)


@dataclass(frozen=True)
class PlainBand:
    """One method's noise band around a feature's plain change (value / previous value - 1).

    The rule flags a value below previous x (1 + `low`) or above previous x (1 + `high`): its band on
    the centred change, moved by this week's median change of the method and by the floor epsilon,
    and said on the feature's own value. None where no value on that side would be flagged.
    """

    low: float | None
    high: float | None

    @property
    def detectable(self) -> DetectableChange:
        """The smallest flagged rise and fall (0 when the band does not hold "no change")."""
        rise = None if self.high is None else max(self.high, 0.0)
        fall = None if self.low is None else max(-self.low, 0.0)
        return DetectableChange(rise, fall)

    def describe(self) -> str:
        """ "-30% to +35%"; "above -30%" or "below +35%" where one side is never flagged."""
        if self.low is not None and self.high is not None:
            return f"{self.low:+.0%} to {self.high:+.0%}"
        if self.low is not None:
            return f"above {self.low:+.0%}"
        if self.high is not None:
            return f"below {self.high:+.0%}"
        return "any"


@dataclass(frozen=True)
class CopiesAdvice:
    """How many reseeded copies per drop, or eval rows, would bring the top features' detectable
    change under `target` (audit/sensitivity.py). Numbers are None where not estimable or where that
    lever alone cannot reach the target."""

    target: float
    #: The features the advice is about (this week's most important judged ones), and the largest
    #: of each one's detectable rise and fall (the directions not `capped`) with today's noise in a
    #: week where the method did not move overall (inf: not detectable with today's noise; empty
    #: when not estimable).
    features: tuple[str, ...]
    detectable_now: tuple[float, ...]
    #: Models per drop today (1 + copies) and eval rows today (None: no eval sample).
    models_now: int
    rows_now: int | None
    #: Models per drop that would reach the target at today's eval rows (None: copies alone cannot).
    models_needed: int | None
    #: Eval rows that would reach it at today's models per drop (None: rows alone cannot).
    rows_needed: int | None
    #: False without history or copies: the noise cannot be split yet.
    estimable: bool
    text: str
    #: Directions no number of copies or rows makes detectable, e.g. "pm2.5 rise" (left out of the
    #: target; `detectable_now` covers the other directions).
    capped: tuple[str, ...] = ()
    #: When neither lever alone reaches the target: (models per drop, eval rows) that do together,
    #: the fewest models with 2, 4, 8 or 16 x today's rows (None: not even then).
    combined: tuple[int, int] | None = None


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of one method: its change since the previous drop and whether it is noise."""

    method: str
    feature: str
    value: float | None
    previous_value: float | None
    rank: int | None
    previous_rank: int | None
    #: log((v + eps) / (v_prev + eps)) minus the median of that log ratio over the method's
    #: features: the change relative to the method's overall scale (a retrain that doubles every
    #: importance changes nothing). None for a feature on one side only.
    change: float | None
    #: Standard error of `delta` (value - previous_value) from the two figures' own uncertainty.
    delta_se: float | None
    band: NoiseBand | None
    #: change / band.scale.
    z: float | None
    #: Earth mover's distance (steps) between the feature's normalised time profiles, its band.
    profile_distance: float | None
    profile_band: float | None
    verdict: FeatureVerdict
    #: Frozen-set split of this change (None without the previous model's figures on this data).
    cause: Cause | None = None
    #: The feature's share of the method's total importance in this drop and the previous one.
    share: float | None = None
    previous_share: float | None = None

    #: Steps of the input window (sequence models), for `reliance_moved`.
    n_steps: int = 0
    #: The feature's own change: value / previous_value - 1 of the magnitudes the rule compares
    #: (None when either is missing or the previous one is 0). Not centred, unlike `change`.
    plain_change: float | None = None
    #: The noise band said around `plain_change` (None when not judged: under `min_share` in both
    #: drops, or no band).
    plain_band: PlainBand | None = None

    @property
    def detectable(self) -> DetectableChange | None:
        """The smallest rise and fall of the feature's value this method would flag this week."""
        return None if self.plain_band is None else self.plain_band.detectable

    @property
    def share_change(self) -> float:
        """|share - previous share| (0 if one is missing)."""
        if self.share is None or self.previous_share is None:
            return 0.0
        return abs(self.share - self.previous_share)

    @property
    def reliance_moved(self) -> float:
        """How much of what the model relies on moved: the change of the feature's share, plus, for
        sequences, its share times the part of the window its time profile moved across."""
        moved = self.share_change
        if self.profile_distance is not None and self.n_steps:
            share = max(self.share or 0.0, self.previous_share or 0.0)
            moved += share * min(1.0, self.profile_distance / self.n_steps)
        return moved

    @property
    def delta(self) -> float | None:
        if self.value is None or self.previous_value is None:
            return None
        return self.value - self.previous_value

    @property
    def rank_change(self) -> int | None:
        """Positive when the feature moved up (to a smaller rank number)."""
        if self.rank is None or self.previous_rank is None:
            return None
        return self.previous_rank - self.rank

    @property
    def relative(self) -> float | None:
        """`change` as a relative change: exp(change) - 1 (-0.71 = fell 71%)."""
        return None if self.change is None else math.expm1(self.change)

    @property
    def value_changed(self) -> bool:
        """The importance moved beyond its noise band (not only the time profile)."""
        return self.change is not None and self.band is not None and abs(self.change) > self.band.half_width

    @property
    def profile_changed(self) -> bool:
        return (
            self.profile_distance is not None
            and self.profile_band is not None
            and self.profile_distance > self.profile_band
        )


@dataclass(frozen=True)
class FeatureAssessment:
    """One feature over all verdict methods: how many saw it change, and the human reason."""

    feature: str
    verdict: FeatureVerdict
    #: Methods that flagged it, strongest evidence first; of `n_methods` that could judge it.
    methods_flagged: tuple[str, ...]
    n_methods: int
    #: "down", "up", "mixed" or "" (values), or "lags" when only the time profile moved.
    direction: str
    #: |z| of the strongest flagging method (0 when none); orders features by evidence.
    strength: float
    reason: str
    cause: Cause | None = None
    #: Largest `FeatureDrift.reliance_moved` among the flagging methods: changed features are
    #: named in this order (the feature that carries most of the change in what the model relies on).
    reliance_moved: float = 0.0
    #: The change of the feature's own value that enough verdict methods would flag together: the
    #: k-th smallest rise and fall over them (k = `min_agreeing_methods`, or all when fewer judge
    #: it). None when no verdict method judges the feature (under `min_share`).
    detectable: DetectableChange | None = None
    #: Verdict methods that judge the feature (the k-th smallest is taken over all verdict methods
    #: holding it, those that do not judge it counting as never flagging).
    judged_methods: tuple[str, ...] = ()

    @property
    def agreement(self) -> int:
        return len(self.methods_flagged)


@dataclass(frozen=True)
class MethodAgreement:
    """Rank agreement (Spearman) between two methods on this drop's importances."""

    method: str
    other_method: str
    spearman: float | None


@dataclass(frozen=True)
class DriftAssessment:
    """The drift call on one drop against the previous one: per feature, per method, per drop."""

    verdict: DropVerdict
    reason: str
    #: Every (method, feature) drift, verdict methods and the others alike.
    drifts: tuple[FeatureDrift, ...]
    #: Features over all verdict methods, most evidence first.
    features: tuple[FeatureAssessment, ...]
    agreement: tuple[MethodAgreement, ...]
    #: The methods whose changes decide the verdict (the others are shown, not judged).
    verdict_methods: tuple[str, ...]
    #: Earlier week-to-week comparisons the noise bands were estimated from.
    n_history: int
    #: Reseeded copies of the model in this drop used for the noise band.
    n_copies: int = 0
    #: How many copies or eval rows would let the rule see smaller changes (None: nothing judged).
    advice: CopiesAdvice | None = None

    def drift(self, method: str, feature: str) -> FeatureDrift | None:
        for drift in self.drifts:
            if drift.method == method and drift.feature == feature:
                return drift
        return None


@dataclass(frozen=True)
class InterruptedRun:
    """An audit marked ``interrupted``: its process stopped renewing its lease (killed, lost)."""

    run_id: int
    model_name: str
    week: dt.date
    started_at: dt.datetime
    #: Its last heartbeat (None: started before leases existed, revision 0010).
    heartbeat_at: dt.datetime | None


@dataclass(frozen=True)
class ReportInput:
    """What a weekly report shows: this drop, the one before it (if any) and their comparison."""

    current: AuditSummary
    previous: AuditSummary | None
    comparisons: tuple[MethodComparison, ...]
    assessment: DriftAssessment | None = None
    #: Recent weeks' figures of the top features, one entry per method, oldest week first.
    history: tuple[ImportanceHistory, ...] = ()
    #: Weeks without a drop between `previous.week` and `current.week` (a retrain was skipped).
    missing_weeks: tuple[dt.date, ...] = ()
    #: Input-data drift per feature against the previous drop's eval sample (None: not measured).
    input_drift: InputDriftAssessment | None = None
    #: The eval loss against the previous drop's, with its band and verdict (None: not measured).
    performance: PerformanceDrift | None = None
    #: Audits of this model's drops in the report's history window that were interrupted (their
    #: process killed mid-audit; storage.leases), oldest drop first.
    interrupted: tuple[InterruptedRun, ...] = ()


@dataclass(frozen=True)
class ImportanceHistory:
    """One method's importance of a few features over recent weeks, read from SQL for the report.

    values[w, j] is feature_names[j]'s value in weeks[w]; NaN where that week has no figure.
    """

    method: str
    weeks: tuple[dt.date, ...]
    feature_names: tuple[str, ...]
    values: FloatArray

    def __post_init__(self) -> None:
        expected = (len(self.weeks), len(self.feature_names))
        if self.values.shape != expected:
            raise ValueError(
                f"{self.method}: history values have shape {self.values.shape}, expected {expected}"
            )


def ranks_of(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Rank 1 for the largest value; ties are broken by position so ranks are a permutation."""
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(-array, kind="stable")
    ranks = np.empty(array.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, array.shape[0] + 1)
    return ranks


# --------------------------------------------------------------------------- inputs and performance


#: Values kept per feature and week for the input-drift statistics (audit/input_drift.py): every
#: value of a sample up to this size (the statistics are then exact), else this many quantiles.
SUMMARY_CAP = 1000


@dataclass(frozen=True)
class FeatureSummary:
    """One feature's values in one week's eval sample, kept so that later weeks can be compared
    with it after the eval file is gone (audit/input_drift.py).

    `values` is sorted: the `n` values themselves when `exact` (n <= `SUMMARY_CAP`), else
    `SUMMARY_CAP` quantiles at probabilities (i + 0.5) / SUMMARY_CAP (inverted CDF), whose
    empirical CDF is within 0.5 / SUMMARY_CAP of the sample's everywhere. For sequence inputs
    (n, t, f) the values are each window's last step: one value per time point.
    """

    feature: str
    n: int
    mean: float
    std: float
    values: FloatArray
    exact: bool

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.size == 0:
            raise ValueError(
                f"{self.feature}: a summary needs a 1-D array of values, got {self.values.shape}"
            )
        if self.exact and self.values.size != self.n:
            raise ValueError(
                f"{self.feature}: an exact summary holds all {self.n} values, got {self.values.size}"
            )


class InputVerdict(StrEnum):
    """Did a feature's input distribution shift since the previous drop's eval sample?"""

    STABLE = "stable"
    #: PSI beyond its band: more than sampling noise, the usual week-to-week variation and 0.25.
    SHIFTED = "shifted"


@dataclass(frozen=True)
class InputDrift:
    """One feature's input distribution this week against the previous drop's (audit/input_drift.py)."""

    feature: str
    #: Population stability index over the previous week's deciles.
    psi: float
    #: Two-sample Kolmogorov-Smirnov statistic and p-value (descriptive for sequences: time points
    #: are autocorrelated).
    ks_statistic: float
    ks_pvalue: float
    #: Wasserstein-1 distance in units of the previous week's standard deviation (None: it was 0).
    wasserstein: float | None
    #: The PSI above which the shift is called (the band): see `audit.input_drift.psi_limit`.
    psi_limit: float
    #: "history" (the feature's past week-to-week PSIs widened it), "sampling" or "default" (0.25).
    limit_source: str
    #: Past week-to-week PSIs of this feature the band saw.
    n_history: int
    verdict: InputVerdict
    #: Both weeks' summaries hold every value: KS and PSI equal those of the raw samples.
    exact: bool
    n: int
    previous_n: int

    @property
    def units(self) -> float:
        """PSI in units of its band: above 1 is a shift."""
        return self.psi / self.psi_limit if self.psi_limit > 0 else math.inf

    @property
    def shifted(self) -> bool:
        return self.verdict is InputVerdict.SHIFTED


@dataclass(frozen=True)
class InputDriftAssessment:
    """Every shared feature's input drift between two drops' eval samples."""

    drifts: tuple[InputDrift, ...]
    #: Earlier week-to-week comparisons the bands could learn from.
    n_history: int
    #: Sequence inputs: one value per time point (each window's last step); p-values are descriptive.
    sequences: bool = False

    def drift(self, feature: str) -> InputDrift | None:
        for drift in self.drifts:
            if drift.feature == feature:
                return drift
        return None

    @property
    def shifted(self) -> tuple[InputDrift, ...]:
        """Shifted features, largest shift (in band units) first."""
        return tuple(sorted((d for d in self.drifts if d.shifted), key=lambda d: -d.units))


class PerformanceVerdict(StrEnum):
    STABLE = "stable"
    #: The loss rose beyond its noise band (this model on this week's data vs last week's).
    WORSE = "worse"
    BETTER = "better"


@dataclass(frozen=True)
class PerformanceDrift:
    """The eval loss this week against last week's, split with the frozen set (audit/performance.py).

    Changes are log ratios of losses: `change` = log(loss / previous_loss) is what a reader sees;
    `model_change` = log(loss / frozen_loss) compares the two models on this week's sample (the
    model got worse); `data_change` = log(frozen_loss / previous_loss) is the previous model on the
    two weeks' samples (this week's data is harder).
    """

    loss_name: str
    loss: float
    previous_loss: float
    frozen_loss: float | None
    metric_name: str
    metric: float
    previous_metric: float
    frozen_metric: float | None
    change: float
    model_change: float | None
    data_change: float | None
    band: NoiseBand
    verdict: PerformanceVerdict
    cause: Cause | None
    reason: str

    @property
    def relative(self) -> float:
        """`change` as a relative change of the loss: 0.42 = rose 42%."""
        return math.expm1(self.change)

    @property
    def worse(self) -> bool:
        return self.verdict is PerformanceVerdict.WORSE
