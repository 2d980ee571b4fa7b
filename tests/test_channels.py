"""Channel names: what a client may name and the internal names it maps to."""

import pytest

from exchange_stream.core.channels import InvalidChannel, normalize_uid, parse_channel


@pytest.mark.parametrize(
    "name",
    [
        "BTCUSDT@depth",
        "BTC-USDT-SWAP@trades",
        "ETH_USDT@markprice",
        "1000PEPEUSDT@ticker",
        "BTCUSDT@kline",
        "BTCUSDT@kline_1m",
        "BTCUSDT@kline_4h",
        "BTCUSDT@kline_1d",
    ],
)
def test_public_names_are_accepted_and_prefixed(name):
    channel = parse_channel(name)
    assert not channel.private
    assert channel.internal("ex:", None) == f"ex:{name}"
    assert channel.internal("ex:", "1001") == f"ex:{name}"


@pytest.mark.parametrize("kind", ["balance", "order", "position", "account"])
def test_private_names_map_to_the_sessions_uid(kind):
    channel = parse_channel(f"@{kind}")
    assert channel.private
    assert channel.internal("ex:", "1001") == f"ex:1001@{kind}"
    with pytest.raises(ValueError):
        channel.internal("ex:", None)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "@",
        "BTCUSDT",
        "BTCUSDT@",
        "@depth",
        "BTCUSDT@kline_2m",
        "BTCUSDT@depth@x",
        "1002@balance",  # a client never names a uid
        "ex:1002@balance",
        "@balance@1002",
        "BTC USDT@depth",
        "ex:BTCUSDT@depth",
        "-BTC@depth",
        "BTCUSDT@DEPTH",
        "A" * 65 + "@depth",
        7,
        None,
        ["BTCUSDT@depth"],
    ],
)
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidChannel):
        parse_channel(name)


@pytest.mark.parametrize(
    ("raw", "uid"),
    [(1001, "1001"), ("1001", "1001"), ("user_7-a", "user_7-a"), ("x" * 64, "x" * 64)],
)
def test_acceptable_uids(raw, uid):
    assert normalize_uid(raw) == uid


@pytest.mark.parametrize(
    "raw",
    [True, False, 0, -5, 1.5, 1001.0, "", "1002@balance", "ex:1", "a b", "x" * 65, None, [1], {}],
)
def test_unacceptable_uids(raw):
    assert normalize_uid(raw) is None


@pytest.mark.parametrize(
    ("name", "meant"),
    [("btcusdt@depth", "BTCUSDT@depth"), ("Btc-Usdt-Swap@kline_1m", "BTC-USDT-SWAP@kline_1m")],
)
def test_a_lower_case_symbol_is_refused_with_the_channel_that_was_meant(name, meant):
    """Binance's clients spell streams in lower case; one market has one channel name, so
    they are told which instead of being answered true and then left silent."""
    with pytest.raises(InvalidChannel) as refused:
        parse_channel(name)
    assert refused.value.hint == f"symbols are upper case: {meant}"


def test_an_unknown_type_gets_no_hint():
    with pytest.raises(InvalidChannel) as refused:
        parse_channel("btcusdt@bogus")
    assert refused.value.hint is None


@pytest.mark.parametrize(
    ("internal", "can"),
    [
        ("ex:BTCUSDT@depth", True),
        ("ex:1001@balance", True),
        ("ex:u_1-x@order", True),
        ("1001@balance", False),  # no prefix
        ("ex:btcusdt@depth", False),  # lower case: no client may name it
        ("ex:BTCUSDT@bogus", False),
        ("ex:01001@balance", False),  # not how a uid is spelt
        ("ex:BTCUSDT", False),
    ],
)
def test_which_internal_channels_a_client_could_ever_subscribe_to(internal, can):
    from exchange_stream.core.channels import subscribable

    assert subscribable(internal, "ex:") is can
