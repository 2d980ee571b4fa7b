"""``GET /v1/market/klines``: the engine's closed bars in the mesh, served on the public port.

The engine runs on a fake clock (its bars are made by trades and time we choose); the gateway
and its HTTP port are real sockets; the Redis tests use a real ``redis-server``.
"""

import itertools
import json
import time
from decimal import Decimal as D

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from exchange_stream.adapters.market_history import overlaps
from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.encoding import encode
from exchange_stream.core.market.bars import BarsQuery, answer, parse_query
from exchange_stream.core.market.events import Trade
from exchange_stream.core.publication import MeshUnavailable
from exchange_stream.core.streams import bars_channel
from exchange_stream.market_service import market_service
from exchange_stream.services.market_engine import MarketEngine, MarketSettings
from exchange_stream.services.memory_mesh import MemoryMesh
from exchange_stream.services.simulator import Simulator
from tests.support import connect, http_client, start_gateway, until

T0 = 1_732_540_800.0  # 2024-11-25T13:20:00Z, a minute's start
MS = int(T0 * 1000)
MINUTE = 60_000


async def get(port: int, query: str, method: str = "GET", **kwargs):
    """(status, headers, body) of one request to the history on ``port``."""
    url = f"http://127.0.0.1:{port}/v1/market/klines{query}"
    response = await http_client().request(method, url, **kwargs)
    return response.code, response.headers, await treq.content(response)


def engine_on(publish, start: float = T0) -> tuple[MarketEngine, Clock]:
    clock = Clock()
    clock.advance(start)
    engine = MarketEngine(publish, MarketSettings(), clock)
    engine.startService()
    return engine, clock


def trade_minutes(engine, clock, minutes: int, symbol: str = "BTCUSDT") -> None:
    """One trade at 100 + k in minute k, then time up to the middle of the last minute."""
    for k in range(minutes):
        at = MS + k * MINUTE
        clock.advance(at / 1000 + 1 - clock.seconds())
        engine.handle(Trade(symbol, k + 1, D(100 + k), D("0.5"), "buy", at + 1000))
        clock.advance(0.5)


# -- the engine's side ----------------------------------------------------------------------


def test_each_closed_bar_goes_to_its_bars_channel_as_the_kline_channel_has_it():
    """The bars channel gets the closed bar's object, byte for byte the kline channel's data;
    the kline channel's messages stay the envelope they were."""
    sent = []

    def publish(channel, publication, snapshot):
        sent.append((channel, publication.payload, snapshot))
        return succeed(1)

    engine, clock = engine_on(publish)
    trade_minutes(engine, clock, 3)
    bars = [payload for channel, payload, _ in sent if channel == "ex:BTCUSDT@bars_1m"]
    closed = [
        json.loads(payload)["data"]
        for channel, payload, _ in sent
        if channel == "ex:BTCUSDT@kline_1m" and json.loads(payload)["data"]["closed"]
    ]
    assert len(bars) == 2 and bars == [encode(bar) for bar in closed]
    assert json.loads(bars[0]) == {
        "interval": "1m", "t": MS, "o": "100", "h": "100", "l": "100", "c": "100",
        "v": "0.5", "q": "50", "n": 1, "closed": True,
    }  # fmt: skip
    kline = next(p for c, p, _ in sent if c == "ex:BTCUSDT@kline_1m")
    assert kline.startswith(b'{"event":"BTCUSDT@kline_1m","data":{"interval":"1m","t":')
    assert not any(c.startswith("ex:BTCUSDT@bars_") and "1m" not in c for c, _, _ in sent)
    assert all(snapshot is None for c, _, snapshot in sent if "@bars_" in c)


def test_bars_the_mesh_refuses_wait_and_go_in_order_when_it_is_back():
    """A refused bar (nothing sent) is tried again on the next kline push and the ones behind
    it wait, so the history has no hole and stays in time order."""
    mesh = MemoryMesh(clock=Clock())
    down = [True]

    def publish(channel, publication, snapshot):
        if down[0] and "@bars_" in channel:
            return fail(MeshUnavailable("down"))
        return mesh.publish(channel, publication, snapshot)

    engine, clock = engine_on(publish)
    trade_minutes(engine, clock, 4)
    assert mesh.recent("ex:BTCUSDT@bars_1m", 10).result == []
    down[0] = False
    clock.advance(0.5)
    stored = [json.loads(p.payload)["t"] for p in mesh.recent("ex:BTCUSDT@bars_1m", 10).result]
    assert stored == [MS, MS + MINUTE, MS + 2 * MINUTE]
    assert engine.publish_failures >= 1


def test_bars_to_a_mesh_that_answers_later_go_out_together_and_only_refused_ones_again():
    """With a mesh that answers later (Redis), the waiting bars are all sent in order; one it
    refused is sent again on the next kline push, one it took is not."""
    answers = []

    def publish(channel, publication, snapshot):
        if "@bars_" not in channel:
            return succeed(1)
        answers.append((channel, json.loads(publication.payload)["t"], Deferred()))
        return answers[-1][2]

    engine, clock = engine_on(publish)
    trade_minutes(engine, clock, 4)
    sent = [(t, d) for c, t, d in answers if c == "ex:BTCUSDT@bars_1m"]
    assert [t for t, _ in sent] == [MS, MS + MINUTE, MS + 2 * MINUTE]
    sent[0][1].callback(1)
    sent[1][1].errback(MeshUnavailable("down"))
    sent[2][1].callback(1)
    answers.clear()
    clock.advance(0.5)
    assert [t for c, t, _ in answers if c == "ex:BTCUSDT@bars_1m"] == [MS + MINUTE]


# -- the query and the answer, pure ---------------------------------------------------------


def bar(t: int, closed: bool = True) -> bytes:
    return encode({"interval": "1m", "t": t, "o": "1", "h": "1", "l": "1", "c": "1", "v": "0",
                   "q": "0", "n": 0, "closed": closed})  # fmt: skip


def test_the_answer_joins_the_stored_bytes_in_time_order_and_honours_bounds_and_limit():
    closed = [bar(MS + k * MINUTE) for k in (0, 2, 1, 3)]  # a retried bar came late
    current = bar(MS + 4 * MINUTE, closed=False)
    everything = answer(closed, current, BarsQuery("X", "1m"))
    assert [b["t"] for b in json.loads(everything)] == [MS + k * MINUTE for k in range(5)]
    assert (
        everything == b"[" + b",".join([closed[0], closed[2], closed[1], closed[3], current]) + b"]"
    )
    last_two = answer(closed, current, BarsQuery("X", "1m", limit=2))
    assert [b["t"] for b in json.loads(last_two)] == [MS + 3 * MINUTE, MS + 4 * MINUTE]
    first_two = answer(closed, current, BarsQuery("X", "1m", start=MS + MINUTE, limit=2))
    assert [b["t"] for b in json.loads(first_two)] == [MS + MINUTE, MS + 2 * MINUTE]
    ending = answer(closed, current, BarsQuery("X", "1m", end=MS + 2 * MINUTE, limit=2))
    assert [b["t"] for b in json.loads(ending)] == [MS + MINUTE, MS + 2 * MINUTE]
    within = answer(closed, current, BarsQuery("X", "1m", start=MS + 1, end=MS + 3 * MINUTE))
    assert [b["t"] for b in json.loads(within)] == [MS + k * MINUTE for k in (1, 2, 3)]
    assert answer([], None, BarsQuery("X", "1m")) == b"[]"
    # the open bar's snapshot says closed once time passed its end: the stored one counts
    assert answer([bar(MS)], bar(MS, closed=False), BarsQuery("X", "1m")) == b"[" + bar(MS) + b"]"
    assert (
        answer([b"not json", b"[1]", bar(MS)], None, BarsQuery("X", "1m")) == b"[" + bar(MS) + b"]"
    )


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({}, -1102),
        ({b"symbol": [b"BTCUSDT"]}, -1102),
        ({b"symbol": [b""], b"interval": [b"1m"]}, -1102),
        ({b"symbol": [b"BTC USDT"], b"interval": [b"1m"]}, -1121),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"2m"]}, -1120),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"1m"], b"limit": [b"0"]}, -1130),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"1m"], b"limit": [b"1001"]}, -1130),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"1m"], b"limit": [b"5.0"]}, -1100),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"1m"], b"startTime": [b"-1"]}, -1100),
        ({b"symbol": [b"BTCUSDT"], b"interval": [b"1m"], b"endTime": [b"x"]}, -1100),
        (
            {
                b"symbol": [b"BTCUSDT"],
                b"interval": [b"1m"],
                b"startTime": [b"2"],
                b"endTime": [b"1"],
            },
            -1023,
        ),
        ({b"symbol": [b"BTCUSDT", b"ETHUSDT"], b"interval": [b"1m"]}, -1101),
    ],
)
def test_bad_parameters_are_refused_with_binance_codes(query, code):
    with pytest.raises(ValueError) as refused:
        parse_query(query)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_good_parameters():
    query = {b"symbol": [b"ETHUSDT"], b"interval": [b"4h"], b"startTime": [b"5"],
             b"endTime": [b"9"], b"limit": [b"1000"], b"timeZone": [b"0"]}  # fmt: skip
    assert parse_query(query) == BarsQuery("ETHUSDT", "4h", 5, 9, 1000)
    assert parse_query({b"symbol": [b"X"], b"interval": [b"1m"]}).limit == 500


def test_websocket_paths_that_would_hide_the_history():
    assert overlaps("/v1") and overlaps("/v1/market/klines") and overlaps("/v1/market/klines/ws")
    assert not overlaps("/exchange-stream") and not overlaps("/v1/ws")


# -- the endpoint on real sockets -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_endpoint_answers_bars_from_the_memory_mesh():
    """Closed bars from the bars channel and the open bar from the kline channel's snapshot,
    in time order, as application/json with CORS headers; limit and time bounds as Binance."""
    running = await start_gateway(GatewayConfig())
    try:
        engine, clock = engine_on(running.gateway.mesh.publish)
        trade_minutes(engine, clock, 6)
        status, headers, body = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m")
        assert status == 200
        assert headers.getRawHeaders(b"Content-Type") == [b"application/json"]
        assert headers.getRawHeaders(b"Access-Control-Allow-Origin") == [b"*"]
        bars = json.loads(body)
        assert [b["t"] for b in bars] == [MS + k * MINUTE for k in range(6)]
        assert [b["closed"] for b in bars] == [True] * 5 + [False]
        assert [b["c"] for b in bars] == [str(100 + k) for k in range(6)]  # strings, as sent
        _, _, two = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m&limit=2")
        assert [b["t"] for b in json.loads(two)] == [MS + 4 * MINUTE, MS + 5 * MINUTE]
        query = f"?symbol=BTCUSDT&interval=1m&startTime={MS + MINUTE}&endTime={MS + 3 * MINUTE}"
        _, _, bounded = await get(running.ws_port, query)
        assert [b["t"] for b in json.loads(bounded)] == [MS + k * MINUTE for k in (1, 2, 3)]
        _, _, hour = await get(running.ws_port, "?symbol=BTCUSDT&interval=1h")
        (open_hour,) = json.loads(hour)
        assert open_hour["t"] == MS - MS % 3_600_000 and open_hour["n"] == 6
        assert open_hour["closed"] is False
        status, _, empty = await get(running.ws_port, "?symbol=NOSUCH&interval=1m")
        assert (status, empty) == (200, b"[]")
        status, headers, refused = await get(running.ws_port, "?symbol=BTCUSDT&interval=7m")
        assert status == 400 and json.loads(refused) == {"code": -1120, "msg": "Invalid interval."}
        assert headers.getRawHeaders(b"Access-Control-Allow-Origin") == [b"*"]
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_preflight_other_methods_and_paths_below():
    running = await start_gateway(GatewayConfig())
    try:
        asked = {"Origin": ["http://chart.example"],
                 "Access-Control-Request-Method": ["GET"],
                 "Access-Control-Request-Headers": ["x-requested-with"]}  # fmt: skip
        status, headers, body = await get(running.ws_port, "", "OPTIONS", headers=asked)
        assert (status, body) == (204, b"")
        assert headers.getRawHeaders(b"Access-Control-Allow-Origin") == [b"*"]
        assert headers.getRawHeaders(b"Access-Control-Allow-Methods") == [b"GET, HEAD, OPTIONS"]
        assert headers.getRawHeaders(b"Access-Control-Allow-Headers") == [b"x-requested-with"]
        status, headers, _ = await get(running.ws_port, "", "POST")
        assert status == 405 and b"GET" in headers.getRawHeaders(b"Allow")[0]
        status, _, _ = await get(running.ws_port, "/more?symbol=BTCUSDT&interval=1m")
        assert status == 404
        status, _, body = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m", "HEAD")
        assert (status, body) == (200, b"")
    finally:
        await running.stop()


class RefusingMesh(MemoryMesh):
    """A mesh whose history cannot be read now (Redis down)."""

    def recent(self, channel, count):
        return fail(MeshUnavailable("Redis command connection is down"))


@pytest_twisted.ensureDeferred
async def test_503_when_the_mesh_cannot_answer():
    running = await start_gateway(GatewayConfig(), mesh=RefusingMesh())
    try:
        status, headers, body = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m")
        assert status == 503 and json.loads(body)["code"] == -1001
        assert headers.getRawHeaders(b"Access-Control-Allow-Origin") == [b"*"]
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_with_the_websocket_at_root_the_history_is_beside_it():
    """``--path /``: the history at its path, the WebSocket at every other one."""
    running = await start_gateway(GatewayConfig(path="/"))
    try:
        engine, clock = engine_on(running.gateway.mesh.publish)
        trade_minutes(engine, clock, 2)
        status, _, body = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m")
        assert status == 200 and len(json.loads(body)) == 2
        status, _, body = await get(running.ws_port, "/?symbol=BTCUSDT&interval=1m")
        assert status == 200 and len(json.loads(body)) == 2
        for path in ("/", "/anything", "/v1/market"):
            client = await connect(running.ws_port, path)
            assert await client.request({"op": "ping"}) is not None
            await client.close()
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_the_demo_has_hours_of_bars_right_after_start():
    """``--demo``: the simulator back-fills 1000 minutes at start, so the 1m history is full
    (1000 bars, one a minute up to the open one) and the longer intervals have some too."""
    started = int(time.time() * 1000)
    running = await start_gateway(GatewayConfig(demo=True))
    try:
        status, _, body = await get(running.ws_port, "?symbol=BTCUSDT&interval=1m&limit=1000")
        bars = json.loads(body)
        assert status == 200 and len(bars) == 1000
        times = [b["t"] for b in bars]
        assert all(later - earlier == MINUTE for earlier, later in itertools.pairwise(times))
        now = int(time.time() * 1000)
        assert times[-1] == now - now % MINUTE or times[-1] == now - now % MINUTE - MINUTE
        assert bars[-1]["closed"] is False and all(b["closed"] for b in bars[:-1])
        # The back-filled minutes all have trades; the one the gateway started in has the
        # live trades only, which may be none yet if the minute ended during the test.
        back_filled = [b for b in bars if b["t"] < started - started % MINUTE]
        assert len(back_filled) >= 998
        assert all(isinstance(b["o"], str) and int(b["n"]) > 0 for b in back_filled)
        for symbol in ("ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"):
            _, _, other = await get(running.ws_port, f"?symbol={symbol}&interval=5m")
            assert len(json.loads(other)) >= 190
        _, _, hours = await get(running.ws_port, "?symbol=BTCUSDT&interval=1h")
        assert len(json.loads(hours)) >= 16
    finally:
        await running.stop()


def test_the_back_fill_replays_the_past_on_its_own_time():
    """The demo's five symbols, 1000 minutes each, replayed into the engine and a memory
    mesh: every minute a closed bar in the bars history, from the past's four trades, and the
    live engine carries on from the replay's open bars and ticker. (How long it takes is a
    figure for bench/, not a test.)"""
    clock = Clock()
    clock.advance(T0 + 12.5)
    mesh = MemoryMesh(clock=clock)
    engine = MarketEngine(mesh.publish, MarketSettings(), clock)
    engine.startService()
    simulator = Simulator(lambda event: None, clock, backfill=engine.backfill)
    simulator.startService()
    simulator.stopService()
    stored = mesh.recent(bars_channel("ex:", "XRPUSDT", "1m"), 1000).result
    bars = [json.loads(p.payload) for p in stored]
    assert len(bars) == 1000 and bars[-1]["t"] == MS - MINUTE
    assert [b["t"] for b in bars] == list(range(MS - 1000 * MINUTE, MS, MINUTE))
    assert all(b["closed"] and 1 <= b["n"] <= 4 for b in bars)
    assert all(D(b["l"]) <= min(D(b["o"]), D(b["c"])) for b in bars)
    hours = mesh.recent(bars_channel("ex:", "XRPUSDT", "1h"), 1000).result
    assert len(hours) >= 16
    clock.advance(1.0)  # the live engine's ticker push
    ticker = json.loads(mesh.snapshot("ex:XRPUSDT@ticker").result.payload)["data"]
    assert ticker["count"] == sum(b["n"] for b in bars)  # the past's trades, in the 24 h


# -- Redis: the engine on another node ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_gateway_without_the_engine_answers_from_redis(redis_server):
    """``exchange-market --simulate`` alone (its own RedisMesh, started after the engine as
    ``makeService`` does, so the back-fill first finds the mesh down), and a gateway on the
    same Redis that runs no engine: it answers the hours of bars and the open bar."""
    clock = Clock()
    clock.advance(time.time() // 60 * 60 + 1)  # a minute's start: the polls below stay in it
    mesh = RedisMesh(redis_server.url, reactor)
    market = market_service(mesh.publish, MarketSettings(), clock, simulate=True)
    mesh.setServiceParent(market)
    market.startService()
    running = await start_gateway(GatewayConfig(mesh=redis_server.url))
    try:
        gateway_mesh = running.gateway.mesh
        assert running.gateway.market is None
        await until(lambda: mesh.available and gateway_mesh.available)
        query = "?symbol=BTCUSDT&interval=1m&limit=1000"

        async def full():
            clock.advance(0.5)  # the kline push: refused bars go again, open bars go out
            _, _, body = await get(running.ws_port, query)
            bars = json.loads(body)
            # the open bar last; just after a minute's end its snapshot may still be on its way
            return len(bars) == 1000 and bars[-1]["closed"] is False

        for _ in range(200):
            if await full():
                break
        _, _, body = await get(running.ws_port, query)
        bars = json.loads(body)
        assert len(bars) == 1000 and bars[-1]["closed"] is False
        times = [b["t"] for b in bars]
        assert times == sorted(times) and len(set(times)) == 1000
        stored = await gateway_mesh.recent(bars_channel("ex:", "BTCUSDT", "1m"), 999)
        assert [p.payload for p in stored] == [encode(b) for b in bars[:-1]]  # the same bytes
    finally:
        await running.stop()
        await market.stopService()
