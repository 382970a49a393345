"""Throughput at saturation: `wrk` pinned to the load core, POSTing the chat-completion body.

`bench.run` calls `run_wrk` once per target, request kind and round. The Lua script sets the
method, headers and body and, when wrk finishes, prints one `BENCH_RESULT` line with the counts
and latency percentiles that `parse_wrk_result` reads. A run in which more than 1 % of the
responses failed is reported as such rather than as a rate.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import request_body
from bench.procs import Placement, ensure_installed, pinned, set_priority

RESULT_MARK = "BENCH_RESULT"
MAX_ERROR_SHARE = 0.01

_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{mark} %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    socket_errors: int
    status_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.status_errors)

    @property
    def rps(self) -> float:
        """Successful responses per second."""
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_share(self) -> float:
        failed = self.socket_errors + self.status_errors
        return failed / max(1, self.requests)

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.error_share <= MAX_ERROR_SHARE


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


def lua_script(*, stream: bool) -> str:
    body = request_body(stream=stream).decode()
    if "]==]" in body:
        raise ValueError("the request body cannot be quoted in a Lua long string")
    return _LUA.format(body=body, mark=RESULT_MARK)


def parse_wrk_result(output: str) -> WrkResult:
    """Read the `BENCH_RESULT` line that the Lua `done` callback printed."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARK + " "):
            fields = [int(value) for value in line.split()[1:]]
            if len(fields) != 6:
                break
            requests, duration_us, sock_errors, status_errors, p50_us, p99_us = fields
            return WrkResult(
                requests=requests,
                duration_s=duration_us / 1e6,
                socket_errors=sock_errors,
                status_errors=status_errors,
                p50_ms=p50_us / 1000,
                p99_ms=p99_us / 1000,
            )
    raise WrkError(f"wrk printed no {RESULT_MARK} line:\n{output[-1500:]}")


def run_wrk(
    url: str,
    *,
    stream: bool,
    seconds: float,
    connections: int,
    place: Placement,
    work: Path,
) -> WrkResult:
    """Load `url` for `seconds` with `connections` keep-alive connections from one wrk thread."""
    script = work / ("wrk-stream.lua" if stream else "wrk-plain.lua")
    if not script.exists():
        script.write_text(lua_script(stream=stream))
    argv = [
        ensure_installed("wrk", "wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
    ]
    argv += ["-s", str(script), url]
    with subprocess.Popen(
        pinned(argv, place.cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own scheduling group, so `place.nice` can apply to it
    ) as wrk:
        if place.nice is not None:
            set_priority(wrk.pid, place.nice)
        try:
            out, err = wrk.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            wrk.kill()
            wrk.communicate()
            raise WrkError(f"wrk did not finish within {seconds + 30:.0f}s") from None
    if wrk.returncode != 0:
        raise WrkError(f"wrk exited with {wrk.returncode}: {err[-800:]}")
    return parse_wrk_result(out)
