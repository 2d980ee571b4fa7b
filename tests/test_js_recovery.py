"""The browser client resumes for real: ``client.js`` in Node, on a real socket, through a proxy
the test cuts, against two gateway nodes on a real Redis.

The application's view is what counts: every order update published while it was away arrives
once and in order after the reconnect (to the other node), and after a Redis restart, which
loses the history, it is told ``lost`` instead of being left with a silent gap.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.endpoints import serverFromString
from twisted.protocols import portforward

from tests.support import LOCAL, until
from tests.test_redis_streams import node, order

DRIVER = Path(__file__).resolve().parent / "js" / "recovering_client.js"


class _ClientSide(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason) -> None:
        self.factory.live.discard(self)
        super().connectionLost(reason)


class CuttableProxy(portforward.ProxyFactory):
    """Forwards to ``port`` (changeable: the next connection goes to another node); ``cut()``
    drops every connection and refuses new ones until ``mend()``."""

    protocol = _ClientSide

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.live: set[_ClientSide] = set()
        self.refusing = False
        self.connections = 0

    def buildProtocol(self, addr):
        if self.refusing:
            return None  # closed at once, as a load balancer with no node behind it
        self.connections += 1
        return super().buildProtocol(addr)

    def cut(self) -> None:
        self.refusing = True
        for side in list(self.live):
            side.transport.abortConnection()
            if side.peer is not None:
                side.peer.transport.abortConnection()

    def mend(self) -> None:
        self.refusing = False


class Lines(protocol.ProcessProtocol):
    """The driver's JSON lines as they come."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.errors = b""
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *whole, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(json.loads(line) for line in whole if line)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def pushes(self) -> list[tuple[int, int]]:
        return [(line["push"], line["offset"]) for line in self.lines if "push" in line]

    def having(self, key: str) -> list[dict]:
        return [line for line in self.lines if key in line]


def node_command() -> list[str]:
    node_binary = shutil.which("node")
    if node_binary is None:
        pytest.fail("node is not on PATH: the browser client's tests need Node 20 or later")
    version = subprocess.run([node_binary, "--version"], capture_output=True, text=True).stdout
    major = int(version.lstrip("v").split(".")[0])
    # Node 20 and 21 have WebSocket behind a flag; 22 and later by default.
    return [node_binary, "--experimental-websocket"] if major < 22 else [node_binary]


@pytest_twisted.ensureDeferred
async def test_client_js_resumes_on_the_other_node_and_says_lost_after_a_redis_restart(
    redis_server, auth_backend
):
    a = await node(redis_server, auth_backend)
    b = await node(redis_server, auth_backend)
    proxy = CuttableProxy(a.ws_port)
    listening = await serverFromString(reactor, LOCAL).listen(proxy)
    url = f"ws://127.0.0.1:{listening.getHost().port}{a.gateway.config.path}"
    out = Lines()
    command = node_command()
    driver = reactor.spawnProcess(out, command[0], [*command, str(DRIVER), url, "token-1001"])
    try:
        await until(lambda: out.having("subscribed"), timeout=15)
        for n in (1, 2, 3):
            await a.publish("ex:1001@order", order(n))
        await until(lambda: len(out.pushes()) == 3)

        proxy.port = b.ws_port  # the load balancer sends the next connection to node B
        proxy.cut()
        await until(lambda: len(out.having("close")) == 1)
        for n in range(4, 9):  # published while the client is away
            status, _ = await a.publish("ex:1001@order", order(n))
            assert status == 200
        proxy.mend()
        await until(lambda: len(out.pushes()) == 8)
        for n in (9, 10):
            await b.publish("ex:1001@order", order(n))
        await until(lambda: len(out.pushes()) == 10)
        assert out.pushes() == [(n, n) for n in range(1, 11)], "every update once, in order"
        assert proxy.connections == 2
        (recovered,) = out.having("recovered")
        assert recovered["recovered"] == "@order" and recovered["position"]["offset"] == 8
        assert out.having("lost") == []

        proxy.cut()
        mesh = b.gateway.mesh
        reconnects = mesh.reconnects
        redis_server.stop()  # the history goes with it
        redis_server.start()
        for gateway in (a, b):
            await until(lambda g=gateway: g.gateway.mesh.available and g.gateway.mesh.receiving)
        await until(lambda: mesh.reconnects >= reconnects + 2)
        proxy.mend()
        await until(lambda: out.having("lost"), timeout=15)
        (lost,) = out.having("lost")
        assert lost["lost"] == "@order"
        assert lost["from"]["offset"] == 10 and lost["position"]["epoch"] != lost["from"]["epoch"]
        await b.publish("ex:1001@order", order(11))
        await until(lambda: len(out.pushes()) == 11)
        assert out.pushes()[-1] == (11, 1), "counting again in the new epoch"
        # Node's WebSocket never ends a handshake the proxy closed: the client's connect
        # timeout did, and nothing else went wrong.
        errors = {line["error"] for line in out.having("error")}
        assert errors <= {"connect timeout: reconnecting"}, out.lines
    finally:
        driver.closeStdin()
        await until(lambda: driver.pid is None, timeout=5)
        await listening.stopListening()
        await a.stop()
        await b.stop()
    assert b"Error" not in out.errors, out.errors.decode()
