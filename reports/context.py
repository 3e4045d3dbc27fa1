"""Gather everything the weekly report shows into plain data; the template only renders it.

Values stay raw numbers here (floats, ints, dates); the registered Jinja filters of
`reports.render` format them. Feature names stay raw strings; the template escapes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.types import (
    AuditSummary,
    DriftAssessment,
    FeatureAssessment,
    FeatureChange,
    FeatureDrift,
    FeatureVerdict,
    FloatArray,
    Importance,
    ImportanceHistory,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
    ModelEvaluation,
    ReportInput,
)
from reports.charts import (
    history_sparklines,
    importance_bars,
    lag_profiles,
    png_size,
    profile_heatmaps,
    rank_slopes,
)

#: Features named in a chart's alt text (read out by screen readers, shown when images are blocked).
ALT_TOP_FEATURES = 5
#: Slope chart: this week's and last week's top features (their union is drawn).
SLOPE_FEATURES = 12
#: Heat maps: rows (this week's most important features); lag profiles: panels.
HEATMAP_FEATURES = 20
#: ...plus up to this many of last week's top features that fell out of this week's.
HEATMAP_EXTRA = 5
LAG_FEATURES = 6
#: History small multiples: panels (features), and the weeks shown by default.
HISTORY_FEATURES = 8
HISTORY_WEEKS = 12
#: Frozen-set table: rows per method.
FROZEN_ROWS = 8
#: Content-ID of the n-th chart (1-based) of run `run_id`, with the first 12 hex digits of the PNG's
#: SHA-256: unique across weeks too (RFC 2392; mail clients cache inline parts by Content-ID), the same
#: for the same report, and safe in a URL and a MIME header.
CID_TEMPLATE = "chart-{n}.run{run_id}.{digest}@drift-audit"
#: How Grad-CAM's single profile column "*" (all features at once) is labelled in charts.
ALL_FEATURES_LABEL = "all features"
#: Method whose parameters carry the completeness check shown in the model facts.
IG_METHOD = "integrated_gradients"


@dataclass(frozen=True)
class Chart:
    """One PNG chart of the report: its bytes, its Content-ID in the email, and its alt text.

    `width` and `height` are the PNG's size in pixels (the figures are drawn at the column's
    width, 700 px), written into the img tag so a mail client reserves the space.
    """

    cid: str
    png: bytes
    alt: str
    width: int
    height: int


class _ChartNumbers:
    """Numbers charts in the order they are made, so Content-IDs are deterministic."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.charts: list[Chart] = []

    def add(self, png: bytes, alt: str) -> Chart:
        width, height = png_size(png)
        cid = chart_cid(len(self.charts) + 1, self.run_id, png)
        chart = Chart(cid, png, alt, width, height)
        self.charts.append(chart)
        return chart


def chart_cid(n: int, run_id: int, png: bytes) -> str:
    """The Content-ID of the `n`-th chart (1-based) of run `run_id`, whose bytes are `png`."""
    return CID_TEMPLATE.format(n=n, run_id=run_id, digest=hashlib.sha256(png).hexdigest()[:12])


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
class RankChange:
    """One line of a slope chart: a feature's rank last week and this week (None: not ranked)."""

    feature: str
    previous_rank: int | None
    rank: int | None
    #: This method's drift call flagged the feature (its importance or its time profile moved).
    beyond_noise: bool


@dataclass(frozen=True)
class MethodSection:
    """A method with a result this week: its charts and tables."""

    method: str
    chart: Chart
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
    #: Rank changes of the top features (previous rank -> this rank), None without a previous result.
    slope: Chart | None = None
    n_slope_beyond: int = 0


@dataclass(frozen=True)
class ProfileSection:
    """A sequence method's time profiles: heat maps (step x feature) and lag profile lines."""

    method: str
    n_steps: int
    #: Features in the heat map rows (this week's most important), of `n_features` with a profile.
    n_shown: int
    n_features: int
    #: None when the profile has one column (Grad-CAM's "*"): the lag chart shows it.
    heatmap: Chart | None
    lags: Chart
    has_previous: bool
    #: Why last week's profile is not drawn although the method ran then (e.g. other window length).
    previous_note: str | None


@dataclass(frozen=True)
class HistorySection:
    """One method's importance of its top features over the last weeks (small multiples)."""

    method: str
    chart: Chart
    n_weeks: int
    first_week: dt.date
    last_week: dt.date
    n_features: int
    #: Weeks in the window without a figure for any shown feature.
    n_gaps: int


@dataclass(frozen=True)
class FrozenRow:
    """One feature of the frozen-set table: three scorings and the cause of its change."""

    feature: str
    previous_model_previous_data: float | None
    previous_model_this_data: float | None
    this_model_this_data: float | None
    #: "model", "data", "both", "unclear" for a changed feature, else None.
    cause: str | None
    changed: bool


@dataclass(frozen=True)
class FrozenSection:
    method: str
    rows: tuple[FrozenRow, ...]
    #: Features of the method (rows show the changed ones first, then the most important).
    n_features: int


@dataclass(frozen=True)
class IntegratedGradientsCheck:
    """The completeness check of integrated gradients: attributions should sum to F(x) - F(baseline)."""

    median_relative_delta: float | None
    max_relative_delta: float | None
    steps: int | None
    steps_requested: int | None


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
    #: Weeks without a drop between the previous drop and this one.
    missing_weeks: tuple[dt.date, ...] = ()
    profiles: tuple[ProfileSection, ...] = ()
    history: tuple[HistorySection, ...] = ()
    frozen: tuple[FrozenSection, ...] = ()
    #: The week of the previous model scored on this week's sample (frozen set), if it was.
    frozen_label: str | None = None
    evaluation: ModelEvaluation | None = None
    ig_check: IntegratedGradientsCheck | None = None
    #: File names of the drop's reseeded copies of the model.
    copies: tuple[str, ...] = ()
    #: Every chart, in the order the document shows them (the email's image parts).
    charts: tuple[Chart, ...] = ()


def build_context(
    report_input: ReportInput,
    *,
    top_n: int = 30,
    movers: int = 10,
    history_weeks: int = HISTORY_WEEKS,
) -> ReportContext:
    """Gather the report of `report_input.current` against `report_input.previous`.

    `top_n` features of each method are drawn (the rest are listed in a table); the `movers`
    features with the largest relative change are listed under each chart; the history shows the
    last `history_weeks` weeks. Charts are drawn here, once, as PNG bytes.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1 (features drawn per chart), got {top_n}")
    if movers < 0:
        raise ValueError(f"movers must be 0 or more (rows of the movers table), got {movers}")
    if history_weeks < 1:
        raise ValueError(f"history_weeks must be at least 1 (weeks of history drawn), got {history_weeks}")
    current, previous = report_input.current, report_input.previous
    comparisons = {comparison.method: comparison for comparison in report_input.comparisons}
    assessment = report_input.assessment
    model = current.model
    numbers = _ChartNumbers(current.run_id)
    sections = tuple(
        _section(
            importance,
            previous,
            comparisons.get(importance.method),
            assessment,
            numbers,
            current_week=current.week,
            top_n=top_n,
            movers=movers,
        )
        for importance in _results(current)
    )
    profiles = _profile_sections(current, previous, numbers)
    history = tuple(
        section
        for entry in report_input.history
        if (section := _history_section(entry, numbers, history_weeks=history_weeks)) is not None
    )
    return ReportContext(
        model_name=current.model_name,
        week=current.week,
        previous_week=None if previous is None else previous.week,
        run_id=current.run_id,
        top_n=top_n,
        verdict=None if assessment is None else assessment.verdict.value,
        verdict_reason=None if assessment is None else assessment.reason,
        verdict_rows=() if assessment is None else _verdict_rows(assessment),
        agreement=() if assessment is None else _agreement_rows(assessment),
        comparisons=tuple(_comparison_line(c) for c in report_input.comparisons),
        sections=sections,
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
        missing_weeks=tuple(sorted(report_input.missing_weeks)),
        profiles=profiles,
        history=history,
        frozen=_frozen_sections(current, previous, assessment),
        frozen_label=None if current.frozen is None else current.frozen.label,
        evaluation=current.evaluation,
        ig_check=_ig_check(current.importance(IG_METHOD)),
        copies=tuple(copy.label for copy in current.copies),
        charts=tuple(numbers.charts),
    )


def rank_changes(
    current: Importance,
    previous: Importance,
    *,
    top: int,
    beyond_noise: frozenset[str] = frozenset(),
) -> tuple[RankChange, ...]:
    """The features in this week's or last week's top `top`, with both ranks, this week's order first.

    A feature missing from one week has None there. `beyond_noise` names the features the drift
    call flagged; they are marked (the slope chart highlights them).
    """
    if top < 1:
        raise ValueError(f"top must be at least 1 (features per slope chart), got {top}")
    now = _rank_by_name(current)
    before = _rank_by_name(previous)
    chosen = [name for name, rank in now.items() if rank <= top]
    chosen += [name for name, rank in before.items() if rank <= top and name not in chosen]

    def order(name: str) -> tuple[int, int]:
        rank = now.get(name)
        return (0, rank) if rank is not None else (1, before[name])

    return tuple(
        RankChange(name, before.get(name), now.get(name), name in beyond_noise)
        for name in sorted(chosen, key=order)
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


def _agreement_rows(assessment: DriftAssessment) -> tuple[AgreementRow, ...]:
    """Pairs of methods, least agreeing first (a long table is cut in the email: keep the news)."""
    rows = [AgreementRow(a.method, a.other_method, a.spearman) for a in assessment.agreement]
    return tuple(sorted(rows, key=lambda row: math.inf if row.spearman is None else row.spearman))


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


def _flagged(assessment: DriftAssessment | None, method: str) -> frozenset[str]:
    """Features this method's drift call marks "changed" (beyond noise, in value or time profile)."""
    if assessment is None:
        return frozenset()
    return frozenset(
        d.feature for d in assessment.drifts if d.method == method and d.verdict is FeatureVerdict.CHANGED
    )


def _section(
    importance: Importance,
    previous: AuditSummary | None,
    comparison: MethodComparison | None,
    assessment: DriftAssessment | None,
    numbers: _ChartNumbers,
    *,
    current_week: dt.date,
    top_n: int,
    movers: int,
) -> MethodSection:
    previous_importance = None if previous is None else previous.importance(importance.method)
    if previous_importance is not None and not previous_importance.has_values:
        previous_importance = None
    previous_week = None if previous is None or previous_importance is None else previous.week
    ranks = importance.ranks
    order = sorted(range(len(importance.feature_names)), key=lambda i: int(ranks[i]))
    previous_ranks = _rank_by_name(previous_importance)
    n_features = len(order)
    n_charted = min(top_n, n_features)
    charted_names = [importance.feature_names[i] for i in order[:n_charted]]
    current_names = set(importance.feature_names)
    chart = numbers.add(
        importance_bars(
            importance,
            previous_importance,
            top_n=top_n,
            current_label=_week_label("this week", current_week),
            previous_label=_week_label("previous", previous_week),
        ),
        _chart_alt(
            importance.method,
            charted_names,
            n_features,
            current_week=current_week,
            previous_week=previous_week,
        ),
    )
    slope, n_beyond = None, 0
    if previous_importance is not None and previous_week is not None:
        slope, n_beyond = _slope_chart(importance, previous_importance, assessment, numbers, previous_week)
    return MethodSection(
        method=importance.method,
        chart=chart,
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
        slope=slope,
        n_slope_beyond=n_beyond,
    )


def _slope_chart(
    importance: Importance,
    previous: Importance,
    assessment: DriftAssessment | None,
    numbers: _ChartNumbers,
    previous_week: dt.date,
) -> tuple[Chart, int]:
    changes = rank_changes(
        importance, previous, top=SLOPE_FEATURES, beyond_noise=_flagged(assessment, importance.method)
    )
    png = rank_slopes(
        [c.feature for c in changes],
        [c.previous_rank for c in changes],
        [c.rank for c in changes],
        [c.beyond_noise for c in changes],
        previous_label=_week_label("previous", previous_week),
        current_label="this week",
        max_rank=2 * SLOPE_FEATURES,
    )
    moved = [c.feature for c in changes if c.beyond_noise]
    alt = (
        f"Slope chart of {importance.method} ranks, previous week to this week, for the top "
        f"{SLOPE_FEATURES} features of either week. "
        + (
            f"Beyond noise: {', '.join(moved[:ALT_TOP_FEATURES])}."
            if moved
            else "No feature moved beyond noise."
        )
    )
    return numbers.add(png, alt), len(moved)


def _profile_sections(
    current: AuditSummary, previous: AuditSummary | None, numbers: _ChartNumbers
) -> tuple[ProfileSection, ...]:
    """Every successful method with a time profile (sequence models), in the order they ran."""
    sections = []
    for outcome in current.outcomes:
        importance = outcome.importance
        if not _has_result(outcome) or importance is None or importance.profile is None:
            continue
        before = None if previous is None else previous.importance(importance.method)
        previous_profile, note = None, None
        if before is not None and before.profile is not None:
            if before.profile.shape[0] == importance.profile.shape[0]:
                previous_profile = before
            else:
                note = (
                    f"last week's profile has {before.profile.shape[0]} steps and this week's "
                    f"{importance.profile.shape[0]}: only this week is drawn"
                )
        sections.append(_profile_section(importance, previous_profile, numbers, previous_note=note))

    return tuple(sections)


def _profile_section(
    importance: Importance, previous: Importance | None, numbers: _ChartNumbers, *, previous_note: str | None
) -> ProfileSection:
    if importance.profile is None:
        raise ValueError(f"{importance.method}: no time profile to draw")
    labels = _profile_order(importance)
    n_extra = 0
    if previous is not None:
        # last week's top features too: a feature that collapsed this week is the one to see
        top = labels[:HEATMAP_FEATURES]
        extra = [
            name for name in _profile_order(previous)[:HEATMAP_FEATURES] if name in labels and name not in top
        ][:HEATMAP_EXTRA]
        n_extra = len(extra)
        labels = top + extra + [name for name in labels if name not in top and name not in extra]
    n_steps = int(importance.profile.shape[0])
    method = importance.method
    now_label, before_label = "this week", "previous week"
    heatmap = None
    if len(importance.profile_labels) > 1:
        shown = labels[: HEATMAP_FEATURES + n_extra]
        heatmap = numbers.add(
            profile_heatmaps(
                shown,
                _profile_columns(importance, shown),
                None if previous is None else _profile_columns(previous, shown),
                current_label=now_label,
                previous_label=before_label,
            ),
            f"Heat maps of {method} attribution by step and feature ({len(shown)} most important features: "
            f"{', '.join(shown[:ALT_TOP_FEATURES])})"
            + (
                ", this week, previous week and their difference." if previous is not None else ", this week."
            ),
        )
    lagged = labels[:LAG_FEATURES]
    # Grad-CAM's map covers every feature at once: its one column is named for that
    drawn = lagged if importance.profile_features is None else [ALL_FEATURES_LABEL] * len(lagged)
    lags = numbers.add(
        lag_profiles(
            drawn,
            _profile_columns(importance, lagged),
            None if previous is None else _profile_columns(previous, lagged),
            current_label=now_label,
            previous_label=before_label,
        ),
        f"Line charts of {method} attribution at each of {n_steps} steps for "
        f"{', '.join(drawn)}" + (", this week against the previous week." if previous is not None else "."),
    )
    return ProfileSection(
        method=method,
        n_steps=n_steps,
        n_shown=min(HEATMAP_FEATURES + n_extra, len(labels)),
        n_features=len(labels),
        heatmap=heatmap,
        lags=lags,
        has_previous=previous is not None,
        previous_note=previous_note,
    )


def _profile_order(importance: Importance) -> list[str]:
    """Profile columns, most important first: by the method's values, else by the profile's mass."""
    labels = list(importance.profile_labels)
    if importance.profile_features is None and importance.has_values:
        ranks = importance.ranks
        return [labels[i] for i in np.argsort(ranks, kind="stable")]
    if importance.profile is None:
        return labels
    mass = np.nansum(np.abs(importance.profile), axis=0)
    return [labels[i] for i in np.argsort(-mass, kind="stable")]


def _profile_columns(importance: Importance, labels: Sequence[str]) -> FloatArray:
    """(n_steps, len(labels)) columns of the profile in the order of `labels`; NaN where missing."""
    if importance.profile is None:
        raise ValueError(f"{importance.method}: no time profile")
    index = {label: j for j, label in enumerate(importance.profile_labels)}
    columns = np.full((importance.profile.shape[0], len(labels)), np.nan)
    for j, label in enumerate(labels):
        if label in index:
            columns[:, j] = importance.profile[:, index[label]]
    return columns


def _history_section(
    history: ImportanceHistory, numbers: _ChartNumbers, *, history_weeks: int
) -> HistorySection | None:
    """The last `history_weeks` weeks of the features with the largest latest figure (in magnitude)."""
    weeks = history.weeks[-history_weeks:]
    values = history.values[-history_weeks:, :]
    if not weeks or not history.feature_names:
        return None
    latest = np.full(values.shape[1], -np.inf)
    for j in range(values.shape[1]):
        finite = values[np.isfinite(values[:, j]), j]
        if finite.size:
            latest[j] = abs(finite[-1])  # signed methods (saliency) rank by magnitude
    keep = [int(j) for j in np.argsort(-latest, kind="stable")[:HISTORY_FEATURES] if np.isfinite(latest[j])]
    if not keep:
        return None
    names = [history.feature_names[j] for j in keep]
    shown = values[:, keep]
    chart = numbers.add(
        history_sparklines(names, weeks, shown, method=history.method),
        f"Small line charts of {history.method} importance over {len(weeks)} weeks "
        f"({weeks[0].isoformat()} to {weeks[-1].isoformat()}) for {', '.join(names[:ALT_TOP_FEATURES])}"
        + (f" and {len(names) - ALT_TOP_FEATURES} more." if len(names) > ALT_TOP_FEATURES else "."),
    )
    return HistorySection(
        method=history.method,
        chart=chart,
        n_weeks=len(weeks),
        first_week=weeks[0],
        last_week=weeks[-1],
        n_features=len(names),
        n_gaps=int(np.sum(~np.isfinite(shown).any(axis=1))),
    )


def _frozen_sections(
    current: AuditSummary, previous: AuditSummary | None, assessment: DriftAssessment | None
) -> tuple[FrozenSection, ...]:
    """The previous model on the previous data, on this week's data, and this model on this data.

    One table per verdict method (every method with a frozen figure when there is no assessment);
    changed features first, then this week's most important, `FROZEN_ROWS` rows at most.
    """
    if current.frozen is None or previous is None:
        return ()
    methods = (
        list(assessment.verdict_methods)
        if assessment is not None
        else [importance.method for importance in current.frozen.importances]
    )
    sections = []
    for method in methods:
        now, before, frozen = (
            current.importance(method),
            previous.importance(method),
            current.frozen.importance(method),
        )
        if now is None or before is None or frozen is None or not now.has_values:
            continue
        causes = {}
        if assessment is not None:
            causes = {
                d.feature: d
                for d in assessment.drifts
                if d.method == method and d.verdict is FeatureVerdict.CHANGED
            }
        by_rank = [now.feature_names[i] for i in np.argsort(now.ranks, kind="stable")]
        chosen = [name for name in by_rank if name in causes]
        chosen += [name for name in by_rank if name not in causes]
        values_before, values_frozen, values_now = _values(before), _values(frozen), _values(now)
        rows = tuple(
            FrozenRow(
                feature=name,
                previous_model_previous_data=values_before.get(name),
                previous_model_this_data=values_frozen.get(name),
                this_model_this_data=values_now.get(name),
                cause=None if name not in causes or causes[name].cause is None else str(causes[name].cause),
                changed=name in causes,
            )
            for name in chosen[:FROZEN_ROWS]
        )
        sections.append(FrozenSection(method=method, rows=rows, n_features=len(by_rank)))
    return tuple(sections)


def _values(importance: Importance) -> dict[str, float]:
    return {name: float(v) for name, v in zip(importance.feature_names, importance.values, strict=True)}


def _ig_check(importance: Importance | None) -> IntegratedGradientsCheck | None:
    """The completeness figures integrated gradients stores in its parameters, if it ran."""
    if importance is None:
        return None
    parameters = importance.parameters

    def number(key: str) -> float | None:
        value = parameters.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def whole(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    check = IntegratedGradientsCheck(
        median_relative_delta=number("completeness_median_rel_delta"),
        max_relative_delta=number("completeness_max_rel_delta"),
        steps=whole("steps"),
        steps_requested=whole("steps_requested"),
    )
    return None if check.median_relative_delta is None and check.steps is None else check


def _rank_by_name(importance: Importance | None) -> dict[str, int]:
    if importance is None:
        return {}
    return {name: int(rank) for name, rank in zip(importance.feature_names, importance.ranks, strict=True)}


def _week_label(word: str, week: dt.date | None) -> str:
    return word if week is None else f"{word} ({week.isoformat()})"


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
    return f"Bar chart of {method} importance with error bars, {shown}, {weeks}. Most important: {top}."
