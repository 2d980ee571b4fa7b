"""The installed ``twistd exchange-stream``, driven as a user drives it: a stock WebSocket
client (the ``websockets`` library, independent of Autobahn) and plain HTTP for publishing.

These tests are synchronous: the gateway and the auth back end run outside the test's reactor.
"""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

TWISTD = Path(sys.executable).parent / "twistd"
TWIST = Path(sys.executable).parent / "twist"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SeedAuthHandler(BaseHTTPRequestHandler):
    """The seed's ``/websocket_auth``: ``{"token":"***"}`` → ``{"uid":1001}``."""

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        token = json.loads(self.rfile.read(length)).get("token")
        known = {"***": 1001, "token-1002": 1002}
        status, body = (200, {"uid": known[token]}) if token in known else (401, {})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def auth_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SeedAuthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/websocket_auth"
    server.shutdown()


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def gateway_args() -> list[str]:
    """More command-line options for the ``gateway`` fixture (a test module may override)."""
    return []


@contextlib.contextmanager
def real_gateway(directory: Path, *args: str):
    """``twistd -n exchange-stream`` in ``directory``, on free ports, healthy: yields
    (process, WebSocket URL, API base URL, log path); killed at the end if still running."""
    ws_port, api_port = free_port(), free_port()
    log = directory / "twistd.log"
    process = subprocess.Popen(
        [
            str(TWISTD), "-n", "--pidfile=", "exchange-stream",
            "--ws", f"tcp:{ws_port}:interface=127.0.0.1",
            "--api", f"tcp:{api_port}:interface=127.0.0.1",
            *args,
        ],
        cwd=directory, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if http("GET", f"{api}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield process, f"ws://127.0.0.1:{ws_port}/exchange-stream", api, log
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def gateway(tmp_path, auth_url, gateway_args):
    with real_gateway(tmp_path, "--auth-url", auth_url, *gateway_args) as (_, url, api, log):
        yield url, api, log


def test_plugin_is_installed_for_twistd_and_twist(tmp_path):
    """Outside the source tree, both runners list the plugin's options."""
    for runner in (TWISTD, TWIST):
        out = subprocess.run(
            [str(runner), "exchange-stream", "--help"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        for option in ("--ws=", "--path=", "--api=", "--api-token=", "--auth-url=", "--mesh="):
            assert option in out.stdout, (runner, option)
        assert "--config=" in out.stdout and "--prefix=" in out.stdout


def test_seed_test_section_with_a_stock_client(gateway):
    """DESIGN/seed 测试: connect, auth, subscribe @balance, curl publish, receive it."""
    url, api, _ = gateway
    with connect(url) as ws:
        ws.send('{"op":"auth","token":"***"}')
        assert json.loads(ws.recv(5)) == {"result": True}
        ws.send('{"op":"subscribe","channel":"@balance"}')
        assert json.loads(ws.recv(5)) == {"result": True}
        data = (
            '{"event":"@balance","data":{"uid":1001,"balance":'
            '[{"currency":"BTC","available":100,"unavailable":100}]}}'
        )
        status, body = http(
            "POST",
            f"{api}/v1/mesh/publish",
            json.dumps({"c": "ex:1001@balance", "d": data}).encode(),
        )
        assert (status, json.loads(body)) == (200, {"E": None, "r": {"s": 1, "f": 0}})
        assert ws.recv(5) == data


def test_stock_client_sees_errors_and_close_codes(gateway):
    url, api, log = gateway
    with connect(url) as ws:
        ws.send('{"op":"subscribe","channel":"@balance"}')
        assert json.loads(ws.recv(5)) == {"code": 1, "msg": "Not Auth"}
        ws.send("{oops")
        assert json.loads(ws.recv(5)) == {"code": 2, "msg": "Invalid JSON"}
        ws.send('{"op":"auth","token":"nope","id":3}')
        assert json.loads(ws.recv(5)) == {"code": 5, "msg": "Auth failed", "id": 3}
        ws.send(b"\x01\x02")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(5)
        assert closed.value.rcvd.code == 1003
    with connect(url, max_size=None) as ws:
        ws.send('{"op":"ping","pad":"' + "x" * 70000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(5)
        assert closed.value.rcvd.code == 1009
    # the gateway is still there for everyone else
    assert http("GET", f"{api}/healthz")[0] == 200
    assert "Traceback" not in log.read_text()
