"""Small router configs and requests for the routing-decision tests.

`guide_policy()` is the SPEC's example policy (tools or high-stakes -> premium; code-heavy or long
-> strong; enterprise -> strong; else complexity bands). Tests tweak a copy of the document and
build it with `build()`, which sets the content version the way the compiler does.
"""

from __future__ import annotations

import copy
from typing import Any

from router_sidecar.config import RouterConfig, content_version, parse_config
from router_sidecar.signals import Hints, Signals, extract_signals


def lane_doc(
    model: str = "m",
    *,
    inp: float = 1.0,
    out: float = 2.0,
    context: int = 128_000,
    max_out: int = 16_000,
    caps: tuple[str, ...] = ("tools", "jsonSchema", "streaming"),
    phase: str = "Healthy",
) -> dict[str, Any]:
    return {
        "provider": {"type": "openai", "baseURL": "http://127.0.0.1:9/v1", "model": model},
        "pricing": {"inputPerMillion": inp, "outputPerMillion": out},
        "limits": {"contextWindow": context, "maxOutputTokens": max_out},
        "capabilities": list(caps),
        "phase": phase,
    }


def guide_policy() -> dict[str, Any]:
    """The SPEC example policy as a router config document (without its version)."""
    return {
        "apiVersion": "router.laneway.dev/v1",
        "kind": "RouterConfig",
        "policy": {"name": "support-bot", "namespace": "team-a"},
        "mode": "enforce",
        "defaultRoute": "fast",
        "latencyBudgetMs": 20_000,
        "budget": {"maxCostPerRequest": 0.5},
        "lanes": {
            "fast-mini": lane_doc("small", inp=0.15, out=0.6),
            "fast-mini-backup": lane_doc("small-b", inp=0.2, out=0.8),
            "strong-reasoning": lane_doc("big", inp=3, out=15),
            "strong-backup": lane_doc("big-b", inp=2.5, out=10),
            "premium-agent": lane_doc("huge", inp=15, out=75, caps=("tools", "jsonSchema")),
        },
        "routes": [
            {"name": "fast", "lanes": ["fast-mini", "fast-mini-backup"]},
            {"name": "strong", "lanes": ["strong-reasoning", "strong-backup"]},
            {"name": "premium", "lanes": ["premium-agent"]},
        ],
        "triage": [
            {
                "name": "tools-or-high-stakes",
                "when": {
                    "anyOf": [
                        {"hasTools": True},
                        {"keywordsAny": ["production", "customer", "security", "compliance"]},
                    ]
                },
                "route": "premium",
            },
            {
                "name": "technical-or-long",
                "when": {
                    "anyOf": [
                        {
                            "keywordsAny": [
                                "stack trace",
                                "debug",
                                "refactor",
                                "unit test",
                                "sql",
                                "python",
                            ]
                        },
                        {"promptCharsOver": 4000},
                    ]
                },
                "route": "strong",
            },
            {"name": "enterprise", "when": {"tierIn": ["enterprise"]}, "route": "strong"},
        ],
        "complexity": {
            "bands": [
                {"min": 1, "max": 2, "route": "fast"},
                {"min": 3, "max": 4, "route": "strong"},
                {"min": 5, "max": 5, "route": "premium"},
            ]
        },
        "escalation": {
            "triggers": ["schemaInvalid", "toolCallInvalid", "truncated", "uncertain"],
            "uncertaintyMarkers": ["I'm not sure", "I cannot determine"],
            "maxEscalations": 1,
            "toolFailureThreshold": 2,
            "path": {"fast": "strong", "strong": "premium"},
        },
        "fallback": {
            "triggers": ["rateLimited", "timeout", "serverError", "connectionError"],
            "retries": {"max": 2, "backoffMs": 200},
        },
    }


def build(doc: dict[str, Any]) -> RouterConfig:
    """Parse a config document after stamping its content version."""
    doc = copy.deepcopy(doc)
    doc.pop("version", None)
    doc["version"] = content_version(doc)
    return parse_config(doc)


def config_with(**changes: Any) -> RouterConfig:
    """The guide policy with top-level keys replaced (`None` removes a key)."""
    doc = guide_policy()
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return build(doc)


def chat(prompt: str, *, system: str | None = None, **body: Any) -> dict[str, Any]:
    """A chat completion request body with one user message (and an optional system one)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return {"model": "auto", "messages": messages, **body}


def signals_for(prompt: str, hints: Hints | None = None, **body: Any) -> Signals:
    return extract_signals(chat(prompt, **body), hints or Hints())


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def agent_step(*results: object, ask: str = "Weather in Oslo?") -> dict[str, Any]:
    """A request in an agent loop: the user's ask, then a get_weather call and its tool message
    for each of `results`."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": ask}]
    for i, result in enumerate(results):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": result})
    return {"model": "auto", "messages": messages, "tools": [WEATHER_TOOL]}
