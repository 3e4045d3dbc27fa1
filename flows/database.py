"""Where a run's database URL comes from, and why a URL with a password is never a flow parameter.

Prefect stores a flow run's parameters with the run (its database, API and UI) before any code of
ours runs, so a password in the ``db_url`` parameter would be kept and shown. The flow takes its
database, in this order:

1. the ``db_url`` parameter, when it holds no password (one that does is refused, `PasswordInParameter`);
   a password kept by the database client itself (``PGPASSWORD``, ``~/.pgpass``) is fine;
2. the Prefect Secret block named by the ``db_secret`` parameter (a name, not a secret);
3. ``DRIFT_AUDIT_DB_URL`` in the environment of the process that runs the flow: the worker's for a
   deployment; ``drift-audit run --db URL`` puts its URL there for the flow it runs in-process;
4. a SQLite file ``<out_dir>/drift-audit.db``.

``db_url`` and ``db_secret`` together are an error. The URL found is only ever shown with its
password replaced by ``***`` (`redacted`).

Light on purpose: the command line imports it at start-up, so SQLAlchemy is imported when a URL is
first looked at (`parse`) and Prefect only to read a Secret block.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from audit.types import AuditError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: The environment variable that holds the database URL of a worker (or of `drift-audit` commands).
DB_URL_ENV = "DRIFT_AUDIT_DB_URL"
#: Prefect block names: lowercase letters, digits and dashes (`prefect.types.names`).
BLOCK_NAME = re.compile(r"[a-z0-9-]+")
#: Query keys that carry a password (libpq ``password``, ``sslpassword``; MySQL ``passwd``; ODBC ``pwd``).
_PASSWORD_KEYS = re.compile(r".*password|passwd|pwd", re.IGNORECASE)
#: ``scheme://user:password@`` in a string SQLAlchemy cannot parse.
_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")

SecretLoader = Callable[[str], str]


class PasswordInParameter(AuditError):
    """A ``db_url`` flow parameter holds a password (Prefect stores parameters with the run)."""


def default_db_url(out_dir: str | Path) -> str:
    """The default database: a SQLite file next to the reports."""
    return f"sqlite:///{Path(out_dir).resolve() / 'drift-audit.db'}"


def flow_database_url(
    db_url: str | None,
    db_secret: str | None,
    out_dir: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    load_secret: SecretLoader | None = None,
) -> str:
    """The database URL of a flow run from its parameters, the Secret block and the environment
    (see the module docstring for the order); its form is checked (`check_url`)."""
    env = os.environ if environ is None else environ
    if db_url and db_secret:
        raise AuditError(
            "the flow parameters db_url and db_secret are both set; pass one (db_secret for a URL "
            "with a password)"
        )
    if db_url:
        if has_password(db_url):
            raise PasswordInParameter(
                f"the flow parameter db_url {redacted(db_url)} holds a password, and Prefect stores flow "
                f"parameters with the run: set {DB_URL_ENV} in the worker's environment or save the URL "
                "in a Prefect Secret block and pass its name as db_secret (then change that password)"
            )
        url, origin = db_url, "the flow parameter db_url"
    elif db_secret:
        url = (load_secret or load_secret_url)(db_secret)
        origin = f"the Prefect Secret block {db_secret!r}"
    elif env.get(DB_URL_ENV):
        url, origin = env[DB_URL_ENV], DB_URL_ENV
    else:
        return default_db_url(out_dir)
    check_url(url, origin)
    return url


def command_database_url(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The database URL of a `drift-audit` command: ``--db``, else ``DRIFT_AUDIT_DB_URL`` (None: neither)."""
    env = os.environ if environ is None else environ
    return option or env.get(DB_URL_ENV) or None


def parse(url: str) -> URL | None:
    """`url` parsed by SQLAlchemy (None: it cannot be parsed)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        return None


def has_password(url: str) -> bool:
    """Whether `url` carries a password: ``user:password@``, or a ``password=`` query key."""
    parsed = parse(url)
    if parsed is None:
        return _USERINFO_PASSWORD.search(url) is not None
    return bool(parsed.password) or any(_PASSWORD_KEYS.fullmatch(key) for key in parsed.query)


def redacted(url: str) -> str:
    """`url` with its password (and any password query value) replaced by ``***``, for messages."""
    parsed = parse(url)
    if parsed is None:
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    hidden = {key: "***" for key in parsed.query if _PASSWORD_KEYS.fullmatch(key)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def check_url(url: str, origin: str = "--db") -> URL:
    """`url` parsed, with its dialect and driver loadable (nothing is connected); an `AuditError`
    naming `origin` (where the URL came from) and the fix otherwise. Never shows the password."""
    from sqlalchemy.exc import ArgumentError

    parsed = parse(url)
    if parsed is None:
        raise AuditError(
            f"{origin}: {redacted(url)!r} is not a SQLAlchemy URL; e.g. sqlite:///audit.db or "
            "postgresql+psycopg://user@host/db"
        )
    try:
        dialect = parsed.get_dialect()
    except ArgumentError:  # NoSuchModuleError: an unknown dialect or driver name
        raise AuditError(
            f"{origin}: {redacted(url)}: SQLAlchemy has no database type {parsed.drivername!r}; "
            "use e.g. sqlite:///path or postgresql+psycopg://user@host/db"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise AuditError(
            f"{origin}: {redacted(url)}: its driver is not installed ({error}); install it or use "
            "postgresql+psycopg:// (psycopg 3, installed)"
        ) from None
    return parsed


def check_block_name(name: str, option: str) -> None:
    """A Prefect block name can only hold lowercase letters, digits and dashes: say so before Prefect does."""
    if not BLOCK_NAME.fullmatch(name):
        raise AuditError(
            f"{option} {name!r} is not a Prefect block name (lowercase letters, digits and dashes only)"
        )


def load_secret_url(name: str) -> str:
    """The URL kept in the Prefect Secret block `name` (the Prefect API of the run is asked)."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()  # type: ignore[union-attr]
    except (ValueError, OSError) as error:
        raise AuditError(
            f"cannot load the Prefect Secret block {name!r} ({' '.join(str(error).split())}); create it "
            f"(see README) or fix db_secret / --db-secret"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise AuditError(
            f"the Prefect Secret block {name!r} does not hold a database URL (a string); save it with "
            "Secret(value='postgresql+psycopg://user:password@host/db').save(name)"
        )
    return value.strip()
