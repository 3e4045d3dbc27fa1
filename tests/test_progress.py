"""flows.progress: silent by default, plain lines off a terminal, rich bars on one; and the CLI's use."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from pathlib import Path

import pytest
from prefect.logging.handlers import PrefectConsoleHandler

from flows import progress
from flows.cli import main
from tests.helpers import small_registry

W1, W2 = dt.date(2026, 3, 2), dt.date(2026, 3, 9)


pytestmark = pytest.mark.usefixtures("prefect_harness")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _one_drop() -> None:
    progress.drops_planned([W1])
    progress.drop_started(W1, ["permutation", "saliency"])
    progress.method_finished(W1, "permutation", "ok")
    progress.method_finished(W1, "saliency", "skipped")
    progress.drop_finished(W1, "succeeded")


def test_plain_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    with progress.reporting(stream):
        progress.drops_planned([W1, W2])
        progress.drop_started(W1, ["permutation", "saliency"])
        progress.method_finished(W1, "permutation", "ok")
        progress.method_finished(W1, "saliency", "skipped")
        progress.drop_finished(W1, "succeeded")
        progress.drop_started(W2, ["permutation", "saliency"])
        progress.method_finished(W2, "saliency", "failed")
        progress.drop_finished(W2, "failed")
    assert stream.getvalue().splitlines() == [
        "drift-audit: 2 drop(s) to audit: 2026-03-02, 2026-03-09",
        "drift-audit: 2026-03-02: auditing (1/2) with 2 method(s)",
        "drift-audit: 2026-03-02: permutation ok (1/2)",
        "drift-audit: 2026-03-02: saliency skipped (2/2)",
        "drift-audit: 2026-03-02: succeeded (1/2 drop(s) done)",
        "drift-audit: 2026-03-09: auditing (2/2) with 2 method(s)",
        "drift-audit: 2026-03-09: saliency failed (1/2)",
        "drift-audit: 2026-03-09: failed (2/2 drop(s) done)",
    ]


def test_silent_without_a_reporter_and_after_the_block() -> None:
    stream = io.StringIO()
    _one_drop()  # nothing installed: a no-op
    with progress.reporting(stream):
        pass
    _one_drop()  # uninstalled on exit
    assert stream.getvalue() == ""


def test_nested_reporting_restores_the_outer_reporter() -> None:
    outer, inner = io.StringIO(), io.StringIO()
    with progress.reporting(outer):
        with progress.reporting(inner):
            progress.drops_planned([W1])
        progress.drops_planned([W2])
    assert inner.getvalue() == "drift-audit: 1 drop(s) to audit: 2026-03-02\n"
    assert outer.getvalue() == "drift-audit: 1 drop(s) to audit: 2026-03-09\n"


def test_rich_bars_on_a_terminal() -> None:
    stream = _Terminal()
    with progress.reporting(stream):
        _one_drop()
    text = stream.getvalue()
    assert "\x1b[" in text  # a live display, not plain lines
    assert "drift-audit:" not in text
    assert re.search(r"drops\s.*1/1", text) and re.search(r"2026-03-02 succeeded\s.*2/2", text)


def test_prefect_log_lines_print_above_the_bars() -> None:
    own_stream, terminal = io.StringIO(), _Terminal()
    handler = PrefectConsoleHandler(stream=own_stream)
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(handler)
    try:
        with progress.reporting(terminal):
            _one_drop()
            logging.getLogger("prefect.drift_audit_test").warning("while the bars are live")
        logging.getLogger("prefect.drift_audit_test").warning("after the bars")
    finally:
        prefect_logger.removeHandler(handler)
    assert "while the bars are live" in terminal.getvalue()
    assert "while the bars are live" not in own_stream.getvalue()
    assert "after the bars" in own_stream.getvalue()  # the handler's own console is back


@pytest.mark.slow
def test_run_writes_one_line_per_drop_and_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = small_registry(tmp_path, [W1, W2])
    methods = ["permutation", "weight_sum"]
    argv = [
        "run",
        "--registry",
        str(registry),
        "--out",
        str(tmp_path / "out"),
        "--methods",
        ",".join(methods),
    ]

    code = main(argv)

    err = capsys.readouterr().err  # captured: not a terminal, so plain lines
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("drift-audit: ")]
    assert lines[0] == "drift-audit: 2 drop(s) to audit: 2026-03-02, 2026-03-09"
    for number, week in enumerate([W1, W2], start=1):
        of_week = [line for line in lines if line.startswith(f"drift-audit: {week}: ")]
        assert of_week[0] == f"drift-audit: {week}: auditing ({number}/2) with 2 method(s)"
        assert sorted(line.split(": ")[2].split(" ")[0] for line in of_week[1:3]) == methods
        assert all(" ok (" in line for line in of_week[1:3])
        assert of_week[3:] == [f"drift-audit: {week}: succeeded ({number}/2 drop(s) done)"]
    assert len(lines) == 1 + 2 * (1 + len(methods) + 1)

    # --quiet: no progress at all
    assert main([*argv, "--quiet"]) == 0
    assert "drift-audit: " not in capsys.readouterr().err
