"""A client that stops reading, on a real socket against the installed twistd: when it reads
again within the grace period it reads the 4100 close frame behind what was already sent; when
it never does, the node drops it once the grace period is over."""

import contextlib
import json
import socket
import time

from tests.support import (
    client_frame,
    eventually,
    handshake_request,
    http,
    real_gateway,
    server_frames,
)

PAYLOAD = json.dumps({"pad": "x" * 64_000}).encode()


def stalled_subscriber(url: str) -> socket.socket:
    """A raw WebSocket client with a small receive buffer, subscribed to BTCUSDT@depth,
    that reads nothing more from now on."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((host, int(port)))
    sock.settimeout(10)
    sock.sendall(handshake_request())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101")
    rest = answer.split(b"\r\n\r\n", 1)[1]
    sock.sendall(client_frame(b'{"op":"subscribe","channel":"BTCUSDT@depth"}'))
    while not server_frames(rest)[0]:
        rest += sock.recv(4096)
    assert server_frames(rest)[0] == [(0x1, b'{"result":true}')]
    return sock


def publish_flood(api: str, count: int) -> None:
    body = json.dumps({"c": "ex:BTCUSDT@depth", "d": PAYLOAD.decode()}).encode()
    for _ in range(count):
        assert http("POST", f"{api}/v1/mesh/publish", body)[0] == 200


def read_until_close(sock: socket.socket) -> tuple[int, int, bytes]:
    """Read frames until the close frame: (text frames before it, their bytes, its payload)."""
    data, texts, text_bytes = b"", 0, 0
    while True:
        chunk = sock.recv(1 << 16)
        assert chunk, "the connection ended before a close frame"
        frames, data = server_frames(data + chunk)
        for opcode, payload in frames:
            if opcode == 0x8:
                return texts, text_bytes, payload
            assert opcode == 0x1
            texts, text_bytes = texts + 1, text_bytes + len(payload)


def test_a_stalled_client_that_wakes_up_reads_4100_and_closes_cleanly(tmp_path):
    options = ("--max-backlog", "1048576", "--ping-interval", "0")
    with real_gateway(tmp_path, *options) as (_, url, api, _log):
        sock = stalled_subscriber(url)
        publish_flood(api, 100)  # 6.4 MB for a client that reads nothing
        time.sleep(2.5)  # longer than Autobahn's own close timeout (1 s), shorter than 10 s
        texts, text_bytes, close = read_until_close(sock)
        assert int.from_bytes(close[:2], "big") == 4100
        assert close[2:] == b"too slow: reconnect with backoff"
        assert texts < 100  # the frames still waiting were dropped, not sent
        print(f"read {texts} text frames ({text_bytes} bytes) before the close frame")
        sock.sendall(client_frame(close[:2], opcode=0x8))  # the client's close answer
        # Autobahn ends the TCP connection once the close handshake is done, with an abort
        # (a reset) as it does on every clean close: nothing is left to send by then.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1 << 16) == b""
        sock.close()
        eventually(lambda: b"exchange_stream_connections 0.0" in http("GET", f"{api}/metrics")[1])


def test_a_client_that_never_reads_again_is_dropped_after_the_grace_period(tmp_path):
    options = ("--max-backlog", "1048576", "--ping-interval", "0", "--slow-client-grace", "1")
    with real_gateway(tmp_path, *options) as (_, url, api, _log):
        sock = stalled_subscriber(url)
        publish_flood(api, 150)  # more than the kernel buffers and the backlog
        connections = f"{api}/metrics"

        def dropped() -> bool:
            metrics = http("GET", connections)[1].decode()
            return "exchange_stream_connections 0.0" in metrics

        eventually(dropped, timeout=10)
        assert "exchange_stream_slow_consumers_total 1.0" in http("GET", connections)[1].decode()
        sock.close()
