"""A fleet: several models in one flow run, each with its report, one failing without stopping the others."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.types import AuditError
from flows.cli import main
from flows.fleet import FleetUsageError, model_folder, resolve_fleet
from flows.weekly_audit import FleetResult, weekly_audit
from storage.session import make_engine
from tests.helpers import small_registry

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
METHODS = "weight_sum,permutation"


def make_fleet(root: Path, names: list[str], weeks: list[dt.date] = WEEKS) -> Path:
    """`root`/<name>/<week>/ for each name: tiny MLP registries (tests/helpers.py)."""
    root.mkdir(parents=True, exist_ok=True)
    template = small_registry(root.parent / f".{root.name}-template", weeks)
    for name in names:
        shutil.copytree(template, root / name)
    return root


# --- resolving the models: no Prefect -----------------------------------------------------------


def test_models_are_named_after_their_registries_and_usage_errors_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "team"
    for name in ("churn", "fraud", ".hidden"):
        (root / name).mkdir(parents=True)
    (root / "notes.txt").write_text("not a model")
    fleet = resolve_fleet([], str(root), None)
    assert fleet.is_fleet and fleet.names == ("churn", "fraud")
    assert resolve_fleet([str(root / "churn")], None, "c").names == ("c",)
    assert not resolve_fleet([str(root / "churn")], None, None).is_fleet
    both = resolve_fleet([str(root / "churn"), "mlflow://ltv@champion"], None, None)
    assert both.is_fleet and both.names == ("churn", "ltv")
    with pytest.raises(FleetUsageError, match="--model-name names the model of a single --registry"):
        resolve_fleet([str(root / "churn"), str(root / "fraud")], None, "x")
    with pytest.raises(AuditError, match="two models named 'churn'"):
        resolve_fleet([str(root / "churn")], str(root), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="holds no model folder"):
        resolve_fleet([], str(tmp_path / "empty"), None)
    (root / "fleet").mkdir()
    with pytest.raises(AuditError, match="name of the digest folder"):
        resolve_fleet([], str(root), None)
    assert model_folder("team/churn v2") == "team-churn-v2" and model_folder("churn") == "churn"


def test_model_name_with_several_registries_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--registry", str(tmp_path / "a"), "--registry", str(tmp_path / "b"), "--model-name", "x"]
    assert main(args) == 2
    assert "--model-name names the model of a single --registry" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "out")]) == 2
    assert "no registry: pass --registry" in capsys.readouterr().err


# --- one flow run over every model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_fleet(tmp_path_factory: pytest.TempPathFactory, prefect_harness: str) -> tuple[Path, int, str, str]:
    """A fleet of 3 registries, one of them broken, audited once through the command line."""
    tmp = tmp_path_factory.mktemp("fleet")
    root = make_fleet(tmp / "team", ["churn", "fraud", "ltv"])
    (root / "fraud" / WEEKS[1].isoformat() / "model.keras").write_bytes(b"not a zip file")
    out = tmp / "out"
    code = main(["run", "--fleet", str(root), "--out", str(out), "--methods", METHODS, "--no-email"])
    return out, code, "", ""


@pytest.mark.slow
def test_a_broken_model_fails_alone_and_the_run_says_which(
    broken_fleet: tuple[Path, int, str, str],
) -> None:
    out, code, _, _ = broken_fleet
    assert code == 1
    for model in ("churn", "ltv"):
        assert (out / model / WEEKS[1].isoformat() / "report.html").is_file()
    # fraud's first drop is stored and reported; its second failed and is named
    with make_engine(f"sqlite:///{out / 'drift-audit.db'}").connect() as connection:
        runs = connection.execute(
            sa.text(
                "SELECT d.model_name, d.week, r.status, r.error FROM audit_runs r "
                "JOIN model_drops d ON d.id = r.drop_id ORDER BY 1, 2"
            )
        ).all()
    statuses = {(r.model_name, str(r.week)): r.status for r in runs}
    assert statuses == {
        ("churn", "2014-10-27"): "succeeded",
        ("churn", "2014-11-03"): "succeeded",
        ("fraud", "2014-10-27"): "succeeded",
        ("fraud", "2014-11-03"): "failed",
        ("ltv", "2014-10-27"): "succeeded",
        ("ltv", "2014-11-03"): "succeeded",
    }


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_missing_registry_is_one_models_failure_in_the_flow(tmp_path: Path) -> None:
    root = make_fleet(tmp_path / "team", ["churn"], WEEKS[:1])
    state = weekly_audit(
        registries=[str(root / "churn"), str(tmp_path / "gone")],
        out_dir=str(tmp_path / "out"),
        methods=["weight_sum"],
        send_email=False,
        return_state=True,
    )
    assert state.is_failed()
    assert (state.message or "").startswith("1 of 2 model(s) failed; gone: registry ")
    result = state.result(raise_on_failure=False)
    assert isinstance(result, FleetResult)
    assert [(m.model_name, m.error is None) for m in result.models] == [("churn", True), ("gone", False)]
    assert result.models[0].report_path == tmp_path / "out" / "churn" / "2014-10-27" / "report.html"
