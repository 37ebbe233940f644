"""proxy.sniff.Sniffer: when the growing prefix is parsed. A hello or head is recognised in
the read that completes it (one record or many), never later; a client that dribbles bytes
costs O(log n) full parses, not n; what is held comes back whole and in order."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import sniff as sniff_module
from proxy.sniff import MAX_SNIFF_BYTES, Sniffer, SniffResult, sniff

from .tls_hello import (
    frame,
    handshake_message,
    join_extensions,
    real_client_hello,
    split_extensions,
    with_pq_key_shares,
)

HELLO = real_client_hello("app.example")
MESSAGE = handshake_message(HELLO)
PQ_MESSAGE = with_pq_key_shares(MESSAGE)
HEAD = b"GET / HTTP/1.1\r\nHost: app.example\r\nUser-Agent: t\r\n\r\n"


class Counted:
    """`proxy.sniff.sniff` with a count of its calls (each is one full parse)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = sniff_module.sniff

        def counting(data: bytes) -> SniffResult:
            self.calls += 1
            return real(data)

        monkeypatch.setattr(sniff_module, "sniff", counting)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counted:
    return Counted(monkeypatch)


def pieces(stream: bytes, size: int) -> Iterator[bytes]:
    return (stream[i : i + size] for i in range(0, len(stream), size))


def feed_until_result(sniffer: Sniffer, chunks: Iterator[bytes]) -> tuple[int, SniffResult]:
    """Feed chunks until a result comes; returns (stream bytes fed by then, the result)."""
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        result = sniffer.feed(chunk)
        if result is not None:
            return fed, result
    raise AssertionError(f"no result after {fed} bytes")


def log_bound(size: int) -> int:
    """Full parses a dribbled prefix of `size` bytes may cost: the first read, one per
    doubling, and the one at the end."""
    return math.ceil(math.log2(size)) + 3


# ----------------------------------------------------------------- one record


def test_a_hello_in_one_read_is_parsed_once(parses: Counted) -> None:
    result = Sniffer().feed(HELLO)
    assert result is not None and result.hostname == "app.example"
    assert parses.calls == 1


def test_a_hello_in_one_byte_pieces_is_recognised_at_its_last_byte(parses: Counted) -> None:
    fed, result = feed_until_result(Sniffer(), pieces(HELLO, 1))
    assert (fed, result.hostname) == (len(HELLO), "app.example")
    assert parses.calls <= log_bound(len(HELLO)), f"{parses.calls} parses for {len(HELLO)} bytes"


def test_a_head_in_small_pieces_is_recognised_at_its_end(parses: Counted) -> None:
    fed, result = feed_until_result(Sniffer(), pieces(HEAD, 3))
    assert (fed, result.hostname) == (len(HEAD), "app.example")
    assert parses.calls < 10


def test_a_dribbling_hostile_client_costs_few_parses(parses: Counted) -> None:
    # A TLS record header promising a 60 KB hello, then tiny junk records, a byte at a time.
    stream = b"\x16\x03\x01\x00\x05" + b"\x01\x00\xea\x60\x03" + b"\x16\x03\x01\x00\x01x" * 12000
    fed, result = feed_until_result(Sniffer(), pieces(stream[: MAX_SNIFF_BYTES + 10], 1))
    assert result.hostname is None
    assert parses.calls <= log_bound(fed), f"{parses.calls} parses of {fed} bytes"


def test_one_byte_records_dribbled_up_to_the_bound_cost_few_parses(parses: Counted) -> None:
    # 6 stream bytes per hello byte: the sniff bound ends the wait, not the hello, and the
    # record headers are followed one by one without a parse each.
    prefix, exts = split_extensions(PQ_MESSAGE)
    stream = frame(join_extensions(prefix, [*exts, (0xFAFA, b"\x00" * 12_000)]), 1)
    fed, result = feed_until_result(Sniffer(), pieces(stream, 4))
    assert fed == MAX_SNIFF_BYTES and result.hostname is None and "bound" in result.note
    assert parses.calls <= log_bound(MAX_SNIFF_BYTES), f"{parses.calls} parses of 64 KiB"


# ----------------------------------------------------------------- many records


@pytest.mark.parametrize("record", [1, 2, 3, 5, 64, 100, 300])
@pytest.mark.parametrize("segment", [1, 7, 40, 200])
def test_a_hello_split_over_records_is_recognised_in_the_read_that_completes_it(
    parses: Counted, record: int, segment: int
) -> None:
    stream = frame(MESSAGE, record)
    assert stream.count(b"\x16\x03\x01") > 1
    fed, result = feed_until_result(Sniffer(), pieces(stream, segment))
    assert result.hostname == "app.example"
    assert fed == min(-(-len(stream) // segment) * segment, len(stream)), "not at its end"
    assert parses.calls <= log_bound(len(stream)), f"{parses.calls} parses of {len(stream)} B"


@pytest.mark.parametrize("record", [1000, 1499, 4000])
def test_a_post_quantum_hello_over_full_records_in_mss_segments(
    parses: Counted, record: int
) -> None:
    stream = frame(PQ_MESSAGE, record)
    fed, result = feed_until_result(Sniffer(), pieces(stream, 1448))
    assert (fed, result.hostname) == (len(stream), "app.example")
    assert parses.calls <= 3


def test_a_hello_near_the_bound_over_full_records_in_small_segments(parses: Counted) -> None:
    prefix, exts = split_extensions(MESSAGE)
    stream = frame(join_extensions(prefix, [*exts[:-1], (0xFAFA, b"\x00" * 50_000)]))
    assert stream.count(b"\x16\x03\x01") == 4
    fed, result = feed_until_result(Sniffer(), pieces(stream, 500))
    assert (fed, result.hostname) == (len(stream), "app.example")
    assert parses.calls <= log_bound(len(stream) // 500) + 1


def test_the_hello_header_itself_split_over_one_byte_records() -> None:
    stream = frame(MESSAGE[:3], 1) + frame(MESSAGE[3:])
    fed, result = feed_until_result(Sniffer(), pieces(stream, 1))
    assert (fed, result.hostname) == (len(stream), "app.example")


def test_what_follows_the_hello_in_the_same_read_changes_nothing() -> None:
    stream = frame(MESSAGE, 100)
    sniffer = Sniffer()
    assert sniffer.feed(stream[:250]) is None
    result = sniffer.feed(stream[250:] + b"\x17\x03\x03\x00\x05hello")
    assert result is not None and result.hostname == "app.example"


@pytest.mark.parametrize(
    ("junk", "note"),
    [
        (b"\x17", "non-handshake record"),
        (b"\x16\x02", "bad record version"),
        (b"\x16\x03\x01\x00\x00", "zero-length"),
        (b"\x16\x03\x01\x40\x01", "longer than 2^14"),
    ],
)
def test_bad_framing_between_records_is_decided_at_its_byte(junk: bytes, note: str) -> None:
    first = frame(MESSAGE[:200])
    sniffer = Sniffer()
    assert sniffer.feed(first[:150]) is None
    assert sniffer.feed(first[150:]) is None
    fed, result = feed_until_result(sniffer, pieces(junk, 1))
    assert result.hostname is None and note in result.note
    assert fed == len(junk), "decided in the read that brought the telling byte"


def test_a_message_other_than_a_client_hello_is_decided_at_its_header() -> None:
    stream = frame(b"\x02" + MESSAGE[1:], 2)  # a ServerHello type
    fed, result = feed_until_result(Sniffer(), pieces(stream, 1))
    assert fed <= 12 and "not a ClientHello" in result.note


# ----------------------------------------------------------------- finish, hold, take


def test_finish_on_nothing_on_a_prefix_and_on_a_whole_hello() -> None:
    assert Sniffer().finish() == SniffResult(True, "unknown", None, "no data before the peek ended")
    partial = Sniffer()
    assert partial.feed(HELLO[:100]) is None
    assert partial.finish() == SniffResult(True, "tls", None, "incomplete client hello/head")
    whole = Sniffer()
    whole.hold(HEAD)
    assert whole.finish().hostname == "app.example"


def test_everything_fed_and_held_is_taken_in_order_once() -> None:
    sniffer = Sniffer()
    assert sniffer.feed(HELLO[:10]) is None
    assert sniffer.feed(HELLO[10:]) is not None
    sniffer.hold(b"early data")
    assert len(sniffer) == len(HELLO) + 10
    assert sniffer.data == HELLO + b"early data"
    assert sniffer.take() == HELLO + b"early data"
    assert (len(sniffer), sniffer.take()) == (0, b"")


def test_a_single_read_is_kept_without_a_copy() -> None:
    sniffer = Sniffer()
    sniffer.feed(HELLO)
    assert sniffer.take() is HELLO


# ----------------------------------------------------------------- properties


@st.composite
def split_hellos(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A real hello (plain or post-quantum sized, maybe padded) reframed at a random record
    size, and random read boundaries."""
    message = draw(st.sampled_from([MESSAGE, PQ_MESSAGE]))
    pad = draw(st.integers(0, 3000))
    if pad:
        prefix, exts = split_extensions(message)
        message = join_extensions(prefix, [*exts, (0xFAFA, b"\x00" * pad)])
    stream = frame(message, draw(st.integers(1, 16384)))
    cuts = sorted(draw(st.sets(st.integers(1, len(stream) - 1), max_size=40)))
    return stream, cuts


@given(split_hellos())
def test_any_framing_and_any_reads_give_the_name_in_the_last_read(
    case: tuple[bytes, list[int]],
) -> None:
    stream, cuts = case
    sniffer = Sniffer()
    bounds = [0, *cuts, len(stream)]
    for start, end in itertools.pairwise(bounds):
        result = sniffer.feed(stream[start:end])
        if end < len(stream):
            assert result is None, f"a result at {end} of {len(stream)}"
    assert result is not None and result.hostname == "app.example"
    assert sniffer.take() == stream


@given(st.binary(min_size=1, max_size=3000), st.lists(st.integers(1, 200), max_size=50))
def test_a_result_is_always_what_sniff_says_of_the_same_prefix(
    junk: bytes, sizes: list[int]
) -> None:
    """Whatever the bytes and reads: a result given is the parser's own on that prefix, and
    a prefix whose record framing says "the hello is complete" is never left waiting."""
    stream = b"\x16\x03\x01" + junk
    sniffer = Sniffer()
    pos = 0
    for size in [*sizes, len(stream)]:
        chunk = stream[pos : pos + size]
        if not chunk:
            break
        pos += len(chunk)
        result = sniffer.feed(chunk)
        if result is not None:
            assert result == sniff(stream[:pos])
            return
    final = sniffer.finish()
    assert final.complete and final.hostname == sniff(stream).hostname
