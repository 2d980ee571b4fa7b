"""Stream positions: each offset passes once and in order; a gap asks for a history read."""

import json

from hypothesis import given
from hypothesis import strategies as st

from exchange_stream.core.publication import Publication
from exchange_stream.core.streams import History, Position, Sequence, StreamPolicy, with_offset


def at(offset, epoch="E"):
    return Publication(b'{"n":%d}' % offset, epoch=epoch, offset=offset)


def offsets(publications):
    return [p.offset for p in publications]


def test_stream_types_by_default_and_by_choice():
    policy = StreamPolicy()
    assert policy.is_stream("ex:1001@order") and policy.is_stream("ex:BTCUSDT@trades")
    assert not policy.is_stream("ex:BTCUSDT@depth") and not policy.is_stream("es:control")
    assert StreamPolicy(types=frozenset({"depth"})).is_stream("ex:BTCUSDT@depth")


def test_with_offset_adds_a_last_member_without_decoding():
    assert with_offset(b'{"event":"@order","data":{}}', 17) == (
        b'{"event":"@order","data":{},"offset":17}'
    )
    assert with_offset(b"{ }\n", 3) == b'{"offset":3}'
    assert json.loads(with_offset(b'{"a": [1, {"b": 2}]}  ', 9)) == {
        "a": [1, {"b": 2}],
        "offset": 9,
    }


def test_in_order_passes_duplicates_drop_and_a_gap_waits_for_the_history():
    sequence = Sequence()
    sequence.baseline(Position("E", 4))
    assert offsets(sequence.arrived(at(5))) == [5]
    assert sequence.arrived(at(5)) == []  # a duplicate
    assert sequence.arrived(at(8)) == []  # 6 and 7 were lost
    assert sequence.read_from() == Position("E", 5)
    assert sequence.arrived(at(9)) == []  # held while the history is read
    passed = sequence.read(History(Position("E", 8), [at(6), at(7), at(8)]))
    assert offsets(passed) == [6, 7, 8, 9] and sequence.lost == 0
    assert sequence.read_from() is None


def test_a_new_epoch_is_read_from_its_start():
    sequence = Sequence()
    sequence.baseline(Position("E", 10))
    assert sequence.arrived(at(3, epoch="F")) == []  # F began while we were away
    assert sequence.read_from() == Position("F", 0)
    passed = sequence.read(History(Position("F", 3), [at(1, "F"), at(2, "F"), at(3, "F")]))
    assert offsets(passed) == [1, 2, 3]


def test_an_interruption_reads_what_came_meanwhile():
    sequence = Sequence()
    assert offsets(sequence.arrived(at(1))) == [1]
    sequence.interrupted()
    assert sequence.arrived(at(4)) == []
    assert sequence.read_from() == Position("E", 1)
    passed = sequence.read(History(Position("E", 3), [at(2), at(3)]))
    assert offsets(passed) == [2, 3, 4]


def test_what_the_history_no_longer_holds_is_counted_lost():
    sequence = Sequence()
    sequence.baseline(Position("E", 1))
    assert sequence.arrived(at(50)) == []
    passed = sequence.read(History(Position("E", 50), [at(40), *[at(n) for n in range(41, 51)]]))
    assert offsets(passed) == list(range(40, 51)) and sequence.lost == 38


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60), st.data())
def test_whatever_pub_sub_drops_or_repeats_every_offset_passes_once_in_order(heard, data):
    """Pub/sub delivers any subsequence, with repeats and reorderings of what it delivers;
    with history reads answered from the full log, the node passes 1..top exactly once."""
    sequence = Sequence()
    sequence.baseline(Position("E", 0))
    passed = []
    top = max(heard, default=0)
    for offset in heard:
        passed += sequence.arrived(at(offset))
        if sequence.reading:
            start = sequence.read_from().offset
            known = data.draw(st.integers(min_value=max(offset, top), max_value=40))
            log = [at(n) for n in range(start + 1, known + 1)]
            passed += sequence.read(History(Position("E", known), log))
            top = max(top, known)
    assert offsets(passed) == list(range(1, len(passed) + 1))
    assert len(passed) >= max(heard, default=0)


def test_a_publication_lost_before_the_first_one_heard_is_seen_against_the_baseline():
    """Pub/sub lost offset 6, published just after this node subscribed, and brought 7
    before the node had read the stream's position (5): 7 waits, 6 is read back."""
    sequence = Sequence(awaiting=True)
    assert sequence.arrived(at(5)) == [] and sequence.arrived(at(7)) == []
    assert offsets(sequence.baseline(Position("E", 5))) == [5]  # came after the subscription
    assert sequence.read_from() == Position("E", 5)
    assert offsets(sequence.read(History(Position("E", 7), [at(6), at(7)]))) == [6, 7]


def test_without_a_baseline_the_first_one_heard_is_the_start():
    sequence = Sequence(awaiting=True)
    assert sequence.arrived(at(3)) == []
    assert offsets(sequence.without_baseline()) == [3]
    assert offsets(sequence.arrived(at(4))) == [4]
