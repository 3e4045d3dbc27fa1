"""Draw reports in a process of their own while a fleet's models are audited.

Drawing a report is pure Python (matplotlib lays out and rasterises about 33 charts for a model
with every method: 3 s on these machines), so in the flow's process it holds the interpreter lock
that the method tasks' own Python (TensorFlow's op dispatch, Prefect's task engine) needs. A fleet
renders one report per model while the next models compute, so there it is drawn by one child
process instead (``python -m flows.render_pool``): `render_outputs` only reads its `ReportInput`
and returns bytes and strings, and both cross the pipe as a pickle. The child imports `reports`
only (about 1.4 s, no TensorFlow), once per fleet run. A single model renders in the flow's
process, where a second process would only add its start-up.

Not `multiprocessing`: its spawned processes first import the parent's main script again, and a
script that runs the flow without an ``if __name__ == "__main__":`` guard would then start a
second audit in the child. This child runs this module and nothing of the caller's.

`drawing_in_child_process()` starts the child for the block (a context variable, so the fleet's
model threads, started inside it with a copy of the context, see it); `render` draws through it
when one is running, else in the calling process. An exception raised while drawing is raised
again in the caller, as it would be in process. A child that died (killed, out of memory) is not
restarted: that report, and every later one of the run, is drawn in the flow's process, with one
warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from audit.types import ReportInput
from reports.render import render_outputs
from reports.rendered import RenderedReport

#: How long the child may take to exit once told to (it finishes the report it is drawing first).
STOP_TIMEOUT_S = 60.0
_LENGTH = struct.Struct("!Q")


class DrawerGone(Exception):
    """The drawing process exited or its pipe closed; `first` for the request that found out."""

    def __init__(self, reason: str, *, first: bool = False) -> None:
        super().__init__(reason)
        self.first = first


class _Drawer:
    """The child process and the lock that keeps one request on its pipe at a time."""

    def __init__(self) -> None:
        # the caller's import path, so the child finds `flows` and `reports` wherever the caller did
        path = os.pathsep.join(entry for entry in sys.path if entry)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.render_pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.lock = threading.Lock()
        self.gone = False

    def draw(self, request: tuple[ReportInput, str | None, bool]) -> RenderedReport:
        with self.lock:
            if self.gone:
                raise DrawerGone("it stopped earlier")
            try:
                _send(self._pipe(self.process.stdin), request)
                ok, value = _receive(self._pipe(self.process.stdout))
            except (DrawerGone, OSError) as error:
                self.gone = True
                raise DrawerGone(f"exit status {self.process.poll()}", first=True) from error
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe(self.process.stdin).close()  # the child's loop ends at end of input
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self._pipe(self.process.stdout).close()

    @staticmethod
    def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
        if stream is None:  # pragma: no cover - both pipes are asked for in __init__
            raise DrawerGone("no pipe")
        return stream


_DRAWER: contextvars.ContextVar[_Drawer | None] = contextvars.ContextVar("drift_audit_drawer", default=None)


@contextlib.contextmanager
def drawing_in_child_process() -> Iterator[None]:
    """Draw the reports of this block (and of threads started inside it with a copy of its context)
    in a child process; the child is stopped when the block ends."""
    drawer = _Drawer()  # it imports while the first model is audited
    token = _DRAWER.set(drawer)
    try:
        yield
    finally:
        _DRAWER.reset(token)
        drawer.stop()


def render(
    report_input: ReportInput,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    report_link: str | None,
    report_attached: bool,
) -> RenderedReport:
    """`render_outputs(report_input, ...)`, in the drawing process if one is running."""
    drawer = _DRAWER.get()
    if drawer is not None and not drawer.gone:
        try:
            return drawer.draw((report_input, report_link, report_attached))
        except DrawerGone as error:
            if error.first:
                logger.warning(
                    "the report-drawing process stopped (%s); reports are drawn in the flow's process", error
                )
    return render_outputs(report_input, report_link=report_link, report_attached=report_attached)


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise DrawerGone("end of its output")
    (length,) = _LENGTH.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise DrawerGone("end of its output")
    return pickle.loads(data)


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: draw each request, reply with (True, report) or (False, the exception)."""
    while True:
        try:
            report_input, report_link, report_attached = _receive(requests)
        except DrawerGone:
            return
        try:
            reply: tuple[bool, Any] = (
                True,
                render_outputs(report_input, report_link=report_link, report_attached=report_attached),
            )
        except Exception as error:  # raised again in the flow's process, where the task fails
            reply = (False, error)
        _send(replies, reply)


if __name__ == "__main__":
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt the replies
    sys.stdout = sys.stderr
    _serve(sys.stdin.buffer, replies)
