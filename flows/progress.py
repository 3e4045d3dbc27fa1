"""Progress of a flow run, shown by the CLI: one bar over the drops, and per drop one bar over its methods.

Every function here is a no-op unless a reporter is installed, so the flow can call them
unconditionally (a scheduled deployment shows nothing; Prefect's own logs report each task). The CLI
installs one with `reporting()`: rich progress bars when the stream is a terminal, else one plain
line per event (a log file or a CI console gets text, not cursor movements).

Only the flow calls these, in the flow's own process: tasks may run in worker processes (Dask) where
the reporter installed by the CLI does not exist.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class _Reporter(Protocol):
    def drops_planned(self, weeks: Sequence[dt.date]) -> None: ...
    def drop_started(self, week: dt.date, methods: Sequence[str]) -> None: ...
    def method_finished(self, week: dt.date, method: str, status: str) -> None: ...
    def drop_finished(self, week: dt.date, status: str) -> None: ...


_reporter: _Reporter | None = None
#: Task futures may resolve on other threads of the flow's process; events are applied one at a time.
_lock = threading.Lock()


def drops_planned(weeks: Sequence[dt.date]) -> None:
    """The run will audit these drops (oldest first)."""
    with _lock:
        if _reporter is not None:
            _reporter.drops_planned(weeks)


def drop_started(week: dt.date, methods: Sequence[str]) -> None:
    """The audit of the drop of `week` started; it will compute `methods`."""
    with _lock:
        if _reporter is not None:
            _reporter.drop_started(week, methods)


def method_finished(week: dt.date, method: str, status: str) -> None:
    """One method of the drop of `week` ended: ``"ok"``, ``"skipped"`` or ``"failed"``."""
    with _lock:
        if _reporter is not None:
            _reporter.method_finished(week, method, status)


def drop_finished(week: dt.date, status: str) -> None:
    """The audit of the drop of `week` ended: ``"succeeded"`` or ``"failed"``."""
    with _lock:
        if _reporter is not None:
            _reporter.drop_finished(week, status)


@contextlib.contextmanager
def reporting(stream: TextIO | None = None) -> Iterator[None]:
    """Show the progress of the flow runs inside this block on `stream` (default: stderr).

    Rich progress bars on a terminal, plain one-line messages otherwise. The previous reporter (if
    any) is restored on exit, so nested or repeated uses do not leak.
    """
    global _reporter
    out = sys.stderr if stream is None else stream
    previous = _reporter
    if _is_terminal(out):
        console = Console(file=out)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bars:
            rich_reporter = _RichReporter(bars)
            with _lock:
                _reporter = rich_reporter
            try:
                yield
            finally:
                with _lock:
                    _reporter = previous
                rich_reporter.close()
    else:
        with _lock:
            _reporter = _PlainReporter(out)
        try:
            yield
        finally:
            with _lock:
                _reporter = previous


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False


class _PlainReporter:
    """One line per event: ``drift-audit: 2026-03-09: permutation ok (2/5)``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._planned: list[dt.date] = []
        self._done = 0
        self._methods: dict[dt.date, tuple[int, int]] = {}  # week -> (finished, total)

    def drops_planned(self, weeks: Sequence[dt.date]) -> None:
        self._planned = list(weeks)
        self._done = 0
        listed = ", ".join(w.isoformat() for w in weeks) or "none"
        self._line(f"{len(weeks)} drop(s) to audit: {listed}")

    def drop_started(self, week: dt.date, methods: Sequence[str]) -> None:
        self._methods[week] = (0, len(methods))
        position = f" ({self._done + 1}/{len(self._planned)})" if week in self._planned else ""
        self._line(f"{week.isoformat()}: auditing{position} with {len(methods)} method(s)")

    def method_finished(self, week: dt.date, method: str, status: str) -> None:
        finished, total = self._methods.get(week, (0, 0))
        finished += 1
        self._methods[week] = (finished, max(total, finished))
        self._line(f"{week.isoformat()}: {method} {status} ({finished}/{max(total, finished)})")

    def drop_finished(self, week: dt.date, status: str) -> None:
        self._done += 1
        self._methods.pop(week, None)
        total = max(len(self._planned), self._done)
        self._line(f"{week.isoformat()}: {status} ({self._done}/{total} drop(s) done)")

    def _line(self, text: str) -> None:
        self._stream.write(f"drift-audit: {text}\n")
        self._stream.flush()


class _RichReporter:
    """A bar over the drops and, per drop, a bar over its methods."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars
        self._overall: TaskID | None = None
        self._per_drop: dict[dt.date, TaskID] = {}
        self._rerouted: list[tuple[logging.Handler, Console]] = []

    def close(self) -> None:
        for handler, console in self._rerouted:
            handler.console = console  # type: ignore[attr-defined]
        self._rerouted.clear()

    def _reroute_prefect_logs(self) -> None:
        """Print Prefect's console log lines above the bars instead of through them.

        Prefect's console handler holds its own rich Console on the real stderr; while the bars are
        live it prints through the progress console. Done at the first event (inside the flow run),
        when Prefect has configured its logging; `close` puts the handlers' consoles back.
        """
        if self._rerouted:
            return
        from prefect.logging.handlers import PrefectConsoleHandler

        loggers = [logging.getLogger(), logging.getLogger("prefect")]
        handlers = {id(h): h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}
        for handler in handlers.values():
            self._rerouted.append((handler, handler.console))
            handler.console = self._bars.console

    def drops_planned(self, weeks: Sequence[dt.date]) -> None:
        self._reroute_prefect_logs()
        if self._overall is None:
            self._overall = self._bars.add_task("drops", total=len(weeks))
        else:
            self._bars.update(self._overall, total=len(weeks), completed=0)

    def drop_started(self, week: dt.date, methods: Sequence[str]) -> None:
        self._reroute_prefect_logs()
        self._per_drop[week] = self._bars.add_task(f"  {week.isoformat()}", total=max(len(methods), 1))

    def method_finished(self, week: dt.date, method: str, status: str) -> None:
        task = self._per_drop.get(week)
        if task is not None:
            self._bars.update(task, advance=1, description=f"  {week.isoformat()} {method} {status}")

    def drop_finished(self, week: dt.date, status: str) -> None:
        task = self._per_drop.pop(week, None)
        if task is not None:
            total = self._bars.tasks[_index(self._bars, task)].total
            self._bars.update(task, completed=total, description=f"  {week.isoformat()} {status}")
        if self._overall is not None:
            self._bars.update(self._overall, advance=1)


def _index(bars: Progress, task: TaskID) -> int:
    return next(i for i, t in enumerate(bars.tasks) if t.id == task)
