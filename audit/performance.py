"""Performance drift: did the eval loss change beyond noise, and was it the model or the data?

Every audit scores its model on its eval sample (audit/evaluation.py) and, with the frozen set, the
previous drop's model on the same sample. Three losses then tell apart what a reader wants to
know::

    change       = log(loss / previous_loss)         what the loss did since last week
    model_change = log(loss / frozen_loss)           the two models on this week's sample
    data_change  = log(frozen_loss / previous_loss)  the previous model on the two weeks' samples

The noise band of `change` is built like the importance bands of audit/drift.py: one standard
deviation of a noise-only change is the robust spread (1.4826 x MAD) of the past week-to-week log
loss ratios, shrunk towards `DriftConfig.default_performance_scale` as if that were
`pooled_weight` more observations (a handful of past ratios can all be small by chance), or that
default alone with fewer than `min_history` past ratios; the sampling noise of the two losses
(their standard errors, delta method) is added in quadrature. The loss is ``worse`` when `change`
or `model_change` exceeds `threshold` x that scale (the new model is worse on the very sample the
previous one was scored on), ``better`` when `change` falls below minus that. A worse loss is
split like an importance change: a part counts when it exceeds half the band; the model's part
says "the model got worse", the data's "this week's data is harder".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

from audit.drift import robust_scale
from audit.types import (
    AuditSummary,
    BandSource,
    Cause,
    DriftConfig,
    ModelEvaluation,
    NoiseBand,
    PerformanceDrift,
    PerformanceVerdict,
)


def assess_performance(
    current: AuditSummary,
    previous: AuditSummary,
    history: Sequence[AuditSummary] = (),
    config: DriftConfig | None = None,
) -> PerformanceDrift | None:
    """The loss of `current` against `previous` with its band and verdict (see the module docstring).

    None when either drop has no evaluation, their losses differ in kind, or a loss is not positive.
    `history` holds the audits before `previous`, oldest first.
    """
    config = config or DriftConfig()
    now, before = current.evaluation, previous.evaluation
    if not (_usable(now) and _usable(before)) or now is None or before is None:
        return None
    if now.loss_name != before.loss_name:
        return None
    frozen = current.frozen_evaluation
    if not _usable(frozen) or frozen is None or frozen.loss_name != now.loss_name:
        frozen = None
    change = math.log(now.loss / before.loss)
    model_change = None if frozen is None else math.log(now.loss / frozen.loss)
    data_change = None if frozen is None else math.log(frozen.loss / before.loss)
    band = performance_band(now, before, _past_changes([*history, previous], now.loss_name, config), config)
    worse_model = model_change is not None and model_change > band.half_width
    if change > band.half_width or worse_model:
        verdict = PerformanceVerdict.WORSE
    elif change < -band.half_width:
        verdict = PerformanceVerdict.BETTER
    else:
        verdict = PerformanceVerdict.STABLE
    cause = None
    if verdict is PerformanceVerdict.WORSE and model_change is not None and data_change is not None:
        cause = _cause(model_change, data_change, band.half_width)
    drift = PerformanceDrift(
        loss_name=now.loss_name,
        loss=now.loss,
        previous_loss=before.loss,
        frozen_loss=None if frozen is None else frozen.loss,
        metric_name=now.metric_name,
        metric=now.metric,
        previous_metric=before.metric,
        frozen_metric=None if frozen is None else frozen.metric,
        change=change,
        model_change=model_change,
        data_change=data_change,
        band=band,
        verdict=verdict,
        cause=cause,
        reason="",
    )
    return dataclasses.replace(drift, reason=performance_reason(drift))


def performance_band(
    now: ModelEvaluation, before: ModelEvaluation, past: Sequence[float], config: DriftConfig
) -> NoiseBand:
    """The band of a log loss ratio: retraining and data noise from history, plus sampling noise."""
    default = config.default_performance_scale
    if len(past) >= config.min_history:
        own = robust_scale(past)
        weight = config.pooled_weight
        retrain = math.sqrt((len(past) * own**2 + weight * default**2) / (len(past) + weight))
        source, n = BandSource.HISTORY, len(past)
    else:
        retrain, source, n = default, BandSource.DEFAULT, 0
    sampling = math.hypot(_relative_se(now), _relative_se(before))
    scale = max(math.hypot(retrain, sampling), config.min_scale)
    return NoiseBand(
        scale=scale,
        half_width=config.threshold * scale,
        source=source,
        n_observations=n,
        sampling_scale=sampling,
    )


def performance_reason(drift: PerformanceDrift) -> str:
    """E.g. "mse rose 42% since last week (noise band -20% to +25%); ...: the model got worse"."""
    moved = "rose" if drift.change > 0 else "fell"
    band = drift.band.describe()
    text = f"{drift.loss_name} {moved} {abs(drift.relative):.0%} since last week (noise band {band})"
    if drift.verdict is PerformanceVerdict.STABLE:
        return text + ": within noise"
    if drift.verdict is PerformanceVerdict.BETTER:
        return text + ": the model got better"
    if drift.model_change is None or drift.data_change is None:
        return (
            text
            + "; the previous model was not scored on this week's data: model or data cannot be told apart"
        )
    models = (
        f"on this week's data the new model's {drift.loss_name} is {math.expm1(drift.model_change):+.0%} "
        f"against the previous model's, which is {math.expm1(drift.data_change):+.0%} "
        "against last week's data"
    )
    verdicts = {
        Cause.MODEL: "the model got worse",
        Cause.DATA: "this week's data is harder",
        Cause.BOTH: "the model got worse and this week's data is harder",
        Cause.UNCLEAR: "neither part alone explains it",
    }
    return f"{text}; {models}: {verdicts[drift.cause or Cause.UNCLEAR]}"


def _past_changes(audits: Sequence[AuditSummary], loss_name: str, config: DriftConfig) -> list[float]:
    """Log loss ratios between consecutive `audits` (the last `history_weeks` + 1 of them)."""
    changes = []
    for older, newer in itertools.pairwise(audits[-(config.history_weeks + 1) :]):
        a, b = older.evaluation, newer.evaluation
        if (
            _usable(a)
            and _usable(b)
            and a is not None
            and b is not None
            and a.loss_name == b.loss_name == loss_name
        ):
            changes.append(math.log(b.loss / a.loss))
    return changes


def _usable(evaluation: ModelEvaluation | None) -> bool:
    return evaluation is not None and math.isfinite(evaluation.loss) and evaluation.loss > 0


def _relative_se(evaluation: ModelEvaluation) -> float:
    """Standard error of log(loss), 0 when unknown."""
    se = evaluation.loss_se
    return se / evaluation.loss if se is not None and math.isfinite(se) and evaluation.loss > 0 else 0.0


def _cause(model_change: float, data_change: float, half_width: float) -> Cause:
    by_model = model_change > half_width / 2
    by_data = data_change > half_width / 2
    if by_model and by_data:
        return Cause.BOTH
    if by_model:
        return Cause.MODEL
    if by_data:
        return Cause.DATA
    return Cause.UNCLEAR
