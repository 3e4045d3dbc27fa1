"""`drift-audit run` and `backfill` check their settings before Prefect starts (flows/preflight.py).

Each case runs the real command line in a fresh Python process and reports, after `main` returns,
its exit status, the time `main` took and whether Prefect or the flow module was ever imported.
The process's Prefect API points at an unroutable address (TEST-NET-1): a flow run could neither
start a temporary server nor reach one, so a check that answers in a second with the flow and
Prefect never imported answered before any server could have started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.types import AuditError
from flows.preflight import check_dask_address, check_request
from flows.settings import AuditRequest, DropScope, EmailParameters, MethodOptions, RunnerChoice

ROOT = Path(__file__).resolve().parents[1]
#: Runs `flows.cli.main` on the arguments and prints what the test needs to know, after it returned.
PROBE = """
import json, sys
from flows.cli import main
code = main(sys.argv[1:])
imported = {name: name in sys.modules for name in ("prefect", "flows.weekly_audit", "tensorflow")}
print("PROBE " + json.dumps({"code": code, **imported}))
"""


@dataclass(frozen=True)
class Probe:
    code: int
    prefect: bool
    flow: bool
    tensorflow: bool
    errors: list[str]


def _cli(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> Probe:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFT_AUDIT_"))}
    environment.update(
        PREFECT_API_URL="http://192.0.2.1:9/api",  # unroutable: no server is started, none answers
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        **(env or {}),
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    probe_lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert probe_lines, f"main did not return:\n{result.stdout}\n{result.stderr}"
    report = json.loads(probe_lines[-1].removeprefix("PROBE "))
    errors = [line for line in result.stderr.splitlines() if line.startswith("drift-audit:")]
    return Probe(
        report["code"], report["prefect"], report["flows.weekly_audit"],
        report["tensorflow"], errors,
    )  # fmt: skip


def _assert_answered_before_prefect(probe: Probe, message: str) -> None:
    assert probe.code == 1
    assert probe.errors == [f"drift-audit: error: {message}"] or (
        len(probe.errors) == 1 and probe.errors[0].startswith(f"drift-audit: error: {message}")
    ), probe.errors
    # What makes the answer fast: neither Prefect nor the flow was imported, so no server started. The
    # time itself (0.26-0.32 s against 25-46 s before) is measured in docs/reliability.md, not timed
    # here: on a loaded 2-core machine the interpreter's start alone passed any fixed limit.
    assert not probe.prefect and not probe.flow, "the flow (and Prefect) was imported: a server could start"


def test_a_missing_registry_answers_at_once_without_prefect(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    probe = _cli(tmp_path, "run", "--registry", str(missing), "--quiet")
    _assert_answered_before_prefect(
        probe, f"registry {missing} does not exist; pass the folder that holds the drops"
    )
    assert not probe.tensorflow


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry folder without drops: every check but the week's passes on it."""
    folder = tmp_path / "registry"
    folder.mkdir()
    return folder


#: id -> (options after ``run --registry <empty folder>``, environment, the error line's start)
BAD_OPTIONS: dict[str, tuple[list[str], dict[str, str], str]] = {
    "week": (["--week", "2024-05-06"], {}, "no drop for week 2024-05-06 in the registry (drops: none)"),
    "out-file": (["--out", "{file}"], {}, "--out {file} is a file; pass a folder for the reports"),
    "out-in-file": (["--out", "{file}/reports"], {}, "--out {file}/reports is inside {file}, a file"),
    "db-form": (["--db", "not a url"], {}, "--db: 'not a url' is not a SQLAlchemy URL"),
    "db-driver": (
        ["--db", "oracle+nodriver://u@h/db"],
        {},
        "--db: oracle+nodriver://u@h/db: SQLAlchemy has no database type",
    ),
    "db-not-installed": (
        ["--db", "postgresql+psycopg2://u:hunter2@h/db"],
        {},
        "--db: postgresql+psycopg2://u:***@h/db: its driver is not installed",
    ),
    "db-env": (
        [],
        {"DRIFT_AUDIT_DB_URL": "mysql+nosuch://u:hunter2@h/db"},
        "DRIFT_AUDIT_DB_URL: mysql+nosuch://u:***@h/db: SQLAlchemy has no database type",
    ),
    "db-secret-name": (["--db-secret", "Prod DB"], {}, "--db-secret 'Prod DB' is not a Prefect block name"),
    "email-to": (
        ["--email-to", "team-at-example.com"],
        {},
        "--email-to 'team-at-example.com' is not an e-mail address",
    ),
    "email-from": (
        ["--email-from", "a@b.org, c@d.org"],
        {},
        "--email-from 'a@b.org, c@d.org' is not one e-mail address",
    ),
    "email-env": (
        [],
        {"DRIFT_AUDIT_EMAIL_TO": "ok@example.com,broken"},
        "DRIFT_AUDIT_EMAIL_TO 'broken' is not an e-mail address",
    ),
    "smtp-block": (["--smtp-block", "My_Block"], {}, "--smtp-block 'My_Block' is not a Prefect block name"),
    "custom-module": (
        ["--custom-module", "no_such_team.layers"],
        {},
        "--custom-module no_such_team.layers: no such module",
    ),
    "dask-form": (
        ["--task-runner", "dask", "--dask-address", "scheduler"],
        {},
        "--dask-address 'scheduler' is not a Dask scheduler address",
    ),
    "dask-env": (
        ["--task-runner", "dask"],
        {"DRIFT_AUDIT_DASK_ADDRESS": "http://s:8786"},
        "DRIFT_AUDIT_DASK_ADDRESS 'http://s:8786' is not a Dask scheduler address",
    ),
    "dask-without-runner": (
        ["--dask-address", "tcp://s:8786"],
        {},
        "--dask-address tcp://s:8786 needs --task-runner dask",
    ),
}


@pytest.mark.parametrize(("options", "env", "message"), list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_each_bad_option_is_one_line_before_prefect(
    tmp_path: Path, registry: Path, options: list[str], env: dict[str, str], message: str
) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    argv = [option.replace("{file}", str(file)) for option in options]
    probe = _cli(tmp_path, "run", "--registry", str(registry), "--quiet", *argv, env=env)
    _assert_answered_before_prefect(probe, message.replace("{file}", str(file)))
    assert "hunter2" not in probe.errors[0]  # a URL's password is never shown


def test_a_backfill_range_without_drops_and_a_registry_that_is_a_file(tmp_path: Path, registry: Path) -> None:
    probe = _cli(tmp_path, "backfill", "--registry", str(registry), "--from", "2024-05-06", "--quiet")
    _assert_answered_before_prefect(
        probe, "no drop from 2024-05-06 to the last drop in the registry (drops: none)"
    )
    file = tmp_path / "registry.txt"
    file.write_text("")
    probe = _cli(tmp_path, "run", "--registry", str(file), "--quiet")
    _assert_answered_before_prefect(
        probe, f"registry {file} is not a folder; pass the folder that holds the drops"
    )


def test_a_method_name_typo_answers_after_the_method_registry_but_before_prefect(
    tmp_path: Path, registry: Path
) -> None:
    probe = _cli(tmp_path, "run", "--registry", str(registry), "--methods", "permutaton", "--quiet")
    assert probe.code == 1 and len(probe.errors) == 1
    assert probe.errors[0].startswith("drift-audit: error: unknown method(s) permutaton; available: ")
    assert "permutation" in probe.errors[0]
    assert not probe.prefect and not probe.flow
    assert probe.tensorflow  # the method registry imports TensorFlow: the flow's first import anyway


def test_no_email_skips_the_address_checks_and_db_options_exclude_each_other(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = AuditRequest(registry=registry, email=EmailParameters(email_to=("broken",), send_email=False))
    check_request(request, RunnerChoice(), None, environ={"DRIFT_AUDIT_EMAIL_TO": "also broken"})
    from flows.cli import main

    with pytest.raises(SystemExit) as usage:
        main(["run", "--registry", str(registry), "--db", "sqlite:///a.db", "--db-secret", "drift-db"])
    assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_good_settings_pass_every_check(tmp_path: Path, registry: Path) -> None:
    request = AuditRequest(
        registry=registry,
        out_dir=tmp_path / "new" / "reports",  # created by the run: its nearest folder is writable
        db_secret="drift-db",
        scope=DropScope(),
        options=MethodOptions(methods=("weight_sum", "permutation"), custom_modules=("json.decoder",)),
        email=EmailParameters(email_to=("Team <team@example.com>",), email_from="bot@example.com"),
    )
    environ = {"DRIFT_AUDIT_DASK_ADDRESS": "tls://scheduler.example:8786"}
    check_request(request, RunnerChoice("dask"), None, environ=environ)
    without_secret = dataclasses.replace(request, db_secret=None)
    check_request(without_secret, RunnerChoice(), "postgresql+psycopg://auditor:pw@db/drift", environ={})
    for address in ("tcp://10.0.0.5:8786", "scheduler:8786", "inproc://worker", "tcp://[::1]:8786"):
        check_dask_address(address, "--dask-address")
    for address in ("tcp://s:0", "tcp://s:port", "s", "tcp://:8786", "grpc://s:8786"):
        with pytest.raises(AuditError, match="is not a Dask scheduler address"):
            check_dask_address(address, "--dask-address")
