"""Writes made during one turn of the event loop leave together at its end, in order, and none
is lost to a close: what `router_sidecar.outbox` promises the HTTP layers."""

from __future__ import annotations

import asyncio
import gc
import weakref

from router_sidecar.outbox import Outbox, outbox_for


class Transport:
    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self.log, self.name = log, name
        self.closing = False
        self.refuse = False

    def write(self, data: bytes) -> None:
        if self.refuse:
            raise RuntimeError("the transport is broken")
        self.log.append((self.name, data))

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def transports(*names: str) -> tuple[list[tuple[str, bytes]], Outbox, list[Transport]]:
    """A fresh outbox and transports of these names that log their writes to one list."""
    sent: list[tuple[str, bytes]] = []
    return sent, Outbox(), [Transport(sent, name) for name in names]


async def test_writes_of_one_turn_leave_together_at_its_end_in_order() -> None:
    sent, box, (a, b) = transports("a", "b")
    box.write(a, b"1")
    box.write(b, b"2")
    box.write(a, b"3")
    assert sent == []  # nothing during the turn
    await asyncio.sleep(0)
    assert sent == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    box.write(b, b"4")  # a later turn gets a flush of its own
    await asyncio.sleep(0)
    assert sent[-1] == ("b", b"4")


async def test_flush_sends_at_once_and_a_closed_transport_is_skipped() -> None:
    sent, box, (open_, closed) = transports("open", "closed")
    box.write(closed, b"lost with its connection")
    box.write(open_, b"kept")
    closed.closing = True
    box.flush()
    assert sent == [("open", b"kept")]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert sent == [("open", b"kept")]


async def test_a_transport_that_refuses_a_write_is_aborted_and_the_others_still_written() -> None:
    sent, box, (broken, fine) = transports("broken", "fine")
    broken.refuse = True
    box.write(broken, b"x")
    box.write(fine, b"y")
    await asyncio.sleep(0)
    assert sent == [("fine", b"y")] and broken.closing


def test_each_loop_has_one_outbox_which_does_not_keep_the_loop_alive() -> None:
    loop, other = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert outbox_for(loop) is outbox_for(loop)
        assert outbox_for(loop) is not outbox_for(other)
    finally:
        loop.close()
        other.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
