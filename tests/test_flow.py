"""The weekly_audit flow end to end under Prefect's test harness, and the CLI around it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from audit.methods import registered_methods
from flows.cli import main
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import mlp_ignoring, small_registry, table_counts, write_drop

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3), dt.date(2014, 11, 10)]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _history(db_url: str) -> list[sa.Row[tuple[object, ...]]]:
    with make_engine(db_url).connect() as connection:
        return list(
            connection.execute(
                sa.text("SELECT week, model, method, feature, value, rank FROM importance_history")
            )
        )


def test_audits_every_drop_compares_and_writes_the_newest_report(tmp_path: Path, db_url: str) -> None:
    registry = small_registry(tmp_path, WEEKS)
    (registry / "not-a-drop").mkdir()
    out = tmp_path / "out"

    result = weekly_audit(registry=str(registry), db_url=db_url, out_dir=str(out), model_name="demo")

    assert isinstance(result, AuditResult)
    assert result.audited_weeks == tuple(WEEKS)
    assert result.report_path == out / "2014-11-10" / "report.html"
    html = result.report_path.read_text(encoding="utf-8")
    assert "2014-11-03" in html  # compared with the previous drop
    rows = _history(db_url)
    per_feature = set(registered_methods()) - {"grad_cam"}  # grad_cam: sequences only, skipped here
    assert {(str(r.week), r.method) for r in rows} == {(str(w), m) for w in WEEKS for m in per_feature}
    assert len(rows) == 3 * len(per_feature) * 4
    ignored = [r.value for r in rows if r.feature == "f3"]
    assert np.allclose(ignored, 0.0, atol=1e-6)  # the models ignore f3 by construction: every method agrees
    assert "grad_cam" in html and "sequence input" in html  # skipped, and the report says why
    counts = table_counts(make_engine(db_url))
    assert counts["comparisons"] == 2 * len(per_feature)  # weeks 2 and 3
    with make_engine(db_url).connect() as connection:
        fits = connection.execute(
            sa.text("SELECT eval_loss_name, eval_loss, eval_metric_name, eval_metric FROM audit_runs")
        ).all()
    # y is each model's own output plus noise of sd 0.05: an mse near 0.0025 and an r2 near 1
    assert [(r.eval_loss_name, r.eval_metric_name) for r in fits] == [("mse", "r2")] * 3
    assert all(0.001 < r.eval_loss < 0.005 and r.eval_metric > 0.9 for r in fits)

    # A second run finds nothing new: no figures change, the newest report is written again.
    again = weekly_audit(registry=str(registry), db_url=db_url, out_dir=str(out), model_name="demo")
    assert isinstance(again, AuditResult) and again.audited_weeks == ()
    assert table_counts(make_engine(db_url)) == counts

    # Re-auditing one week replaces its figures: row counts unchanged but for one more run row.
    redo = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(out), model_name="demo", week=WEEKS[1]
    )
    assert isinstance(redo, AuditResult) and redo.audited_weeks == (WEEKS[1],)
    assert table_counts(make_engine(db_url)) == {**counts, "audit_runs": counts["audit_runs"] + 1}
    assert redo.report_path == out / "2014-11-03" / "report.html"


def test_verdicts_copies_and_frozen_set_are_stored_and_reported(tmp_path: Path, db_url: str) -> None:
    registry = small_registry(tmp_path, WEEKS)
    mlp_ignoring(4, 3, seed=50).save(registry / "2014-11-10" / "model_seed1.keras")
    out = tmp_path / "out"
    methods = ["permutation", "integrated_gradients", "weight_sum"]

    result = weekly_audit(registry=str(registry), db_url=db_url, out_dir=str(out), methods=methods)

    assert isinstance(result, AuditResult) and result.verdict is not None
    with make_engine(db_url).connect() as connection:
        verdicts = connection.execute(
            sa.text("SELECT week, previous_week, verdict, reason FROM audit_verdicts ORDER BY week")
        ).all()
        extra = connection.execute(
            sa.text(
                "SELECT d.week, m.kind, m.label, m.method, COUNT(*) AS n FROM model_importances m "
                "JOIN audit_runs r ON r.id = m.run_id JOIN model_drops d ON d.id = r.drop_id "
                "GROUP BY d.week, m.kind, m.label, m.method ORDER BY d.week, m.kind, m.method"
            )
        ).all()
        changes = connection.execute(
            sa.text("SELECT DISTINCT method FROM importance_changes WHERE week = :week"),
            {"week": WEEKS[2]},
        ).scalars()
        changed_methods = set(changes)
    assert [(str(v.week), str(v.previous_week)) for v in verdicts] == [
        (str(WEEKS[1]), str(WEEKS[0])),
        (str(WEEKS[2]), str(WEEKS[1])),
    ]
    assert verdicts[-1].verdict == result.verdict.value and verdicts[-1].reason
    # the copy is scored with every method, the previous model (frozen set) with the data methods
    assert {(str(e.week), e.kind, e.label, e.method, e.n) for e in extra} == {
        (str(WEEKS[1]), "frozen", str(WEEKS[0]), "integrated_gradients", 4),
        (str(WEEKS[1]), "frozen", str(WEEKS[0]), "permutation", 4),
        (str(WEEKS[2]), "frozen", str(WEEKS[1]), "integrated_gradients", 4),
        (str(WEEKS[2]), "frozen", str(WEEKS[1]), "permutation", 4),
        (str(WEEKS[2]), "copy", "model_seed1.keras", "integrated_gradients", 4),
        (str(WEEKS[2]), "copy", "model_seed1.keras", "permutation", 4),
        (str(WEEKS[2]), "copy", "model_seed1.keras", "weight_sum", 4),
    }
    assert changed_methods == set(methods)
    html = result.report_path.read_text(encoding="utf-8") if result.report_path else ""
    assert f'class="verdict verdict-{result.verdict.value}"' in html


def test_drop_without_eval_sample_runs_weight_methods_and_says_why(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    (registry / "2014-10-27" / "eval.npz").unlink()
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    result = weekly_audit(registry=str(registry), db_url=db_url, out_dir=str(tmp_path / "out"))
    assert isinstance(result, AuditResult) and result.report_path is not None
    weight_only = {name for name, spec in registered_methods().items() if not spec.needs_eval_sample}
    assert weight_only >= {"weight_sum", "garson", "olden"}
    assert {r.method for r in _history(db_url)} == weight_only
    html = result.report_path.read_text(encoding="utf-8")
    assert "no eval sample in the drop" in html


def test_a_bad_drop_fails_the_run_records_it_and_keeps_the_others(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS[:2])
    (registry / "2014-11-03" / "model.keras").write_bytes(b"not a zip file")
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    state = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(tmp_path / "out"), return_state=True
    )
    assert state.is_failed()
    assert "1 of 2 drop(s) failed" in (state.message or "")
    assert "2014-11-03" in (state.message or "") and "cannot load the model" in (state.message or "")
    with make_engine(db_url).connect() as connection:
        runs = connection.execute(sa.text("SELECT status, error FROM audit_runs ORDER BY id")).all()
    assert [r.status for r in runs] == ["succeeded", "failed"]
    assert "model.keras" in runs[1].error
    assert {str(r.week) for r in _history(db_url)} == {"2014-10-27"}


def test_cli_run_prints_the_report_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = small_registry(tmp_path, WEEKS[:2])
    out = tmp_path / "out"
    code = main(["run", "--registry", str(registry), "--out", str(out), "--methods", "weight_sum"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out / "2014-11-03" / "report.html")
    assert (out / "drift-audit.db").is_file()


def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--registry", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    missing = tmp_path / "missing"
    expected = f"registry {missing} does not exist; pass the folder that holds the drops"
    assert err[-1] == f"drift-audit: error: {expected}"

    registry = small_registry(tmp_path, WEEKS[:1])
    code = main(["run", "--registry", str(registry), "--out", str(tmp_path / "o2"), "--week", "2015-01-05"])
    assert code == 1
    assert "no drop for week 2015-01-05" in capsys.readouterr().err.strip().splitlines()[-1]


def test_lambda_models_are_refused_unless_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(1)])
    registry = tmp_path / "registry"
    write_drop(registry, WEEKS[0], model, X=np.ones((4, 2)), feature_names=["a", "b"])
    out = tmp_path / "out"
    assert main(["run", "--registry", str(registry), "--out", str(out)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "embeds Python code" in last and "--trust-model-code" in last
    assert main(["run", "--registry", str(registry), "--out", str(out), "--trust-model-code"]) == 0


def test_custom_module_is_imported_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import keras

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "drift_team_layers.py").write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='drift_team')\n"
        "class Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    import drift_team_layers  # registers Doubler, as a team's own package would

    model = keras.Sequential([keras.Input((2,)), drift_team_layers.Doubler(), keras.layers.Dense(1)])
    registry = tmp_path / "registry"
    write_drop(registry, WEEKS[0], model, X=np.ones((4, 2)), feature_names=["a", "b"])
    del sys.modules["drift_team_layers"]
    args = ["run", "--registry", str(registry), "--out", str(tmp_path / "out"), "--methods", "weight_sum"]
    assert main([*args, "--custom-module", "drift_team_layers"]) == 0
    assert "drift_team_layers" in sys.modules  # imported by the loader, from the auditor's environment
    assert capsys.readouterr().out.strip().endswith("report.html")
