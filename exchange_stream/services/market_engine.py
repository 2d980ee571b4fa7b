"""The market engine: routes events to the computations and publishes their output.

It runs on a clock (the reactor, or a fake one in tests): every ``push_interval`` it flushes
depth diffs and trade batches, every ``kline_interval`` the changed klines, and every second
the ticker and the mark price (each only when changed). Output goes to a ``publish`` callable
with the mesh's signature, so the engine runs the same inside a gateway (publishing into its
node) or on its own (publishing into a Redis mesh).

Every event passes the ingestion stage first (``core.market.ingest.Admission``: time bounds,
duplicate trade ids, stale books), so every computation sees the same events; arithmetic runs
in ``decimals.EXACT``, whose precision keeps the sums of bounded numbers exact.

Every closed bar also goes to its bars channel (``core.streams.bars_channel``), the history
``GET /v1/market/klines`` reads. A bar stays in its channel's line (at most ``BARS_KEPT``) until
the mesh has taken it: one the mesh refused (``MeshUnavailable``: nothing was sent) is tried
again on the next kline push, so that a Redis outage or a mesh still connecting at start
leaves no hole in a chart.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.encoding import encode, encode_text
from exchange_stream.core.market.decimals import EXACT, SymbolLimits
from exchange_stream.core.market.depth import DepthBook
from exchange_stream.core.market.events import Book, Event, IndexPrice, PrivateEvent, Trade
from exchange_stream.core.market.ingest import Admission, TimeBounds
from exchange_stream.core.market.kline import INTERVAL_MS, KlineSeries
from exchange_stream.core.market.markprice import MarkPrice
from exchange_stream.core.market.ticker import RollingTicker
from exchange_stream.core.market.trades import TradeBatcher
from exchange_stream.core.publication import MeshUnavailable, Publication
from exchange_stream.core.streams import BARS_KEPT, BARS_MARK, bars_channel
from exchange_stream.services.periodic import PeriodicService

Publish = Callable[[str, Publication, Publication | None], Deferred]


@dataclass(frozen=True)
class MarketSettings:
    prefix: str = "ex:"
    push_interval: float = 0.1  # depth diffs and trade batches, seconds
    kline_interval: float = 0.5
    depth_levels: int = 200
    impact_notional: Decimal = Decimal(25_000)
    funding_cap: Decimal = Decimal("0.003")
    index_stale_ms: int = 30_000
    max_ahead_ms: int = 10_000  # an event's ts further ahead of the clock is refused
    max_late_ms: int = 60_000  # ... further behind too; a closed bar is amendable this long
    limits: SymbolLimits = field(default_factory=SymbolLimits)

    @classmethod
    def of(cls, config: GatewayConfig) -> MarketSettings:
        """The settings the options of ``twistd exchange-stream`` or ``exchange-market`` give."""
        return cls(
            prefix=config.prefix,
            max_ahead_ms=config.max_ahead_ms,
            max_late_ms=config.max_late_ms,
            limits=config.market_limits,
        )


class _Symbol:
    """Everything the engine keeps for one symbol."""

    def __init__(self, symbol: str, settings: MarketSettings) -> None:
        self.depth = DepthBook(symbol, settings.depth_levels)
        # the depth channel and its messages' envelope up to the data: the same every push
        self.depth_channel = _public_channel(settings.prefix, symbol, "depth")
        self.depth_envelope = _envelope_opening(f"{symbol}@depth")
        self.trades = TradeBatcher(symbol)
        self.ticker = RollingTicker(symbol)
        self.klines = [
            KlineSeries(symbol, interval, settings.max_late_ms) for interval in INTERVAL_MS
        ]
        self.mark = MarkPrice(
            symbol, settings.impact_notional, settings.index_stale_ms, settings.funding_cap
        )
        self.book: Book | None = None
        self.last_price: Decimal | None = None
        self.last_trade = (-1, -1)  # (ts, id) of the trade that set last_price
        self.last_ticker: dict | None = None
        self.last_mark: dict | None = None


def _without_ts(message: dict | None) -> dict | None:
    return None if message is None else {k: v for k, v in message.items() if k != "ts"}


class MarketEngine(PeriodicService):
    log = Logger()

    def __init__(
        self,
        publish: Publish,
        settings: MarketSettings | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as installed

            clock = installed
        super().__init__(clock)
        self._publish = publish
        self.settings = settings or MarketSettings()
        self._symbols: dict[str, _Symbol] = {}
        self.events = 0
        self.refused: Counter[str] = Counter()  # by reason, the parser's included
        self._admission = Admission(
            TimeBounds(self.settings.max_ahead_ms, self.settings.max_late_ms), self.refused
        )
        self.published = 0
        self.publish_failures = 0
        # closed bars not yet taken by the mesh, per bars channel, oldest first
        self._bars_waiting: dict[str, deque[Publication]] = {}

    # -- input ----------------------------------------------------------------------------

    @property
    def limits(self) -> SymbolLimits:
        """The bounds the parser applies to each symbol's numbers."""
        return self.settings.limits

    def handle(self, event: Event) -> None:
        """Take one event from the matching engine (parsed and within bounds): applied whole,
        or refused and counted."""
        self.events += 1
        if not self._admission.admit(event, self._now_ms()):
            return
        with localcontext(EXACT):
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, PrivateEvent):
            channel = f"{self.settings.prefix}{event.uid}@{event.type}"
            self._send(channel, f"@{event.type}", event.data)
            return
        state = self._symbol(event.symbol)
        if isinstance(event, Trade):
            state.trades.add(event)
            state.ticker.add(event)
            if (event.ts, event.id) > state.last_trade:
                state.last_price, state.last_trade = event.price, (event.ts, event.id)
            now = self._now_ms()
            for series in state.klines:
                for closed in series.add(event, now):  # closed by the clock, or amended
                    self._send_kline(event.symbol, series.interval, closed)
        elif isinstance(event, Book):
            state.book = event
            state.depth.offer(event)
        elif isinstance(event, IndexPrice):
            state.mark.add_index(event)

    def backfill(self, trades: Sequence[Trade]) -> None:
        """Trades from before the engine started (the demo's made-up past), in time order:
        replayed on their own time (an engine of the same settings on an event-time clock,
        whose only output is the bars channels), and this engine carries on from where that
        one ends, with its open bars, its ticker and its bars not yet taken by the mesh."""
        if not trades:
            return
        clock = Clock()
        clock.advance(trades[0].ts / 1000)
        past = MarketEngine(self._bars_only, self.settings, clock)
        # Not started: its periodic pushes would only make messages nobody gets. A trade
        # past a bar's end closes it, and one kline push at the end closes the rest.
        for trade in trades:
            clock.advance(max(0.0, trade.ts / 1000 - clock.seconds()))
            past.handle(trade)
        clock.advance(max(0.0, self._clock.seconds() - clock.seconds()))
        past.push_klines()
        for symbol, state in past._symbols.items():
            mine = self._symbol(symbol)
            mine.klines, mine.ticker = state.klines, state.ticker
            mine.last_price, mine.last_trade = state.last_price, state.last_trade
            for series in mine.klines:
                series.changed = True  # the open bars go out on the next kline push
        for channel, waiting in past._bars_waiting.items():
            self._bars_waiting.setdefault(channel, deque(maxlen=BARS_KEPT)).extend(waiting)

    def _bars_only(
        self, channel: str, publication: Publication, snapshot: Publication | None
    ) -> Deferred:
        if BARS_MARK in channel:
            return self._publish(channel, publication, snapshot)
        return succeed(0)

    def _symbol(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol(symbol, self.settings)
        return state

    # -- schedule -------------------------------------------------------------------------

    def periodic(self) -> list[tuple[float, Callable[[], object]]]:
        return [
            (self.settings.push_interval, self.push),
            (self.settings.kline_interval, self.push_klines),
            (1.0, self.push_every_second),
        ]

    def _now_ms(self) -> int:
        # Rounded, not truncated: a replay's clock set to an event's ts/1000 reads that ts.
        return round(self._clock.seconds() * 1000)

    def push(self) -> None:
        """Depth diffs and trade batches since the last push."""
        with localcontext(EXACT):
            self._push()

    def _push(self) -> None:
        for symbol, state in self._symbols.items():
            depth = state.depth.flush()
            if depth is not None:
                update, snapshot = depth  # JSON texts already
                envelope = state.depth_envelope
                self._send_publication(
                    state.depth_channel,
                    Publication(f"{envelope}{update}}}".encode()),
                    Publication(f"{envelope}{snapshot}}}".encode()),
                )
            trades = state.trades.flush()
            if trades is not None:
                self._send(self._public(symbol, "trades"), f"{symbol}@trades", trades)

    def push_klines(self) -> None:
        with localcontext(EXACT):
            self._push_klines()

    def _push_klines(self) -> None:
        now = self._now_ms()
        for channel, waiting in self._bars_waiting.items():
            if waiting:
                self._send_bars(channel)
        for symbol, state in self._symbols.items():
            for series in state.klines:
                for closed in series.advance(now):
                    self._send_kline(symbol, series.interval, closed)
                change = series.take_change()
                if change is not None:
                    self._send_kline(symbol, series.interval, change)

    def push_every_second(self) -> None:
        """Ticker and mark price, each only when it changed; mark price samples."""
        with localcontext(EXACT):
            self._push_every_second()

    def _push_every_second(self) -> None:
        now = self._now_ms()
        for symbol, state in self._symbols.items():
            ticker = state.ticker.message(now)
            if _without_ts(ticker) != _without_ts(state.last_ticker):
                state.last_ticker = ticker
                self._send(self._public(symbol, "ticker"), f"{symbol}@ticker", ticker, retain=True)
            state.mark.sample(now, state.book)
            mark = state.mark.message(now, state.last_price)
            if _without_ts(mark) != _without_ts(state.last_mark):
                state.last_mark = mark
                channel = self._public(symbol, "markprice")
                self._send(channel, f"{symbol}@markprice", mark, retain=True)

    # -- output ---------------------------------------------------------------------------

    def _public(self, symbol: str, kind: str) -> str:
        return _public_channel(self.settings.prefix, symbol, kind)

    def _send_kline(self, symbol: str, interval: str, bar: dict) -> None:
        """A bar on its kline channels: retained when it is the open one (the snapshot a new
        subscriber gets); a closed one (just closed, or amended by a late trade) is not."""
        names = [f"kline_{interval}"] + (["kline"] if interval == "1m" else [])
        for name in names:
            retain = not bar["closed"]
            self._send(self._public(symbol, name), f"{symbol}@{name}", bar, retain=retain)
        if bar["closed"]:
            self._send_bar(symbol, interval, bar)

    def _send_bar(self, symbol: str, interval: str, bar: dict) -> None:
        """A closed bar into its bars channel: the same object as on the kline channel."""
        channel = bars_channel(self.settings.prefix, symbol, interval)
        waiting = self._bars_waiting.setdefault(channel, deque(maxlen=BARS_KEPT))
        waiting.append(Publication(encode(bar)))
        self._send_bars(channel)

    def _send_bars(self, channel: str) -> None:
        """Publish the channel's waiting bars, oldest first. One the mesh refuses (not sent:
        it is down) goes back to the front of the line, and the line waits for the next
        kline push; a bar whose outcome is unknown is not sent again."""
        waiting = self._bars_waiting[channel]
        while waiting:
            publication = waiting.popleft()
            sent = self._publish(channel, publication, None)
            sent.addCallbacks(self._sent, self._bar_failed, errbackArgs=(channel, publication))
            if waiting and waiting[0] is publication:
                return  # refused at once: the mesh is down

    def _bar_failed(self, failure: Failure, channel: str, publication: Publication) -> None:
        self._failed(failure, channel)
        if failure.check(MeshUnavailable):
            self._bars_waiting[channel].appendleft(publication)

    def _send(self, channel: str, event: str, data: object, retain: bool = False) -> None:
        message = _envelope(event, data)
        self._send_publication(channel, message, message if retain else None)

    def _send_publication(
        self, channel: str, message: Publication, snapshot: Publication | None
    ) -> None:
        sent = self._publish(channel, message, snapshot)
        sent.addCallbacks(self._sent, self._failed, errbackArgs=(channel,))

    def _sent(self, _nodes: int) -> None:
        self.published += 1

    def _failed(self, failure, channel: str) -> None:
        self.publish_failures += 1
        if failure.check(MeshUnavailable):
            if self.publish_failures % 1000 == 1:
                self.log.warn(
                    "market engine: mesh unavailable, {count} publishes failed so far",
                    count=self.publish_failures,
                )
        else:
            self.log.failure(
                "market engine: publishing to {channel} failed", failure, channel=channel
            )


def _public_channel(prefix: str, symbol: str, kind: str) -> str:
    return f"{prefix}{symbol}@{kind}"


def _envelope(event: str, data: object) -> Publication:
    return Publication(encode({"event": event, "data": data}))


def _envelope_opening(event: str) -> str:
    """What :func:`_envelope` writes before the data, for data that is JSON text already
    (the depth book's messages): the text, the data's, and ``}`` are the message."""
    return f'{{"event":{encode_text(event)},"data":'
