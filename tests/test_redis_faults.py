"""Nothing answered 200 is lost under Redis faults: every subscriber connected the whole time
receives every accepted publish, exactly once, in order (within the history window).

Three nodes on one real Redis: publishes at a steady rate through node A, subscribers on B
and C; then the fault, while the traffic goes on. The faults are the ones pub/sub loses
messages under: its connections killed, Redis killed and restarted, a subscriber cut for its
output buffer, a node whose reads stop (it goes deaf), Redis stalled.
"""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.core.config import GatewayConfig
from tests.faults import (
    StallingProxy,
    Traffic,
    check_every_subscriber,
    delivered_everything,
    recording_clients,
)
from tests.support import start_gateway, until

CHANNEL = "ex:BTCUSDT@trades"
SELF_CHECK = (0.3, 1.0)  # the heartbeat's interval and timeout, short for the tests


async def node(url: str, self_check=SELF_CHECK):
    config = GatewayConfig(mesh=url, ping_interval=0)
    mesh = RedisMesh(url, reactor, streams=config.streams, self_check=self_check)
    started = await start_gateway(config, mesh=mesh)
    await until(lambda: mesh.available and mesh.receiving)
    return started


async def three_nodes(url_a: str, url_b: str, url_c: str):
    return [await node(url) for url in (url_a, url_b, url_c)]


async def run_through(fault, nodes, seconds=1.5, rate=100):
    """Traffic for ``seconds`` with ``fault`` (a coroutine) started after a third of it."""
    a, b, c = nodes
    received = [*await recording_clients(b, "BTCUSDT@trades", 5),
                *await recording_clients(c, "BTCUSDT@trades", 5)]  # fmt: skip
    traffic = Traffic(a.api_port, CHANNEL, rate)
    running = Deferred.fromCoroutine(traffic.run(seconds))
    await deferLater(reactor, seconds / 3, lambda: None)
    await fault()
    await running
    await until(lambda: delivered_everything(received, traffic), timeout=15)
    check_every_subscriber(received, traffic)
    return traffic


async def stop(nodes):
    await gatherResults([Deferred.fromCoroutine(started.stop()) for started in nodes])


@pytest_twisted.ensureDeferred
async def test_client_kill_type_pubsub(redis_server):
    nodes = await three_nodes(*[redis_server.url] * 3)
    try:

        async def kill():
            redis_server.client().client_kill_filter(_type="pubsub")

        traffic = await run_through(kill, nodes)
        assert not traffic.refused and not traffic.unknown
        assert all(started.gateway.mesh.reconnects >= 1 for started in nodes[1:])
    finally:
        await stop(nodes)


@pytest_twisted.ensureDeferred
async def test_redis_killed_and_restarted_on_the_same_port(redis_server):
    nodes = await three_nodes(*[redis_server.url] * 3)
    try:

        async def restart():
            redis_server.stop()
            await deferLater(reactor, 0.3, lambda: None)
            redis_server.start()

        traffic = await run_through(restart, nodes, seconds=2.5)
        assert traffic.refused, "publishes while Redis was down are refused, not accepted"
    finally:
        await stop(nodes)


@pytest_twisted.ensureDeferred
async def test_a_subscriber_cut_by_the_pubsub_output_buffer_limit(redis_server):
    nodes = await three_nodes(*[redis_server.url] * 3)
    control = redis_server.client()
    try:

        async def cut():
            control.config_set("client-output-buffer-limit", "pubsub 1024 0 0")
            big = '{"event":"trades","data":{"n":-1,"pad":"%s"}}' % ("x" * 4096)
            control.publish(CHANNEL, big)  # over the limit for every subscriber: all cut
            await deferLater(reactor, 0.2, lambda: None)
            control.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")

        await run_through(cut, nodes)
        assert all(started.gateway.mesh.reconnects >= 1 for started in nodes[1:])
    finally:
        await stop(nodes)


@pytest_twisted.ensureDeferred
async def test_a_node_whose_redis_reads_stop_goes_deaf_and_catches_up(redis_server):
    proxy = StallingProxy(redis_server.port)
    through_proxy = await proxy.listen()
    nodes = await three_nodes(redis_server.url, through_proxy, redis_server.url)
    try:

        async def stall():
            proxy.stalled = True
            deaf = nodes[1].gateway.mesh
            await until(lambda: deaf.deaf_events >= 1, timeout=10)
            proxy.stalled = False

        await run_through(stall, nodes)
    finally:
        await stop(nodes)
        await proxy.close()


@pytest_twisted.ensureDeferred
async def test_a_stalled_redis_is_not_taken_for_a_deaf_node(redis_server):
    nodes = await three_nodes(*[redis_server.url] * 3)
    try:

        async def sleep():
            # Redis stops answering anyone for 2 s, then runs what waited (as DEBUG SLEEP
            # does, which a default Redis 7 refuses to run).
            redis_server.client().client_pause(2000, all=True)

        traffic = await run_through(sleep, nodes, seconds=3.0)
        assert not traffic.refused
        assert [started.gateway.mesh.deaf_events for started in nodes] == [0, 0, 0]
    finally:
        await stop(nodes)


@pytest_twisted.ensureDeferred
async def test_a_node_is_unhealthy_while_redis_does_not_answer_and_loses_nothing(redis_server):
    """A 5 s stall, with the self-check's own timings (a beat every 2 s, a stall after 2 s
    unanswered): /healthz answers 503 during it and 200 after, nobody is called deaf, and
    every publish answered 200 is delivered."""
    nodes = [await node(redis_server.url, self_check=(2.0, 6.0)) for _ in range(3)]
    statuses: list[int] = []
    try:

        async def pause():
            redis_server.client().client_pause(5000, all=True)
            for _ in range(30):  # 6 s, every 0.2 s
                statuses.append((await nodes[1].health())[0])
                await deferLater(reactor, 0.2, lambda: None)

        traffic = await run_through(pause, nodes, seconds=3.0)
        assert not traffic.refused
        print("healthz during and after the stall:", statuses)
        assert 503 in statuses and statuses[-1] == 200
        assert [started.gateway.mesh.deaf_events for started in nodes] == [0, 0, 0]
    finally:
        await stop(nodes)
