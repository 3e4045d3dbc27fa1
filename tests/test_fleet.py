"""A fleet: several models in one flow run, each with its report, one failing without stopping the others."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.types import AuditError
from flows.cli import main
from flows.fleet import FleetUsageError, model_folder, resolve_fleet
from flows.weekly_audit import FleetResult, weekly_audit
from storage.session import make_engine
from tests.helpers import small_registry
from tests.test_email import Inbox, smtp_server

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


@dataclass(frozen=True)
class FleetRunResult:
    out: Path
    code: int
    stdout: str
    stderr: str
    inbox: Inbox


@pytest.fixture(scope="module")
def broken_fleet(tmp_path_factory: pytest.TempPathFactory, prefect_harness: str) -> Iterator[FleetRunResult]:
    """A fleet of 3 registries, one of them broken, audited once through the command line, its
    e-mail going to a real SMTP server on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("fleet")
    root = make_fleet(tmp / "team", ["churn", "fraud", "ltv"])
    (root / "fraud" / WEEKS[1].isoformat() / "model.keras").write_bytes(b"not a zip file")
    out = tmp / "out"
    inbox = Inbox()
    capture = io.StringIO(), io.StringIO()
    with smtp_server(inbox) as port, redirect_stdout(capture[0]), redirect_stderr(capture[1]):
        mail = ["--email-to", "team@example.com", "--email-from", "audit@example.com"]
        server = ["--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-security", "none"]
        args = ["run", "--fleet", str(root), "--out", str(out), "--methods", METHODS, "--quiet"]
        code = main([*args, *mail, *server, "--report-url", "https://reports.example.com/drift"])
    yield FleetRunResult(out, code, capture[0].getvalue(), capture[1].getvalue(), inbox)


@pytest.mark.slow
def test_a_broken_model_fails_alone_and_the_run_says_which(broken_fleet: FleetRunResult) -> None:
    out, code = broken_fleet.out, broken_fleet.code
    assert code == 1
    assert "fraud: failed: 1 of 2 drop(s) failed; 2014-11-03: " in broken_fleet.stderr
    assert "fraud/2014-11-03/model.keras: cannot load the model" in broken_fleet.stderr
    assert "churn: " in broken_fleet.stderr and "ltv: " in broken_fleet.stderr
    last = broken_fleet.stderr.strip().splitlines()[-1]
    assert last.startswith("drift-audit: error: 1 of 3 model(s) failed; fraud: ")
    digest = out / "fleet" / "2014-11-03" / "index.html"
    assert broken_fleet.stdout.strip().splitlines()[-1] == str(digest)
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
    assert result.digest_path == tmp_path / "out" / "fleet" / "2014-10-27" / "index.html"
    page = result.digest_path.read_text(encoding="utf-8")
    assert 'href="../../churn/2014-10-27/report.html"' in page  # unpublished: relative to the digest
    assert "gone" in page and "does not exist" in page


@pytest.mark.slow
def test_the_digest_lists_every_model_failure_first_and_is_the_one_email(
    broken_fleet: FleetRunResult,
) -> None:
    html = (broken_fleet.out / "fleet" / "2014-11-03" / "index.html").read_text(encoding="utf-8")
    rows = html.split("<tr>")
    assert "fraud" in rows[2] and "FAILED" in rows[2] and "cannot load the model" in rows[2]
    for model in ("churn", "ltv"):
        assert f'href="https://reports.example.com/drift/{model}/2014-11-03/report.html"' in html
    # one e-mail: the digest, in place of the per-model e-mails; its CSS inline
    assert len(broken_fleet.inbox.received) == 1
    recipients, message = broken_fleet.inbox.received[0]
    assert recipients == ("team@example.com",)
    assert (
        str(message["Subject"])
        .strip()
        .startswith("[drift-audit] fleet of 3 models, week of 2014-11-03: 1 failed")
    )
    body = message.get_body(("html",))
    assert body is not None and "<style" not in body.get_content() and 'style="' in body.get_content()
    with make_engine(f"sqlite:///{broken_fleet.out / 'drift-audit.db'}").connect() as connection:
        sent = connection.execute(
            sa.text("SELECT model_name, verdict, target_kind, status FROM notifications")
        ).all()
    assert [tuple(row) for row in sent] == [("fleet", "digest", "email", "sent")]
