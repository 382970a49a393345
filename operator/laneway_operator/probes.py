"""Provider health probes: one cheap request per lane, and the phase machine they drive.

`handlers_lanes.py` runs one probe loop per ModelLane: every `healthProbe.interval` it calls
`probe_provider` (bounded by `healthProbe.timeout`) and feeds the outcome to `advance`, a pure
function, then writes the lane's status from `describe`. The phase rules, with hysteresis:

- `Unknown` until the first probe. A first success makes the lane `Healthy`.
- A failure makes a `Healthy` (or `Unknown`) lane `Degraded`; `failureThreshold` failures in a
  row make any lane `Down`.
- A `Degraded` lane is `Healthy` again after `successThreshold` successes in a row.
- A `Down` lane stays `Down` until `successThreshold` successes in a row *and* a hold-down
  (operator setting, `LANEWAY_HOLD_DOWN_SECONDS`) during which every probe also passed; a single
  failure restarts the count. So traffic does not flap back to a lane that answers now and then.

The probe is `GET {baseURL}/models` with `Authorization: Bearer <key>` for `openai` lanes, and
`GET {baseURL}/v1/models` (or `/models` when baseURL already ends in `/v1`, as in the sidecar's
adapter) with `x-api-key` and `anthropic-version` for `anthropic` lanes. Any 2xx answer is a
success. Keys are sent, never logged or stored. Probes go through the egress proxy the
environment names (`LANEWAY_EGRESS_*`, else `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), chosen per
provider exactly as the sidecar chooses (`router_sidecar.egress_proxy.EgressProxies`), so a probe
takes the path the sidecar's requests take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from laneway_operator.durations import parse_duration
from router_sidecar.egress_proxy import EgressProxies, Proxy

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 2


@dataclass(frozen=True)
class ProbeSettings:
    """`spec.healthProbe` of a lane, in seconds and counts."""

    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD

    @classmethod
    def from_spec(cls, probe: Mapping[str, Any] | None) -> ProbeSettings:
        """Read `spec.healthProbe`; a missing or unreadable field keeps its default.

        The CRD schema already rejects bad values, so defaults only cover objects written before
        a field existed.
        """
        probe = probe or {}
        return cls(
            interval_s=_seconds(probe.get("interval"), DEFAULT_INTERVAL_S),
            timeout_s=_seconds(probe.get("timeout"), DEFAULT_TIMEOUT_S),
            failure_threshold=_count(probe.get("failureThreshold"), DEFAULT_FAILURE_THRESHOLD),
            success_threshold=_count(probe.get("successThreshold"), DEFAULT_SUCCESS_THRESHOLD),
        )


def _seconds(value: Any, default: float) -> float:
    try:
        ms = parse_duration(value)
    except ValueError:
        return default
    return ms / 1000 if ms > 0 else default


def _count(value: Any, default: int) -> int:
    usable = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if usable else default


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome. `result` is one CamelCase word; `message` never holds a secret."""

    ok: bool
    result: str
    latency_ms: int | None
    message: str

    def as_status(self, now: str) -> dict[str, Any]:
        """`status.lastProbe` of a ModelLane (no latency when nothing answered)."""
        out: dict[str, Any] = {"time": now, "result": self.result, "message": self.message}
        if self.latency_ms is not None:
            out["latencyMs"] = self.latency_ms
        return out


@dataclass(frozen=True)
class LaneHealth:
    """The phase machine's state: the phase and the current run of successes or failures."""

    phase: str = "Unknown"
    successes: int = 0
    failures: int = 0
    recovering_since: float | None = None  # when a Down lane met successThreshold


def advance(
    health: LaneHealth, ok: bool, *, now: float, settings: ProbeSettings, hold_down_s: float
) -> LaneHealth:
    """The state after one more probe outcome at time `now` (seconds, any monotonic clock)."""
    if not ok:
        failures = health.failures + 1
        if failures >= settings.failure_threshold or health.phase == "Down":
            phase = "Down"
        else:
            phase = "Degraded"
        return LaneHealth(phase=phase, successes=0, failures=failures)

    successes = health.successes + 1
    after = replace(health, successes=successes, failures=0)
    if health.phase in ("Unknown", "Healthy"):
        return replace(after, phase="Healthy")
    if successes < settings.success_threshold:
        return after
    if health.phase == "Degraded":
        return replace(after, phase="Healthy")

    # Down: the run of successes is long enough; start (or finish) the hold-down.
    since = health.recovering_since if health.recovering_since is not None else now
    if now - since >= hold_down_s:
        return LaneHealth(phase="Healthy", successes=successes)
    return replace(after, recovering_since=since)


def describe(
    health: LaneHealth,
    probe: ProbeResult | None,
    *,
    settings: ProbeSettings,
    hold_down_s: float,
    now: float,
) -> tuple[str, str]:
    """(reason, message) for the lane's conditions."""
    if probe is None or health.phase == "Unknown":
        return "NotProbed", "no probe has finished yet"
    if health.phase == "Healthy":
        return "ProbeSucceeded", probe.message
    if health.phase == "Degraded":
        if probe.ok:
            return "ProbeFailing", (
                f"{probe.message}; Healthy after {settings.success_threshold} successes in a row "
                f"({health.successes} so far)"
            )
        return "ProbeFailing", (
            f"{probe.message}; {health.failures} failure(s) in a row, Down at "
            f"{settings.failure_threshold}"
        )
    if health.recovering_since is not None:
        at = time.time() + health.recovering_since + hold_down_s - now
        return "HoldDown", (
            f"probes pass again ({health.successes} in a row); traffic returns after the "
            f"{hold_down_s:g}s hold-down if they keep passing, at about {_clock(at)}"
        )
    if probe.ok:
        return "ProbeFailed", (
            f"{probe.message}; still Down until {settings.success_threshold} successes in a row "
            f"({health.successes} so far) and a {hold_down_s:g}s hold-down"
        )
    return "ProbeFailed", (
        f"{probe.message}; Down after {health.failures} failure(s) in a row, traffic moves to "
        "the next lane of each route"
    )


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(microsecond=0).isoformat()[:-6] + "Z"


# ---------------------------------------------------------------------------------------------
# The probe request.


def probe_request(provider: Mapping[str, Any], api_key: str | None) -> tuple[str, dict[str, str]]:
    """(url, headers) of the probe for a lane's `spec.provider`."""
    base = str(provider.get("baseURL", "")).rstrip("/")
    headers = {"Accept": "application/json"}
    if provider.get("type") == "anthropic":
        # As the sidecar's adapter: `https://api.anthropic.com` and `.../v1` name the same API.
        base = base if base.endswith("/v1") else base + "/v1"
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
    elif api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return base + "/models", headers


async def probe_provider(
    session: aiohttp.ClientSession,
    provider: Mapping[str, Any],
    api_key: str | None,
    *,
    timeout_s: float,
    proxies: EgressProxies | None = None,
) -> ProbeResult:
    """Send one probe; never raises for provider trouble, which is what it measures.

    `session` should not trust the environment itself: `proxies` picks the egress proxy."""
    url, headers = probe_request(provider, api_key)
    proxy = _proxy_for(url, proxies) if proxies else None
    via: dict[str, Any] = {}
    if proxy is not None:
        via["proxy"] = proxy.url
        if proxy.authorization:
            via["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, headers=headers, allow_redirects=False, **via) as resp:
                await resp.read()
                status = resp.status
    except TimeoutError:
        return ProbeResult(False, "Timeout", None, f"GET /models: no answer within {timeout_s:g}s")
    except aiohttp.InvalidURL:
        return ProbeResult(False, "InvalidURL", None, "spec.provider.baseURL is not a valid URL")
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, "ConnectionFailed", None, f"GET /models: {_short(exc)}")
    latency = round((time.monotonic() - started) * 1000)
    return _classify(status, latency)


def _proxy_for(url: str, proxies: EgressProxies) -> Proxy | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None  # not a valid URL: aiohttp says so
    return proxies.for_host(parts.scheme, parts.hostname or "", port)


def _classify(status: int, latency_ms: int) -> ProbeResult:
    where = f"GET /models answered {status} in {latency_ms} ms"
    if 200 <= status < 300:
        return ProbeResult(True, "Succeeded", latency_ms, where)
    if status in (401, 403):
        return ProbeResult(False, "Unauthorized", latency_ms, f"{where}; check the API key Secret")
    if status == 429:
        return ProbeResult(False, "RateLimited", latency_ms, where)
    return ProbeResult(False, "HTTPError", latency_ms, where)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def missing_secret(detail: str) -> ProbeResult:
    """The outcome when the lane's API key cannot be read: a failure, without a request."""
    return ProbeResult(False, "SecretMissing", None, detail)
