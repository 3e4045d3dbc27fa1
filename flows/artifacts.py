"""Prefect artifacts of a flow run: a markdown summary of the reported drop and a table of its changes.

They appear in the Prefect UI on the flow run (and under Artifacts, by key, as one history per
model): the verdict and why, the features that changed, where the report is, and the per-feature
figures to sort and filter. Keys are stable per model (``drift-audit-<model>-summary`` and
``drift-audit-<model>-changes``), so each run adds a version to the same two artifacts.

Feature and model names are user data: in the markdown they are escaped so that a name cannot add
links, images, HTML or table cells to the summary.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from audit.types import FeatureVerdict, ReportInput
from flows.tasks import IO_RETRIES
from reports.email import one_line

#: Changed features listed in the markdown summary (the table has them all).
TOP_FEATURES = 10
#: Columns of the table artifact, in order.
TABLE_COLUMNS = (
    "week",
    "previous_week",
    "method",
    "feature",
    "value",
    "previous_value",
    "change_percent",
    "band",
    "verdict",
)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
_NOT_KEY = re.compile(r"[^a-z0-9]+")


def artifact_keys(model_name: str) -> tuple[str, str]:
    """The summary's and the table's keys: lowercase letters, digits and dashes, as Prefect requires."""
    slug = _NOT_KEY.sub("-", model_name.lower()).strip("-") or "model"
    return f"drift-audit-{slug}-summary", f"drift-audit-{slug}-changes"


def escape_markdown(text: str) -> str:
    """`text` as literal markdown on one line: HTML characters as entities, markdown punctuation
    backslash-escaped, control and format characters (line breaks, C1, bidi overrides such as U+202E)
    as spaces, spaces collapsed (`reports.email.one_line`, the e-mail's subject rule)."""
    html_safe = one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html_safe)


def summary_markdown(report_input: ReportInput, report_path: Path | None) -> str:
    """The summary: verdict and reason, skipped weeks, the top changed features, the report's path."""
    current, previous, assessment = report_input.current, report_input.previous, report_input.assessment
    name = escape_markdown(current.model_name)
    against = f" vs {previous.week.isoformat()}" if previous is not None else ""
    lines = [f"# Drift audit of {name}: {current.week.isoformat()}{against}", ""]
    if assessment is None:
        lines.append("**Verdict: none** (the first audited drop: nothing to compare with)")
    else:
        lines.append(f"**Verdict: {assessment.verdict.value.upper()}**: {escape_markdown(assessment.reason)}")
    if report_input.missing_weeks and previous is not None:
        weeks = ", ".join(week.isoformat() for week in report_input.missing_weeks)
        lines += ["", f"No drop for {weeks}: compared with {previous.week.isoformat()}."]
    changed = (
        []
        if assessment is None
        else [f for f in assessment.features if f.verdict is not FeatureVerdict.STABLE]
    )
    if changed:
        lines += ["", "## Changed features", ""]
        lines += [f"- {escape_markdown(feature.reason)}" for feature in changed[:TOP_FEATURES]]
        if len(changed) > TOP_FEATURES:
            lines.append(f"- and {len(changed) - TOP_FEATURES} more (see the changes table)")
    elif assessment is not None:
        lines += ["", "No feature changed beyond its noise band."]
    report = "not written" if report_path is None else escape_markdown(str(report_path))
    lines += ["", f"Report: {report}", ""]
    return "\n".join(lines)


def change_rows(report_input: ReportInput) -> list[dict[str, object]]:
    """One row per method and feature: this and the previous drop's value, the change and its band.

    The change is the method-relative change the verdict judges (`FeatureDrift.relative`, in %),
    rows ordered by method, then largest change first. For the first drop (nothing to compare),
    this drop's values alone.
    """
    current, previous, assessment = report_input.current, report_input.previous, report_input.assessment
    week = current.week.isoformat()
    if assessment is None or previous is None:
        return [
            _row(week, "", importance.method, feature, float(value), None, None, "", "")
            for outcome in current.outcomes
            if (importance := outcome.importance) is not None
            for feature, value in zip(importance.feature_names, importance.values, strict=False)
        ]
    methods = {method: i for i, method in enumerate(dict.fromkeys(d.method for d in assessment.drifts))}
    drifts = sorted(
        assessment.drifts,
        key=lambda d: (methods[d.method], -abs(d.relative) if d.relative is not None else math.inf),
    )
    return [
        _row(
            week,
            previous.week.isoformat(),
            drift.method,
            drift.feature,
            drift.value,
            drift.previous_value,
            drift.relative,
            "" if drift.band is None else drift.band.describe(),
            drift.verdict.value,
        )
        for drift in drifts
    ]


def _row(
    week: str,
    previous_week: str,
    method: str,
    feature: str,
    value: float | None,
    previous_value: float | None,
    relative: float | None,
    band: str,
    verdict: str,
) -> dict[str, object]:
    cells = (
        week,
        previous_week,
        method,
        feature,
        _number(value),
        _number(previous_value),
        None if relative is None else _number(100 * relative, 1),
        band,
        verdict,
    )
    return dict(zip(TABLE_COLUMNS, cells, strict=True))


def _number(value: float | None, decimals: int | None = None) -> float | None:
    """A finite float for the table (JSON has no NaN), to 4 significant digits or `decimals` places."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, decimals) if decimals is not None else float(f"{value:.4g}")


@task(name="publish-artifacts", cache_policy=NO_CACHE, **IO_RETRIES)
def artifacts_task(model_name: str, report_input: ReportInput, report_path: Path | None) -> None:
    """Publish the summary and the changes table of the reported drop to the Prefect API."""
    summary_key, table_key = artifact_keys(model_name)
    week = report_input.current.week.isoformat()
    create_markdown_artifact(
        summary_markdown(report_input, report_path),
        key=summary_key,
        description=f"Drift audit summary of {week}",
    )
    create_table_artifact(
        change_rows(report_input), key=table_key, description=f"Per-feature changes of {week}"
    )
    get_run_logger().info("artifacts %s and %s published", summary_key, table_key)
