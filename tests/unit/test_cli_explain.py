"""`laneway explain`: the decision for one prompt, and the guide's example policy reproduced.

`examples/20-policy-support-bot.yaml` implements the first-pass router of the routing guide
(`reference/llm-routing-guide.txt`, "An example routing policy you can ship this week"). The
table below runs prompts that exercise each of its branches through `laneway explain` and checks
the route against the guide's own logic, restated here as `guide_route`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from laneway.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The guide's routes, by the name of the model each returns, mapped to the example's routes.
GUIDE_TO_ROUTE = {
    "premium-agent-model": "premium",
    "strong-reasoning-model": "strong",
    "strong-fast-model": "strong",
    "low-cost-fast-model": "fast",
}


def guide_route(prompt: str, has_tools: bool, tier: str | None) -> str:
    """The guide's first-pass router, returning the name of the model it picks."""
    lowered = prompt.lower()
    technical = ["stack trace", "debug", "refactor", "unit test", "sql", "python"]
    risky = ["production", "customer", "security", "compliance"]
    if has_tools or any(word in lowered for word in risky):
        return "premium-agent-model"
    if any(word in lowered for word in technical) or len(prompt) > 4000:
        return "strong-reasoning-model"
    if tier == "enterprise":
        return "strong-fast-model"
    return "low-cost-fast-model"


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["explain", "-f", str(EXAMPLES), "--policy", "support-bot", "--json", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return dict(json.loads(captured.out))


LONG_PROSE = "Please summarise the following meeting notes for the weekly newsletter. " * 60

GUIDE_CASES = [
    # (prompt, tools, tier, rule expected to decide, or None for the complexity score)
    ("Summarise this paragraph in one sentence.", False, None, None),
    ("Look up the status of order 1182.", True, None, "tools-or-high-stakes"),
    ("The production cluster is returning errors, what now?", False, None, "tools-or-high-stakes"),
    ("A customer asks whether we store card numbers.", False, None, "tools-or-high-stakes"),
    ("Two customers reported the same invoice problem.", False, None, "tools-or-high-stakes"),
    ("Review our Security checklist for gaps.", False, None, "tools-or-high-stakes"),
    ("Draft the compliance section of the audit report.", False, None, "tools-or-high-stakes"),
    ("Here is a stack trace from the worker, what failed?", False, None, "technical-or-long"),
    ("Help me debug this loop that never ends.", False, None, "technical-or-long"),
    ("Refactor this class into two smaller ones.", False, None, "technical-or-long"),
    ("Write a unit test for the date parser.", False, None, "technical-or-long"),
    ("Write SQL that counts orders per day.", False, None, "technical-or-long"),
    ("How do I read a CSV file in Python?", False, None, "technical-or-long"),
    (LONG_PROSE, False, None, "technical-or-long"),
    ("Translate 'good morning' into French.", False, "enterprise", "enterprise"),
    ("Translate 'good morning' into French.", False, "free", None),
    (
        "Our production SQL is slow for an enterprise account.",
        False,
        "enterprise",
        "tools-or-high-stakes",
    ),
    ("Format this list as a table:\n```\na 1\nb 2\n```", False, None, None),
]


@pytest.mark.parametrize(("prompt", "tools", "tier", "rule"), GUIDE_CASES)
def test_explain_on_the_example_policy_routes_like_the_guides_router(
    capsys: pytest.CaptureFixture[str], prompt: str, tools: bool, tier: str | None, rule: str | None
) -> None:
    args = [*(["--tools"] if tools else []), *(["--tier", tier] if tier else []), prompt]
    result = explain(capsys, *args)
    assert result["route"] == GUIDE_TO_ROUTE[guide_route(prompt, tools, tier)]
    assert result["rule"] == rule
    if rule is None:
        assert result["score"] in (1, 2)
    else:
        assert result["score"] is None


def test_the_guide_table_covers_every_rule_and_the_score() -> None:
    rules = {case[3] for case in GUIDE_CASES}
    assert rules == {"tools-or-high-stakes", "technical-or-long", "enterprise", None}


def test_json_output_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    result = explain(capsys, "Why is my SQL query slow?")
    assert {"route", "lane", "rule", "score", "reasons"} <= set(result)
    assert (result["route"], result["lane"], result["rule"]) == (
        "strong",
        "strong-reasoning",
        "technical-or-long",
    )
    assert any("sql" in reason for reason in result["reasons"])
    assert result["fallback"]["nextLanes"] == ["strong-backup"]
    assert result["escalation"]["nextRoute"] == "premium"


def test_risk_and_task_hints_reach_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    result = explain(capsys, "--risk", "HIGH", "--task", "Summarize", "hello")
    assert result["signals"]["risk"] == "high"
    assert result["signals"]["task"] == "summarize"


def test_tool_failures_and_a_latency_budget_reach_the_decision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # support-bot: toolFailureThreshold 2, fast -> strong, latencyBudgetMs 20000.
    assert explain(capsys, "--tool-failures", "1", "Say hi")["route"] == "fast"
    result = explain(capsys, "--tool-failures", "2", "--latency-budget-ms", "1500", "Say hi")
    assert result["route"] == "strong"
    assert any("2 tool failures >= toolFailureThreshold 2" in r for r in result["reasons"])
    assert result["escalation"]["latencyBudgetMs"] == 1500
    main(["explain", "-f", str(EXAMPLES), "--policy", "support-bot", "Say hi"])
    assert "; latency budget 20000 ms" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "prompt", "route", "rule"),
    [
        (["--latency-budget-ms", "1500"], "Why is the API slow today?", "fast", "tight-deadline"),
        (["--latency-budget-ms", "1500", "--tools"], "Restart the API", "premium", "tool-step"),
        (["--tools"], "Restart the API", "premium", "tool-step"),
        ([], "Show the status of the deploy", "fast", "status-lookup"),
        ([], "Why is the API slow today?", "strong", None),
    ],
)
def test_the_ops_agent_example_routes_by_latency_budget_and_tools(
    capsys: pytest.CaptureFixture[str], flags: list[str], prompt: str, route: str,
    rule: str | None,
) -> None:
    code = main(["explain", "-f", str(EXAMPLES), "--policy", "ops-agent", "--json", *flags,
                 prompt])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (result["route"], result["rule"]) == (route, rule)
    assert "toolCallInvalid" in result["fallback"]["triggers"]


def test_text_output_says_route_lane_why_and_what_happens_next(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["explain", "-f", str(EXAMPLES), "--policy", "support-bot", "--tools", "hi"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "route:   premium (rule tools-or-high-stakes)"
    assert lines[2].startswith("lane:    premium-agent (anthropic claude-opus-4-1")
    assert "why:" in lines
    assert "escalation: none from this route" in out
    assert "fallback: next lanes premium-backup on " in out


def test_text_output_for_a_scored_request_and_for_observe_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["explain", "-f", str(EXAMPLES), "--policy", "support-bot", "Say hi"])
    out = capsys.readouterr().out
    assert "route:   fast (complexity score 1)" in out
    assert "escalation: to route strong on schemaInvalid" in out
    main(["explain", "-f", str(EXAMPLES), "--policy", "docs-assistant", "what is the link?"])
    out = capsys.readouterr().out
    assert "route:   strong (observe mode default; enforce would choose fast by rule " in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--policy", "support-bot", "--tier", "gold tier", "hi"], "--tier: must be a short name"),
        (["--policy", "support-bot", "--risk", "x" * 80, "hi"], "--risk: must be a short name"),
        (["--policy", "missing", "hi"], "no RoutingPolicy named 'missing'"),
        (["--policy", "support-bot", "--latency-budget-ms", "soon", "hi"],
         "--latency-budget-ms: "),
        (["--policy", "support-bot", "--tool-failures", "-1", "hi"], "--tool-failures: "),
    ],
)
def test_bad_input_exits_with_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    assert main(["explain", "-f", str(EXAMPLES), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("laneway explain: ")
    assert fragment in err
