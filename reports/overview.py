"""The report's overview: one row per feature across all methods, and cards of the most-changed ones.

A reviewer should learn in one table which features moved, in how many methods, and whether their
inputs moved too, instead of scrolling through one chart per method. Each row holds the feature's
consensus rank this week and last (the median rank over the verdict methods), one compact cell per
method (its change in units of its noise band, with the sign: past +-1 is beyond noise), the
feature's input drift (PSI against last week's eval sample) and its verdict. Changed features come
first, then those added or removed, flagged by one method short of agreement, or whose inputs
shifted; then the rest by consensus rank.

`method_cell` is the one place that turns a method's drift into a cell: it uses the drift call's
change (relative to the method's median change) and its band today, and is where the plain change
and its band of issue 16 swap in.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from audit.types import (
    AuditSummary,
    DriftAssessment,
    FeatureAssessment,
    FeatureDrift,
    FeatureSummary,
    FeatureVerdict,
    FloatArray,
    InputDrift,
    InputDriftAssessment,
)
from reports.context_types import FeatureCard, MethodCell, OverviewRow
from reports.section_charts import ChartNumbers, card_chart

#: Rows of the overview shown before the fold (the rest in <details>, or cut in the e-mail).
OVERVIEW_ROWS = 20
#: Cards (charts) of the most-changed features.
CARDS = 3
#: Short names of the methods in the overview's cells.
METHOD_LABELS = {
    "permutation": "perm",
    "perturbation": "pert",
    "integrated_gradients": "IG",
    "saliency": "sal",
    "gradient_x_input": "GxI",
    "sensitivity_sweep": "sweep",
    "weight_sum": "W",
    "garson": "gar",
    "olden": "old",
}
#: Order of the row verdicts (notable first).
_ORDER = {"changed": 0, "new": 1, "removed": 1, "weak": 2, "inputs": 3, "stable": 4}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method[:5])


def method_cell(drift: FeatureDrift, votes: bool) -> MethodCell:
    """A method's change of a feature in units of its band: change / band half-width, signed.

    The change is the drift call's (log ratio relative to the method's median change) and the band
    its noise band; issue 16's plain change and band replace them here.
    """
    units = None
    if drift.change is not None and drift.band is not None and drift.band.half_width > 0:
        units = drift.change / drift.band.half_width
    return MethodCell(drift.method, method_label(drift.method), units, _tone(units), votes)


def _tone(units: float | None) -> str:
    if units is None:
        return "x"
    size = abs(units)
    level = 3 if size > 1 else 2 if size > 0.75 else 1 if size > 0.5 else 0
    if level == 0:
        return "n"
    return f"{'u' if units > 0 else 'd'}{level}"


def overview_methods(assessment: DriftAssessment) -> tuple[tuple[str, str], ...]:
    """(label, method) of every method with per-feature drifts, verdict methods first."""
    methods = list(dict.fromkeys(d.method for d in assessment.drifts if d.feature != "*"))
    ordered = [m for m in methods if m in assessment.verdict_methods]
    ordered += [m for m in methods if m not in assessment.verdict_methods]
    return tuple((method_label(m), m) for m in ordered)


def overview_rows(
    assessment: DriftAssessment, input_drift: InputDriftAssessment | None
) -> tuple[OverviewRow, ...]:
    """One row per feature, notable features first (see the module docstring)."""
    methods = [method for _, method in overview_methods(assessment)]
    by_feature: dict[str, dict[str, FeatureDrift]] = {}
    for drift in assessment.drifts:
        if drift.feature != "*":
            by_feature.setdefault(drift.feature, {})[drift.method] = drift
    verdicts = {f.feature: f for f in assessment.features}
    evidence = {f.feature: i for i, f in enumerate(assessment.features)}
    rows = []
    for feature, drifts in by_feature.items():
        judged = [drifts[m] for m in assessment.verdict_methods if m in drifts]
        inputs = None if input_drift is None else input_drift.drift(feature)
        rows.append(
            OverviewRow(
                feature=feature,
                rank=_median([d.rank for d in judged]),
                previous_rank=_median([d.previous_rank for d in judged]),
                cells=tuple(
                    method_cell(drifts[m], m in assessment.verdict_methods) for m in methods if m in drifts
                ),
                psi=None if inputs is None else inputs.psi,
                psi_limit=None if inputs is None else inputs.psi_limit,
                input_shifted=inputs is not None and inputs.shifted,
                verdict=_row_verdict(verdicts.get(feature), inputs),
                cause=_cause(verdicts.get(feature)),
                reason=None if feature not in verdicts else verdicts[feature].reason,
            )
        )

    def order(row: OverviewRow) -> tuple[int, float, float, str]:
        group = _ORDER[row.verdict]
        within = float(evidence.get(row.feature, 0)) if group < 3 else 0.0
        return (group, within, row.rank if row.rank is not None else float("inf"), row.feature)

    return tuple(sorted(rows, key=order))


def feature_cards(
    rows: Sequence[OverviewRow],
    current: AuditSummary,
    previous: AuditSummary | None,
    input_drift: InputDriftAssessment | None,
    numbers: ChartNumbers,
) -> tuple[FeatureCard, ...]:
    """Charts of at most `CARDS` features: the notable ones first, else the largest moves."""
    candidates = [row for row in rows if row.verdict not in ("new", "removed") and row.cells]

    def size(row: OverviewRow) -> tuple[int, float]:
        largest = max((abs(c.units) for c in row.cells if c.units is not None), default=0.0)
        return (
            _ORDER[row.verdict],
            -max(largest, 0.0 if row.psi_limit is None else (row.psi or 0) / row.psi_limit),
        )

    chosen = sorted(candidates, key=size)[:CARDS]
    now = {s.feature: s for s in current.input_summaries}
    before = {} if previous is None else {s.feature: s for s in previous.input_summaries}
    cards = []
    for row in chosen:
        inputs = None if input_drift is None else input_drift.drift(row.feature)
        chart = card_chart(
            numbers,
            row.feature,
            row.verdict,
            [cell.label for cell in row.cells],
            [cell.units for cell in row.cells],
            current_values=_values(now.get(row.feature)),
            previous_values=_values(before.get(row.feature)),
            input_note=_input_note(inputs),
        )
        cards.append(FeatureCard(row.feature, chart, row.verdict, row.reason))
    return tuple(cards)


def _input_note(inputs: InputDrift | None) -> str:
    if inputs is None:
        return "inputs not measured"
    state = "shifted" if inputs.shifted else "no shift"
    return f"PSI {inputs.psi:.2f} (band {inputs.psi_limit:.2f}): {state}"


def _values(summary: FeatureSummary | None) -> FloatArray | None:
    return None if summary is None else summary.values


def _row_verdict(feature: FeatureAssessment | None, inputs: InputDrift | None) -> str:
    if feature is not None and feature.verdict is not FeatureVerdict.STABLE:
        return feature.verdict.value
    if feature is not None and feature.methods_flagged:
        return "weak"
    if inputs is not None and inputs.shifted:
        return "inputs"
    return "stable"


def _cause(feature: FeatureAssessment | None) -> str | None:
    if feature is None or feature.cause is None or feature.verdict is not FeatureVerdict.CHANGED:
        return None
    return feature.cause.value


def _median(ranks: Sequence[int | None]) -> float | None:
    known = [rank for rank in ranks if rank is not None]
    return float(statistics.median(known)) if known else None
