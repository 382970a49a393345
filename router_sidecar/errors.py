"""The sidecar's error vocabulary: a small, stable set of OpenAI-shaped errors.

Two kinds of failure live here, and this is the only module that maps between them:

- `RouterError`: what the client sees. `server.py` renders it as the OpenAI error body
  `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
- `UpstreamFailure`: what went wrong talking to one lane. `classify_status` and
  `classify_exception` turn an upstream HTTP status or a transport exception into one, with
  `trigger` set to the fallback trigger it counts as (`rateLimited`, `timeout`, ...) or None when
  it must not move the request to another lane. `engine.py` decides what to do with it and, when
  every lane failed, raises `all_lanes_failed`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from router_sidecar.upstream import BrokenResponse

# Fallback trigger names, as in the policy's `fallback.triggers`.
RATE_LIMITED = "rateLimited"
TIMEOUT = "timeout"
SERVER_ERROR = "serverError"
CONNECTION_ERROR = "connectionError"
CONTEXT_OVERFLOW = "contextOverflow"
REFUSAL = "refusal"
TOOL_CALL_INVALID = "toolCallInvalid"

# Phrases providers use for "the prompt does not fit": OpenAI's code, Anthropic's message, and
# the wording of common OpenAI-compatible servers (vLLM, TGI, Ollama).
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_OVERFLOW_PHRASES = (
    "prompt is too long",
    "maximum context length",
    "context length",
    "context window",
    "too many tokens",
)
_MAX_UPSTREAM_MESSAGE = 300
REDACTED = "[redacted]"
# Things in provider text that look like credentials: OpenAI/Anthropic keys, bearer tokens,
# `key=` style parameters, and long base64 or hex runs (checked for a digit before redacting,
# so long words and paths survive).
_CREDENTIAL = re.compile(
    r"sk-(?:ant-)?[A-Za-z0-9_\-]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]+=*"
    r"|(?i:\b(?:api[_-]?key|key|token|secret|access[_-]token)=)[^\s&\"',;]+"
    r"|[A-Za-z0-9+/_\-]{32,}=*"
)


class RouterError(Exception):
    """An error the router returns to its client, in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        outcome: str = "bad_request",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        # The `outcome` label of laneway_requests_total for a request that ends in this error.
        self.outcome = outcome

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    """The OpenAI error body as bytes, for SSE error events after a stream has started."""
    payload = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return json.dumps(payload).encode()


# ---------------------------------------------------------------------------------------------
# Errors about the client's request.


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> RouterError:
    return RouterError(400, message, param=param, code=code or "invalid_request")


def invalid_json(detail: str) -> RouterError:
    return RouterError(
        400, f"The request body is not valid JSON: {detail}.", code="invalid_json"
    )


def body_too_large(limit: int) -> RouterError:
    return RouterError(
        413,
        f"The request body is larger than this router accepts ({limit} bytes); "
        "send a shorter conversation or raise --max-body-bytes.",
        code="request_too_large",
    )


def bad_hint(message: str) -> RouterError:
    return RouterError(400, f"Bad request hint header: {message}", code="invalid_hint")


def model_not_found(model: str, routes: Iterable[str], lanes: Iterable[str]) -> RouterError:
    return RouterError(
        404,
        f"The model {model!r} is not a route or lane of this router. Use 'auto', a route "
        f"({', '.join(routes)}) or a lane ({', '.join(lanes)}).",
        code="model_not_found",
        param="model",
    )


def budget_rejected(message: str) -> RouterError:
    """Every lane would cost more than `budget.maxCostPerRequest` and the policy says reject."""
    return RouterError(
        402,
        f"Request rejected by the cost budget: {message}",
        type="insufficient_quota",
        code="budget_exceeded",
        outcome="budget",
    )


def no_config() -> RouterError:
    return RouterError(
        503,
        "The router has no configuration loaded yet; retry shortly.",
        type="server_error",
        code="not_ready",
        outcome="unavailable",
    )


def remote_api_forbidden(remote: str | None) -> RouterError:
    """A `/v1/*` request from outside the pod while the API is served to loopback only."""
    return RouterError(
        403,
        f"The router's API is only served to the pod itself (loopback callers); this request "
        f"came from {remote or 'an unknown address'}. Call it on 127.0.0.1 from the app's "
        "container, or start `laneway serve` with --allow-remote-api to serve other callers.",
        type="invalid_request_error",
        code="permission_denied",
        outcome="bad_request",
    )


def unknown_decision(decision_id: str) -> RouterError:
    """Feedback names a decision id this sidecar did not hand out (or has forgotten)."""
    return RouterError(
        404,
        f"Unknown decision id {decision_id!r}: send the x-laneway-decision-id of a recent "
        "response from this router (each replica remembers its own last decisions).",
        code="decision_not_found",
        param="decision_id",
    )


def not_found(path: str) -> RouterError:
    return RouterError(404, f"Unknown path {path}.", code="unknown_url")


def method_not_allowed(method: str, path: str) -> RouterError:
    return RouterError(405, f"{method} is not allowed on {path}.", code="method_not_allowed")


# ---------------------------------------------------------------------------------------------
# Upstream failures.


@dataclass(frozen=True)
class UpstreamFailure:
    """One failed call to one lane.

    `trigger` is the fallback trigger this failure counts as, or None when it is not a reason to
    try another lane (for example the provider says the request itself is invalid). `status` is
    the upstream HTTP status, 0 for transport failures. `body` is the provider's error body
    when it sent one, so a client error can be passed on unchanged.
    """

    trigger: str | None
    status: int
    message: str
    retry_after_s: float | None = None
    body: Mapping[str, Any] | None = None

    @property
    def outcome(self) -> str:
        """Short outcome word for logs and error messages."""
        if self.trigger:
            return self.trigger
        return "auth" if self.status in (401, 403) else "rejected"


_CREDENTIAL_KEY = re.compile(r"(?i)(?:api[_-]?key|key|token|secret|access[_-]token)")


def _redact_match(match: re.Match[str]) -> str:
    found = match.group(0)
    low = found[:6].lower()
    if low.startswith("sk-"):
        return REDACTED
    if low == "bearer":
        return "Bearer " + REDACTED
    head, sep, _ = found.partition("=")
    if sep and _CREDENTIAL_KEY.fullmatch(head):
        return f"{head}={REDACTED}"
    if any(c.isdigit() for c in found):  # a long run: a key or token, not a word
        return REDACTED
    return found


def redact(text: str, secret: str | None = None) -> str:
    """`text` with anything that looks like a credential (and `secret` itself) replaced.

    The one place provider text is cleaned before it reaches a client, the decision log or a
    log line: every upstream message goes through `_short`, which calls this.
    """
    if secret and secret in text:
        text = text.replace(secret, REDACTED)
    return _CREDENTIAL.sub(_redact_match, text)


def _short(text: str, secret: str | None = None) -> str:
    text = redact(" ".join(text.split()), secret)
    return text if len(text) <= _MAX_UPSTREAM_MESSAGE else text[:_MAX_UPSTREAM_MESSAGE] + "..."


def _error_fields(body: Any) -> tuple[str, str]:
    """(message, code) from an OpenAI or Anthropic error body, empty when absent."""
    if not isinstance(body, Mapping):
        return "", ""
    err = body.get("error")
    if isinstance(err, Mapping):
        message, code = err.get("message"), err.get("code") or err.get("type")
        message = message if isinstance(message, str) else ""
        return message, (code if isinstance(code, str) else "")
    if isinstance(err, str):
        return err, ""
    message = body.get("message") or body.get("detail")
    return (message if isinstance(message, str) else ""), ""


def is_context_overflow(status: int, body: Any) -> bool:
    """The provider refused the request because the prompt does not fit its context window."""
    if status not in (400, 413, 422):
        return False
    message, code = _error_fields(body)
    if code in _OVERFLOW_CODES:
        return True
    lowered = message.lower()
    return any(phrase in lowered for phrase in _OVERFLOW_PHRASES)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or unusable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def classify_status(
    status: int, body: Any, retry_after: str | None = None, *, secret: str | None = None
) -> UpstreamFailure:
    """Map a non-2xx upstream response to a failure (see the module docstring); `secret` is
    the lane's API key, redacted from the message if the provider echoed it."""
    message, _ = _error_fields(body)
    message = _short(message or f"HTTP {status}", secret)
    parsed_body = body if isinstance(body, Mapping) else None
    if status == 429:
        return UpstreamFailure(RATE_LIMITED, status, message, parse_retry_after(retry_after))
    if status == 408:
        return UpstreamFailure(TIMEOUT, status, message)
    if status >= 500:
        return UpstreamFailure(SERVER_ERROR, status, message)
    if is_context_overflow(status, body):
        return UpstreamFailure(CONTEXT_OVERFLOW, status, message, body=parsed_body)
    return UpstreamFailure(None, status, message, body=parsed_body)


def classify_exception(exc: BaseException, *, secret: str | None = None) -> UpstreamFailure:
    """Map a transport exception (`upstream.UpstreamError`, aiohttp's, a timeout) to a failure."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamFailure(TIMEOUT, 0, "no answer within the lane's timeout")
    broken = (BrokenResponse, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)
    if isinstance(exc, broken):
        return UpstreamFailure(SERVER_ERROR, 0, _short(f"broken response: {exc}", secret))
    return UpstreamFailure(CONNECTION_ERROR, 0, _short(f"{type(exc).__name__}: {exc}", secret))


def malformed_response(detail: str, *, secret: str | None = None) -> UpstreamFailure:
    """A 2xx answer the router cannot read counts as a server error of that lane."""
    return UpstreamFailure(SERVER_ERROR, 200, _short(f"unreadable answer: {detail}", secret))


def mid_stream_problem(exc: BaseException, secret: str | None = None) -> str:
    """What to tell the client (and the log) about a provider error event mid-stream."""
    return _short(f"the provider failed mid-stream: {exc}", secret)


def refused(detail: str) -> UpstreamFailure:
    return UpstreamFailure(REFUSAL, 200, _short(detail))


def invalid_tool_call(detail: str) -> UpstreamFailure:
    return UpstreamFailure(TOOL_CALL_INVALID, 200, _short(detail))


# ---------------------------------------------------------------------------------------------
# Mapping upstream failures to what the client sees.


@dataclass(frozen=True)
class AttemptOutcome:
    """One lane the request tried (or skipped) and what happened, for the all-failed message."""

    lane: str
    outcome: str
    detail: str = ""


def all_lanes_failed(route: str, attempts: Sequence[AttemptOutcome]) -> RouterError:
    """Every lane of the route failed or was unavailable: 504 if all timed out, 503 if none
    could even be tried (circuit open, rate limited, down), else 502."""
    tried = [a for a in attempts if a.outcome not in _SKIP_OUTCOMES]
    if not tried:
        status, code = 503, "no_lane_available"
    elif all(a.outcome == TIMEOUT for a in tried):
        status, code = 504, "upstream_timeout"
    elif all(a.outcome == RATE_LIMITED for a in tried):
        status, code = 503, "upstream_rate_limited"
    else:
        status, code = 502, "upstream_failed"
    listed = "; ".join(
        f"{a.lane}: {a.outcome}" + (f" ({a.detail})" if a.detail else "") for a in attempts
    )
    return RouterError(
        status,
        f"Every lane of route {route!r} failed: {listed or 'the route has no usable lane'}.",
        type="server_error",
        code=code,
        outcome="failed",
    )


_SKIP_OUTCOMES = frozenset(
    {"skipped", "circuitOpen", "coolingDown", "probeInFlight", "deadlinePassed"}
)


def upstream_rejected(lane: str, failure: UpstreamFailure) -> RouterError:
    """A lane rejected the request for a reason that is not a fallback trigger.

    A 4xx that is the client's fault is passed on with the provider's status and message, so the
    client can fix its request. Credentials the lane rejected are the operator's problem, not the
    client's, so they become a 502 that says which Secret to check.
    """
    if failure.status in (401, 403):
        return RouterError(
            502,
            f"Lane {lane!r} rejected the router's credentials (HTTP {failure.status}); check the "
            "Secret named in the lane's provider.apiKeySecretRef.",
            type="server_error",
            code="upstream_auth_failed",
            outcome="failed",
        )
    err = failure.body.get("error") if failure.body else None
    err = err if isinstance(err, Mapping) else {}
    param = err.get("param")
    code = err.get("code") or err.get("type")
    return RouterError(
        failure.status if 400 <= failure.status < 500 else 502,
        f"Lane {lane!r} rejected the request: {failure.message}",
        type="invalid_request_error" if 400 <= failure.status < 500 else "server_error",
        code=redact(code) if isinstance(code, str) else "upstream_rejected",
        param=redact(param) if isinstance(param, str) else None,
        outcome="rejected",
    )
