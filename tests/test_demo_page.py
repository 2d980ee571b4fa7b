"""The live demo page in a real headless Chromium, against ``twistd exchange-stream --demo``.

The page (``exchange_stream/static``: ``index.html``, ``client.js``, ``demo.js``) is
loaded from the gateway's WebSocket port and driven through the Chrome DevTools Protocol
(``Runtime.evaluate`` over the page's DevTools WebSocket, with the ``websockets`` library).
Chromium is installed with apt-get when missing and we are root; the test is skipped only when
no browser exists and none can be installed.

These tests are synchronous: the gateway and the browser run as child processes.
"""

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from websockets.sync.client import connect

from exchange_stream.market.depth import checksum as server_checksum

TWISTD = Path(sys.executable).parent / "twistd"
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


class Gateway:
    """``twistd -n exchange-stream --demo`` in a scratch directory; restartable on its ports."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.ws_port, self.api_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}/"

    def start(self) -> None:
        self.starts += 1
        log = self.cwd / f"twistd-{self.starts}.log"
        self.process = subprocess.Popen(
            [
                str(TWISTD), "-n", "--pidfile=", "exchange-stream", "--demo",
                "--ws", f"tcp:{self.ws_port}:interface=127.0.0.1",
                "--api", f"tcp:{self.api_port}:interface=127.0.0.1",
                "--drain-seconds", "1",
            ],
            cwd=self.cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up():
            if self.process.poll() is not None:
                pytest.fail(f"gateway exited {self.process.returncode}:\n{log.read_text()}")
            return http_ok(self.page_url)

        wait_for(up, 30, "the gateway's demo page")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


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

    def problems(self, network: bool = True) -> list[str]:
        """Uncaught exceptions and console/log errors the page reported so far (``network``:
        also the browser's own network errors, e.g. a refused WebSocket connection)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") == "error" and (network or entry.get("source") != "network"):
                    found.append(json.dumps(entry)[:500])
        return found

    def screenshot(self, *paths: Path) -> None:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        for path in paths:
            path.write_bytes(data)

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


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway"))
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def page(gateway, tmp_path_factory):
    """The demo page, loaded in headless Chromium; DevTools client to it."""
    binary = chromium_or_install()
    browser = Browser(binary, tmp_path_factory.mktemp("chromium") / "profile")
    devtools = None
    try:
        devtools = browser.page()
        for domain in ("Page", "Runtime", "Log"):
            devtools.call(f"{domain}.enable")
        devtools.call(
            "Emulation.setDeviceMetricsOverride",
            width=1440,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        devtools.call("Page.navigate", url=gateway.page_url)
        wait_for(
            lambda: devtools.evaluate("document.readyState === 'complete' && !!window.demoState"),
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
  const canvas = document.getElementById('chart');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
  return {
    connected: s.connected, status: s.status, reconnects: s.reconnects,
    bids: rows('#bids'), asks: rows('#asks'),
    checksumsOk: s.bookChecksumsOk, mismatches: s.checksumMismatches, gaps: s.gaps,
    resyncs: s.resyncs, snapshots: s.bookSnapshots, problems: s.bookProblems,
    trades: document.querySelectorAll('#trades .trade-row:not(.empty)').length,
    tradeIdErrors: s.tradeIdErrors,
    lastShown: document.getElementById('t-last').textContent,
    lastTicker: s.lastTicker,
    mark: document.getElementById('m-mark').textContent,
    barsDrawn: s.barsDrawn, painted,
    loggedIn: s.loggedIn,
    privateShown: document.querySelectorAll('#private .entry').length,
    privateEvents: s.privateEvents.length,
    malformed: s.malformed, errors: s.errors, closes: s.closes,
  };
})()"""


def page_state(page: DevTools) -> dict:
    return page.evaluate(PAGE_STATE)


def show_page(page: DevTools):
    """For a failure message: the page's state and its client's."""
    return lambda: {
        **page_state(page),
        "client": page.evaluate(
            "({status: demoClient.status, channels: demoClient.channels,"
            " confirmed: [...demoClient._confirmed], pending: demoClient._pending.size,"
            " queued: demoClient._queue.length, stats: demoClient.stats})"
        ),
    }


def test_client_checksum_matches_the_gateway(page):
    """client.js's CRC32 and book checksum agree with zlib and with the gateway's own code."""
    samples = ["", "hello", "64000.1:0.5:64000.2:1.25", "ünïcode €"]
    crcs = page.evaluate(f"{json.dumps(samples)}.map(s => ExchangeStream.crc32(s))")
    expected = [(zlib.crc32(s.encode()) ^ 0x80000000) - 0x80000000 for s in samples]
    assert crcs == expected
    bids = [[f"{100 - i}.{i % 10}", f"{i + 1}.00{i}"] for i in range(30)]
    asks = [[f"{101 + i}.5", "0.1"] for i in range(12)]
    mine = page.evaluate(f"ExchangeStream.bookChecksum({json.dumps(bids)}, {json.dumps(asks)})")
    assert mine == server_checksum(bids, asks)


def test_demo_page_shows_the_live_market_and_private_events(page, tmp_path):
    """Connected, a verified book of >= 15 levels a side, trades, ticker, mark price, a
    kline bar on the canvas, and private events after logging in as demo-1001."""
    started = time.monotonic()

    def ready():
        s = page_state(page)
        done = (
            s["connected"]
            and s["bids"] >= 15
            and s["asks"] >= 15
            and s["checksumsOk"] >= 20
            and s["trades"] >= 1
            and s["lastShown"] not in ("", EMPTY)
            and s["mark"] not in ("", EMPTY)
            and s["barsDrawn"] >= 1
        )
        return s if done else None

    state = wait_for(ready, DEADLINE, "the live market on the page", show_page(page))
    assert state["status"] == "ready"
    assert state["mismatches"] == 0, state["problems"]
    assert state["gaps"] == 0, state["problems"]
    assert state["resyncs"] == 0, state["problems"]
    assert state["lastShown"] == state["lastTicker"]["last"]
    assert state["painted"] > 0
    assert state["tradeIdErrors"] == 0, state["malformed"]
    assert state["malformed"] == []

    page.evaluate(
        "document.getElementById('token').value = 'demo-1001';"
        "document.getElementById('login-btn').click()"
    )

    def private_shown():
        s = page_state(page)
        return s if s["loggedIn"] and s["privateShown"] >= 1 else None

    state = wait_for(private_shown, DEADLINE + 5, "a private event", show_page(page))
    channels = page.evaluate("demoClient.channels")
    assert {"@balance", "@order", "@position", "@account"} <= set(channels)
    assert page.evaluate("demoClient.authenticated") is True

    state = page_state(page)
    assert state["mismatches"] == 0, state["problems"]
    assert state["errors"] == [], state["errors"]
    assert page.problems() == []

    extra = os.environ.get("DEMO_SCREENSHOT")
    page.screenshot(tmp_path / "demo.png", *([Path(extra)] if extra else []))
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    elapsed = time.monotonic() - started
    print(f"demo page ready in {elapsed:.1f} s, {state['checksumsOk']} checksums verified")


def test_symbol_and_interval_switches(page):
    """Another symbol gets its own verified book, trades and ticker; another interval its
    own bars; the previous channels are unsubscribed."""
    page.evaluate("document.querySelector('#symbols [data-symbol=ETHUSDT]').click()")
    page.evaluate("document.querySelector('#intervals [data-interval=\"5m\"]').click()")

    def switched():
        s = page.evaluate(
            """(() => ({
              symbol: demoState.symbol, book: demo.book.symbol,
              verified: demo.book.stats.checksumsOk, mismatches: demo.book.stats.mismatches,
              bids: document.querySelectorAll('#bids .book-row:not(.empty)').length,
              trades: demoState.trades.length,
              ticker: document.getElementById('t-last').textContent,
              ethLast: (demoState.tickers.ETHUSDT || {}).last,
              bars: demoState.bars.map(b => b.interval), channels: demoClient.channels,
            }))()"""
        )
        done = (
            s["book"] == "ETHUSDT"
            and s["verified"] >= 5
            and s["bids"] >= 15
            and s["trades"] >= 1
            and s["bars"]
            and s["ticker"] == s["ethLast"]
        )
        return s if done else None

    state = wait_for(switched, DEADLINE, "ETHUSDT with 5m bars", show_page(page))
    assert state["mismatches"] == 0
    assert set(state["bars"]) == {"5m"}
    channels = set(state["channels"])
    assert {"ETHUSDT@depth", "ETHUSDT@trades", "ETHUSDT@kline_5m"} <= channels
    assert not {"BTCUSDT@depth", "BTCUSDT@trades", "BTCUSDT@kline_1m"} & channels
    assert "BTCUSDT@ticker" in channels  # the symbol tabs keep every ticker
    page.evaluate("demo.setInterval('1m'); demo.setSymbol('BTCUSDT')")
    wait_for(
        lambda: page.evaluate("demo.book.symbol === 'BTCUSDT' && demo.book.stats.checksumsOk > 0"),
        DEADLINE,
        "BTCUSDT again",
    )


def test_demo_page_reconnects_after_a_gateway_restart(page, gateway):
    """After the gateway restarts, the client reconnects by itself, logs in again,
    resubscribes, and the new gateway's book is verified again (from its snapshot, or from
    its first diff when the client subscribed before the engine's first book)."""
    page.evaluate("demo.login('demo-1002')")
    wait_for(lambda: page.evaluate("demoClient.authenticated"), DEADLINE, "login as demo-1002")
    before = page_state(page)

    gateway.stop()
    wait_for(lambda: not page.evaluate("demoState.connected"), 10, "the page to see the drop")
    gateway.start()

    def recovered():
        s = page_state(page)
        fresh = (
            s["reconnects"] >= before["reconnects"] + 1
            and s["status"] == "ready"
            and s["checksumsOk"] >= before["checksumsOk"] + 10
            and s["bids"] >= 15
            and s["asks"] >= 15
        )
        return s if fresh else None

    state = wait_for(recovered, 45, "the page to recover after the restart", show_page(page))
    assert state["mismatches"] == 0, state["problems"]
    # The gateway drains on SIGTERM: a "reconnect" notice, then close code 4200.
    closes = page.evaluate("demoState.closes.map(c => c.code)")[len(before["closes"]) :]
    notices = page.evaluate("demoState.notices.map(n => n.type)")
    assert closes[0] == 4200 and "reconnect" in notices, (closes, notices)
    assert page.evaluate("demoClient.authenticated") is True
    assert page.evaluate("demoClient.token") == "demo-1002"
    channels = set(page.evaluate("demoClient.channels"))
    assert {"@balance", "@order", "BTCUSDT@depth", "BTCUSDT@trades"} <= channels
    count = page.evaluate("demoState.privateEvents.length")
    wait_for(
        lambda: page.evaluate("demoState.privateEvents.length") > count,
        DEADLINE + 5,
        "a private event after the reconnect",
    )
    assert page.problems(network=False) == []
