"""Checks of a command line's settings that need no Prefect, run before the flow starts.

`drift-audit run` runs the flow in-process, and with no Prefect server configured Prefect first
starts a temporary one (20-50 s on a small, busy machine). Everything that can be judged without it
is judged here first, cheapest first, so a typo answers within the command's own start-up: the
registry (a folder, or a remote registry listed from metadata) and the drop of ``--week`` (or the
``backfill`` range), ``--out``, the custom
modules, the e-mail addresses, the Dask scheduler's address, the database URL's form and the
Prefect block names, and last the method names (they need the method registry, which imports
TensorFlow, the flow's first import anyway).

Each failing check raises an `AuditError`: one line naming the option, the value and the fix. The
flow keeps its own checks: a deployment run does not go through the command line.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from audit.types import AuditError
from flows.database import DB_URL_ENV, check_block_name, check_url
from flows.settings import RUNNER_KINDS, AuditRequest, EmailParameters, RunnerChoice, check_report_url
from flows.sources import SourceDrop

#: Environment variables of the e-mail addresses (`flows.delivery` reads them in the flow).
_ADDRESS_ENVIRONMENT = {"--email-to": "DRIFT_AUDIT_EMAIL_TO", "--email-from": "DRIFT_AUDIT_EMAIL_FROM"}
#: Environment variable of the Dask scheduler (`flows.runners.DASK_ADDRESS_ENV`, not imported: Prefect).
_DASK_ADDRESS_ENV = "DRIFT_AUDIT_DASK_ADDRESS"
#: The address schemes Dask's ``distributed`` connects with.
_DASK_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_request(
    request: AuditRequest,
    runner: RunnerChoice,
    db_option: str | None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Everything about `request` that can be checked before Prefect starts (see the module
    docstring). `db_option` is ``--db``; without it (and without ``--db-secret``) the flow reads
    ``DRIFT_AUDIT_DB_URL`` from `environ`, which is checked instead."""
    env = os.environ if environ is None else environ
    if check_fleet(request):
        drops = check_registry(request)  # a folder that exists, or a remote registry that answers
        if drops is not None:
            request.scope.drops(drops)  # --week has a drop; a backfill range holds drops
    check_out_dir(request.out_dir)
    check_custom_modules(request.options.custom_modules)
    check_email(request.email, env)
    check_report_url(request.email.report_url)
    check_runner(runner, env)
    if request.db_secret is not None:
        check_block_name(request.db_secret, "--db-secret")
    elif db_option:
        check_url(db_option, "--db")
    elif env.get(DB_URL_ENV):
        check_url(env[DB_URL_ENV], DB_URL_ENV)
    if request.options.methods is not None:
        chosen_methods(request.options.methods)


def check_fleet(request: AuditRequest) -> bool:
    """The models of the request (`flows.fleet.resolve_fleet`: ``--model-name`` with several
    registries, two models of one name, a fleet root without model folders are usage errors);
    True for a single registry, whose drops are then checked here.

    A fleet's registries are not listed here: one model's unreadable registry or missing week is
    that model's failure in the run (the others are audited, the digest lists it), not a refusal.
    """
    from flows.fleet import resolve_fleet

    source = request.source
    if source.storage_block is not None:
        check_block_name(source.storage_block, "--storage-block")
    fleet_root = request.fleet.fleet
    if fleet_root is not None and "://" in fleet_root and source.storage_block is not None:
        return False  # the root is listed with the block's credentials, in the flow
    return not resolve_fleet(request.registries, fleet_root, request.model_name).is_fleet


def check_registry(request: AuditRequest) -> tuple[SourceDrop, ...] | None:
    """The drops of the registry, listed from metadata (a folder's, or a remote registry's: an
    unreachable store, wrong credentials or an unknown model answer here, in one line). A URI holding
    a password is refused before Prefect stores it as a parameter. None when the listing needs the
    flow: a Prefect credentials block (``--storage-block``), or the database (``mlflow://name@alias``)."""
    from audit.sources import parse_registry, refuse_password
    from flows.sources import source_for

    location = parse_registry(str(request.registry))
    source = request.source
    if source.mlflow_tracking_uri is not None:
        refuse_password(source.mlflow_tracking_uri, "--mlflow-tracking-uri")
    if source.storage_block is not None:
        check_block_name(source.storage_block, "--storage-block")
        return None
    if location.alias is not None:
        return None
    found = source_for(str(request.registry), mlflow_tracking_uri=source.mlflow_tracking_uri)
    return found.list_drops().drops


def check_out_dir(out_dir: Path) -> None:
    """`out_dir` is a folder that can be written, or can be created where the nearest existing
    folder above it can be written."""
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == out_dir.absolute() else f"is inside {existing}, a file"
        raise AuditError(f"--out {out_dir} {where}; pass a folder for the reports")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AuditError(
            f"--out {out_dir}: cannot write in {existing} (permission denied); pass a folder you can write"
        )


def check_custom_modules(names: Sequence[str]) -> None:
    """Each ``--custom-module`` can be found in this environment (found, not imported: importing it
    loads Keras, and the loader imports it in the flow)."""
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is missing, or a malformed name
            found = False
        if not found:
            raise AuditError(
                f"--custom-module {name}: no such module in this Python environment; install the package "
                "that defines your layers or fix the name (a dotted import path, e.g. team.layers)"
            )


def check_email(email: EmailParameters, environ: Mapping[str, str]) -> None:
    """The recipients and the sender, from the options or their environment variables, are e-mail
    addresses; the e-mail block's name is a block name. Nothing is checked with ``--no-email``."""
    if not email.send_email:
        return
    given = {
        "--email-to": email.email_to,
        "--email-from": None if email.email_from is None else (email.email_from,),
    }
    for option, values in given.items():
        variable = _ADDRESS_ENVIRONMENT[option]
        if values is None:
            values, option = tuple(a for a in environ.get(variable, "").split(",") if a.strip()), variable
        if values:
            from reports.email import parse_address  # reports.email draws charts: only when needed

            for value in values:
                parse_address(value, what=option)
    if email.smtp_block is not None:
        check_block_name(email.smtp_block, "--smtp-block")


def check_runner(runner: RunnerChoice, environ: Mapping[str, str]) -> None:
    """A known task runner, and a Dask scheduler address of the form ``tcp://host:port``."""
    if runner.kind not in RUNNER_KINDS:
        raise AuditError(f"unknown task runner {runner.kind!r}; use one of {', '.join(RUNNER_KINDS)}")
    if runner.kind == "default":
        if runner.dask_address:
            raise AuditError(f"--dask-address {runner.dask_address} needs --task-runner dask")
        return
    if runner.dask_address:
        check_dask_address(runner.dask_address, "--dask-address")
    elif environ.get(_DASK_ADDRESS_ENV):
        check_dask_address(environ[_DASK_ADDRESS_ENV], _DASK_ADDRESS_ENV)


def check_dask_address(address: str, option: str) -> None:
    """``[scheme://]host:port`` with a scheme Dask knows and a port number (``inproc://`` needs none)."""
    scheme, separator, location = address.partition("://")
    if not separator:
        scheme, location = "tcp", address
    host, colon, port = location.rpartition(":")
    fits = scheme in _DASK_SCHEMES and (
        scheme == "inproc" or (bool(colon) and bool(host) and port.isdigit() and 1 <= int(port) <= 65535)
    )
    if not fits:
        raise AuditError(
            f"{option} {address!r} is not a Dask scheduler address; give scheme, host and port, e.g. "
            "tcp://scheduler:8786"
        )


def chosen_methods(methods: Sequence[str] | None) -> list[str]:
    """The names of the methods to run (None: every registered one); an `AuditError` naming the fix
    for an unknown name or an empty list. Imports the method registry (and with it TensorFlow)."""
    if methods is not None and not methods:
        raise AuditError(
            "no method to run: name at least one (e.g. --methods permutation) or omit it for all"
        )
    from audit.runner import select_methods

    return [spec.name for spec in select_methods(methods)]
