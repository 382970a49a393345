"""Provider error text is redacted before it reaches a client, the decision log or metrics:
the lane's own key and anything shaped like a credential become `[redacted]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router_sidecar.errors import redact
from tests.e2e.harness import Sidecar, lane, policy_doc, store_for

KEY = "zz-live-TOPSECRET-4242"  # matches no pattern: only knowing the key can catch it
OTHER = "sk-proj-AbCdEf0123456789"
ANTHROPIC = "sk-ant-api03-Zyx987_abc-DEF"
HEX = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"Incorrect API key provided: {KEY}.", "Incorrect API key provided: [redacted]."),
        (f"key {OTHER} is revoked", "key [redacted] is revoked"),
        (f"x-api-key {ANTHROPIC} invalid", "x-api-key [redacted] invalid"),
        ("sent Authorization: Bearer abc.DEF-123_x", "sent Authorization: Bearer [redacted]"),
        ("GET /v1beta/m?key=AIzaSyA-12_x&alt=sse", "GET /v1beta/m?key=[redacted]&alt=sse"),
        ("api_key=abc token=xyz", "api_key=[redacted] token=[redacted]"),
        (f"trace {HEX} seen", "trace [redacted] seen"),
        ("c2VjcmV0LXRva2VuLXZhbHVlLWhlcmUtMTIzNDU2Nzg=", "[redacted]"),
        # Ordinary provider wording survives.
        ("This model's maximum context length is 8192 tokens.", None),
        ("Unknown key: response_format", None),
        ("POST /v1/chat/completions failed", None),
        ("averyveryverylongidentifierwithoutanydigits", None),
    ],
)
def test_credentials_in_provider_text_are_redacted(text: str, kept: str | None) -> None:
    assert redact(text, KEY) == (text if kept is None else kept)


@pytest.fixture
async def echoing_provider() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A provider whose errors echo the key it was sent; `answer` sets status and message."""
    answer: dict[str, Any] = {"status": 401, "message": "Incorrect API key provided: {key}"}

    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = answer["message"].format(key=key)
        body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return web.json_response(body, status=answer["status"])

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", answer
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "Incorrect API key provided: {key}"),
        (400, "Bad request from key {key}, header was 'Authorization: Bearer {key}'"),
        (500, "upstream auth {key} failed; proxy token=abc123secret"),
    ],
)
async def test_a_provider_error_echoing_the_key_never_reaches_client_log_or_metrics(
    echoing_provider: tuple[str, dict[str, Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    message: str,
) -> None:
    url, answer = echoing_provider
    answer.update(status=status, message=message)
    (tmp_path / "prov").mkdir()
    (tmp_path / "prov" / "apiKey").write_text(KEY + "\n")
    doc = policy_doc({"a": lane(url, secret=("prov", "apiKey"))}, {"main": ["a"]})
    caplog.set_level(logging.DEBUG)
    async with Sidecar(store_for(doc, str(tmp_path))) as sidecar:
        got, headers, body = await sidecar.chat("hi")
        _, metrics_text = await sidecar.get("/metrics")
    assert got >= 400
    seen = json.dumps(body) + json.dumps(headers) + metrics_text + caplog.text
    assert KEY not in seen and "abc123secret" not in seen
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "laneway.decisions"]
    assert "[redacted]" in line["lanesTried"][0]["detail"]
    if status != 401:  # a 401 is reported to the client in the router's own words
        assert "[redacted]" in body["error"]["message"]
