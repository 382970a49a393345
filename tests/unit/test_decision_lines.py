"""The decision-line writer `laneway serve` uses: JSON Lines in batches, sent after a short delay,
at a size limit and at shutdown by a thread of its own, so that neither a reader that stops
reading nor a failing output costs a request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator

import pytest

from router_sidecar import decision_log
from router_sidecar.decision_log import DecisionLines, DecisionRecord, LaneAttempt


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def writers() -> Iterator[list[DecisionLines]]:
    """Writers a test made; each is closed (its thread stopped) afterwards."""
    made: list[DecisionLines] = []
    yield made
    for lines in made:
        lines.close(timeout_s=1)


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def read_until(fd: int, size: int, timeout_s: float = 2.0) -> bytes:
    """What the writer thread sends, once `size` bytes have come (or the time is up)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < size and time.monotonic() < deadline:
        data += drain(fd)
        time.sleep(0.005)
    return data


async def test_lines_wait_for_the_batch_delay_then_go_out_together_in_order(
    pipe: tuple[int, int], writers: list[DecisionLines]
) -> None:
    read, write = pipe
    lines = DecisionLines(write, delay_s=0.1)
    writers.append(lines)

    lines.add(b'{"n":1}\n')
    lines.add(b'{"n":2}\n')
    time.sleep(0.03)  # the writer thread has been handed nothing: the loop has not run
    assert drain(read) == b""
    await asyncio.sleep(0.2)

    assert read_until(read, 16) == b'{"n":1}\n{"n":2}\n'


def test_outside_an_event_loop_a_line_goes_out_at_once(
    pipe: tuple[int, int], writers: list[DecisionLines]
) -> None:
    read, write = pipe
    lines = DecisionLines(write, delay_s=60)
    writers.append(lines)

    lines.add(b'{"n":1}\n')  # no loop to wait on: handed to the writer at once

    assert read_until(read, 8) == b'{"n":1}\n'


async def test_a_batch_reaching_its_size_limit_is_written_without_waiting(
    pipe: tuple[int, int], writers: list[DecisionLines]
) -> None:
    read, write = pipe
    lines = DecisionLines(write, batch_bytes=16, delay_s=60)
    writers.append(lines)

    lines.add(b'{"n":1}\n')
    time.sleep(0.03)
    assert drain(read) == b""
    lines.add(b'{"n":2}\n')

    assert read_until(read, 16) == b'{"n":1}\n{"n":2}\n'


async def test_emit_writes_the_record_as_one_json_line_and_stopping_sends_the_rest(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    record = DecisionRecord("d-1", policy="bot", mode="enforce", route="fast", lane="mini",
                            outcome="ok", reason="score 1 -> fast")
    record.attempts.append(LaneAttempt("mini", "fast", "ok", 12.5, 200))
    decision_log.write_lines_to(DecisionLines(write, delay_s=60))
    try:
        decision_log.emit(record)
        assert drain(read) == b""
    finally:
        decision_log.write_lines_to(None)  # what `laneway serve` does when it stops

    data = drain(read)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == record.as_dict()


@pytest.mark.timeout(20)
async def test_a_reader_that_stops_reading_never_holds_up_the_caller(
    pipe: tuple[int, int], writers: list[DecisionLines], caplog: pytest.LogCaptureFixture
) -> None:
    read, write = pipe
    lines = DecisionLines(write, batch_bytes=4096, delay_s=60, max_pending_bytes=256 * 1024)
    writers.append(lines)
    line = b'{"decisionId":"' + b"x" * 90 + b'"}\n'  # 108 bytes

    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    for _ in range(20_000):  # about 2 MB, far more than the pipe and the allowance hold
        lines.add(line)
    lines.flush()
    assert time.monotonic() - started < 5  # it would block forever on a blocking write

    assert lines.dropped > 10_000
    stalls = [r for r in caplog.records if "not being read" in r.getMessage()]
    assert len(stalls) == 1

    # Once the reader is back, what was kept arrives whole, line by line, and so do new lines.
    received = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        "read again" in r.getMessage() for r in caplog.records
    ):
        received += drain(read)
        await asyncio.sleep(0.001)
    received += drain(read)
    assert received and received == line * (len(received) // len(line))
    lines.add(b'{"n":"after"}\n')
    lines.flush()
    assert read_until(read, 14) == b'{"n":"after"}\n'


def test_an_output_that_fails_drops_lines_with_one_warning(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    read, write = pipe
    os.close(read)  # nobody reads: every write fails with a broken pipe
    lines = DecisionLines(write, delay_s=60)

    with caplog.at_level(logging.WARNING):
        for n in range(3):
            lines.add(b'{"n":%d}\n' % n)
            lines.flush()
        lines.close()

    warnings = [r for r in caplog.records if "Cannot write decision lines" in r.getMessage()]
    assert len(warnings) == 1


def test_without_a_writer_the_line_goes_to_the_decisions_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")

    decision_log.emit(DecisionRecord("d-2", policy="bot", outcome="ok"))

    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "laneway.decisions"]
    assert line["decisionId"] == "d-2"
