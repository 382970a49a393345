"""The decision-line writer `laneway serve` uses: JSON Lines in batches, sent after a short delay,
at a size limit and at shutdown, and a failing output that costs no request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
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


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


async def test_lines_wait_for_the_batch_delay_then_go_out_together_in_order(pipe) -> None:
    read, write = pipe
    lines = DecisionLines(write, delay_s=0.05)

    lines.add(b'{"n":1}\n')
    lines.add(b'{"n":2}\n')
    assert drain(read) == b""
    await asyncio.sleep(0.2)

    assert drain(read) == b'{"n":1}\n{"n":2}\n'


def test_a_full_batch_goes_out_at_once(pipe) -> None:
    read, write = pipe
    lines = DecisionLines(write, batch_bytes=16)

    lines.add(b'{"n":1}\n')  # outside a running loop nothing can wait: written at once
    assert drain(read) == b'{"n":1}\n'


async def test_a_batch_reaching_its_size_limit_is_written_without_waiting(pipe) -> None:
    read, write = pipe
    lines = DecisionLines(write, batch_bytes=16, delay_s=60)

    lines.add(b'{"n":1}\n')
    assert drain(read) == b""
    lines.add(b'{"n":2}\n')

    assert drain(read) == b'{"n":1}\n{"n":2}\n'


async def test_emit_writes_the_record_as_one_json_line_and_stopping_sends_the_rest(pipe) -> None:
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


async def test_an_output_that_fails_drops_lines_with_one_warning(
    pipe, caplog: pytest.LogCaptureFixture
) -> None:
    read, write = pipe
    os.close(read)  # nobody reads: every write fails with a broken pipe
    lines = DecisionLines(write, delay_s=60)

    with caplog.at_level(logging.WARNING):
        for n in range(3):
            lines.add(b'{"n":%d}\n' % n)
            lines.flush()

    warnings = [r for r in caplog.records if "Cannot write decision lines" in r.getMessage()]
    assert len(warnings) == 1


def test_without_a_writer_the_line_goes_to_the_decisions_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")

    decision_log.emit(DecisionRecord("d-2", policy="bot", outcome="ok"))

    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "laneway.decisions"]
    assert line["decisionId"] == "d-2"
