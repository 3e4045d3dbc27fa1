"""The heartbeat of a running audit: a thread that renews its run's lease while the drop is audited.

Why a thread rather than a renewal after each method: one method on a large model can take longer
than any lease worth having (permutation importance with many repeats, integrated gradients on long
sequences), and the method tasks run concurrently on the task runner (threads, or Dask workers
that have no database connection of the run). A thread renews every `heartbeat_interval` seconds
(a quarter of the lease) whatever the audit is doing, and dies with the process: ``kill -9``, an
out-of-memory kill or a lost machine stop it, and the lease runs out (storage.leases).

What it cannot see: a process that is alive but stuck (a deadlocked method) keeps renewing. That
run stays ``running`` until its process is stopped; Prefect's own flow-run timeouts are the tool
for that.

A renewal that fails (the database unreachable for a moment) is logged and tried again at the next
beat: the lease survives three missed beats.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.leases import heartbeat_interval, renew_lease

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def heartbeat(
    engine: Engine,
    run_id: int,
    lease_seconds: float,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> Iterator[None]:
    """Renew the lease of `run_id` every `heartbeat_interval(lease_seconds)` seconds inside the block.

    The thread is a daemon (it never keeps a finishing process alive) and is stopped and joined when
    the block ends, before the run's final status is written by the caller.
    """
    log = logger or _LOG
    stop = threading.Event()
    interval = heartbeat_interval(lease_seconds)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with Session(engine) as session, session.begin():
                    if not renew_lease(session, run_id):
                        return  # finished, or marked interrupted by another run: nothing to hold
            except Exception as error:  # the next beat tries again; three may fail within a lease
                log.warning("run %d: lease not renewed: %s", run_id, " ".join(str(error).split()))

    thread = threading.Thread(target=beat, name=f"drift-audit-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
