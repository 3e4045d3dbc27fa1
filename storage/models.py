"""The SQL schema, as SQLAlchemy 2 ORM classes. Analysts query it (see docs/sql.md): names are stable.

Every change here needs an Alembic revision in ``storage/migrations/versions`` (a test checks that
the migrations and these classes agree). Views (``importance_history``, ``importance_changes``,
``audit_verdicts``, ``top_features``, ``input_drift``, ``performance_drift``,
``feature_sensitivity``, ``clarify_ndcg``) are created by the migrations, which own their SQL.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: Error texts are stored cut to this many characters (`audit_runs.error`, `report_deliveries.error`).
MAX_ERROR_CHARS = 4000


class ModelKind(StrEnum):
    """`model_importances.kind` and `model_profiles.kind`: which extra model of a run a figure belongs to."""

    #: A reseeded copy of the drop's model (`AuditSummary.copies`), labelled by its file name.
    COPY = "copy"
    #: The previous drop's model on this drop's eval sample (`AuditSummary.frozen`), labelled by its week.
    FROZEN = "frozen"


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime}  # noqa: RUF012 (SQLAlchemy reads it per class)


class ModelDrop(Base):
    """One drop of the registry: a model retrained on `week`. Facts are filled when it loads."""

    __tablename__ = "model_drops"
    __table_args__ = (UniqueConstraint("model_name", "week", name="uq_model_drops_model_week"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    week: Mapped[dt.date] = mapped_column(Date)
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    input_shape: Mapped[str | None] = mapped_column(String(200))
    output_shape: Mapped[str | None] = mapped_column(String(200))
    n_parameters: Mapped[int | None]
    task: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    #: When `drift-audit prune` removed the drop's runs and figures (revision 0010; NULL: not
    #: pruned). The row stays so a later run does not audit the drop again; a re-audit clears it.
    pruned_at: Mapped[dt.datetime | None]

    runs: Mapped[list[AuditRun]] = relationship(back_populates="drop")


class AuditRun(Base):
    """One attempt to audit a drop. Only `succeeded` runs have figures; re-audits supersede them.

    A ``running`` run holds a lease (revision 0010): it renews `heartbeat_at` while it works, and a
    later run marks it ``interrupted`` once `heartbeat_at` + `lease_seconds` has passed (storage.leases).
    """

    __tablename__ = "audit_runs"
    __table_args__ = (Index("ix_audit_runs_drop_status", "drop_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("model_drops.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    eval_source: Mapped[str | None] = mapped_column(Text)
    eval_hash: Mapped[str | None] = mapped_column(String(64))
    n_eval_samples: Mapped[int | None]
    #: Rows in the eval file before NaN/inf rows were dropped and the sample capped.
    n_eval_rows_in_file: Mapped[int | None]
    n_eval_rows_dropped: Mapped[int | None]
    #: Seed of the subsample when the file held more than max_eval_samples usable rows.
    eval_sampling_seed: Mapped[int | None]
    #: How well the model fits its eval sample (audit/evaluation.py): "mse" or "cross_entropy",
    #: and "r2" or "accuracy"; NULL without targets, and for runs audited before revision 0006.
    eval_loss_name: Mapped[str | None] = mapped_column(String(32))
    eval_loss: Mapped[float | None] = mapped_column(Float)
    eval_metric_name: Mapped[str | None] = mapped_column(String(32))
    eval_metric: Mapped[float | None] = mapped_column(Float)
    #: Standard error of eval_loss (sd of the per-sample losses / sqrt(n)); revision 0009.
    eval_loss_se: Mapped[float | None] = mapped_column(Float)
    #: The previous drop's model on this run's eval sample (the frozen set), same loss and metric.
    frozen_eval_loss: Mapped[float | None] = mapped_column(Float)
    frozen_eval_loss_se: Mapped[float | None] = mapped_column(Float)
    frozen_eval_metric: Mapped[float | None] = mapped_column(Float)
    report_path: Mapped[str | None] = mapped_column(Text)
    #: The lease of a running audit (revision 0010): its last heartbeat and how long that holds.
    #: NULL for runs started before 0010.
    heartbeat_at: Mapped[dt.datetime | None]
    lease_seconds: Mapped[float | None] = mapped_column(Float)
    #: Where a drop staged from a remote source came from (revision 0007; NULL for local folders):
    #: its URI (``s3://...``, ``mlflow://<name>/<version>``), the staged copy's content key, the
    #: MLflow version, its run and the aliases it held, and each object's ETag (a JSON object).
    source_uri: Mapped[str | None] = mapped_column(Text)
    source_hash: Mapped[str | None] = mapped_column(String(64))
    source_etags: Mapped[str | None] = mapped_column(Text)
    mlflow_version: Mapped[int | None] = mapped_column(Integer)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_aliases: Mapped[str | None] = mapped_column(Text)

    drop: Mapped[ModelDrop] = relationship(back_populates="runs")


class MethodResult(Base):
    """What one method did in one run: ok (figures in `importances`), skipped or failed, and why."""

    __tablename__ = "method_results"
    __table_args__ = (UniqueConstraint("run_id", "method", name="uq_method_results_run_method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: Values carry a sign (e.g. mean gradient); ranks order them by magnitude.
    signed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Version of the method's definition (`Importance.method_version`; revision 0012).
    method_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ImportanceRow(Base):
    """One feature's importance by one method in one run; rank 1 = most important."""

    __tablename__ = "importances"
    __table_args__ = (
        UniqueConstraint("run_id", "method", "feature", name="uq_importances_run_method_feature"),
        # one feature over the weeks (importance_history WHERE feature = ...)
        Index("ix_importances_feature_method", "feature", "method"),
        # the top k of a drop and method (top_features, importance_history WHERE rank <= k)
        Index("ix_importances_run_method_rank", "run_id", "method", "rank"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    feature: Mapped[str] = mapped_column(String(512))
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    #: Version of the method's definition the value was computed with (revision 0012): values of
    #: two versions are never compared.
    method_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: Signed direction beside a magnitude value (saliency: the mean gradient), else NULL.
    direction: Mapped[float | None] = mapped_column(Float)


class ProfileRow(Base):
    """One cell of a method's time x feature profile in one run (step 0 = oldest input step)."""

    __tablename__ = "profiles"
    __table_args__ = (
        UniqueConstraint("run_id", "method", "feature", "step", name="uq_profiles_run_method_feature_step"),
        Index("ix_profiles_feature_method", "feature", "method"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    feature: Mapped[str] = mapped_column(String(512))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class ComparisonRow(Base):
    """One method's rank statistics between a run and the run of the previous drop."""

    __tablename__ = "comparisons"
    __table_args__ = (UniqueConstraint("run_id", "method", name="uq_comparisons_run_method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    previous_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    spearman: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int] = mapped_column(Integer)
    top_k_overlap: Mapped[float | None] = mapped_column(Float)
    kendall: Mapped[float | None] = mapped_column(Float)
    #: SageMaker Clarify's nDCG (relevance = previous drop's values, order = this drop's ranking).
    ndcg: Mapped[float | None] = mapped_column(Float)
    #: Mean earth mover's distance (steps) between the two drops' normalised time profiles.
    profile_distance: Mapped[float | None] = mapped_column(Float)
    #: The method's version in this run and in the previous one (revision 0012); when they differ
    #: the figures are not comparable and every statistic above is NULL.
    method_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    previous_method_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class FeatureDriftRow(Base):
    """One feature of one method: its change since the previous drop, noise band and verdict.

    `change` is the centred log ratio of audit/drift.py; `relative_change` = exp(change) - 1 and
    `band_percent` = exp(band_half_width) - 1 say the same as relative changes (0.18 = +-18%).
    """

    __tablename__ = "feature_drifts"
    __table_args__ = (
        UniqueConstraint("run_id", "method", "feature", name="uq_feature_drifts_run_method_feature"),
        Index("ix_feature_drifts_feature_method", "feature", "method"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    previous_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    feature: Mapped[str] = mapped_column(String(512))
    value: Mapped[float | None] = mapped_column(Float)
    previous_value: Mapped[float | None] = mapped_column(Float)
    delta: Mapped[float | None] = mapped_column(Float)
    delta_se: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)
    previous_rank: Mapped[int | None] = mapped_column(Integer)
    rank_change: Mapped[int | None] = mapped_column(Integer)
    change: Mapped[float | None] = mapped_column(Float)
    relative_change: Mapped[float | None] = mapped_column(Float)
    band_scale: Mapped[float | None] = mapped_column(Float)
    band_half_width: Mapped[float | None] = mapped_column(Float)
    band_percent: Mapped[float | None] = mapped_column(Float)
    band_sampling_scale: Mapped[float | None] = mapped_column(Float)
    band_source: Mapped[str | None] = mapped_column(String(32))
    band_observations: Mapped[int | None] = mapped_column(Integer)
    z: Mapped[float | None] = mapped_column(Float)
    profile_distance: Mapped[float | None] = mapped_column(Float)
    profile_band: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(16))
    #: The feature's own change (value / previous_value - 1, 0.45 = +45%), and the band said around
    #: it: the rule flags a plain change below `plain_band_low` or above `plain_band_high` (the
    #: method's median change this week folded in). NULL where not judged (revision 0008).
    plain_change: Mapped[float | None] = mapped_column(Float)
    plain_band_low: Mapped[float | None] = mapped_column(Float)
    plain_band_high: Mapped[float | None] = mapped_column(Float)
    #: The smallest rise and fall of the feature's own value this method would flag this week, as
    #: plain relative changes (0.45 = 45%); NULL where not judged (under min_share) or where no
    #: change of any size in that direction would be flagged.
    min_detectable_rise: Mapped[float | None] = mapped_column(Float)
    min_detectable_fall: Mapped[float | None] = mapped_column(Float)


class FeatureVerdictRow(Base):
    """One feature over the verdict methods of a run: how many flagged it, and the human reason."""

    __tablename__ = "feature_verdicts"
    __table_args__ = (UniqueConstraint("run_id", "feature", name="uq_feature_verdicts_run_feature"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(512))
    verdict: Mapped[str] = mapped_column(String(16))
    #: Comma-separated, strongest evidence first.
    methods_flagged: Mapped[str] = mapped_column(Text)
    n_flagged: Mapped[int] = mapped_column(Integer)
    n_methods: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(16))
    strength: Mapped[float] = mapped_column(Float)
    cause: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    #: The rise and fall of the feature's value that enough verdict methods flag together (the k-th
    #: smallest over them); NULL when not judged or not detectable at any size (revision 0008).
    min_detectable_rise: Mapped[float | None] = mapped_column(Float)
    min_detectable_fall: Mapped[float | None] = mapped_column(Float)
    #: Comma-separated verdict methods that judge the feature ('' when none does; NULL before 0008).
    judged_methods: Mapped[str | None] = mapped_column(Text)


class DropVerdictRow(Base):
    """The headline of a run against the previous drop's run: ok, warn or alert, and why."""

    __tablename__ = "drop_verdicts"
    __table_args__ = (UniqueConstraint("run_id", name="uq_drop_verdicts_run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    previous_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    #: Earlier week-to-week comparisons the noise bands were learned from.
    n_history: Mapped[int] = mapped_column(Integer)
    #: Reseeded copies of the model in the drop.
    n_copies: Mapped[int] = mapped_column(Integer)
    #: Comma-separated methods whose changes decide the verdict.
    verdict_methods: Mapped[str] = mapped_column(Text)


class MethodAgreementRow(Base):
    """Rank agreement (Spearman) between two methods on one run's importances."""

    __tablename__ = "method_agreement"
    __table_args__ = (
        UniqueConstraint("run_id", "method", "other_method", name="uq_method_agreement_run_methods"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    other_method: Mapped[str] = mapped_column(String(64))
    spearman: Mapped[float | None] = mapped_column(Float)


class ModelImportanceRow(Base):
    """One feature's importance by one method for one more model of a run: a reseeded copy
    (kind ``copy``, label = its file name) or the previous drop's model on this drop's eval sample
    (kind ``frozen``, label = the previous drop's week)."""

    __tablename__ = "model_importances"
    __table_args__ = (
        UniqueConstraint(
            "run_id",
            "kind",
            "label",
            "method",
            "feature",
            name="uq_model_importances_run_kind_label_method_feature",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(64))
    feature: Mapped[str] = mapped_column(String(512))
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    signed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: As in `ImportanceRow` (revision 0012).
    method_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    direction: Mapped[float | None] = mapped_column(Float)


class ModelProfileRow(Base):
    """One cell of a time x feature profile of one more model of a run (see `ModelImportanceRow`)."""

    __tablename__ = "model_profiles"
    __table_args__ = (
        UniqueConstraint(
            "run_id",
            "kind",
            "label",
            "method",
            "feature",
            "step",
            name="uq_model_profiles_run_kind_label_method_feature_step",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(64))
    feature: Mapped[str] = mapped_column(String(512))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class FeatureRow(Base):
    """One input feature of a drop's primary model: its name and position on the input's last axis.

    Replaced with the figures when the drop is re-audited."""

    __tablename__ = "features"
    __table_args__ = (
        UniqueConstraint("drop_id", "position", name="uq_features_drop_position"),
        UniqueConstraint("drop_id", "name", name="uq_features_drop_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("model_drops.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(512))


class ReportDeliveryRow(Base):
    """One delivery of a run's report: the file written (``written``), then e-mailed (``sent``) or not
    (``failed``, with the error). Kept when a re-audit supersedes the run: it is a delivery log."""

    __tablename__ = "report_deliveries"
    __table_args__ = (Index("ix_report_deliveries_run", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    #: Comma-separated recipients; NULL when the report was only written.
    emailed_to: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class NotificationRow(Base):
    """One attempt to send a model's verdict of a week to one alert target (an Apprise URL, a Prefect
    notification block, the digest's e-mail): ``sent``, or ``failed`` with the error.

    The target is stored as a SHA-256 of its text (`target_hash`), never the text: an Apprise URL
    carries its token. `target_kind` says what it was (``json``, ``slack``, ``block``, ``email``).
    At most one ``sent`` row per (model, week, verdict, target) (a partial unique index): a retry or a
    re-run asks it before sending. A fleet's digest e-mail is logged under the model name ``fleet``,
    which no model of a fleet may have.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        # "was this verdict already sent to this target?" before each send, and the uniqueness of sent
        Index(
            "uq_notifications_sent",
            "model_name",
            "week",
            "verdict",
            "target_hash",
            unique=True,
            sqlite_where=text("status = 'sent'"),
            postgresql_where=text("status = 'sent'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    week: Mapped[dt.date] = mapped_column(Date)
    #: ``ok``, ``warn``, ``alert``, ``failed`` (the model's audit failed), or ``digest``.
    verdict: Mapped[str] = mapped_column(String(16))
    target_hash: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(32))
    #: The run whose verdict it is (NULL when the model failed before a run was recorded).
    run_id: Mapped[int | None] = mapped_column(ForeignKey("audit_runs.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class FeatureSummaryRow(Base):
    """One feature's eval values in one run, summarised for input drift (audit/input_drift.py).

    `summary_values` holds `n_values` float64 numbers (little-endian), sorted: every value of the
    sample when `exact`, else quantiles at (i + 0.5) / n_values.
    """

    __tablename__ = "feature_summaries"
    __table_args__ = (UniqueConstraint("run_id", "feature", name="uq_feature_summaries_run_feature"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(512))
    position: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float)
    exact: Mapped[bool] = mapped_column(Boolean)
    n_values: Mapped[int] = mapped_column(Integer)
    summary_values: Mapped[bytes] = mapped_column(LargeBinary)


class InputDriftRow(Base):
    """One feature's input drift between a run's eval sample and the previous drop's run's."""

    __tablename__ = "input_drifts"
    __table_args__ = (
        UniqueConstraint("run_id", "feature", name="uq_input_drifts_run_feature"),
        # one feature over the weeks (input_drift WHERE feature = ...)
        Index("ix_input_drifts_feature", "feature"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    previous_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(512))
    psi: Mapped[float | None] = mapped_column(Float)
    ks_statistic: Mapped[float | None] = mapped_column(Float)
    ks_pvalue: Mapped[float | None] = mapped_column(Float)
    wasserstein: Mapped[float | None] = mapped_column(Float)
    psi_limit: Mapped[float | None] = mapped_column(Float)
    limit_source: Mapped[str] = mapped_column(String(16))
    n_history: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    exact: Mapped[bool] = mapped_column(Boolean)
    n: Mapped[int] = mapped_column(Integer)
    previous_n: Mapped[int] = mapped_column(Integer)


class PerformanceDriftRow(Base):
    """A run's eval loss against the previous drop's run's, with its band and verdict."""

    __tablename__ = "performance_drifts"
    __table_args__ = (UniqueConstraint("run_id", name="uq_performance_drifts_run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    previous_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    loss_name: Mapped[str] = mapped_column(String(32))
    loss: Mapped[float | None] = mapped_column(Float)
    previous_loss: Mapped[float | None] = mapped_column(Float)
    frozen_loss: Mapped[float | None] = mapped_column(Float)
    metric_name: Mapped[str] = mapped_column(String(32))
    metric: Mapped[float | None] = mapped_column(Float)
    previous_metric: Mapped[float | None] = mapped_column(Float)
    frozen_metric: Mapped[float | None] = mapped_column(Float)
    #: log(loss / previous_loss), log(loss / frozen_loss), log(frozen_loss / previous_loss).
    change: Mapped[float | None] = mapped_column(Float)
    model_change: Mapped[float | None] = mapped_column(Float)
    data_change: Mapped[float | None] = mapped_column(Float)
    band_scale: Mapped[float | None] = mapped_column(Float)
    band_half_width: Mapped[float | None] = mapped_column(Float)
    band_percent: Mapped[float | None] = mapped_column(Float)
    band_source: Mapped[str] = mapped_column(String(32))
    band_observations: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
