"""Parsing ops and encoding replies, without any network."""

import pytest

from exchange_stream.core.wire import (
    ErrorCode,
    OpError,
    encode_error,
    encode_pong,
    encode_result,
    parse_request,
)


def code_of(frame) -> ErrorCode:
    with pytest.raises(OpError) as caught:
        parse_request(frame)
    return caught.value.code


def test_seed_ops_parse():
    assert parse_request(b'{"op":"auth","token":"abc"}').token == "abc"
    request = parse_request(b'{"op":"subscribe","channel":"BTCUSDT@depth"}')
    assert [c.name for c in request.channels] == ["BTCUSDT@depth"]
    assert parse_request(b'{"op":"unsubscribe","channel":"@order"}').channels[0].private


def test_id_is_kept_and_channels_deduplicated():
    request = parse_request(b'{"op":"subscribe","channels":["A@depth","A@depth","B@depth"],"id":7}')
    assert request.id == 7
    assert [c.name for c in request.channels] == ["A@depth", "B@depth"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", ErrorCode.INVALID_JSON),
        (b"{", ErrorCode.INVALID_JSON),
        (b'"op"', ErrorCode.INVALID_JSON),
        (b"null", ErrorCode.INVALID_JSON),
        (b"[" * 100000, ErrorCode.INVALID_JSON),
        (b'{"op":"ping","id":1.5}', ErrorCode.INVALID_JSON),
        (b'{"op":"ping","id":{}}', ErrorCode.INVALID_JSON),
        (b"{}", ErrorCode.UNKNOWN_OP),
        (b'{"op":null}', ErrorCode.UNKNOWN_OP),
        (b'{"op":"SUBSCRIBE"}', ErrorCode.UNKNOWN_OP),
        (b'{"op":"auth","token":1001}', ErrorCode.INVALID_JSON),
        (b'{"op":"subscribe"}', ErrorCode.INVALID_CHANNEL),
        (b'{"op":"subscribe","channel":""}', ErrorCode.INVALID_CHANNEL),
        (b'{"op":"subscribe","channels":[]}', ErrorCode.INVALID_CHANNEL),
        (b'{"op":"subscribe","channels":"A@depth"}', ErrorCode.INVALID_JSON),
        (b'{"op":"subscribe","channels":["A@depth",1]}', ErrorCode.INVALID_JSON),
        (b'{"op":"subscribe","channel":"A@depth","channels":["A@depth"]}', ErrorCode.INVALID_JSON),
        (b'{"op":"subscribe","channels":["A@depth","x"]}', ErrorCode.INVALID_CHANNEL),
        (b"\xff\xfe", ErrorCode.INVALID_JSON),
    ],
)
def test_bad_frames_get_their_code(frame, code):
    assert code_of(frame) == code


def test_error_echoes_id_and_names_the_channel():
    with pytest.raises(OpError) as caught:
        parse_request(b'{"op":"subscribe","channels":["A@depth","B@nope"],"id":"r1"}')
    assert encode_error(caught.value) == (
        b'{"code":4,"msg":"Invalid channel","channel":"B@nope","id":"r1"}'
    )


def test_reply_shapes_match_the_seed():
    assert encode_result() == b'{"result":true}'
    assert encode_result(3) == b'{"result":true,"id":3}'
    assert encode_result(None, ["A@depth"]) == b'{"result":["A@depth"]}'
    assert encode_error(OpError(ErrorCode.NOT_AUTH)) == b'{"code":1,"msg":"Not Auth"}'
    assert encode_pong(None, 12) == b'{"op":"pong","ts":12}'


def test_a_lower_case_symbol_is_answered_code_4_with_a_hint():
    with pytest.raises(OpError) as refused:
        parse_request('{"op":"subscribe","channel":"btcusdt@depth","id":3}')
    assert encode_error(refused.value) == (
        b'{"code":4,"msg":"Invalid channel","channel":"btcusdt@depth",'
        b'"hint":"symbols are upper case: BTCUSDT@depth","id":3}'
    )
