"""Smoke test: the live demo page in a real headless Chromium, against
``twistd exchange-stream --demo``; and the page's number formatting, in Node.

The page (``exchange_stream/static``: ``index.html``, ``demo.js`` and ``client.js``, the
``clients/js`` package through a symbolic link) is loaded from the gateway's WebSocket port and
read through the Chrome DevTools Protocol (``Runtime.evaluate`` over the page's DevTools
WebSocket, with the ``websockets`` library). It checks that the pieces work together: the
gateway serves the page, the page shows live data and logs in. The client's behaviour
(reconnects, resubscribes, the book's gaps and checksums) is unit-tested in ``clients/js/test``;
the bars history behind the chart in ``tests/test_kline_history.py``.

Chromium is installed with apt-get when missing and we are root; the test is skipped only when
no browser exists and none can be installed. The test is synchronous: the gateway and the
browser run as child processes.

``demo.js`` starts with its formatting functions (``window.DemoFormat``: decimal strings
rounded, padded and grouped digit by digit, private events as readable rows), which Node can
``require()`` without a page; they are checked on sample strings with Node 20 (which, as for
``tests/test_js_client.py``, must be there).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from websockets.sync.client import connect

from exchange_stream.core.market.events import PrivateEvent
from exchange_stream.services.simulator import DEMO_UIDS, Simulator

TWISTD = Path(sys.executable).parent / "twistd"
DEMO_JS = Path(__file__).resolve().parent.parent / "exchange_stream" / "static" / "demo.js"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEADLINE = 15.0  # seconds for the page to show everything it promises
EMPTY = "\u2013"  # what the page shows before a value arrives (an en dash)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_chromium() -> str | None:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def chromium_or_install() -> str:
    """The browser's path; installs Debian's ``chromium`` when missing and we may."""
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no Chromium found and cannot install one (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=900)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env, timeout=1800)
    path = find_chromium()
    if not path:
        pytest.fail("apt-get installed chromium but no browser binary was found")
    return path


def wait_for(predicate, timeout: float, what: str, show=None):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` and, with
    ``show``, what ``show()`` says about the state then."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    context = show() if show else last
    pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {context!r}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_gateway(cwd: Path):
    """``twistd -n exchange-stream --demo`` on free ports; yields the demo page's URL."""
    ws_port, api_port = free_port(), free_port()
    log = cwd / "twistd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(TWISTD), "-n", "--pidfile=", "exchange-stream", "--demo",
                "--ws", f"tcp:{ws_port}:interface=127.0.0.1",
                "--api", f"tcp:{api_port}:interface=127.0.0.1",
                "--drain-seconds", "1",  # it drains its clients on SIGTERM: stop quickly
            ],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{ws_port}/"

    def up():
        if process.poll() is not None:
            pytest.fail(f"gateway exited {process.returncode}:\n{log.read_text()}")
        return http_ok(url)

    try:
        wait_for(up, 30, "the gateway's demo page")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=None, open_timeout=10))
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 10.0, **params) -> dict:
        self.next_id += 1
        request_id = self.next_id
        self.ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"DevTools {method} not answered in {timeout} s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page exception: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and the browser's error log so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(json.dumps(params["entry"])[:500])
        return found

    def close(self) -> None:
        self._stack.close()


class Browser:
    """Headless Chromium with DevTools on a port it picks itself (no port race)."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.profile = profile
        self.log = profile.parent / "chromium.log"
        self.process = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--mute-audio", "--window-size=1440,900",
                f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", "about:blank",
            ],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"

        def port():
            if self.process.poll() is not None:
                pytest.fail(f"chromium exited {self.process.returncode}:\n{self.log.read_text()}")
            text = port_file.read_text() if port_file.exists() else ""
            return text.splitlines()[0] if "\n" in text else None

        self.port = int(wait_for(port, 60, "chromium's DevToolsActivePort"))

    def page(self) -> DevTools:
        def target():
            try:
                url = f"http://127.0.0.1:{self.port}/json/list"
                with urllib.request.urlopen(url, timeout=2) as response:
                    targets = json.load(response)
            except (urllib.error.URLError, OSError, ValueError):
                return None
            pages = [t for t in targets if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        return DevTools(wait_for(target, 30, "a page target"))

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@pytest.fixture
def page(tmp_path):
    """The demo page of a fresh gateway, loaded in headless Chromium; DevTools client to it."""
    binary = chromium_or_install()
    with running_gateway(tmp_path) as url:
        browser = Browser(binary, tmp_path / "profile")
        devtools = None
        try:
            devtools = browser.page()
            for domain in ("Page", "Runtime", "Log"):
                devtools.call(f"{domain}.enable")
            devtools.call("Page.navigate", url=url)
            wait_for(
                lambda: devtools.evaluate(
                    "document.readyState === 'complete' && !!window.demoState"
                ),
                20,
                "the demo page to load",
            )
            yield devtools
        finally:
            if devtools is not None:
                devtools.close()
            browser.stop()


PAGE_STATE = """(() => {
  const s = window.demoState;
  const rows = (sel) => document.querySelectorAll(sel + ' .book-row:not(.empty)').length;
  // lightweight-charts draws into canvases inside #chart: count the candle-coloured pixels
  const css = getComputedStyle(document.documentElement);
  const rgb = (name) => css.getPropertyValue(name).trim().match(/[0-9a-f]{2}/gi)
    .map((h) => parseInt(h, 16));
  const near = (px, i, c) =>
    Math.abs(px[i] - c[0]) + Math.abs(px[i + 1] - c[1]) + Math.abs(px[i + 2] - c[2]) < 12;
  const colours = [rgb('--up'), rgb('--down')];
  const canvases = Array.from(document.querySelectorAll('#chart canvas'));
  let candlePixels = 0;
  for (const canvas of canvases) {
    if (!canvas.width || !canvas.height) continue;
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 200 && colours.some((c) => near(px, i, c))) candlePixels++;
    }
  }
  return {
    status: s.status, bids: rows('#bids'), asks: rows('#asks'),
    checksumsOk: s.bookChecksumsOk, mismatches: s.checksumMismatches, problems: s.bookProblems,
    trades: document.querySelectorAll('#trades .trade-row:not(.empty)').length,
    lastShown: document.getElementById('t-last').textContent,
    mark: document.getElementById('m-mark').textContent,
    canvases: canvases.length, candlePixels, history: s.history, barsDrawn: s.barsDrawn,
    interval: s.interval, loggedIn: s.loggedIn,
    privateShown: document.querySelectorAll('#private .entry').length,
    privateRows: Array.from(document.querySelectorAll('#private .entry .what'))
      .map((e) => e.textContent),
    balancesShown: document.querySelectorAll('#balances .balance').length,
    balanceShownMs: s.balanceShownMs,
    malformed: s.malformed, errors: s.errors,
  };
})()"""


def page_state(page: DevTools) -> dict:
    return page.evaluate(PAGE_STATE)


def test_demo_page_shows_live_data_and_logs_in(page):
    """Served by the gateway, the page shows a verified book, trades, the ticker, the mark
    price (to BTCUSDT's 0.1 tick, not the engine's 8 places) and a candle chart
    (lightweight-charts) holding the hours of 1m bars the history answered; switching to 5m
    loads that history; logging in as demo-1001 shows its balances within about a second and
    private events as words, not JSON; nothing errs."""

    def history_drawn(interval: str, at_least: int):
        def check():
            s = page_state(page)
            h = s["history"] or {}
            done = (
                h.get("status") == "ok"
                and h.get("interval") == interval
                and h.get("bars", 0) >= at_least  # the demo back-fills 1000 minutes
                and s["barsDrawn"] >= h["bars"]
                and s["canvases"] > 0
                and s["candlePixels"] > 0
            )
            return s if done else None

        return check

    def live():
        s = history_drawn("1m", 180)()
        done = (
            s is not None
            and s["status"] == "ready"
            and s["bids"] >= 15
            and s["asks"] >= 15
            and s["checksumsOk"] >= 5
            and s["trades"] >= 1
            and s["lastShown"] not in ("", EMPTY)
            and s["mark"] not in ("", EMPTY)
        )
        return s if done else None

    state = wait_for(live, DEADLINE, "the live market on the page", lambda: page_state(page))
    assert state["mismatches"] == 0, state["problems"]
    assert re.fullmatch(r"[0-9]+\.[0-9]", state["mark"]), state["mark"]

    page.evaluate("window.demo.setInterval('5m')")
    wait_for(history_drawn("5m", 36), DEADLINE, "the 5m history", lambda: page_state(page))

    page.evaluate(
        "document.getElementById('token').value = 'demo-1001';"
        "document.getElementById('login-btn').click()"
    )

    def private_shown():
        s = page_state(page)
        return s if s["loggedIn"] and s["privateShown"] >= 1 and s["balancesShown"] else None

    state = wait_for(private_shown, DEADLINE, "a private event", lambda: page_state(page))
    # The simulator sends every demo user's balance each second; 2 s leaves a slow CI room.
    assert state["balanceShownMs"] <= 2000, state
    assert state["privateRows"] and not [r for r in state["privateRows"] if "{" in r], state
    assert state["mismatches"] == 0, state["problems"]
    assert state["malformed"] == [] and state["errors"] == [], state
    assert page.problems() == []


LAYOUT = """(() => {
  const box = (el) => el.getBoundingClientRect();
  const ticker = document.getElementById('ticker');
  const tabs = Array.from(document.querySelectorAll('#symbols button'));
  return {
    width: innerWidth, pageWidth: document.documentElement.scrollWidth,
    strip: Math.round(box(document.getElementById('symbols')).width),
    tabs: tabs.map((b) => Math.round(box(b).width)),
    tabsClipped: tabs.filter((b) => b.scrollWidth > b.clientWidth + 1).length,
    tabsLabelled: tabs.filter((b) => /[0-9]/.test(b.querySelector('.last').textContent)).length,
    tickerHidden: ticker.scrollWidth - ticker.clientWidth,
    cellsOut: Array.from(ticker.children).filter((c) => box(c).right > innerWidth + 0.5).length,
    panelsOut: Array.from(document.querySelectorAll('.panel'))
      .filter((p) => box(p).right > innerWidth + 0.5).length,
    topbar: Math.round(box(document.querySelector('.topbar')).height),
  };
})()"""


def test_demo_page_fits_a_phone_and_a_desktop(page):
    """At 390 px wide (a phone) the symbol tabs keep their size in a strip the width of the
    screen, the ticker's figures wrap onto the screen and nothing is wider than it; at
    1280 px the tabs sit in the top bar's one row."""

    def layout(width: int, height: int):
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=width < 600,
        )  # fmt: skip

        def settled():
            s = page.evaluate(LAYOUT)
            return s if s["width"] == width and s["tabsLabelled"] == 5 else None

        return wait_for(settled, DEADLINE, f"the page at {width} px", lambda: page.evaluate(LAYOUT))

    phone = layout(390, 844)
    assert phone["pageWidth"] <= 390, phone
    assert phone["strip"] >= 350 and min(phone["tabs"]) >= 90, phone
    assert phone["tabsClipped"] == 0, phone
    assert phone["tickerHidden"] <= 0 and phone["cellsOut"] == 0, phone
    assert phone["panelsOut"] == 0, phone

    desktop = layout(1280, 800)
    assert desktop["pageWidth"] <= 1280 and desktop["topbar"] < 70, desktop
    assert sum(desktop["tabs"]) <= desktop["strip"] and desktop["tabsClipped"] == 0, desktop
    assert desktop["tickerHidden"] <= 0 and desktop["panelsOut"] == 0, desktop
    assert page.problems() == []


def run_format(calls: list[list]) -> list:
    """Each ``[name, *args]`` called on demo.js's formatting functions in Node; the results."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the demo page's formatting tests need Node 20 or later")
    script = (
        "const F = require(process.argv[1]);"
        "const calls = JSON.parse(process.argv[2]);"
        "console.log(JSON.stringify(calls.map(([name, ...args]) => F[name](...args))));"
    )
    run = subprocess.run(
        [node, "-e", script, str(DEMO_JS), json.dumps(calls)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        (["trim", "64000.60000000"], "64000.6"),  # the mark price the engine writes
        (["trim", "63975.00000000"], "63975"),
        (["fixed", "63986.44534765", 1], "63986.4"),  # to BTCUSDT's tick
        (["fixed", "64000.65", 1], "64000.7"),  # half away from zero
        (["fixed", "1.005", 2], "1.01"),  # Number("1.005").toFixed(2) says 1.00
        (["fixed", "0.59846000", 4], "0.5985"),
        (["fixed", "64000", 1], "64000.0"),  # padded: the wire drops trailing zeros
        (["fixed", "99.96", 1], "100.0"),
        (["fixed", "-0.04", 1], "0.0"),
        (["fixed", "123456789012345678.95", 1], "123456789012345679.0"),  # past a float's digits
        (["fixed", "n/a", 2], "n/a"),  # not a decimal: as it came
        (["group", "3315820805.874"], "3,315,820,805.874"),
        (["group", "-1234567"], "-1,234,567"),
        (["group", "999.5"], "999.5"),
        (["percent", "0.00049640", 4], "0.0496"),
        (["percent", "0.0001", 4], "0.0100"),
        (["percent", "-0.00012345", 4], "-0.0123"),
        (["totals", ["0.1", "0.2", "0.05"]], ["0.10", "0.30", "0.35"]),  # not 0.30000000000000004
        (["totals", ["9007199254740993", "1"]], ["9007199254740993", "9007199254740994"]),
        (["signed", "0.00"], "0.00"),
        (["signed", "1.2"], "+1.2"),
    ],
)
def test_demo_page_formats_decimal_strings_digit_by_digit(call, shown):
    """The page shows prices and sizes from their strings: rounded, padded, grouped and
    summed exactly, never through a float."""
    assert run_format([call]) == [shown]


def test_demo_page_shows_private_events_as_words():
    """An order, a balance (both spellings), a position and an account event become rows
    of words: side, symbol, size @ price, status; asset, free, locked."""
    order = {"orderId": 12, "symbol": "ETHUSDT", "side": "buy", "price": "3400.04",
             "qty": "0.5", "status": "partially_filled", "ts": 1796289538830}  # fmt: skip
    demo_balance = {"uid": 1001, "balances": [
        {"asset": "USDT", "available": "12345.25", "locked": "100.00"}]}  # fmt: skip
    tour_balance = {"uid": 1001, "balance": [
        {"currency": "BTC", "available": "100", "unavailable": "1"}]}  # fmt: skip
    position = {"symbol": "BTCUSDT", "side": "long", "qty": "0.25", "entryPrice": "64000.6"}
    account = {"uid": 1001, "level": "VIP1", "updated": 1796289538830}
    rows = run_format(
        [
            ["privateParts", "@order", order],
            ["privateParts", "@balance", demo_balance],
            ["privateParts", "@balance", tour_balance],
            ["privateParts", "@position", position],
            ["privateParts", "@account", account],
        ]
    )
    words = [" ".join(text for text, _kind in row) for row in rows]
    assert words == [
        "BUY ETHUSDT 0.5 @ 3400.04 partially filled #12",
        "USDT free 12,345.25 locked 100.00",
        "BTC free 100 locked 1",
        "BTCUSDT LONG 0.25 entry 64000.6",
        "level VIP1",
    ]


def test_the_simulator_sends_every_demo_users_balance_each_second():
    """Whenever a demo user logs in, their whole balance comes within a second: the
    simulator sends each one's every second (``BALANCE_EVERY``), changed or not."""
    clock = Clock()
    events: list = []
    simulator = Simulator(events.append, clock, history_minutes=0)
    simulator.startService()
    try:
        for _ in range(3):
            events.clear()
            clock.advance(1.0)
            balances = {
                e.uid: e.data for e in events if isinstance(e, PrivateEvent) and e.type == "balance"
            }
            assert set(balances) == {str(uid) for uid in DEMO_UIDS}
            for uid, data in balances.items():
                assert data["uid"] == int(uid)
                assert {b["asset"] for b in data["balances"]} == {"USDT", "BTC"}
    finally:
        simulator.stopService()


BROWSER_SUBSCRIBES = """new Promise((resolve) => {
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/exchange-stream');
  const got = [];
  const done = (extra) => { resolve({extensions: ws.extensions, got, ...extra}); ws.close(); };
  ws.onopen = () => ws.send(JSON.stringify({op: 'subscribe', channel: 'BTCUSDT@depth'}));
  ws.onmessage = (message) => { got.push(JSON.parse(message.data)); if (got.length >= 4) done(); };
  ws.onclose = (event) => done({closed: event.code});
  setTimeout(() => done({timedOut: true}), 15000);
})"""


def test_the_browser_negotiates_compression_and_reads_compressed_pushes(page):
    """Chromium offers permessage-deflate, as every browser does; the gateway accepts it
    without context takeover both ways, and the browser's own inflater reads the shared
    compressed frames (the depth snapshot and diffs, each some KB)."""
    seen = page.evaluate(BROWSER_SUBSCRIBES)
    assert seen["extensions"] == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    ), seen
    assert seen["got"][0] == {"result": True}, seen
    pushes = seen["got"][1:]
    assert len(pushes) == 3 and "closed" not in seen, seen
    assert {push["event"] for push in pushes} == {"BTCUSDT@depth"}
    snapshot = pushes[0]["data"]
    assert snapshot["type"] == "snapshot" and snapshot["bids"] and snapshot["asks"], snapshot
    assert [push["data"]["prevSeq"] for push in pushes[1:]] == [
        push["data"]["seq"] for push in pushes[:-1]
    ]
