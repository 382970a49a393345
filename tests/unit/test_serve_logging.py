"""`laneway serve` writes its diagnostic log from a thread of its own: logging never waits for
a reader of standard error, and nothing logged is lost when the server stops."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from laneway.cmd_serve import _logging_off_the_loop


@pytest.fixture
def root_writing_to_a_pipe() -> Iterator[tuple[int, logging.Logger]]:
    """The root logger writing to a pipe nobody reads yet, as `laneway serve` writes to stderr;
    the root's own handlers and level come back afterwards."""
    read, write = os.pipe()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = os.fdopen(write, "w", buffering=1)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    yield read, root
    root.handlers, level = saved
    root.setLevel(level)
    stream.close()
    with contextlib.suppress(OSError):
        os.close(read)


@pytest.mark.timeout(30)
def test_logging_never_waits_for_a_reader_and_loses_nothing(
    root_writing_to_a_pipe: tuple[int, logging.Logger],
) -> None:
    read, root = root_writing_to_a_pipe
    count = 3000  # about 240 KB of lines, several times what the pipe holds
    before = root.handlers[:]
    with _logging_off_the_loop():
        started = time.monotonic()
        for n in range(count):
            logging.getLogger("laneway.test").warning("line %05d %s", n, "x" * 40)
        took = time.monotonic() - started
        received = bytearray()
        reader = threading.Thread(target=_read_lines, args=(read, received, count))
        reader.start()  # the reader comes back; leaving the block writes what waited
    reader.join(10)

    assert took < 5  # it would block forever once the pipe filled
    lines = received.decode().splitlines()
    assert len(lines) == count
    assert lines[0].startswith("WARNING laneway.test line 00000")
    assert lines[-1].startswith(f"WARNING laneway.test line {count - 1:05d}")
    assert root.handlers == before  # the handlers write directly again


def _read_lines(fd: int, into: bytearray, count: int) -> None:
    while into.count(b"\n") < count and (chunk := os.read(fd, 65536)):
        into += chunk
