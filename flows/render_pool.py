"""Draw reports in a process of their own while a fleet's models are audited.

Drawing a report is pure Python (matplotlib lays out and rasterises about 33 charts for a model
with every method: 3 s on these machines), so in the flow's process it holds the interpreter lock
that the method tasks' own Python (TensorFlow's op dispatch, Prefect's task engine) needs. A fleet
renders one report per model while the next models compute, so there it is drawn in one spawned
process instead: `render_outputs` only reads its `ReportInput` and returns bytes and strings, and
both cross a process boundary as a pickle. That process imports `reports` only (about 1.4 s, no
TensorFlow), once per fleet run. A single model renders in the flow's process, where a second
process would only add its start-up.

`rendering_in_process_pool()` opens the pool for the block (a context variable, so the fleet's model
threads, started inside it with a copy of the context, see it); `render` draws through it when one
is open, else in the calling process. A pool whose process died (killed, out of memory) is not
retried: that report, and every later one of the run, is drawn in the flow's process, with a
warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from audit.types import ReportInput
from reports.render import render_outputs
from reports.rendered import RenderedReport

#: Processes that draw reports: one keeps a 2-core machine's second core busy beside the flow's
#: process; the flow's own thread pool decides how many reports wait for it.
RENDER_PROCESSES = 1


@dataclass
class _RenderPool:
    """An open pool, and whether it broke (then reports are drawn in the flow's process)."""

    executor: ProcessPoolExecutor
    broken: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_POOL: contextvars.ContextVar[_RenderPool | None] = contextvars.ContextVar(
    "drift_audit_render_pool", default=None
)


@contextlib.contextmanager
def rendering_in_process_pool() -> Iterator[None]:
    """Draw the reports of this block (and of threads started inside it with a copy of its context)
    in a spawned process; the process is stopped when the block ends."""
    executor = ProcessPoolExecutor(
        max_workers=RENDER_PROCESSES,
        mp_context=multiprocessing.get_context("spawn"),  # never fork a process running TensorFlow
    )
    executor.submit(_warm_up)  # its imports overlap the first model's audit
    token = _POOL.set(_RenderPool(executor))
    try:
        yield
    finally:
        _POOL.reset(token)
        executor.shutdown(wait=True, cancel_futures=True)


def render(
    report_input: ReportInput,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    report_link: str | None,
    report_attached: bool,
) -> RenderedReport:
    """`render_outputs(report_input, ...)`, in the open pool's process if there is one."""
    pool = _POOL.get()
    if pool is not None and not pool.broken:
        try:
            return pool.executor.submit(_draw, report_input, report_link, report_attached).result()
        except BrokenProcessPool as error:
            with pool.lock:
                if not pool.broken:
                    pool.broken = True
                    logger.warning(
                        "the report-drawing process stopped (%s); reports are drawn in the flow's process",
                        error or type(error).__name__,
                    )
    return _draw(report_input, report_link, report_attached)


def _draw(report_input: ReportInput, report_link: str | None, report_attached: bool) -> RenderedReport:
    return render_outputs(report_input, report_link=report_link, report_attached=report_attached)


def _warm_up() -> None:
    """Import the charts' modules now, not when the first report waits for them."""
    import reports.charts  # noqa: F401
