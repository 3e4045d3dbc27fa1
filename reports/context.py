"""Gather everything the weekly report shows into plain data; the template only renders it.

`build_context` is the entry point: it checks its arguments and assembles a `ReportContext`
(declared with its rows and sections in `reports.context_types`) from the section builders of
`reports.sections`, which draw their charts once through `reports.section_charts`.
Values stay raw numbers (floats, ints, dates); the registered Jinja filters of `reports.render`
format them. Feature names stay raw strings; the template escapes them.
"""

from __future__ import annotations

from audit.types import ReportInput
from reports.context_types import ReportContext
from reports.overview import OVERVIEW_ROWS, feature_cards, overview_methods, overview_rows
from reports.section_charts import ChartNumbers
from reports.sections import (
    HISTORY_WEEKS,
    agreement_rows,
    clarify_check,
    comparison_lines,
    eval_note,
    frozen_sections,
    gradient_shap_check,
    history_sections,
    integrated_gradients_check,
    method_notices,
    method_sections,
    method_timings,
    profile_sections,
    verdict_rows,
)


def build_context(
    report_input: ReportInput,
    *,
    top_n: int = 30,
    movers: int = 10,
    history_weeks: int = HISTORY_WEEKS,
    report_link: str | None = None,
    report_attached: bool = True,
) -> ReportContext:
    """Gather the report of `report_input.current` against `report_input.previous`.

    `top_n` features of each method are drawn (the rest are listed in a table); the `movers`
    features with the largest relative change are listed under each chart; the history shows the
    last `history_weeks` weeks. Charts are drawn here, once, as PNG bytes. `report_link` (where the
    full report is published) and `report_attached` (the e-mail attaches it) are what the e-mail
    says about the full report.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1 (features drawn per chart), got {top_n}")
    if movers < 0:
        raise ValueError(f"movers must be 0 or more (rows of the movers table), got {movers}")
    if history_weeks < 1:
        raise ValueError(f"history_weeks must be at least 1 (weeks of history drawn), got {history_weeks}")
    current, previous = report_input.current, report_input.previous
    assessment = report_input.assessment
    model = current.model
    # charts are numbered in the order they are drawn, which is the order the document shows them:
    # the cards of the overview, the methods' sections, then the time profiles, then the history
    numbers = ChartNumbers(current.run_id)
    overview = () if assessment is None else overview_rows(assessment, report_input.input_drift)
    cards = feature_cards(overview, current, previous, report_input.input_drift, numbers)
    sections = method_sections(
        current, previous, report_input.comparisons, assessment, numbers, top_n=top_n, movers=movers
    )
    profiles = profile_sections(current, previous, numbers)
    history = history_sections(report_input.history, numbers, history_weeks=history_weeks)
    return ReportContext(
        model_name=current.model_name,
        week=current.week,
        previous_week=None if previous is None else previous.week,
        run_id=current.run_id,
        top_n=top_n,
        verdict=None if assessment is None else assessment.verdict.value,
        verdict_reason=None if assessment is None else assessment.reason,
        copies_advice=None if assessment is None or assessment.advice is None else assessment.advice.text,
        verdict_rows=() if assessment is None else verdict_rows(assessment),
        agreement=() if assessment is None else agreement_rows(assessment),
        comparisons=comparison_lines(report_input.comparisons),
        sections=sections,
        notices=method_notices(current),
        model_path=str(model.path),
        model_hash=model.content_hash,
        n_parameters=model.n_parameters,
        input_shape=model.input_shape,
        output_shape=model.output_shape,
        task=str(model.task),
        n_eval_samples=current.n_eval_samples,
        eval_source=current.eval_source,
        eval_note=eval_note(current),
        timings=method_timings(current),
        missing_weeks=tuple(sorted(report_input.missing_weeks)),
        profiles=profiles,
        history=history,
        frozen=frozen_sections(current, previous, assessment),
        frozen_label=None if current.frozen is None else current.frozen.label,
        evaluation=current.evaluation,
        ig_check=integrated_gradients_check(current),
        shap_check=gradient_shap_check(current),
        clarify=None if previous is None else clarify_check(report_input.comparisons),
        copies=tuple(copy.label for copy in current.copies),
        provenance=current.provenance,
        charts=tuple(numbers.charts),
        overview=overview,
        overview_methods=() if assessment is None else overview_methods(assessment),
        overview_rows=OVERVIEW_ROWS,
        cards=cards,
        performance=report_input.performance,
        inputs_measured=report_input.input_drift is not None,
        inputs_are_sequences=report_input.input_drift is not None and report_input.input_drift.sequences,
        report_link=report_link,
        report_attached=report_attached,
        interrupted=report_input.interrupted,
    )
