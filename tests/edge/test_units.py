"""The edge's pure parts: the coalescing throttle, token buckets, event parsing and ping detection."""

from __future__ import annotations

import asyncio

import pytest

from tests.edge.helpers import context_event
from ws_edge.hub import parse_event
from ws_edge.peer import is_ping, text_frame
from ws_edge.security import IpRateLimiter, TokenBucket
from ws_edge.throttle import SessionThrottle

Sent = list[tuple[str, bytes]]


def recording() -> tuple[Sent, SessionThrottle, dict[str, int]]:
    sent: Sent = []
    counts = {"coalesced": 0, "stale": 0}

    def count(name: str) -> None:
        counts[name] += 1

    # Long enough that the synchronous offers below all fall inside one interval.
    throttle = SessionThrottle(
        0.2,
        lambda kind, frame: sent.append((kind, frame)),
        on_coalesced=lambda: count("coalesced"),
        on_stale=lambda: count("stale"),
    )
    return sent, throttle, counts


async def test_leading_edge_then_newest_on_the_trailing_edge() -> None:
    sent, throttle, counts = recording()
    for revision in range(1, 101):
        throttle.offer("context_update", revision, b"%d" % revision)
    assert sent == [("context_update", b"1")]
    await asyncio.sleep(0.3)
    assert sent == [("context_update", b"1"), ("context_update", b"100")]
    assert counts == {"coalesced": 98, "stale": 0}
    throttle.close()


async def test_types_are_throttled_apart() -> None:
    sent, throttle, _ = recording()
    throttle.offer("context_update", 1, b"c")
    throttle.offer("token_count", 2, b"t")
    assert [kind for kind, _ in sent] == ["context_update", "token_count"]
    throttle.close()


async def test_older_revisions_are_dropped_equal_ones_pass() -> None:
    sent, throttle, counts = recording()
    throttle.offer("context_update", 10, b"10")
    throttle.offer("context_update", 9, b"9")
    throttle.offer("context_update", 10, b"10 again")
    await asyncio.sleep(0.3)
    assert sent == [("context_update", b"10"), ("context_update", b"10 again")]
    assert counts["stale"] == 1
    throttle.close()


async def test_close_cancels_the_trailing_frame() -> None:
    sent, throttle, _ = recording()
    throttle.offer("context_update", 1, b"1")
    throttle.offer("context_update", 2, b"2")
    throttle.close()
    throttle.offer("context_update", 3, b"3")
    await asyncio.sleep(0.3)
    assert sent == [("context_update", b"1")]


async def test_zero_interval_sends_everything() -> None:
    sent: Sent = []
    throttle = SessionThrottle(0, lambda kind, frame: sent.append((kind, frame)))
    for revision in range(5):
        throttle.offer("context_update", revision, b"%d" % revision)
    assert [frame for _, frame in sent] == [b"0", b"1", b"2", b"3", b"4"]


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second at 2/s
    assert not bucket.take(0.5)
    assert [bucket.take(100) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_ip_limiter_is_per_ip_and_bounded() -> None:
    now = [0.0]
    limiter = IpRateLimiter(rate=1, burst=1, clock=lambda: now[0], max_tracked=2)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.allow("c")  # "a" is forgotten, the least recently seen
    assert limiter.allow("a")
    now[0] = 1.0
    assert limiter.allow("c")


def test_parse_event() -> None:
    assert parse_event(context_event("s1", 5, 42), "s1") == ("context_update", 42)
    assert parse_event(context_event("s1", 5, 42), "s2") is None
    for bad in (b"", b"[]", b"null", b'{"type": "context_update", "session_id": "s1", "data": {}}'):
        assert parse_event(bad, "s1") is None, bad
    for revision in ('"3"', "3.0", "-1", "true"):
        frame = b'{"type": "token_count", "session_id": "s1", "data": {"revision": %s}}' % revision.encode()
        assert parse_event(frame, "s1") is None, revision
    assert parse_event(b'{"type": "other", "session_id": "s1", "data": {"revision": 1}}', "s1") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ping", True),
        (" ping\n", True),
        ('{"type": "ping"}', True),
        ('{"type":"ping","id":1}', True),
        ("PING", False),
        ("pong", False),
        ('{"type": "pong"}', False),
        ('["ping"]', False),
        ("{broken", False),
    ],
)
def test_is_ping(text: str, expected: bool) -> None:
    assert is_ping(text) is expected


def decode_server_frame(data: bytes) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of one unmasked frame, per RFC 6455 section 5.2, read independently."""
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    assert data[1] & 0x80 == 0, "server frames are not masked"
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(data[2:10], "big"), 10
    payload = data[offset:]
    assert len(payload) == length, "the frame holds exactly its payload"
    return fin, opcode, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_text_frame_encodes_every_length_form(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert decode_server_frame(text_frame(payload)) == (True, 1, payload)


async def test_flush_counts_the_next_interval_from_when_it_was_due() -> None:
    """A timer that runs late must not push every later frame back (latency piling up at steady rates)."""
    emitted: list[int] = []
    interval = 10.0  # no timer fires during this test; the flush is run by hand
    throttle = SessionThrottle(interval, lambda kind, frame: emitted.append(int(frame)))
    throttle.offer("context_update", 1, b"1")  # leading edge: sent at once
    throttle.offer("context_update", 2, b"2")  # inside the interval: waits for it
    lane = throttle._lanes["context_update"]
    assert lane.timer is not None
    first_due = lane.timer.when()
    lane.timer.cancel()
    throttle._flush("context_update", lane)  # the timer's run, at whatever time the loop got to it
    throttle.offer("context_update", 3, b"3")
    assert emitted == [1, 2]
    assert lane.timer is not None
    assert lane.timer.when() == pytest.approx(first_due + interval)
    throttle.close()
