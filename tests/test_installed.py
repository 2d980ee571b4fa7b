"""The installed ``twistd exchange-stream``, driven as a user drives it: a stock WebSocket
client (the ``websockets`` library, independent of Autobahn) and plain HTTP for publishing.

These tests are synchronous: the gateway and the auth back end run outside the test's reactor.
"""

import json
import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import TWIST, TWISTD, http, real_gateway


def test_plugin_is_installed_for_twistd_and_twist(tmp_path):
    """Outside the source tree, both runners list the plugin's options."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = {
        runner: subprocess.Popen([str(runner), "exchange-stream", "--help"], cwd=tmp_path, **pipes)
        for runner in (TWISTD, TWIST)  # both at once
    }
    for runner, run in runs.items():
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        for option in ("--ws=", "--path=", "--api=", "--api-token=", "--auth-url=", "--mesh="):
            assert option in stdout, (runner, option)
        assert "--config=" in stdout and "--prefix=" in stdout


def test_the_install_built_the_compiled_loops_of_a_book(tmp_path):
    """``pip install .`` on a machine with a C compiler (every machine these tests run on
    has one) builds the C module of ``level_scan``, and the installed package uses it."""
    code = "from exchange_stream.core.market import level_scan; print(level_scan.__file__, "
    code += "level_scan.compiled is not None)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    where, built = done.stdout.split()
    assert "site-packages" in where and built == "True"


def test_seed_test_section_with_a_stock_client(twistd_gateway):
    """DESIGN/seed 测试: connect, auth, subscribe @balance, curl publish, receive it."""
    url, api, _ = twistd_gateway
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
        answer = json.loads(body)
        assert (status, answer["E"], answer["r"]["s"], answer["r"]["f"]) == (200, None, 1, 0)
        assert ws.recv(5) == data


def test_stock_client_sees_errors_and_close_codes(twistd_gateway):
    """Error answers and close codes (1003, 1009) reach a stock client; the gateway stays up."""
    url, api, log = twistd_gateway
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


def test_the_installed_version_licence_and_changelog_agree():
    """The installed distribution's version is the package's, the changelog's newest entry and
    the browser client's; its licence file is MIT and shipped with it."""
    import importlib.metadata
    from pathlib import Path

    import exchange_stream

    root = Path(__file__).resolve().parent.parent
    installed = importlib.metadata.distribution("exchange-stream")
    assert installed.version == exchange_stream.__version__
    newest = next(
        line for line in (root / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    )
    assert newest.startswith(f"## {exchange_stream.__version__} ")
    package = json.loads((root / "clients" / "js" / "package.json").read_text())
    assert package["version"] == exchange_stream.__version__
    assert (root / "LICENSE").read_text().startswith("MIT License")
    shipped = [str(f) for f in installed.files or [] if f.name == "LICENSE"]
    assert shipped, "LICENSE is not in the installed distribution"
    assert installed.metadata["License"] == "MIT"


@pytest.mark.parametrize("plugin", ["exchange-stream", "exchange-market"])
def test_version_names_exchange_stream_not_twisted(tmp_path, plugin):
    import exchange_stream

    run = subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", plugin, "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"exchange-stream {exchange_stream.__version__} (Twisted ")


def test_startup_failures_are_one_line_and_exit_1(tmp_path):
    """A port in use (the option that named it), an endpoint Twisted cannot parse, a missing
    TLS file, on either plugin: one line saying which option and what is wrong, exit status 1,
    no traceback (issue 12)."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    in_use = f"cannot listen on 127.0.0.1:{port} ([Errno 98] Address already in use)"
    gateway = ["exchange-stream", "--api", "tcp:0:interface=127.0.0.1", "--ws", "tcp:0"]
    market = ["exchange-market", "--mesh", "redis://127.0.0.1:1/0"]
    cases = [
        ([*gateway, "--ws", f"tcp:{port}:interface=127.0.0.1"], f"--ws tcp:{port}:interface"),
        ([*gateway, "--ws", f"tcp:{port}:interface=127.0.0.1"], in_use),
        ([*gateway, "--feed", f"tcp:{port}"], f"--feed tcp:{port}: {in_use}"),
        ([*market, "--feed", f"tcp:{port}"], f"--feed tcp:{port}: {in_use}"),
        ([*gateway, "--ws", "tcpx:1"], "--ws tcpx:1: Unknown endpoint type"),
        (
            [*gateway, "--api", "ssl:1:privateKey=/no/such.pem:interface=127.0.0.1"],
            "--api ssl:1:privateKey=/no/such.pem:interface=127.0.0.1: [Errno 2]",
        ),
    ]
    try:
        for argv, said in cases:
            run = subprocess.run(
                [str(TWISTD), "-n", "--pidfile=", *argv],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            output = run.stdout + run.stderr
            assert run.returncode == 1, output
            assert said in output, output
            assert "Traceback" not in output, output
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["exchange-stream", "--max-backlog", "x"], "invalid literal for int()"),
        (["exchange-stream", "--mesh", "foo://x"], "unsupported mesh URL 'foo://x'"),
        (["exchange-market", "--feed", "tcp:7001"], "--mesh is required"),
    ],
)
def test_an_option_error_is_the_last_of_a_few_lines_not_after_the_usage_text(tmp_path, argv, said):
    run = subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 1
    assert said in lines[-1] and len(lines) <= 4, lines  # was 60-90 lines of usage first
    assert any("--help" in line for line in lines)


def test_the_start_says_in_one_line_what_listens_where_without_secrets(tmp_path):
    with real_gateway(
        tmp_path, "--api-token", "hunter2", "--feed", "tcp:0", "--auth-url", "http://a.example/x"
    ) as (_, url, _api, log):
        lines = [line for line in log.read_text().splitlines() if "exchange-stream 0." in line]
    assert len(lines) == 1, lines
    port = url.split(":")[2].split("/")[0]
    assert f"clients on tcp:{port}:interface=127.0.0.1 at /exchange-stream" in lines[0]
    assert "(bearer token required)" in lines[0] and "hunter2" not in lines[0]
    assert "mesh memory:" in lines[0] and "auth http://a.example/x" in lines[0]
    assert "market engine on feed tcp:0" in lines[0]
