"""Alerts end to end: a real HTTP receiver on 127.0.0.1 takes the webhook POSTs of an Apprise
``json://`` URL and of a Prefect CustomWebhookNotificationBlock; events are read back through the
Prefect test server's API."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from audit.types import AuditError
from flows.alerts import parse_targets, scrub, should_notify
from flows.cli import main
from storage.session import make_engine
from tests.helpers import free_port, mlp_ignoring, small_registry, write_drop

WEEKS = ["2014-10-27", "2014-11-03"]
TOKEN = "tok-" + uuid.uuid4().hex
BLOCK_TOKEN = "blk-" + uuid.uuid4().hex


@dataclass
class Receiver:
    """What the webhook server got: (path, headers, body) of each POST, and 5xx replies to give first."""

    port: int
    posts: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self, path: str) -> list[str]:
        return [body for p, _, body in self.posts if p.startswith(path)]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
            with state.lock:
                failing = state.fail_next > 0
                state.fail_next -= 1 if failing else 0
                if not failing:
                    state.posts.append((self.path, dict(self.headers.items()), body))
            self.send_response(503 if failing else 200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _registries(root: Path) -> tuple[Path, Path]:
    """ "moving": two different retrains (an alert); "steady": the same model and data twice (ok)."""
    moving = small_registry(root / "m", [dt.date.fromisoformat(w) for w in WEEKS]).rename(root / "moving")
    steady = root / "steady"
    model = mlp_ignoring(4, 3, seed=0)
    X = np.random.default_rng(1).normal(size=(64, 4))
    y = model.predict(X, verbose=0)[:, 0]
    for week in WEEKS:
        write_drop(steady, week, model, X=X, y=y, feature_names=["f0", "f1", "f2", "f3"])
    return moving, steady


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def _cli(args: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def alerted(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: str, receiver: Receiver
) -> Iterator[tuple[Path, list[Run], str]]:
    """A fleet of an alerting and an ok model, notified under --notify-on alert to a json:// URL
    (first answered 503) and a CustomWebhookNotificationBlock, run twice."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    tmp = tmp_path_factory.mktemp("alerts")
    moving, steady = _registries(tmp)
    block_name = f"team-hook-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="team hook",
        url=f"http://127.0.0.1:{receiver.port}/block",
        json_data={"text": "{{subject}}\n{{body}}"},
        headers={"Authorization": "Bearer {{token}}"},
        secrets={"token": BLOCK_TOKEN},
    ).save(block_name, overwrite=True)
    url = f"json://127.0.0.1:{receiver.port}/hook?+X-Token={TOKEN}"
    out = tmp / "out"
    args = ["run", "--registry", str(moving), "--registry", str(steady), "--out", str(out), "--quiet"]
    args += ["--methods", "weight_sum,permutation", "--no-email", "--notify", url, "--notify", block_name]
    args += ["--notify-on", "alert", "--report-url", "https://reports.example.com/drift"]
    receiver.fail_next = 1  # the first POST gets a 503: retried, one message arrives
    logs = _LogText()
    logging.getLogger().addHandler(logs)
    try:
        runs = [_cli(args), _cli(args)]  # the second finds nothing new and must send nothing twice
    finally:
        logging.getLogger().removeHandler(logs)
    yield out, runs, logs.text() + "".join(r.err + r.out for r in runs)


class _LogText(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)


def test_targets_and_notify_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    targets = parse_targets(["json://127.0.0.1:9/hook?+X-Token=s3cret", "team-slack"], {})
    assert [(t.label, t.kind) for t in targets] == [("json:// URL #1", "json"), ("block team-slack", "block")]
    assert "s3cret" not in repr(targets)
    with pytest.raises(AuditError, match=r"nosuch:// URL #1 is not an Apprise URL") as raised:
        parse_targets(["nosuch://host/s3cret"], {})
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in caplog.text  # Apprise logs the URL it cannot parse: kept out of the logs
    assert parse_targets(None, {"DRIFT_AUDIT_NOTIFY": "json://a/b  json://c/d"})[1].label == "json:// URL #2"
    assert [should_notify(v, "alert") for v in ("ok", "warn", "alert", "failed")] == [
        False,
        False,
        True,
        True,
    ]
    assert [should_notify(v, "warn") for v in ("ok", "warn", "alert", "first")] == [False, True, True, False]
    assert should_notify("ok", "always") and should_notify("first", "always")
    assert scrub("error for url 'http://h/x?token=abc' here") == "error for url '<url>' here"


@pytest.mark.slow
def test_one_post_per_alert_none_for_ok_a_5xx_retried_and_a_rerun_sends_nothing(
    alerted: tuple[Path, list[Run], str], receiver: Receiver
) -> None:
    out, runs, _ = alerted
    assert [r.code for r in runs] == [0, 0], runs[0].err
    hook, block = receiver.accepted("/hook"), receiver.accepted("/block")
    assert len(hook) == 1 and len(block) == 1  # one each, over both runs, after one 503
    message = json.loads(hook[0])
    assert message["title"] == "[drift-audit] ALERT: moving, week of 2014-11-03"
    assert "Moved: f" in message["message"]
    assert "Report: https://reports.example.com/drift/moving/2014-11-03/report.html" in message["message"]
    assert "steady" not in hook[0] + block[0]
    assert json.loads(block[0])["text"].startswith("[drift-audit] ALERT: moving")
    headers = next(h for p, h, _ in receiver.posts if p.startswith("/block"))
    assert headers["Authorization"] == f"Bearer {BLOCK_TOKEN}"
    with make_engine(f"sqlite:///{out / 'drift-audit.db'}").connect() as connection:
        rows = connection.execute(
            sa.text("SELECT model_name, week, verdict, target_kind, status FROM notifications ORDER BY id")
        ).all()
    sent = [tuple(map(str, r)) for r in rows if r.status == "sent"]
    assert sorted(sent) == [
        ("moving", "2014-11-03", "alert", "block", "sent"),
        ("moving", "2014-11-03", "alert", "json", "sent"),
    ]
    # the first POST (to the block: parameters before DRIFT_AUDIT_NOTIFY) got the 503, then was retried
    assert sorted(r.status for r in rows) == ["failed", "sent", "sent"]


@pytest.mark.slow
def test_the_token_is_in_no_log_report_table_or_flow_parameter(
    alerted: tuple[Path, list[Run], str], prefect_harness: str
) -> None:
    from prefect.client.orchestration import get_client

    out, _, logs = alerted
    assert "json:// URL #1" in logs or "block team-hook" in logs
    for secret in (TOKEN, BLOCK_TOKEN):
        assert secret not in logs
        for path in out.rglob("*.html"):
            assert secret not in path.read_text(encoding="utf-8"), path
    engine = make_engine(f"sqlite:///{out / 'drift-audit.db'}")
    with engine.connect() as connection:
        tables = sa.inspect(engine).get_table_names()
        dump = "".join(
            str(row) for name in tables for row in connection.execute(sa.text(f"SELECT * FROM {name}"))
        )
        flow_run_ids = set(connection.execute(sa.text("SELECT flow_run_id FROM audit_runs")).scalars())
    assert TOKEN not in dump and BLOCK_TOKEN not in dump
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            parameters = json.dumps(client.read_flow_run(uuid.UUID(flow_run_id)).parameters, default=str)
            assert TOKEN not in parameters and "json://" not in parameters


@pytest.mark.slow
def test_a_verdict_event_per_model_is_read_back_from_the_api(
    alerted: tuple[Path, list[Run], str], prefect_harness: str
) -> None:
    from prefect.client.orchestration import get_client

    wanted = {"drift-audit.model.moving", "drift-audit.model.steady"}
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            response = client.request(
                "POST",
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": ["drift-audit.verdict"]},
                        "resource": {"id": sorted(wanted)},
                        "occurred": {"since": "2020-01-01T00:00:00Z"},
                    },
                    "limit": 50,
                },
            )
        events = response.json()["events"]
        if {e["resource"]["prefect.resource.id"] for e in events} >= wanted:
            break
        time.sleep(1)
    by_model = {e["resource"]["prefect.resource.id"]: e["payload"] for e in events}
    assert set(by_model) >= wanted
    assert by_model["drift-audit.model.moving"]["verdict"] == "alert"
    assert by_model["drift-audit.model.moving"]["changed_features"]
    assert by_model["drift-audit.model.steady"]["verdict"] == "ok"
    assert by_model["drift-audit.model.steady"]["week"] == "2014-11-03"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_dead_endpoint_keeps_the_audit_logs_a_failed_row_and_exits_1(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, [dt.date.fromisoformat(WEEKS[0])])
    out = tmp_path / "out"
    dead = f"json://127.0.0.1:{free_port()}/hook?+X-Token={TOKEN}"
    args = ["run", "--registry", str(registry), "--out", str(out), "--methods", "weight_sum", "--quiet"]
    run = _cli([*args, "--no-email", "--notify", dead, "--notify-on", "always"])
    assert run.code == 1
    last = run.err.strip().splitlines()
    assert last[-1].startswith("drift-audit: error: report written to ")
    assert "notification to json:// URL #1 failed: json:// URL #1 did not take the message" in last[-1]
    assert TOKEN not in run.err + run.out
    with make_engine(f"sqlite:///{out / 'drift-audit.db'}").connect() as connection:
        runs = connection.execute(sa.text("SELECT status FROM audit_runs")).scalars().all()
        rows = connection.execute(sa.text("SELECT verdict, status, error FROM notifications")).all()
    assert runs == ["succeeded"]
    assert rows and {(r.verdict, r.status) for r in rows} == {("first", "failed")}
    assert all(TOKEN not in (r.error or "") for r in rows)
