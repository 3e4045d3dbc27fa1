"""prefect.yaml deploys the real flow on a valid weekly schedule."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import yaml
from cronsim import CronSim
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import Flow

ROOT = Path(__file__).resolve().parents[1]


def _deployment() -> dict[str, object]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    (deployment,) = [d for d in config["deployments"] if d["name"] == "weekly-drift-audit"]
    return deployment


def test_entrypoint_is_the_weekly_audit_flow() -> None:
    path, name = str(_deployment()["entrypoint"]).split(":")
    assert (ROOT / path).is_file()
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow) and flow.name == "weekly-audit"
    parameters = _deployment()["parameters"]
    assert isinstance(parameters, dict) and set(parameters) <= set(flow.parameters.properties)


def test_schedule_is_monday_six_in_a_real_timezone() -> None:
    (schedule,) = _deployment()["schedules"]  # type: ignore[misc]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.timezone == schedule["timezone"]
    start = dt.datetime(2026, 11, 18, 12, 0)  # a Wednesday
    assert next(CronSim(cron.cron, start)) == dt.datetime(2026, 11, 23, 6, 0)  # next Monday, 06:00


def test_every_required_flow_parameter_has_a_value() -> None:
    path, name = str(_deployment()["entrypoint"]).split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    parameters = _deployment()["parameters"]
    assert isinstance(parameters, dict)
    missing = set(flow.parameters.required or ()) - {k for k, v in parameters.items() if v is not None}
    assert not missing, f"prefect.yaml leaves required flow parameters unset: {sorted(missing)}"
