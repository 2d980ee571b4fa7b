"""Several gateway nodes on one real Redis (a throwaway redis-server per test)."""

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.core.config import GatewayConfig
from tests.redis_server import RedisServer
from tests.support import publish, start_gateway, until


async def start_node(redis_server, auth_backend):
    node = await start_gateway(
        GatewayConfig(mesh=redis_server.url, auth_url=auth_backend.url, auth_timeout=2.0)
    )
    mesh = node.gateway.mesh
    await until(lambda: mesh.available and mesh.receiving)
    return node


@pytest_twisted.async_yield_fixture
async def nodes(redis_server, auth_backend):
    started = [await start_node(redis_server, auth_backend) for _ in range(3)]
    yield started
    for node in started:
        await node.stop()


async def subscribed_client(node, *channels, token=None):
    client = await node.connect()
    if token:
        assert await client.request({"op": "auth", "token": token}) == {"result": True}
    assert await client.request({"op": "subscribe", "channels": list(channels)}) == {"result": True}
    return client


@pytest_twisted.ensureDeferred
async def test_publish_on_a_reaches_b_and_c_once_and_in_order(nodes):
    a, b, c = nodes
    clients = [await subscribed_client(node, "BTCUSDT@trades") for node in (b, c, c)]
    status, answer = await a.publish("ex:BTCUSDT@trades", '{"n":0}')
    assert (status, answer["E"], answer["r"]["s"], answer["r"]["f"]) == (200, None, 2, 0)
    for index in range(1, 200):
        await a.publish("ex:BTCUSDT@trades", json.dumps({"n": index}))
    await a.publish("ex:BTCUSDT@trades", '{"end":true}')
    for client in clients:
        received = [(await client.next())["n"] for _ in range(200)]
        assert received == list(range(200))
        assert await client.next() == {"end": True}  # no copies in between


@pytest_twisted.ensureDeferred
async def test_private_events_cross_nodes_only_to_their_user(nodes):
    a, b, c = nodes
    alice = await subscribed_client(b, "@order", token="token-1001")
    bob = await subscribed_client(c, "@order", token="token-1002")
    await a.publish("ex:1002@order", '{"for":"bob"}')
    await a.publish("ex:1001@order", '{"for":"alice"}')
    assert await bob.next() == {"for": "bob"}
    assert await alice.next() == {"for": "alice"}  # nothing of bob's before it


@pytest_twisted.ensureDeferred
async def test_nodes_subscribe_in_redis_only_while_they_have_subscribers(nodes, redis_server):
    a, b, c = nodes
    channel = "ex:ETHUSDT@depth"
    first = await subscribed_client(b, "ETHUSDT@depth")
    second = await subscribed_client(b, "ETHUSDT@depth")
    third = await subscribed_client(c, "ETHUSDT@depth")
    assert redis_server.numsub(channel) == {channel: 2}  # one per node, not per client
    await first.close()
    await third.close()
    await until(lambda: redis_server.numsub(channel)[channel] == 1)
    await second.close()
    await until(lambda: redis_server.numsub(channel)[channel] == 0)
    _status, answer = await a.publish(channel, "{}")
    assert answer["r"]["s"] == 0


@pytest_twisted.ensureDeferred
async def test_snapshot_reaches_a_late_subscriber_on_another_node(nodes):
    a, b, _ = nodes
    await a.publish("ex:BTCUSDT@depth", '{"type":"update","seq":1}', snapshot='{"seq":1}')
    await a.publish("ex:BTCUSDT@ticker", '{"last":"1.0"}', retain=True)
    await a.publish("ex:BTCUSDT@ticker", '{"last":"2.0"}', retain=True)
    client = await subscribed_client(b, "BTCUSDT@depth", "BTCUSDT@ticker")
    got = [await client.next(), await client.next()]
    assert sorted(got, key=json.dumps) == sorted([{"seq": 1}, {"last": "2.0"}], key=json.dumps)
    await a.publish("ex:BTCUSDT@depth", '{"type":"update","seq":2}', snapshot='{"seq":2}')
    assert await client.next() == {"type": "update", "seq": 2}


@pytest_twisted.ensureDeferred
async def test_back_end_may_publish_straight_to_redis(nodes, redis_server):
    _, b, _ = nodes
    client = await subscribed_client(b, "BTCUSDT@depth")
    direct = redis_server.client()
    assert direct.publish("ex:BTCUSDT@depth", '{"via":"redis"}') == 1
    assert await client.next() == {"via": "redis"}
    direct.publish("ex:BTCUSDT@depth", b"\x00b\x01\x02")
    assert await client.next_raw() == (b"\x01\x02", True)
    direct.set("es:{ex:BTCUSDT@ticker}:snapshot", '{"kept":true}')
    late = await subscribed_client(b, "BTCUSDT@ticker")
    assert await late.next() == {"kept": True}


@pytest_twisted.ensureDeferred
async def test_redis_outage_refuses_publishes_then_heals_without_duplicates(nodes, redis_server):
    a, b, c = nodes
    clients = [await subscribed_client(node, "BTCUSDT@trades") for node in (a, b, c)]
    redis_server.stop()
    await until(lambda: not a.gateway.mesh.available)
    status, answer = await a.publish("ex:BTCUSDT@trades", '{"lost":true}')
    assert (status, answer["E"]["c"]) == (503, 104)
    health = await a.health()
    assert health[0] == 503 and health[1]["mesh"] == "down"
    assert all(client.closed.called is False for client in clients)  # clients stay connected

    redis_server.start()
    for node in nodes:
        mesh = node.gateway.mesh
        await until(lambda mesh=mesh: mesh.available and mesh.receiving, timeout=20)
    assert redis_server.numsub("ex:BTCUSDT@trades") == {"ex:BTCUSDT@trades": 3}
    status, answer = await a.publish("ex:BTCUSDT@trades", '{"after":true}')
    assert (status, answer["r"]["s"]) == (200, 3)
    await a.publish("ex:BTCUSDT@trades", '{"end":true}')
    for client in clients:  # what was refused is not sent late, nor anything twice
        assert [await client.next(), await client.next()] == [{"after": True}, {"end": True}]
    assert (await a.health())[0] == 200
    metrics = await a.metrics()
    assert 'exchange_stream_publish_errors_total{code="104"} 1.0' in metrics
    reconnects = [line for line in metrics if line.startswith("exchange_stream_mesh_reconnects")]
    assert reconnects and float(reconnects[0].split()[-1]) >= 2


@pytest_twisted.ensureDeferred
async def test_a_restarted_node_serves_again(nodes, redis_server, auth_backend):
    _a, b, c = nodes
    on_b = await subscribed_client(b, "BTCUSDT@kline_1m")
    await b.stop()
    await on_b.closed
    await until(lambda: redis_server.numsub("ex:BTCUSDT@kline_1m")["ex:BTCUSDT@kline_1m"] == 0)
    restarted = await start_node(redis_server, auth_backend)
    try:
        client = await subscribed_client(restarted, "BTCUSDT@kline_1m")
        _status, answer = await publish(c.api_port, {"c": "ex:BTCUSDT@kline_1m", "d": "[]"})
        assert answer["r"]["s"] == 1
        assert await client.next() == []
    finally:
        await restarted.stop()
    nodes.remove(b)


def self_signed_certificate(directory) -> tuple[str, str]:
    """A certificate for localhost / 127.0.0.1 that is its own CA: (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest_twisted.ensureDeferred
async def test_rediss_url_speaks_tls_and_verifies_the_server(redis_server, auth_backend, tmp_path):
    """A TLS front (Twisted's ssl: endpoint + port forwarding) before the plain Redis."""
    from twisted.internet.endpoints import serverFromString
    from twisted.protocols.portforward import ProxyFactory

    cert, key = self_signed_certificate(tmp_path)
    front = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).listen(ProxyFactory("127.0.0.1", redis_server.port))
    tls_url = f"rediss://localhost:{front.getHost().port}/0?ca={cert}"
    node = await start_gateway(GatewayConfig(mesh=tls_url, auth_url=auth_backend.url))
    try:
        mesh = node.gateway.mesh
        await until(lambda: mesh.available and mesh.receiving)
        client = await subscribed_client(node, "BTCUSDT@depth")
        assert redis_server.numsub("ex:BTCUSDT@depth") == {"ex:BTCUSDT@depth": 1}
        await node.publish("ex:BTCUSDT@depth", '{"tls":true}')
        assert await client.next() == {"tls": True}
    finally:
        await node.stop()
        await front.stopListening()


@pytest_twisted.ensureDeferred
async def test_unix_socket_url(auth_backend, tmp_path):
    socket_path = tmp_path / "redis.sock"
    server = RedisServer("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    node = await start_gateway(
        GatewayConfig(mesh=f"unix://{socket_path}?db=3", auth_url=auth_backend.url)
    )
    try:
        mesh = node.gateway.mesh
        await until(lambda: mesh.available and mesh.receiving)
        await node.publish("ex:BTCUSDT@ticker", '{"unix":1}', retain=True)
        client = await subscribed_client(node, "BTCUSDT@ticker")
        assert await client.next() == {"unix": 1}
        keys = redis_db(server, 3).keys("es:*:snapshot")
        assert keys == [b"es:{ex:BTCUSDT@ticker}:snapshot"]
    finally:
        await node.stop()
        server.close()


def redis_db(server, db):
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, db=db)


def failed_auths(server: RedisServer) -> int:
    """AUTH attempts the server refused, from its ACL log."""
    log = server.client().acl_log()
    return sum(int(entry["count"]) for entry in log if entry["reason"] == "auth")


@pytest_twisted.ensureDeferred
async def test_password_protected_redis(auth_backend):
    """Redis refuses a wrong password, which keeps the node unavailable; the right one works
    (the retries with backoff are in test_redis_unit.py, on a fake clock)."""
    server = RedisServer(password="s3cret")
    wrong = await start_gateway(
        GatewayConfig(mesh=f"redis://:nope@127.0.0.1:{server.port}/0", auth_url=auth_backend.url)
    )
    right = await start_gateway(
        GatewayConfig(mesh=f"redis://:s3cret@127.0.0.1:{server.port}/0", auth_url=auth_backend.url)
    )
    try:
        await until(lambda: right.gateway.mesh.available and right.gateway.mesh.receiving)
        await until(lambda: failed_auths(server) >= 2)  # both of its connections were refused
        assert not wrong.gateway.mesh.available
        assert (await wrong.publish("ex:x", "{}"))[0] == 503
        assert (await right.publish("ex:x", "{}"))[0] == 200
    finally:
        await wrong.stop()
        await right.stop()
        server.close()


@pytest_twisted.ensureDeferred
async def test_a_deaf_node_notices_and_heals(redis_server, auth_backend):
    """Redis cuts the node's subscriber connection for its output buffer limit while the
    node is not reading (so it does not see the cut), and still accepts its publishes: the
    node stops hearing its heartbeat, reports unhealthy, resubscribes, and delivers again.
    The intervals and the healing steps are in test_redis_unit.py, on a fake clock."""
    # Shorter than the default 2 s / 6 s, but the timeout stays longer than the reconnect's
    # backoff (up to 1.75 s) and a beat: beats unheard while reconnecting must not count.
    mesh = RedisMesh(redis_server.url, self_check=(0.2, 2.5))
    config = GatewayConfig(mesh=redis_server.url, auth_url=auth_backend.url)
    node = await start_gateway(config, mesh=mesh)
    try:
        await until(lambda: mesh.available and mesh.receiving)
        client = await subscribed_client(node, "BTCUSDT@depth")
        direct = redis_server.client()
        direct.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        mesh._subscriber.transport.pauseProducing()
        for _ in range(64):
            direct.publish("ex:BTCUSDT@depth", json.dumps({"pad": "x" * 16_000}))
        await until(lambda: not mesh.receiving, timeout=15)
        assert (await node.health())[0] == 503
        await until(lambda: mesh.receiving, timeout=15)
        assert mesh.self_check.deaf_events == 1
        while client.received.pending:  # whatever got through before the cut
            await client.next_raw()
        await node.publish("ex:BTCUSDT@depth", '{"after":"heal"}')
        assert await client.next() == {"after": "heal"}
        assert (await node.health())[0] == 200
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_kick_ends_a_users_private_subscriptions_on_every_node(nodes):
    a, b, c = nodes
    on_b = await subscribed_client(b, "@balance", "BTCUSDT@trades", token="token-1001")
    on_c = await subscribed_client(c, "@order", token="token-1001")
    other = await subscribed_client(c, "@order", token="token-1002")
    status, answer = await publish(a.api_port, {"uid": 1001}, path="/v1/mesh/kick")
    assert (status, answer["r"]["s"]) == (200, 3)  # every node listens to control messages
    assert await on_b.next() == {
        "event": "notice",
        "data": {"type": "kicked", "channels": ["@balance"]},
    }
    assert (await on_c.next())["data"] == {"type": "kicked", "channels": ["@order"]}
    assert await on_b.request({"op": "list"}) == {"result": ["BTCUSDT@trades"]}
    assert (await on_b.request({"op": "subscribe", "channel": "@balance"}))["code"] == 1
    await a.publish("ex:1002@order", '{"still":"here"}')
    assert await other.next() == {"still": "here"}


@pytest_twisted.ensureDeferred
async def test_many_subscribing_to_one_channel_during_the_subscribe_round_trip(
    redis_server, auth_backend
):
    """150 clients wait for one SUBSCRIBE to real Redis: each gets its answer and the message,
    and nothing is left in flight when they go (the stack overflow this once hit, past ~100
    waiting, is pinned for 2,000 in test_node.py)."""
    node = await start_gateway(
        GatewayConfig(mesh=redis_server.url, auth_url=auth_backend.url, max_connections_per_ip=1000)
    )
    try:
        mesh = node.gateway.mesh
        await until(lambda: mesh.available and mesh.receiving)
        clients = await gatherResults([Deferred.fromCoroutine(node.connect()) for _ in range(150)])
        for client in clients:
            client.send({"op": "subscribe", "channel": "BTCUSDT@depth"})
        assert [await client.next() for client in clients] == [{"result": True}] * 150
        status, answer = await node.publish("ex:BTCUSDT@depth", '{"seq":1}')
        assert (status, answer["r"]["s"]) == (200, 1)
        assert [await client.next() for client in clients] == [{"seq": 1}] * 150
        for client in clients:
            client.protocol.dropConnection(abort=True)
        await until(lambda: redis_server.numsub("ex:BTCUSDT@depth") == {"ex:BTCUSDT@depth": 0})
        assert not node.gateway.node._locks  # nothing left in flight
    finally:
        await node.stop()
