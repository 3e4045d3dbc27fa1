"""The settings objects between the command line and the flow, and where the database URL comes from.

No Prefect server: the flow's parameter schema is read from the flow object, and the database URL is
resolved from an environment given as a mapping (the end-to-end runs are in tests/test_db_secrets.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from pathlib import Path

import pytest

from audit.types import AuditError, DriftConfig, Drop
from flows.database import (
    DB_URL_ENV,
    PasswordInParameter,
    check_url,
    default_db_url,
    flow_database_url,
    has_password,
    redacted,
)
from flows.settings import (
    AlertOptions,
    AuditRequest,
    DropScope,
    EmailParameters,
    FleetOptions,
    MethodOptions,
    SourceOptions,
)
from flows.weekly_audit import DropAudit, DropOutcome, WeekComparison, _failure_message, weekly_audit

W1, W2, W3 = dt.date(2026, 3, 2), dt.date(2026, 3, 9), dt.date(2026, 3, 16)
PASSWORD = "n0t-In-Any-L0g"
PG_WITH_PASSWORD = f"postgresql+psycopg://auditor:{PASSWORD}@db.example/drift"


def _drops(*weeks: dt.date) -> tuple[Drop, ...]:
    return tuple(
        Drop(
            week=w,
            path=Path(f"/r/{w}"),
            model_path=Path(f"/r/{w}/model.keras"),
            eval_paths=(),
            config_path=None,
        )
        for w in weeks
    )


# --- the request and the flow's parameters ---------------------------------------------------------


def test_every_group_field_is_a_flow_parameter_with_the_same_default() -> None:
    signature = inspect.signature(weekly_audit.fn)
    groups = (
        DropScope(),
        MethodOptions(),
        EmailParameters(),
        SourceOptions(),
        FleetOptions(),
        AlertOptions(),
    )
    for group in groups:
        for item in dataclasses.fields(group):
            assert item.name in signature.parameters, (
                f"{type(group).__name__}.{item.name} is no flow parameter"
            )
            default, value = signature.parameters[item.name].default, getattr(group, item.name)
            # an empty tuple is the flow's None (`custom_modules`: `tuple(custom_modules or ())`)
            assert (value or None if isinstance(value, tuple) else value) == default, item.name
    request = AuditRequest(registry=Path("r"))
    assert set(request.flow_parameters()) <= set(signature.parameters)
    assert signature.parameters["out_dir"].default == str(request.out_dir)


def test_flow_parameters_are_flat_lists_and_strings_without_a_database_url() -> None:
    request = AuditRequest(
        registry=Path("/data/registry"),
        out_dir=Path("/data/out"),
        model_name="churn",
        db_secret="drift-db",
        scope=DropScope(from_week=W1, to_week=W3, redo=True),
        options=MethodOptions(methods=("weight_sum",), random_state=3, custom_modules=("team.layers",)),
        email=EmailParameters(email_to=("a@example.com",), send_email=False),
    )
    parameters = request.flow_parameters()
    assert parameters == {
        "registry": "/data/registry",
        "out_dir": "/data/out",
        "model_name": "churn",
        "db_secret": "drift-db",
        "lease_seconds": None,
        "week": None,
        "from_week": W1,
        "to_week": W3,
        "redo": True,
        "methods": ["weight_sum"],
        "random_state": 3,
        "trust_model_code": False,
        "custom_modules": ["team.layers"],
        "email_to": ["a@example.com"],
        "email_from": None,
        "smtp_block": None,
        "send_email": False,
        "report_url": None,
        "attach_report": False,
        "mlflow_tracking_uri": None,
        "storage_block": None,
        "registries": None,
        "fleet": None,
        "email_per_model": False,
        "notify": None,
        "notify_on": "warn",
    }
    assert "db_url" not in parameters  # the command line passes it through the environment


def test_a_scope_picks_its_drops_or_names_the_registrys() -> None:
    drops = _drops(W1, W3)
    assert DropScope().drops(drops) == drops
    assert DropScope(week=W3).drops(drops) == drops[1:]
    assert DropScope(from_week=W2).drops(drops) == drops[1:]
    with pytest.raises(
        AuditError, match=r"no drop for week 2026-03-09 in the registry \(drops: 2026-03-02, 2026-03-16\)"
    ):
        DropScope(week=W2).drops(drops)
    with pytest.raises(AuditError, match="not both"):
        DropScope(week=W1, to_week=W3).drops(drops)
    with pytest.raises(AuditError, match="swap the two dates"):
        DropScope(from_week=W3, to_week=W1).drops(drops)
    assert DropScope().drops(()) == ()  # an empty registry is nothing to do, not an error


# --- the result types ------------------------------------------------------------------------------


def test_outcomes_hold_a_result_or_an_error_never_both() -> None:
    with pytest.raises(ValueError, match="either"):
        DropAudit(W1)
    with pytest.raises(ValueError, match="either"):
        DropAudit(W1, drift=DriftConfig(), error="broken")
    with pytest.raises(ValueError, match="either"):
        WeekComparison(W1)
    assert DropAudit(W1, drift=DriftConfig()).failure is None
    assert DropAudit(W1, error="model file is empty").failure == "2026-03-02: model file is empty"
    assert WeekComparison(W2, error="x").failure == "2026-03-09: comparison failed: x"


def test_the_failure_message_lists_failures_in_the_order_they_happened() -> None:
    ok = DropAudit(W2, drift=DriftConfig())
    drops = [
        DropOutcome(DropAudit(W1, error="cannot load")),
        DropOutcome(ok, WeekComparison(W2, error="no stored audit")),
    ]
    later = [WeekComparison(W3, error="locked")]  # an earlier-audited week compared again
    assert _failure_message(_drops(W1, W2), drops, later) == (
        "3 of 3 drop(s) failed; 2026-03-02: cannot load; 2026-03-09: comparison failed: no stored audit; "
        "2026-03-16: comparison failed: locked"
    )
    assert _failure_message(_drops(W2), [DropOutcome(ok)], []) is None


# --- where the database URL comes from -------------------------------------------------------------


def test_the_database_url_precedence(tmp_path: Path) -> None:
    env_url, param_url, secret_url = "sqlite:///env.db", "sqlite:///param.db", "sqlite:///secret.db"
    secrets = {"drift-db": secret_url}
    environ = {DB_URL_ENV: env_url}

    def resolve(db_url: str | None, db_secret: str | None, env: dict[str, str]) -> str:
        return flow_database_url(db_url, db_secret, tmp_path, environ=env, load_secret=secrets.__getitem__)

    assert resolve(param_url, None, environ) == param_url  # 1. the parameter (no password)
    assert resolve(None, "drift-db", environ) == secret_url  # 2. the Secret block
    assert resolve(None, None, environ) == env_url  # 3. the environment
    assert resolve(None, None, {}) == default_db_url(tmp_path)  # 4. SQLite beside the reports
    assert default_db_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'drift-audit.db'}"
    with pytest.raises(AuditError, match="db_url and db_secret are both set"):
        resolve(param_url, "drift-db", environ)


def test_a_password_in_the_db_url_parameter_is_refused_in_one_line_saying_where_to_put_it() -> None:
    for url in (PG_WITH_PASSWORD, f"postgresql+psycopg://auditor@db/drift?password={PASSWORD}"):
        with pytest.raises(PasswordInParameter) as refused:
            flow_database_url(url, None, "out", environ={})
        message = str(refused.value)
        assert PASSWORD not in message and "\n" not in message
        assert DB_URL_ENV in message and "Secret block" in message and "db_secret" in message
    # the same URL from the environment or a Secret block is the way to pass it
    assert flow_database_url(None, None, "out", environ={DB_URL_ENV: PG_WITH_PASSWORD}) == PG_WITH_PASSWORD


def test_passwords_are_found_and_redacted() -> None:
    assert has_password(PG_WITH_PASSWORD)
    assert has_password(f"postgresql+psycopg://u@h/d?sslpassword={PASSWORD}")
    assert has_password(f"not parseable://u:{PASSWORD}@h")
    assert not has_password("postgresql+psycopg://auditor@db.example/drift")
    assert not has_password("sqlite:////data/audit.db")
    assert redacted(PG_WITH_PASSWORD) == "postgresql+psycopg://auditor:***@db.example/drift"
    assert PASSWORD not in redacted(f"postgresql+psycopg://u@h/d?password={PASSWORD}&sslmode=require")
    assert redacted(f"not parseable://u:{PASSWORD}@h") == "not parseable://u:***@h"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"not a url://u:{PASSWORD}@h", "is not a SQLAlchemy URL"),
        (f"mongodb://u:{PASSWORD}@h/db", "SQLAlchemy has no database type 'mongodb'"),
        (f"postgresql+nodriver://u:{PASSWORD}@h/db", "no database type 'postgresql+nodriver'"),
        (
            f"postgresql+psycopg2://u:{PASSWORD}@h/db",
            "its driver is not installed (No module named 'psycopg2')",
        ),
    ],
)
def test_a_bad_url_form_is_one_line_without_the_password(url: str, message: str) -> None:
    with pytest.raises(AuditError) as error:
        check_url(url, "--db")
    text = str(error.value)
    assert text.startswith("--db: ") and message in text
    assert PASSWORD not in text and "\n" not in text
