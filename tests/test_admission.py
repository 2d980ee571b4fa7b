"""Connections are counted from the moment they are accepted, on both ports: a handshake or an
API request trickled a byte at a time holds its address's place; behind a proxy the header's
address is counted; every kind of connection gives its place back when it closes."""

import contextlib
import socket

from twisted.logger import globalLogPublisher

from exchange_stream.services.connections import Admission
from tests.support import handshake_request, real_gateway

WS_OPTIONS = ("--max-connections-per-ip", "3", "--ping-interval", "0")


def port_of(url: str) -> int:
    return int(url.split("//")[1].split("/")[0].split(":")[1])


def opened(port: int, first_bytes: bytes = b"G") -> socket.socket:
    """A connection that has sent ``first_bytes`` of a request and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first_bytes)
    return sock


def status_of(port: int, request: bytes) -> int:
    """The HTTP status a whole request on a new connection is answered with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"closed without an answer: {answer!r}"
            answer += chunk
        return int(answer.split()[1])


def api_request(path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def test_trickled_handshakes_hold_their_address_places_and_give_them_back(tmp_path):
    with real_gateway(tmp_path, *WS_OPTIONS) as (_, url, _api, _log):
        port = port_of(url)
        with contextlib.ExitStack() as stack:
            for _ in range(3):  # three handshakes started, none finished
                stack.enter_context(opened(port))
            assert status_of(port, handshake_request()) == 429
        # closed: the places are free again, for every kind of connection in turn
        for request in (handshake_request(), b"GET /v1/market/klines HTTP/1.1\r\n\r\n") * 5:
            status_of(port, request)
        assert status_of(port, handshake_request()) == 101


def test_the_api_port_counts_its_own_connections_per_address(tmp_path):
    with real_gateway(tmp_path, *WS_OPTIONS) as (_, url, api, _log):
        api_port = int(api.rsplit(":", 1)[1])
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(opened(api_port, b"POST /v1/mesh/pub"))
            assert status_of(api_port, api_request()) == 429
            assert status_of(port_of(url), handshake_request()) == 101  # the other port's own
        assert status_of(api_port, api_request()) == 200


def test_behind_a_proxy_the_header_address_is_counted_not_the_proxy(tmp_path):
    options = (*WS_OPTIONS, "--real-ip-header", "X-Forwarded-For")
    with real_gateway(tmp_path, *options) as (_, url, _api, _log):
        port = port_of(url)
        with contextlib.ExitStack() as stack:
            for client in range(5):  # five users through one proxy address: all admitted
                sock = stack.enter_context(opened(port, b""))
                sock.sendall(
                    handshake_request("/exchange-stream", f"X-Forwarded-For: 10.0.0.{client}")
                )
                assert sock.recv(12) == b"HTTP/1.1 101"
            same = handshake_request("/exchange-stream", "X-Forwarded-For: 192.0.2.7")
            for _ in range(3):
                sock = stack.enter_context(opened(port, same))
                assert sock.recv(12) == b"HTTP/1.1 101"
            assert status_of(port, same) == 429  # a fourth from the same user


def test_one_address_holding_most_connections_is_warned_about():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        admission = Admission(10_000, 1_000, lambda: False)
        for client in range(20):
            admission.arrive(f"10.0.0.{client}")
        for _ in range(400):
            admission.arrive("192.0.2.1")
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "real-ip-header" in e.get("log_format", "")]
    assert [e["held"] for e in warnings] == [100, 200, 400]
    assert warnings[0]["address"] == "192.0.2.1"


def test_no_warning_when_the_address_is_one_of_many_large_ones():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        admission = Admission(10_000, 1_000, lambda: False)
        for _ in range(150):  # three offices behind their NATs, connecting in turn
            for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
                admission.arrive(address)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "real-ip-header" in e.get("log_format", "")]


def test_refused_clients_that_hang_up_at_once_leave_no_error_in_the_log(tmp_path):
    """A refusal answered to a client that has already gone (found by an outside review:
    each logged a critical "Unhandled error in Deferred")."""
    options = ("--max-connections-per-ip", "1", "--ping-interval", "0")
    with real_gateway(tmp_path, *options) as (_, url, _api, log):
        port = port_of(url)
        with opened(port, handshake_request()) as held:
            assert held.recv(12) == b"HTTP/1.1 101"
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port)) as refused:
                    refused.sendall(handshake_request())  # and gone, before the answer
            assert status_of(port, handshake_request()) == 429  # the node still answers
        text = log.read_text()
    assert "Unhandled error" not in text and "Traceback" not in text, text[-3000:]
