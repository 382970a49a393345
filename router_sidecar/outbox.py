"""Socket writes made during one turn of the event loop, sent back to back when the turn ends.

Each write to a peer that sleeps in its own event loop wakes that peer; when the peer runs on
another CPU the wake-up costs the writer several microseconds (an inter-processor interrupt, a
virtual-machine exit on most cloud nodes), as much as a third of a request's whole cost. Under
load one turn of the sidecar's loop answers several requests and sends several provider
requests: sent together at the end of the turn, a peer woken by the first write is still awake
for the next ones. On the benchmark machine that is 14 to 16 % more requests per second in
interleaved runs (bench/README.md). With one request in flight a turn holds one write, and it
leaves a few microseconds later than it would have.

`http_server.py` (answers to clients) and `http1.py` (requests to providers) write through the
`Outbox` of their loop. Writes to one transport keep their order; whoever closes, half-closes
or aborts a transport flushes the outbox first, so nothing written before is lost.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Writable(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


class Outbox:
    """The writes of one loop; `write` is called in that loop's thread."""

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[tuple[Writable, bytes]] = []
        self._scheduled = False

    def write(self, transport: Writable, data: bytes) -> None:
        """Send `data` on `transport` at the end of this turn of the loop."""
        self._pending.append((transport, data))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send everything pending now (transports closed meanwhile are skipped). A transport
        that refuses a write is aborted, so its reader fails at once; the others still get
        theirs."""
        self._scheduled = False
        pending, self._pending = self._pending, []
        for transport, data in pending:
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except Exception as exc:  # one broken transport must not stop the others
                log.debug("Dropping a connection whose transport refused a write: %r", exc)
                transport.abort()


_OUTBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = (
    weakref.WeakKeyDictionary()
)


def outbox_for(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The one outbox of `loop`: every writer on a loop shares its end-of-turn flush."""
    box = _OUTBOXES.get(loop)
    if box is None:
        box = _OUTBOXES[loop] = Outbox()  # holds nothing of the loop: the entry dies with it
    return box
