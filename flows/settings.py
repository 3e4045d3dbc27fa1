"""What one audit run is asked to do, grouped: the settings objects the CLI builds and the flow unpacks.

The `weekly_audit` flow keeps flat parameters (``registry``, ``out_dir``, ``week``, ``email_to``, ...):
deployments name them in prefect.yaml and ``prefect deployment run --param KEY=VALUE``. Each group's
field names are the flow's parameter names, so `AuditRequest.flow_parameters` is the one place that
maps the groups onto the flow, and the flow builds the same groups from its parameters
(tests/test_settings.py checks every field is a flow parameter of the same default).

Nothing secret lives here: all of it becomes flow parameters, which Prefect stores with the run. The
database URL reaches the flow through the environment or a Secret block (`flows.database`), and the
SMTP server and login through the environment or an e-mail block (`flows.delivery`).

This module imports no Prefect and no TensorFlow: the command line checks a request with it before
anything heavy is loaded (`flows.preflight`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from audit.schedule import D, drops_in_range
from audit.types import AuditError

#: Where `drift-audit run` writes its reports (and, by default, its SQLite database).
DEFAULT_OUT_DIR = "drift-audit-output"
#: Alert targets kept out of flow parameters, whitespace-separated (`flows.alerts`).
NOTIFY_ENV = "DRIFT_AUDIT_NOTIFY"
#: Task runners the command line offers (`flows.runners`).
RUNNER_KINDS = ("default", "dask")


@dataclass(frozen=True)
class DropScope:
    """Which drops of the registry a run audits.

    All unset: every drop without current figures. `week`: only that drop, replacing its figures.
    `from_week`/`to_week`: the drops dated in that range (both included; None: open-ended) without
    current figures, or all of them with `redo` (a backfill).
    """

    week: dt.date | None = None
    from_week: dt.date | None = None
    to_week: dt.date | None = None
    redo: bool = False

    def drops(self, drops: tuple[D, ...]) -> tuple[D, ...]:
        """The drops of this scope among `drops` (oldest first), before the database is asked which
        already have figures; an `AuditError` naming the registry's drops when none matches."""
        if self.week is not None and (self.from_week is not None or self.to_week is not None):
            raise AuditError("pass either one week to re-audit or a range (from/to), not both")
        if self.week is None:
            return drops_in_range(drops, self.from_week, self.to_week)
        chosen = tuple(drop for drop in drops if drop.week == self.week)
        if not chosen:
            weeks = ", ".join(d.week.isoformat() for d in drops) or "none"
            raise AuditError(f"no drop for week {self.week.isoformat()} in the registry (drops: {weeks})")
        return chosen


@dataclass(frozen=True)
class MethodOptions:
    """How each drop is audited: which methods (None: every registered one), their seed, and how
    model files may be loaded."""

    methods: tuple[str, ...] | None = None
    random_state: int = 0
    trust_model_code: bool = False
    custom_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmailParameters:
    """The e-mail settings a run passes as flow parameters (None: the flow reads ``DRIFT_AUDIT_*``).

    The SMTP server (``--smtp-host/-port/-security``) is not among them: the command line puts it in
    the environment, where the password's server is (`flows.delivery.resolve_delivery`).
    """

    email_to: tuple[str, ...] | None = None
    email_from: str | None = None
    smtp_block: str | None = None
    send_email: bool = True
    #: http(s) URL under which ``<out>`` is published: the e-mail links the report first (`ReportPublishing`).
    report_url: str | None = None
    #: Attach report.html to the e-mail also when `report_url` links it (always attached without one).
    attach_report: bool = False

    @property
    def publishing(self) -> ReportPublishing:
        """Where the report is published and whether the e-mail attaches it."""
        return ReportPublishing(self.report_url, attach=self.attach_report or self.report_url is None)


@dataclass(frozen=True)
class ReportPublishing:
    """Where reports are published (``--report-url``) and whether the e-mail attaches the report."""

    #: http(s) URL under which `<out>` is served; None: reports are not published.
    report_url: str | None = None
    #: Attach report.html to the e-mail (always without `report_url`, or with ``--attach-report``).
    attach: bool = True

    def link(self, week: dt.date) -> str | None:
        """The published report of `week`: ``<report_url>/<week>/report.html``."""
        if self.report_url is None:
            return None
        return f"{self.report_url.rstrip('/')}/{week.isoformat()}/report.html"


def check_report_url(report_url: str | None) -> None:
    """An `AuditError` naming the fix when `report_url` is not an http(s) URL with a host."""
    if report_url is None:
        return
    parts = urllib.parse.urlsplit(report_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in report_url):
        raise AuditError(
            f"report URL {report_url!r} is not an http(s) URL; pass where the reports are published, "
            "e.g. --report-url https://reports.example.com/drift"
        )


@dataclass(frozen=True)
class RunnerChoice:
    """Where the method tasks run (`flows.runners.task_runner`); not a flow parameter: the command
    line sets the flow's task runner with it."""

    kind: str = "default"
    #: Scheduler of a running Dask cluster (None: ``$DRIFT_AUDIT_DASK_ADDRESS``, else a local cluster).
    dask_address: str | None = None


@dataclass(frozen=True)
class SourceOptions:
    """How a remote registry is reached (README, "Where models come from"): names, never secrets.

    `mlflow_tracking_uri`: the MLflow server of an ``mlflow://`` registry (None: ``MLFLOW_TRACKING_URI``;
    one holding a password is refused). `storage_block`: a Prefect AwsCredentials / GcpCredentials
    block for ``s3://`` / ``gs://`` (None: the standard environment)."""

    mlflow_tracking_uri: str | None = None
    storage_block: str | None = None


@dataclass(frozen=True)
class FleetOptions:
    """More than one model in a run (`flows.fleet`): the registries of ``--registry`` given several
    times, a ``--fleet`` root of model registries, and whether each model is also e-mailed alone."""

    #: Every ``--registry`` when there are several (one alone is `AuditRequest.registry`).
    registries: tuple[str, ...] | None = None
    #: A folder or object-store prefix whose sub-folders are model registries.
    fleet: str | None = None
    #: E-mail each model's report as well as the digest (default: the digest replaces them).
    email_per_model: bool = False


@dataclass(frozen=True)
class AlertOptions:
    """Where verdicts are sent (`flows.alerts`): names of Prefect notification blocks, and Apprise
    URLs without a secret. The command line passes ``--notify URL`` through ``DRIFT_AUDIT_NOTIFY``
    instead: an Apprise URL carries its token, and Prefect stores flow parameters."""

    notify: tuple[str, ...] | None = None
    #: ``alert``, ``warn`` (warn or alert) or ``always``; a failed model always notifies.
    notify_on: str = "warn"


@dataclass(frozen=True)
class AuditRequest:
    """One audit run as the command line asks for it, before any of it is checked or run."""

    #: A folder, or ``s3://``, ``gs://``, ``file://``, ``mlflow://`` (`audit.sources.parse_registry`);
    #: None when the models are in `fleet` (several registries, a fleet root).
    registry: Path | str | None = None
    out_dir: Path = Path(DEFAULT_OUT_DIR)
    #: Name stored with the figures (None: the registry folder's or prefix's name, or the
    #: registered model's).
    model_name: str | None = None
    #: Name of the Prefect Secret block holding the database URL (`flows.database`); a name, not a secret.
    db_secret: str | None = None
    scope: DropScope = field(default_factory=DropScope)
    options: MethodOptions = field(default_factory=MethodOptions)
    email: EmailParameters = field(default_factory=EmailParameters)
    source: SourceOptions = field(default_factory=SourceOptions)
    #: Seconds each drop's run holds its lease without a heartbeat (None: the flow's default, 120 s).
    lease_seconds: float | None = None
    fleet: FleetOptions = field(default_factory=FleetOptions)
    alerts: AlertOptions = field(default_factory=AlertOptions)

    @property
    def registries(self) -> tuple[str, ...]:
        """Every registry named one by one (``--registry``), without the fleet root's."""
        single = () if self.registry is None else (str(self.registry),)
        return (*single, *(self.fleet.registries or ()))

    def flow_parameters(self) -> dict[str, object]:
        """The keyword arguments of the `weekly_audit` flow, as Prefect stores them (lists, strings)."""
        flat: dict[str, object] = {
            "registry": None if self.registry is None else str(self.registry),
            "out_dir": str(self.out_dir),
            "model_name": self.model_name,
            "db_secret": self.db_secret,
            "lease_seconds": self.lease_seconds,
            **_fields(self.scope),
            **_fields(self.options),
            **_fields(self.email),
            **_fields(self.source),
            **_fields(self.fleet),
            **_fields(self.alerts),
        }
        return {name: list(value) if isinstance(value, tuple) else value for name, value in flat.items()}


def _fields(group: object) -> dict[str, object]:
    """A settings group's fields by name (one level: unlike `dataclasses.asdict`, values are kept)."""
    return {item.name: getattr(group, item.name) for item in dataclasses.fields(group)}  # type: ignore[arg-type]
