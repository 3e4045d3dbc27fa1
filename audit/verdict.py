"""The drop's verdict with every kind of evidence: importance drift, input drift, performance drift.

`audit.drift.assess_drift` calls importance changes beyond retraining noise. This module adds
what the inputs and the loss did, so a reason says *why* a feature moved:

- a changed feature whose input distribution shifted (`audit.input_drift`, PSI beyond its band):
  "...; its input distribution shifted (PSI 0.41): the data changed"; one whose inputs did not
  shift: "...; its inputs did not shift (PSI 0.02): the model changed". With the frozen set (the
  previous model scored on this week's sample) the two must agree: when the frozen set points to
  the model and the inputs shifted, or to the data and they did not, the reason says they disagree;
- inputs that shifted beyond their band make an ``ok`` drop ``warn`` ("inputs shifted: TEMP (PSI
  1.20, band 0.25): the data changed"), since the model may see data it was not trained on;
- an eval loss worse beyond its noise band (`audit.performance`) makes the drop at least ``warn``,
  and its reason comes first, so the e-mail's subject line carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from audit.drift import change_text
from audit.input_drift import describe_shift
from audit.types import (
    Cause,
    DriftAssessment,
    DropVerdict,
    FeatureAssessment,
    FeatureDrift,
    InputDrift,
    InputDriftAssessment,
    PerformanceDrift,
)

#: Shifted features named in the drop's reason.
REASON_SHIFTS = 3


def explain(
    assessment: DriftAssessment,
    input_drift: InputDriftAssessment | None,
    performance: PerformanceDrift | None,
) -> DriftAssessment:
    """`assessment` with feature reasons that use the input drift and a drop verdict and reason
    that count input and performance drift (see the module docstring)."""
    features = tuple(_explain_feature(f, assessment, input_drift) for f in assessment.features)
    reason = assessment.reason
    # the drop's reason quotes the changed features' reasons verbatim: quote the new ones
    for old, new in zip(assessment.features, features, strict=True):
        if old.reason != new.reason and old.reason in reason:
            reason = reason.replace(old.reason, new.reason)
    verdict = assessment.verdict
    shifted = () if input_drift is None else input_drift.shifted
    if shifted:
        reason = f"{_shifts_text(shifted)}. {reason}"
        verdict = max(verdict, DropVerdict.WARN, key=_severity)
    if performance is not None and performance.worse:
        reason = f"{performance.reason}. {reason}"
        verdict = max(verdict, DropVerdict.WARN, key=_severity)
    return dataclasses.replace(assessment, features=features, verdict=verdict, reason=reason)


def input_cause_text(cause: Cause | None, drift: InputDrift) -> str:
    """The clause after a changed feature's change: what the frozen set and its inputs say."""
    psi = f"PSI {drift.psi:.2f}"
    if cause is Cause.MODEL and drift.shifted:
        return (
            "; the previous model shows no such change on this week's data, yet its input "
            f"distribution shifted ({psi}): the frozen set and the input drift disagree"
        )
    if cause is Cause.DATA and not drift.shifted:
        return (
            f"; the previous model shows it too on this week's data, yet its inputs did not shift ({psi}): "
            "the frozen set and the input drift disagree (the data may have changed in other features "
            "or in their relation to the target)"
        )
    if cause is Cause.BOTH:
        inputs = f"its inputs shifted, {psi}" if drift.shifted else f"its own inputs did not shift, {psi}"
        return f"; both the model and the data moved it ({inputs})"
    frozen = {
        Cause.MODEL: "; the previous model shows no such change on this week's data and",
        Cause.DATA: "; the previous model shows it too on this week's data and",
    }.get(cause or Cause.UNCLEAR, ";")
    if drift.shifted:
        return f"{frozen} its input distribution shifted ({psi}): the data changed"
    return f"{frozen} its inputs did not shift ({psi}): the model changed"


def _explain_feature(
    feature: FeatureAssessment, assessment: DriftAssessment, input_drift: InputDriftAssessment | None
) -> FeatureAssessment:
    drift = None if input_drift is None else input_drift.drift(feature.feature)
    if drift is None or not feature.methods_flagged:
        return feature
    flagged = [assessment.drift(method, feature.feature) for method in feature.methods_flagged]
    found: list[FeatureDrift] = [d for d in flagged if d is not None]
    if not found:
        return feature
    text = change_text(feature.feature, found, feature.n_methods) + input_cause_text(feature.cause, drift)
    return dataclasses.replace(feature, reason=text)


def _shifts_text(shifted: Sequence[InputDrift]) -> str:
    named = "; ".join(
        f"{d.feature} ({describe_shift(d)}; band {d.psi_limit:.2f})" for d in shifted[:REASON_SHIFTS]
    )
    more = f" and {len(shifted) - REASON_SHIFTS} more" if len(shifted) > REASON_SHIFTS else ""
    return f"inputs shifted beyond their band: {named}{more}: the data changed"


def _severity(verdict: DropVerdict) -> int:
    return {DropVerdict.OK: 0, DropVerdict.WARN: 1, DropVerdict.ALERT: 2}[verdict]
