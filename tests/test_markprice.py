"""Mark price and funding: docs/market.md's worked example, digit for digit."""

from decimal import Decimal as D

from exchange_stream.core.market.events import Book, IndexPrice
from exchange_stream.core.market.markprice import (
    MarkPrice,
    funding_rate,
    impact_price,
    mark_price,
    median,
    next_funding_time,
    premium_index,
    rounded,
    weighted_average,
)

T0 = 1_732_540_800_000  # 2024-11-25T13:20:00Z


def test_worked_example_from_docs_market_md():
    index = median([D("64010.0"), D("64000.0"), D("64030.0")])
    assert index == D("64010.0")
    premium = premium_index(index, impact_bid=D("64040.0"), impact_ask=D("64050.0"))
    assert rounded(premium) == D("0.00046868")  # 30 / 64010
    average = weighted_average([D("0.0002"), D("0.0003"), premium])
    assert rounded(average) == D("0.00036767")  # (0.0002 + 2*0.0003 + 3*P) / 6
    funding = funding_rate(average, cap=D("0.003"))
    assert funding == D("0.0001")  # avg + clamp(0.0001 - avg, ±0.0005) = the interest rate
    assert next_funding_time(T0) == T0 + 2 * 3_600_000 + 40 * 60_000  # 16:00 UTC
    mark = mark_price(index, funding, T0, basis=D("35"), last=D("64005.0"))
    # median(64010 * (1 + 0.0001 * 1/3), 64010 + 35, 64005.0) = the first one
    assert rounded(mark) == D("64012.13366667")


def test_funding_rate_clamps_and_caps():
    assert funding_rate(D("0.0004"), D("0.003")) == D("0.0004") + D("-0.0003")
    assert funding_rate(D("0.002"), D("0.003")) == D("0.002") + D("-0.0005")
    assert funding_rate(D("-0.01"), D("0.003")) == D("-0.003")
    assert weighted_average([]) == 0


def test_impact_price_walks_the_book():
    notional = D(20000)
    assert rounded(impact_price([(D("64040.0"), D("1"))], notional)) == D("64040")
    walked = impact_price([(D("64040.0"), D("0.25")), (D("64030.0"), D("1"))], notional)
    # 0.25 at 64040 (16010) plus 3990 / 64030 at 64030: 20000 / 0.31231454... = 64038.0048
    assert rounded(walked) == D("64038.00475059")
    assert impact_price([(D("100"), D("1"))], notional) is None  # too thin


def test_index_drops_stale_sources_and_message_rounds_to_8_places():
    mark = MarkPrice("BTCUSDT", impact_notional=D(20000), stale_ms=30_000)
    assert mark.message(T0, None) is None
    for source, price, age in [
        ("binance", "64010.0", 0),
        ("okx", "64000.0", 1_000),
        ("bybit", "64030.0", 29_000),
        ("coinbase", "70000.0", 31_000),  # stale: left out
    ]:
        mark.add_index(IndexPrice("BTCUSDT", source, D(price), T0 - age))
    assert mark.index(T0) == D("64010.0")
    mark.add_index(IndexPrice("BTCUSDT", "okx", D("1"), T0 - 5_000))  # older than known: kept
    assert mark.index(T0) == D("64010.0")
    book = Book("BTCUSDT", ((D("64040.0"), D("1")),), ((D("64050.0"), D("1")),), T0)
    mark.sample(T0, book)
    message = mark.message(T0, D("64005.0"))
    assert message == {
        "symbol": "BTCUSDT",
        "indexPrice": "64010.00000000",
        "markPrice": "64012.13366667",  # median(64010 * (1 + 0.0001/3), 64010 + 35, 64005)
        "premiumIndex": "0.00046868",
        "fundingRate": "0.00010000",  # P + clamp(0.0001 - P, ±0.0005) = 0.0001
        "nextFundingTime": T0 + 9_600_000,
        "estimatedSettlePrice": "64010.00000000",
        "stale": False,
        "ts": T0,
    }
