"""Prefect artifacts of a flow run: the markdown summary and the per-feature changes table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.artifacts import TABLE_COLUMNS, artifact_keys, escape_markdown
from flows.weekly_audit import AuditResult, weekly_audit
from tests.helpers import linear_model, write_drop

W1, W3 = dt.date(2026, 3, 2), dt.date(2026, 3, 16)
#: User data that markdown would otherwise turn into a link, an image, HTML, emphasis and a table cell.
HOSTILE = "[click](http://evil.example) <script>alert(1)</script> *bold* | ![i](x.png)"
NAMES = ["temp", HOSTILE, "wind_speed", "unused"]
METHODS = ["permutation", "weight_sum"]


pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_keys_are_lowercase_letters_digits_and_dashes() -> None:
    assert artifact_keys("Beijing PM2.5") == (
        "drift-audit-beijing-pm2-5-summary",
        "drift-audit-beijing-pm2-5-changes",
    )
    assert artifact_keys("__") == ("drift-audit-model-summary", "drift-audit-model-changes")


def test_markdown_is_neutralised() -> None:
    escaped = escape_markdown("a [b](c) <i>x</i>\n# not a heading | cell `code` & more")
    assert "<" not in escaped and ">" not in escaped and "\n" not in escaped
    assert "\\[b\\]\\(c\\)" in escaped and "\\#" in escaped and "\\|" in escaped and "\\`code\\`" in escaped
    assert "&amp; more" in escaped
    assert escape_markdown("plain words 42") == "plain words 42"


def _registry(root: Path) -> Path:
    """W1, then W3 (no drop in the week of 9 March) where the linear model all but dropped feature 1."""
    registry = root / "registry"
    rng = np.random.default_rng(1)
    for week, weights in [(W1, [1.0, 2.0, 0.5, 0.0]), (W3, [1.0, 0.02, 0.5, 0.0])]:
        model = linear_model(weights)
        X = rng.normal(size=(64, 4)).astype(np.float32)
        y = model.predict(X, verbose=0)[:, 0]
        write_drop(registry, week, model, X=X, y=y, feature_names=NAMES)
    return registry


def _artifacts(key: str, flow_run_id: UUID) -> list[object]:
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
        )


@pytest.mark.slow
def test_flow_run_publishes_summary_and_changes_table(tmp_path: Path) -> None:
    registry, out = _registry(tmp_path), tmp_path / "out"
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"

    state = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(out),
        model_name="Team A/PM2.5",
        methods=METHODS,
        return_state=True,
    )

    result = state.result()
    assert isinstance(result, AuditResult) and result.verdict is not None and result.report_path is not None
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    summary_key, table_key = "drift-audit-team-a-pm2-5-summary", "drift-audit-team-a-pm2-5-changes"
    (summary,) = _artifacts(summary_key, flow_run_id)
    (table,) = _artifacts(table_key, flow_run_id)

    markdown = summary.data  # type: ignore[attr-defined]
    assert summary.type == "markdown"  # type: ignore[attr-defined]
    assert f"{W3} vs {W1}" in markdown
    assert f"**Verdict: {result.verdict.value.upper()}**" in markdown
    assert f"No drop for 2026-03-09: compared with {W1}." in markdown
    assert escape_markdown(str(result.report_path)) in markdown
    # the feature that changed is named, escaped: no link, no HTML, no table cell
    assert "## Changed features" in markdown and f"- {escape_markdown(HOSTILE)}: " in markdown
    assert "<script>" not in markdown and "](http" not in markdown and "](x" not in markdown
    assert " | " not in markdown

    rows = json.loads(table.data)  # type: ignore[attr-defined]
    assert table.type == "table"  # type: ignore[attr-defined]
    assert len(rows) == len(METHODS) * len(NAMES)
    assert all(tuple(row) == TABLE_COLUMNS for row in rows)
    assert {row["method"] for row in rows} == set(METHODS)
    assert {row["feature"] for row in rows} == set(NAMES)  # the table holds the names as data
    assert {(row["week"], row["previous_week"]) for row in rows} == {(str(W3), str(W1))}
    fell = next(r for r in rows if r["method"] == "permutation" and r["feature"] == HOSTILE)
    assert 0 <= fell["value"] < fell["previous_value"] and fell["change_percent"] < -80
    assert fell["verdict"] == "changed" and fell["band"]
    unused = next(r for r in rows if r["method"] == "weight_sum" and r["feature"] == "unused")
    assert unused["value"] == 0 and unused["previous_value"] == 0
    for method in METHODS:  # biggest change first within each method
        changes = [
            abs(r["change_percent"])
            for r in rows
            if r["method"] == method and r["change_percent"] is not None
        ]
        assert changes == sorted(changes, reverse=True)
