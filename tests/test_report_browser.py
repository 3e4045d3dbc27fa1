"""The report as a browser shows it: headless Chromium renders report.html at phone and desktop widths.

The other report tests read the HTML as text; this one asks a real layout engine whether the page
fits a 390 px phone (no horizontal scrolling), whether every chart image decodes, and whether the
page paints something. Chromium is driven over the Chrome DevTools Protocol with the `websockets`
package Prefect already installs (no Playwright, no browser download). `make test` installs Debian's
`chromium` when it can; without /usr/bin/chromium the test skips and says so.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from audit.types import ReportInput
from reports.context import build_context
from reports.email import inline_css
from reports.render import data_uri_source, render_context, render_outputs
from tests.report_builders import sequence_input

CHROMIUM = Path(os.environ.get("DRIFT_AUDIT_CHROMIUM", "/usr/bin/chromium"))
PHONE, DESKTOP = 390, 1200
NASTY = "<script>alert(\"x\")</script> & 'q'"
LONG_NAME = "warehouse_inbound_pallets_per_hour_rolling_mean_of_the_last_168_hours_" + "x" * 40
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: `make test` installs it when run as root, or `apt-get install chromium`",
)

# Every <img> decoded, the body's text, and the page's width against the viewport's.
PAGE_FACTS_JS = """(() => {
  const images = [...document.images];
  return {
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    bodyText: document.body.innerText.trim().length,
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
  };
})()"""

# The elements that stick out past `width` px and hold no other such element (the culprits, not their
# containers), leaving out content inside its own horizontal scroller: what to fix on overflow.
OVERFLOWING_JS = """(width => {
  const scrolls = e => ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowX);
  // A box's own right edge, or the right edge of content spilling out of it (a long unbroken word).
  const right = e => Math.max(e.getBoundingClientRect().right,
                              scrolls(e) ? 0 : e.getBoundingClientRect().left + e.scrollWidth);
  const inScroller = e => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) if (scrolls(a)) return true;
    return false;
  };
  const out = [...document.body.querySelectorAll('*')].filter(e => right(e) > width + 0.5 && !inScroller(e));
  const culprits = out.filter(e => !out.some(o => o !== e && e.contains(o)));
  return culprits.slice(0, 10).map(e => {
    const cls = e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '';
    const text = (e.innerText || e.getAttribute('alt') || '').trim().slice(0, 60);
    return `<${e.tagName.toLowerCase()}${cls}> right=${Math.round(right(e))} "${text}"`;
  });
})(%d)"""


# The report ----------------------------------------------------------------------------------


def report_input() -> ReportInput:
    """A sequence model's weekly audit (tests.report_builders): 85 features led by a <script> name, a
    very long one and a Unicode one, time profiles for the gradient method, a feature that collapsed
    this week (an alert banner and its table), and history."""
    return sequence_input(
        n_features=85,
        n_steps=24,
        specials=(NASTY, LONG_NAME, "PM₂.₅ µg/m³"),
        methods=("permutation", "integrated_gradients"),
    )


# A small Chrome DevTools Protocol client -------------------------------------------------------


class Page:
    """One Chromium tab over CDP: send a command, wait for its reply; remember events."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.events: list[str] = []

    def send(self, method: str, **params: object) -> dict[str, object]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, object] = message["result"]
                return result
            if "method" in message:
                self.events.append(message["method"])

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while event not in self.events:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in message:
                self.events.append(message["method"])

    def evaluate(self, expression: str) -> object:
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"page script failed: {reply['exceptionDetails']}")
        return reply["result"]["value"]  # type: ignore[index]

    def open(self, url: str, width: int) -> None:
        """Load `url` in a `width` px wide viewport (a phone's, with touch, below 600 px)."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the viewport)."""
        reply = self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, fromSurface=True
        )
        path.write_bytes(base64.b64decode(str(reply["data"])))


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its renderer and GPU processes go with it at teardown
    )
    try:
        port = _devtools_port(profile / "DevToolsActivePort", browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as reply:
            targets = json.load(reply)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(url, max_size=None, open_timeout=TIMEOUT) as socket:
            tab = Page(socket)
            tab.send("Page.enable")
            yield tab
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(timeout=TIMEOUT)


def _devtools_port(port_file: Path, browser: subprocess.Popen[bytes]) -> int:
    """Chromium writes its debugging port to DevToolsActivePort once it listens."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise RuntimeError(f"{CHROMIUM} exited with status {browser.returncode} at start")
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError(f"{CHROMIUM} did not open its debugging port within {TIMEOUT:.0f} s")


def assert_painted(path: Path) -> None:
    """The screenshot is not one flat colour: text and charts were drawn."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    background = pixels[0, 0]
    drawn = np.any(pixels != background, axis=-1).mean()
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16, f"{path} has almost no colours"
    assert drawn > 0.02, f"only {drawn:.1%} of {path} differs from the background"


# The test ------------------------------------------------------------------------------------


def test_report_renders_and_fits_a_phone(page: Page, tmp_path: Path) -> None:
    context = build_context(report_input())
    document = render_context(context)
    report = tmp_path / "report.html"
    report.write_text(document, encoding="utf-8")
    n_images = document.count("<img")
    # 3 feature cards; 2 methods: 2 bar and 2 rank-change charts, a heat map and lag lines (IG),
    # 2 history charts
    assert n_images == len(context.charts) == 3 + 8

    for width in (PHONE, DESKTOP):
        page.open(report.as_uri(), width)
        facts = page.evaluate(PAGE_FACTS_JS)
        assert isinstance(facts, dict)
        # A phone zooms out to fit a page wider than its screen, so innerWidth grows too.
        wide = max(facts["scrollWidth"], facts["innerWidth"])
        overflowing = [] if wide <= width else page.evaluate(OVERFLOWING_JS % width)
        assert wide <= width, f"at {width} px the page is {wide} px wide; sticking out: {overflowing}"
        assert facts["bodyText"] > 500
        assert facts["images"] == n_images
        assert facts["loaded"] == n_images, f"{n_images - facts['loaded']} of {n_images} images did not load"
        shot = tmp_path / f"report-{width}px.png"
        page.screenshot(shot)
        assert_painted(shot)
        with Image.open(shot) as image:
            assert image.width == width
            assert image.height > 2_000  # the whole page: two charts of 30 bars and their tables


#: Page heights (px) of the 82-feature, 8-method sequence report and of its e-mail body. Before the
#: overview (main at 3756f4e) the report was 23,912 px tall at 390 px and 28,351 px at 1200 px.
REPORT_HEIGHT_LIMITS = {PHONE: 6_500, DESKTOP: 5_000}
#: The e-mail body: at most 3 phone screens at 390 px.
EMAIL_HEIGHT_LIMITS = {PHONE: 2_400, DESKTOP: 2_400}

PAGE_HEIGHT_JS = "document.documentElement.scrollHeight"


def _check_page(page: Page, path: Path, width: int, n_images: int, shot: Path) -> int:
    """Open `path` at `width`; no sideways scrolling, every image decoded; the page's height."""
    page.open(path.as_uri(), width)
    facts = page.evaluate(PAGE_FACTS_JS)
    assert isinstance(facts, dict)
    wide = max(facts["scrollWidth"], facts["innerWidth"])
    overflowing = [] if wide <= width else page.evaluate(OVERFLOWING_JS % width)
    assert wide <= width, f"{path.name} at {width} px is {wide} px wide; sticking out: {overflowing}"
    assert facts["images"] == facts["loaded"] == n_images
    page.screenshot(shot)
    assert_painted(shot)
    height = page.evaluate(PAGE_HEIGHT_JS)
    assert isinstance(height, int)
    with Image.open(shot) as image:
        assert image.width == width and image.height == height
    return height


def test_82_feature_report_and_its_email_are_short(page: Page, tmp_path: Path) -> None:
    """The overview makes the report a few screens (per-method charts folded); the e-mail body, with
    its cards shown as a mail client shows its cid: parts, stays within 3 phone screens."""
    rendered = render_outputs(sequence_input(n_features=82, n_steps=24, specials=(NASTY, LONG_NAME)))
    report = tmp_path / "report.html"
    report.write_text(rendered.html, encoding="utf-8")
    email_html = inline_css(rendered.email_html)
    for chart in rendered.context.cards:  # as the mail client shows the inline parts
        email_html = email_html.replace(f"cid:{chart.chart.cid}", data_uri_source(chart.chart))
    email = tmp_path / "email.html"
    email.write_text(email_html, encoding="utf-8")
    for width in (PHONE, DESKTOP):
        height = _check_page(
            page, report, width, len(rendered.context.charts), tmp_path / f"report-{width}.png"
        )
        print(f"82-feature report at {width} px: {height:,} px tall")
        assert 1_500 < height <= REPORT_HEIGHT_LIMITS[width]
        height = _check_page(page, email, width, len(rendered.images), tmp_path / f"email-{width}.png")
        print(f"its e-mail body at {width} px: {height:,} px tall")
        assert 1_000 < height <= EMAIL_HEIGHT_LIMITS[width]
