"""The internal HTTP API, over an in-memory site (StubTreq)."""

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.publication import MeshUnavailable
from exchange_stream.gateway import Gateway
from exchange_stream.interfaces import IMesh
from exchange_stream.services.auth import StaticAuthenticator
from exchange_stream.services.memory_mesh import MemoryMesh
from tests.support import Recorder, stub_request, subscribe_live

URL = "http://api/v1/mesh/publish"


@implementer(IMesh)
class DownMesh:
    """A mesh that is known to be down, or that refuses at publish time."""

    receiving = True
    reconnects = 0
    deaf_events = 0
    lost_publications = 0

    def __init__(self, available):
        self.available = available

    def publish(self, channel, publication, snapshot=None, key=None):
        return fail(MeshUnavailable("redis gone"))

    def history(self, channel, since=None):
        return fail(MeshUnavailable("redis gone"))

    def recent(self, channel, count):
        return fail(MeshUnavailable("redis gone"))

    def snapshot(self, channel):
        return succeed(None)

    def subscribe(self, channel, receiver):
        return succeed(None)

    def unsubscribe(self, channel, receiver):
        return succeed(None)


def api(mesh=None, **config):
    gateway = Gateway(
        GatewayConfig(**config), mesh=mesh or MemoryMesh(), authenticator=StaticAuthenticator({})
    )
    return gateway, StubTreq(gateway.api_resource())


def publish(client, body, **kwargs):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, answer = stub_request(client, "POST", URL, data=raw, **kwargs)
    return status, json.loads(answer)


def test_publish_reports_nodes_with_subscribers():
    gateway, client = api()
    assert publish(client, {"c": "ex:BTCUSDT@depth", "d": "{}"}) == (
        200,
        {"E": None, "r": {"s": 0, "f": 0}},
    )
    recorder = Recorder()
    subscribe_live(gateway.node, recorder, "ex:BTCUSDT@depth")
    data = '{"event":"BTCUSDT@depth","data":{"bids":[["64000.10","0.5"]]},"note":"\u00e9\u4e2d"}'
    assert publish(client, {"c": "ex:BTCUSDT@depth", "d": data})[1]["r"]["s"] == 1
    assert len(recorder.frames) == 1
    assert recorder.frames[0].payload == data.encode()  # byte for byte, decimals untouched


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        {"d": "x"},
        {"c": "", "d": "x"},
        {"c": 5, "d": "x"},
        {"c": "ex:a b", "d": "x"},
        {"c": "ex:a\nb", "d": "x"},
        {"c": "ex:x", "d": {"not": "text"}},
        {"c": "ex:x"},
        {"c": "ex:x", "d": "x", "t": "video"},
        {"c": "ex:x", "d": "not base64!", "t": "binary"},
    ],
)
def test_invalid_publish_is_400_101(body):
    _, client = api()
    status, answer = publish(client, body)
    assert status == 400
    assert answer["E"]["c"] == 101 and answer["E"]["m"]


def test_bearer_token_is_required_when_configured():
    _, client = api(api_token="s3cret")
    body = {"c": "ex:x", "d": "x"}
    assert publish(client, body)[0] == 401
    assert publish(client, body, headers={"Authorization": "Bearer wrong"})[1]["E"]["c"] == 102
    assert publish(client, body, headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_oversize_body_is_413_103():
    _, client = api(max_publish_size=100)
    status, answer = publish(client, {"c": "ex:x", "d": "x" * 200})
    assert (status, answer["E"]["c"]) == (413, 103)
    assert publish(client, {"c": "ex:x", "d": "x" * 50})[0] == 200


@pytest.mark.parametrize("available", [False, True])
def test_mesh_refusal_is_503_104(available):
    _, client = api(mesh=DownMesh(available))
    status, answer = publish(client, {"c": "ex:x", "d": "x"})
    assert (status, answer["E"]["c"]) == (503, 104)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_other_methods_on_publish_are_405(method):
    _, client = api()
    status, headers, _ = stub_request(client, method, URL)
    assert status == 405
    assert headers.getRawHeaders("allow") == ["POST"]


def test_methods_twisted_web_does_not_know_are_501():
    _, client = api()
    assert stub_request(client, "PUT", URL)[0] == 501


def test_paths_below_publish_are_404():
    _, client = api()
    assert stub_request(client, "POST", URL + "/more", data=b'{"c":"ex:x","d":"x"}')[0] == 404


def test_healthz_reflects_the_mesh():
    _, client = api()
    status, _, body = stub_request(client, "GET", "http://api/healthz")
    assert status == 200 and json.loads(body)["mesh"] == "up"
    _, client = api(mesh=DownMesh(False))
    status, _, body = stub_request(client, "GET", "http://api/healthz")
    assert status == 503 and json.loads(body)["status"] == "unavailable"


def test_metrics_in_prometheus_format():
    gateway, client = api()
    subscribe_live(gateway.node, Recorder(), "ex:x")
    publish(client, {"c": "ex:x", "d": "x"})
    publish(client, {"c": "ex:x"})
    status, headers, body = stub_request(client, "GET", "http://api/metrics")
    assert status == 200
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = body.decode()
    for line in [
        "exchange_stream_messages_published_total 1.0",
        "exchange_stream_messages_delivered_total 1.0",
        "exchange_stream_subscriptions 1.0",
        "exchange_stream_channels 1.0",
        "exchange_stream_connections 0.0",
        'exchange_stream_publish_errors_total{code="101"} 1.0',
    ]:
        assert line in text.splitlines(), line
    assert "exchange_stream_auth_latency_seconds_bucket" in text


@pytest.mark.parametrize(
    "body",
    [
        {"c": "ex:x", "d": "x", "retain": "yes"},
        {"c": "ex:x", "d": "x", "snapshot": 5},
        {"c": "ex:x", "d": "x", "retain": True, "snapshot": "s"},
    ],
)
def test_invalid_snapshot_fields_are_400(body):
    _, client = api()
    assert publish(client, body)[0] == 400


def test_retain_and_snapshot_are_kept_for_new_subscribers():
    gateway, client = api()
    publish(client, {"c": "ex:A@ticker", "d": '{"last":"1"}', "retain": True})
    publish(client, {"c": "ex:A@depth", "d": '{"diff":2}', "snapshot": '{"book":2}'})
    publish(client, {"c": "ex:A@depth", "d": '{"diff":3}'})  # no snapshot: the kept one stays
    ticker, depth = Recorder(), Recorder()
    subscribe_live(gateway.node, ticker, "ex:A@ticker")
    subscribe_live(gateway.node, depth, "ex:A@depth")
    assert [frame.payload for frame in ticker.frames] == [b'{"last":"1"}']
    assert [frame.payload for frame in depth.frames] == [b'{"book":2}']


@pytest.mark.parametrize(
    "body", [{"c": "es:control", "d": "{}"}, {"c": "es:heartbeat:x", "d": "1"}]
)
def test_the_gateways_own_channels_are_refused(body):
    _, client = api()
    assert publish(client, body)[0] == 400


def test_kick_validates_the_uid():
    _, client = api()
    for body in ({}, {"uid": "1002@balance"}, {"uid": True}, [1]):
        status, answer = stub_request(client, "POST", "http://api/v1/mesh/kick", json=body)[0], None
        assert status == 400, body
    status, _, answer = stub_request(client, "POST", "http://api/v1/mesh/kick", json={"uid": 1001})
    assert (status, json.loads(answer)) == (200, {"E": None, "r": {"s": 0, "f": 0}})


def test_a_batch_publishes_every_item_in_order():
    gateway, client = api()
    recorder = Recorder()
    subscribe_live(gateway.node, recorder, "ex:A@ticker")
    status, answer = publish(
        client,
        [
            {"c": "ex:A@ticker", "d": "[1]"},
            {"c": "ex:B@ticker", "d": "[2]"},
            {"c": "ex:A@ticker", "d": "[3]", "retain": True},
        ],
    )
    assert (status, answer) == (
        200,
        {"E": None, "r": [{"s": 1, "f": 0}, {"s": 0, "f": 0}, {"s": 1, "f": 0}]},
    )
    assert [frame.payload for frame in recorder.frames] == [b"[1]", b"[3]"]


def test_a_batch_with_one_bad_item_sends_nothing():
    gateway, client = api()
    recorder = Recorder()
    subscribe_live(gateway.node, recorder, "ex:A@ticker")
    status, answer = publish(client, [{"c": "ex:A@ticker", "d": "[1]"}, {"c": "ex:A@ticker"}])
    assert status == 400 and answer["E"]["m"].startswith("publish 1:")
    assert recorder.frames == []
    assert publish(client, [])[0] == 400


def test_a_batch_refused_by_the_mesh_is_503_for_every_item():
    _, client = api(mesh=DownMesh(available=True))
    status, answer = publish(client, [{"c": "ex:A@x", "d": "1"}, {"c": "ex:B@x", "d": "2"}])
    assert status == 503 and answer["E"]["c"] == 104
    assert [item["E"]["c"] for item in answer["r"]] == [104, 104]


def test_publishes_that_reach_nobody_are_counted():
    """A publish no node listens to answers s: 0 and is counted, single or in a batch: the
    metric an operator watches for a misspelt channel (no ex: prefix, a lower-case symbol)."""
    gateway, client = api()
    subscribe_live(gateway.node, Recorder(), "ex:BTCUSDT@depth")
    assert publish(client, {"c": "BTCUSDT@depth", "d": "{}"})[1]["r"]["s"] == 0  # no prefix
    assert publish(client, {"c": "ex:BTCUSDT@depth", "d": "{}"})[1]["r"]["s"] == 1
    batch = [{"c": "ex:btcusdt@depth", "d": "{}"}, {"c": "ex:BTCUSDT@depth", "d": "{}"}]
    status, answer = publish(client, batch)
    assert status == 200 and [r["s"] for r in answer["r"]] == [0, 1]
    assert answer["r"][0]["hint"].startswith("no client can subscribe to ex:btcusdt@depth")
    assert "hint" not in answer["r"][1]
    _, _, body = stub_request(client, "GET", "http://api/metrics")
    assert "exchange_stream_publishes_unheard_total 2.0" in body.decode().splitlines()


def test_a_publish_no_client_could_ever_receive_is_a_warning_naming_the_channel():
    """1001@balance (the prefix forgotten) answers s 0 as CONNMIX does, with a "hint" why,
    and the log says so at warning level; a well-formed channel nobody watches stays at
    debug level, without a hint."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    from tests.support import memory_gateway, stub_request

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        gateway = memory_gateway(Clock())
        api = StubTreq(gateway.api_resource())
        results = []
        for channel in ("1001@balance", "ex:ETHUSDT@ticker"):
            body = json.dumps({"c": channel, "d": "{}"}).encode()
            status, _, answer = stub_request(api, "POST", "http://api/v1/mesh/publish", data=body)
            results.append(json.loads(answer)["r"])
            assert status == 200 and results[-1]["s"] == 0
        assert results[0]["hint"] == (
            "no client can subscribe to 1001@balance: client channels are "
            "ex:<SYMBOL>@<type> and ex:<uid>@<type>"
        )
        assert "hint" not in results[1]  # a good name nobody watches now: nothing to say
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [e for e in events if "no client can subscribe" in e.get("log_format", "")]
    assert [e["channel"] for e in warned] == ["1001@balance"]
    assert warned[0]["log_level"].name == "warn"
