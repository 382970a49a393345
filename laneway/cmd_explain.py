"""`laneway explain`: a prompt and a policy in, the routing decision out, without calling a model.

Called by `laneway.cli`. It compiles the policy from manifest files (as `laneway compile` does),
builds the OpenAI request body an application would send, and runs the sidecar's own decision
code on it (`router_sidecar.signals`, `.decision`, `.explain`), so the answer is what
`POST /v1/route/explain` would say for the same request. Offline every lane's phase is Unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from laneway.errors import BadInput
from laneway_operator.manifests import compile_files
from router_sidecar.config import parse_config
from router_sidecar.decision import AUTO, decide
from router_sidecar.explain import explain
from router_sidecar.signals import HintError, extract_signals, parse_hints

# The one tool offered with --tools: only its presence matters to routing.
DUMMY_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Placeholder tool added by `laneway explain --tools`.",
        "parameters": {"type": "object", "properties": {}},
    },
}
# Hint header (after x-laneway-) -> the flag that sets it.
_FLAGS = {
    "tier": "--tier",
    "task": "--task",
    "risk": "--risk",
    "latency-budget-ms": "--latency-budget-ms",
    "tool-failures": "--tool-failures",
}


def run(args: argparse.Namespace) -> int:
    config = parse_config(compile_files(args.files, args.policy, args.namespace))
    body = request_body(args.prompt, tools=args.tools)
    signals = extract_signals(body, _hints(args))
    result = explain(config, decide(config, signals, AUTO))
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_text(result))
    return 0


def request_body(prompt: str, *, tools: bool) -> dict[str, Any]:
    """The chat completion body an application would send with this prompt."""
    body: dict[str, Any] = {"model": AUTO, "messages": [{"role": "user", "content": prompt}]}
    if tools:
        body["tools"] = [DUMMY_TOOL]
    return body


def _hints(args: argparse.Namespace) -> Any:
    given = {key: getattr(args, key.replace("-", "_")) for key in _FLAGS}
    headers = {f"x-laneway-{key}": value for key, value in given.items() if value is not None}
    try:
        return parse_hints(headers)
    except HintError as exc:
        header, _, message = str(exc).partition(": ")
        flag = _FLAGS.get(header.removeprefix("x-laneway-"), header)
        raise BadInput(f"{flag}: {message}") from exc


def render_text(result: dict[str, Any]) -> str:
    """The explain object as a short report for a terminal."""
    policy = result["policy"]
    decided_by = _decided_by(result)
    lines = [
        f"policy:  {policy['namespace']}/{policy['name']} ({result['mode']} mode, config "
        f"{result['configVersion']})",
        f"route:   {result['route']} ({decided_by})",
        f"lane:    {_lane_line(result)}",
        f"reason:  {result['reason']}",
        "why:",
        *(f"  - {reason}" for reason in result["reasons"]),
    ]
    if result["skipped"]:
        lines.append("skipped lanes:")
        lines.extend(f"  - {row['lane']}: {row['reason']}" for row in result["skipped"])
    lines.extend(_next_steps(result))
    return "\n".join(lines) + "\n"


def _decided_by(result: dict[str, Any]) -> str:
    if result["rule"] is not None:
        return f"rule {result['rule']}"
    if result["score"] is not None:
        return f"complexity score {result['score']}"
    enforce = result["enforce"]
    if result["mode"] == "observe":
        how = f"rule {enforce['rule']}" if enforce["rule"] else f"score {enforce['score']}"
        return f"observe mode default; enforce would choose {enforce['route']} by {how}"
    return "default route"


def _lane_line(result: dict[str, Any]) -> str:
    if not result["lanes"]:
        return "none (no lane of this route can serve the request)"
    first = result["lanes"][0]
    return (
        f"{first['lane']} ({first['provider']} {first['model']}, phase {first['phase']}, "
        f"estimated ${first['estimatedCostUsd']:.6f})"
    )


def _next_steps(result: dict[str, Any]) -> list[str]:
    esc, fb = result["escalation"], result["fallback"]
    if esc["triggers"] and esc["nextRoute"]:
        escalate = (
            f"to route {esc['nextRoute']} on {', '.join(esc['triggers'])} "
            f"(at most {esc['maxEscalations']})"
        )
    else:
        escalate = "none from this route"
    if esc["selfCheckLane"] and "selfCheck" in esc["triggers"] and esc["nextRoute"]:
        escalate += f"; self-check by lane {esc['selfCheckLane']}"
    if esc["latencyBudgetMs"] is not None:
        escalate += f"; latency budget {esc['latencyBudgetMs']} ms"
    backups = ", ".join(fb["nextLanes"]) or "none"
    retries = fb["retries"]
    return [
        f"escalation: {escalate}",
        f"fallback: next lanes {backups} on {', '.join(fb['triggers']) or 'nothing'}; "
        f"{retries['max']} retries per lane, backoff {retries['backoffMs']} ms",
    ]
