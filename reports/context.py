"""Gather everything the weekly report shows into plain data; the template only renders it.

Values stay raw numbers here (floats, ints, dates); the registered Jinja filters of
`reports.render` format them. Feature names stay raw strings; the template escapes them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from audit.types import (
    AuditSummary,
    DriftAssessment,
    FeatureAssessment,
    FeatureChange,
    FeatureDrift,
    FeatureVerdict,
    Importance,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
    ReportInput,
)
from reports.charts import importance_bars

#: Features named in a chart's alt text (read out by screen readers, shown when images are blocked).
ALT_TOP_FEATURES = 5


@dataclass(frozen=True)
class ComparisonLine:
    """One headline line: how a method's ranking moved since the previous drop."""

    method: str
    spearman: float | None
    top_k: int
    #: How many of this week's top k features were also in the previous top k.
    top_k_shared: int | None
    kendall: float | None = None
    ndcg: float | None = None
    #: Mean distance (steps) between the two drops' normalised time profiles, if any.
    profile_distance: float | None = None


@dataclass(frozen=True)
class VerdictRow:
    """One feature of the "What changed" table: a change beyond noise, or weaker evidence."""

    feature: str
    #: "changed", "new", "removed", or "weak" (flagged by one method only).
    verdict: str
    agreement: int
    n_methods: int
    #: The strongest flagging method, its change relative to the method's scale, and its band.
    method: str | None
    relative_change: float | None
    #: The noise band as text: "+-18%", or "-72% to +255%" when lopsided.
    band: str | None
    #: Lag shift (steps) and its band, when the time profile moved.
    profile_distance: float | None
    profile_band: float | None
    #: "model", "data", "both", "unclear" or None (frozen-set comparison).
    cause: str | None
    reason: str


@dataclass(frozen=True)
class AgreementRow:
    method: str
    other_method: str
    spearman: float | None


@dataclass(frozen=True)
class MoverRow:
    """One row of a method's biggest-movers table."""

    feature: str
    previous_value: float | None
    value: float | None
    delta: float | None
    relative_change: float | None
    previous_rank: int | None
    rank: int | None
    #: Places gained (positive) or lost since the previous drop.
    rank_change: int | None
    #: "up", "down", "same", or "" when the feature is missing from one of the drops.
    direction: str
    #: The noise band of this feature's change ("+-18%"), None without a drift call.
    band: str | None = None
    #: The change is beyond the band for this method.
    beyond_noise: bool = False


@dataclass(frozen=True)
class FeatureRow:
    """One row of the table of features not drawn in the chart."""

    feature: str
    rank: int
    value: float
    previous_rank: int | None


@dataclass(frozen=True)
class MethodSection:
    """A method with a result this week: its chart and tables."""

    method: str
    chart_uri: str
    chart_alt: str
    n_features: int
    n_charted: int
    #: Features beyond the chart's top n (n_features - n_charted), listed in `rest`.
    n_more: int
    #: The previous drop has a result for this method (the chart shows both weeks).
    has_previous: bool
    #: A comparison with the previous drop exists (the movers table is shown).
    compared: bool
    movers: tuple[MoverRow, ...]
    rest: tuple[FeatureRow, ...]
    #: Features new this week, and features the previous drop had but this one does not.
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class MethodNotice:
    """A method that was skipped or failed, and why."""

    method: str
    status: str
    reason: str


@dataclass(frozen=True)
class Timing:
    method: str
    status: str
    seconds: float


@dataclass(frozen=True)
class ReportContext:
    """Everything `report.html` renders, top to bottom."""

    model_name: str
    week: dt.date
    previous_week: dt.date | None
    run_id: int
    top_n: int
    #: "ok", "warn", "alert", or None for a first drop (nothing to compare).
    verdict: str | None
    verdict_reason: str | None
    verdict_rows: tuple[VerdictRow, ...]
    agreement: tuple[AgreementRow, ...]
    comparisons: tuple[ComparisonLine, ...]
    sections: tuple[MethodSection, ...]
    notices: tuple[MethodNotice, ...]
    model_path: str
    model_hash: str
    n_parameters: int
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    task: str
    n_eval_samples: int | None
    eval_source: str | None
    #: Why the sample has fewer rows than its file, e.g. "3 rows with NaN/inf dropped", or None.
    eval_note: str | None
    timings: tuple[Timing, ...]


def build_context(report_input: ReportInput, *, top_n: int = 30, movers: int = 10) -> ReportContext:
    """Gather the report of `report_input.current` against `report_input.previous`.

    `top_n` features of each method are drawn (the rest are listed in a table); the `movers`
    features with the largest relative change are listed under each chart.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1 (features drawn per chart), got {top_n}")
    if movers < 0:
        raise ValueError(f"movers must be 0 or more (rows of the movers table), got {movers}")
    current, previous = report_input.current, report_input.previous
    comparisons = {comparison.method: comparison for comparison in report_input.comparisons}
    assessment = report_input.assessment
    model = current.model
    return ReportContext(
        model_name=current.model_name,
        week=current.week,
        previous_week=None if previous is None else previous.week,
        run_id=current.run_id,
        top_n=top_n,
        verdict=None if assessment is None else assessment.verdict.value,
        verdict_reason=None if assessment is None else assessment.reason,
        verdict_rows=() if assessment is None else _verdict_rows(assessment),
        agreement=()
        if assessment is None
        else tuple(AgreementRow(a.method, a.other_method, a.spearman) for a in assessment.agreement),
        comparisons=tuple(_comparison_line(c) for c in report_input.comparisons),
        sections=tuple(
            _section(
                importance,
                previous,
                comparisons.get(importance.method),
                assessment,
                current_week=current.week,
                top_n=top_n,
                movers=movers,
            )
            for importance in _results(current)
        ),
        notices=tuple(
            MethodNotice(
                method=outcome.method,
                status=str(outcome.status),
                reason=outcome.reason or "no reason was recorded",
            )
            for outcome in current.outcomes
            if not _has_result(outcome)
        ),
        model_path=str(model.path),
        model_hash=model.content_hash,
        n_parameters=model.n_parameters,
        input_shape=model.input_shape,
        output_shape=model.output_shape,
        task=str(model.task),
        n_eval_samples=current.n_eval_samples,
        eval_source=current.eval_source,
        eval_note=_eval_note(current),
        timings=tuple(
            Timing(method=o.method, status=str(o.status), seconds=o.seconds) for o in current.outcomes
        ),
    )


def _eval_note(summary: AuditSummary) -> str | None:
    """Why fewer rows were audited than the eval file holds (dropped NaN/inf rows, a capped sample)."""
    notes = []
    if summary.n_eval_rows_dropped:
        notes.append(f"{summary.n_eval_rows_dropped} rows with NaN/inf dropped")
    if summary.eval_sampling_seed is not None:
        seed = summary.eval_sampling_seed
        notes.append(f"sampled from {summary.n_eval_rows_in_file} rows (max_eval_samples, seed {seed})")
    return "; ".join(notes) or None


def _has_result(outcome: MethodOutcome) -> bool:
    return outcome.status == MethodStatus.OK and outcome.importance is not None


def _results(summary: AuditSummary) -> list[Importance]:
    """The per-feature importances of the methods that succeeded, in the order they ran.

    Profile-only results (Grad-CAM) have no per-feature values to chart here.
    """
    return [
        o.importance
        for o in summary.outcomes
        if _has_result(o) and o.importance is not None and o.importance.has_values
    ]


def _comparison_line(comparison: MethodComparison) -> ComparisonLine:
    """Headline figures; the stored top-k overlap is a share of k, shown as a count."""
    overlap = comparison.top_k_overlap
    return ComparisonLine(
        method=comparison.method,
        spearman=comparison.spearman,
        top_k=comparison.top_k,
        top_k_shared=None if overlap is None else round(overlap * comparison.top_k),
        kendall=comparison.kendall,
        ndcg=comparison.ndcg,
        profile_distance=comparison.profile_distance,
    )


def _verdict_rows(assessment: DriftAssessment) -> tuple[VerdictRow, ...]:
    """Features that changed, were added or removed, then those flagged by one method only."""
    rows = []
    for feature in assessment.features:
        weak = feature.verdict is FeatureVerdict.STABLE and bool(feature.methods_flagged)
        if feature.verdict is FeatureVerdict.STABLE and not weak:
            continue
        strongest = (
            assessment.drift(feature.methods_flagged[0], feature.feature) if feature.methods_flagged else None
        )
        rows.append(_verdict_row(feature, strongest, "weak" if weak else feature.verdict.value))
    return tuple(rows)


def _verdict_row(feature: FeatureAssessment, drift: FeatureDrift | None, verdict: str) -> VerdictRow:
    value_moved = drift is not None and drift.value_changed
    return VerdictRow(
        feature=feature.feature,
        verdict=verdict,
        agreement=feature.agreement,
        n_methods=feature.n_methods,
        method=None if drift is None else drift.method,
        relative_change=drift.relative if drift is not None and value_moved else None,
        band=drift.band.describe() if drift is not None and value_moved and drift.band else None,
        profile_distance=None if drift is None or value_moved else drift.profile_distance,
        profile_band=None if drift is None or value_moved else drift.profile_band,
        cause=None if feature.cause is None else feature.cause.value,
        reason=feature.reason,
    )


def _section(
    importance: Importance,
    previous: AuditSummary | None,
    comparison: MethodComparison | None,
    assessment: DriftAssessment | None,
    *,
    current_week: dt.date,
    top_n: int,
    movers: int,
) -> MethodSection:
    previous_importance = None if previous is None else previous.importance(importance.method)
    previous_week = None if previous is None or previous_importance is None else previous.week
    previous_label = "previous" if previous_week is None else f"previous ({previous_week.isoformat()})"
    chart_uri = importance_bars(
        importance,
        previous_importance,
        top_n=top_n,
        current_label=f"this week ({current_week.isoformat()})",
        previous_label=previous_label,
    )
    ranks = importance.ranks
    order = sorted(range(len(importance.feature_names)), key=lambda i: int(ranks[i]))
    previous_ranks = _rank_by_name(previous_importance)
    n_features = len(order)
    n_charted = min(top_n, n_features)
    charted_names = [importance.feature_names[i] for i in order[:n_charted]]
    current_names = set(importance.feature_names)
    return MethodSection(
        method=importance.method,
        chart_uri=chart_uri,
        chart_alt=_chart_alt(
            importance.method,
            charted_names,
            n_features,
            current_week=current_week,
            previous_week=previous_week,
        ),
        n_features=n_features,
        n_charted=n_charted,
        n_more=n_features - n_charted,
        has_previous=previous_importance is not None,
        compared=comparison is not None,
        movers=()
        if comparison is None
        else tuple(
            _mover_row(c, None if assessment is None else assessment.drift(importance.method, c.feature))
            for c in comparison.biggest_movers[:movers]
        ),
        rest=tuple(
            FeatureRow(
                feature=importance.feature_names[i],
                rank=int(ranks[i]),
                value=float(importance.values[i]),
                previous_rank=previous_ranks.get(importance.feature_names[i]),
            )
            for i in order[n_charted:]
        ),
        added=()
        if previous_importance is None
        else tuple(name for name in importance.feature_names if name not in previous_ranks),
        removed=tuple(name for name in previous_ranks if name not in current_names),
    )


def _rank_by_name(importance: Importance | None) -> dict[str, int]:
    if importance is None:
        return {}
    return {name: int(rank) for name, rank in zip(importance.feature_names, importance.ranks, strict=True)}


def _mover_row(change: FeatureChange, drift: FeatureDrift | None) -> MoverRow:
    rank_change = change.rank_change
    if rank_change is None:
        direction = ""
    elif rank_change > 0:
        direction = "up"
    elif rank_change < 0:
        direction = "down"
    else:
        direction = "same"
    return MoverRow(
        feature=change.feature,
        previous_value=change.previous_value,
        value=change.value,
        delta=change.delta,
        # with a drift call, the change its noise band applies to: relative to the method's scale
        relative_change=drift.relative
        if drift is not None and drift.change is not None
        else change.relative_change,
        previous_rank=change.previous_rank,
        rank=change.rank,
        rank_change=rank_change,
        direction=direction,
        band=None if drift is None or drift.band is None else drift.band.describe(),
        beyond_noise=drift is not None and drift.value_changed,
    )


def _chart_alt(
    method: str,
    charted_names: list[str],
    n_features: int,
    *,
    current_week: dt.date,
    previous_week: dt.date | None,
) -> str:
    """Plain-text description of a chart (the template escapes it into the alt attribute)."""
    shown = (
        f"all {n_features} features"
        if len(charted_names) == n_features
        else f"the top {len(charted_names)} of {n_features} features"
    )
    weeks = f"week of {current_week.isoformat()}"
    if previous_week is not None:
        weeks += f" against {previous_week.isoformat()}"
    top = ", ".join(charted_names[:ALT_TOP_FEATURES])
    return f"Bar chart of {method} importance, {shown}, {weeks}. Most important: {top}."
