"""Failures of provider calls below HTTP, raised by `upstream.py` and `egress_proxy.py`.

`errors.classify_exception` maps them to fallback triggers: `ConnectFailed` and `Disconnected` are
connection errors, `BrokenResponse` counts as a server error.
"""

from __future__ import annotations

MAX_HEAD_BYTES = 64 * 1024  # the longest response head (or proxy answer) read before giving up


class UpstreamError(Exception):
    """A provider call failed below HTTP."""


class ConnectFailed(UpstreamError):
    """The connection could not be opened: refused, unreachable, DNS or TLS failure."""


class Disconnected(UpstreamError):
    """The connection closed or broke before the response head was complete."""


class BrokenResponse(UpstreamError):
    """The provider's bytes are not a readable HTTP response, or its body was cut short."""
