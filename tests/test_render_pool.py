"""A fleet draws its reports in a child process (`flows.render_pool`): the same documents as drawn in
the flow's process, the child gone when the block ends, an error in drawing raised in the caller,
and a dead child not the end of the run (the report is drawn in the flow's process, one warning)."""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

import flows.render_pool
from audit.types import ReportInput
from flows.render_pool import drawing_in_child_process, render
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


def drawing_processes() -> list[psutil.Process]:
    """This process's children that run `flows.render_pool`."""
    found = []
    for child in psutil.Process().children():
        try:
            if "flows.render_pool" in child.cmdline():
                found.append(child)
        except psutil.Error:  # exited meanwhile
            pass
    return found


def test_the_child_draws_the_same_documents(
    report_input: ReportInput, drawn_here: RenderedReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = render_outputs(report_input, report_link="https://r.example/x", report_attached=False)

    def not_here(*args: object, **kwargs: object) -> RenderedReport:
        raise AssertionError("a report was drawn in the flow's process")

    monkeypatch.setattr(flows.render_pool, "render_outputs", not_here)  # the child's is its own
    with drawing_in_child_process():
        (drawer,) = drawing_processes()
        in_child = render(report_input, LOGGER, report_link="https://r.example/x", report_attached=False)
        # the fleet's model threads start with a copy of the context: they draw through it too
        with ThreadPoolExecutor(1) as thread:
            context = contextvars.copy_context()
            from_thread = thread.submit(
                context.run, render, report_input, LOGGER, report_link=None, report_attached=True
            ).result()
        assert drawing_processes() == [drawer]
    assert in_child.html == here.html and in_child.email_html == here.email_html
    assert [image.png for image in in_child.images] == [image.png for image in here.images]
    assert from_thread.html == drawn_here.html and from_thread.email_html == drawn_here.email_html
    assert not drawer.is_running(), "the drawing process outlives its block"


def test_an_error_in_drawing_is_raised_in_the_caller(report_input: ReportInput) -> None:
    broken = dataclasses.replace(report_input, current=None)  # the report of nothing
    with pytest.raises(Exception) as in_process:
        render_outputs(broken)
    with drawing_in_child_process():
        with pytest.raises(type(in_process.value)) as from_child:
            render(broken, LOGGER, report_link=None, report_attached=True)
        assert drawing_processes(), "the child stops at an error in one report"
    assert str(from_child.value) == str(in_process.value)


def test_a_dead_child_falls_back_to_this_process(
    report_input: ReportInput, drawn_here: RenderedReport, caplog: pytest.LogCaptureFixture
) -> None:
    with drawing_in_child_process(), caplog.at_level(logging.WARNING, logger=LOGGER.name):
        render(report_input, LOGGER, report_link=None, report_attached=True)  # the child is up
        (drawer,) = drawing_processes()
        drawer.send_signal(signal.SIGKILL)
        drawer.wait(timeout=30)
        first = render(report_input, LOGGER, report_link=None, report_attached=True)
        second = render(report_input, LOGGER, report_link=None, report_attached=True)
    assert first.html == second.html == drawn_here.html
    warnings = [record.getMessage() for record in caplog.records if record.name == LOGGER.name]
    assert len(warnings) == 1 and "reports are drawn in the flow's process" in warnings[0], warnings
