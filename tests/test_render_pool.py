"""A fleet draws its reports in a spawned process (`flows.render_pool`): the same documents as drawn
in the flow's process, the process gone when the block ends, and a dead process not the end of the
run (the report is drawn in the flow's process, with one warning)."""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

import flows.render_pool
from audit.types import ReportInput
from flows.render_pool import render, rendering_in_process_pool
from reports.render import render_outputs
from reports.rendered import RenderedReport
from tests.report_builders import sequence_input

LOGGER = logging.getLogger("test_render_pool")


@pytest.fixture(scope="module")
def report_input() -> ReportInput:
    return sequence_input(6, 4, methods=("permutation",))


@pytest.fixture(scope="module")
def drawn_here(report_input: ReportInput) -> RenderedReport:
    """The report drawn in this process, attached to its e-mail."""
    return render_outputs(report_input, report_link=None, report_attached=True)


def test_the_pool_draws_the_same_documents_in_another_process(
    report_input: ReportInput, drawn_here: RenderedReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = render_outputs(report_input, report_link="https://r.example/x", report_attached=False)

    def not_here(*args: object, **kwargs: object) -> RenderedReport:
        raise AssertionError("a report was drawn in the flow's process")

    monkeypatch.setattr(flows.render_pool, "render_outputs", not_here)  # the spawned process's is its own
    before = {child.pid for child in multiprocessing.active_children()}
    with rendering_in_process_pool():
        in_pool = render(report_input, LOGGER, report_link="https://r.example/x", report_attached=False)
        drawers = [child for child in multiprocessing.active_children() if child.pid not in before]
        # the fleet's model threads start with a copy of the context: they use the pool too
        with ThreadPoolExecutor(1) as thread:
            context = contextvars.copy_context()
            from_thread = thread.submit(
                context.run, render, report_input, LOGGER, report_link=None, report_attached=True
            ).result()
        assert [child.pid for child in multiprocessing.active_children() if child.pid not in before] == [
            child.pid for child in drawers
        ], "the thread's report was drawn by the same process"
    assert len(drawers) == 1 and drawers[0].pid != os.getpid()
    assert in_pool.html == here.html and in_pool.email_html == here.email_html
    assert [image.png for image in in_pool.images] == [image.png for image in here.images]
    assert from_thread.html == drawn_here.html and from_thread.email_html == drawn_here.email_html
    assert not drawers[0].is_alive(), "the drawing process outlives its block"


def test_a_dead_drawing_process_falls_back_to_this_process(
    report_input: ReportInput, drawn_here: RenderedReport, caplog: pytest.LogCaptureFixture
) -> None:
    before = {child.pid for child in multiprocessing.active_children()}
    with rendering_in_process_pool(), caplog.at_level(logging.WARNING, logger=LOGGER.name):
        render(report_input, LOGGER, report_link=None, report_attached=True)  # the process is up
        (drawer,) = [child for child in multiprocessing.active_children() if child.pid not in before]
        os.kill(drawer.pid, signal.SIGKILL)
        drawer.join(timeout=30)
        first = render(report_input, LOGGER, report_link=None, report_attached=True)
        second = render(report_input, LOGGER, report_link=None, report_attached=True)
    assert first.html == second.html == drawn_here.html
    warnings = [record.getMessage() for record in caplog.records if record.name == LOGGER.name]
    assert len(warnings) == 1 and "reports are drawn in the flow's process" in warnings[0], warnings
