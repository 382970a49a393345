"""The explain object that `POST /v1/route/explain` and `laneway explain --json` return."""

from __future__ import annotations

import json

from router_sidecar.decision import decide
from router_sidecar.explain import explain
from router_sidecar.signals import Hints
from tests.unit.routing_fixtures import WEATHER_TOOL, build, config_with, guide_policy, signals_for

GUIDE = build(guide_policy())


NO_HINTS = Hints()


def explained(prompt, model="auto", config=GUIDE, hints=NO_HINTS, **body):
    return explain(config, decide(config, signals_for(prompt, hints, **body), model))


def test_the_required_keys_are_present_for_a_matched_rule():
    out = explained("Why does my SQL query fail?")
    assert out["route"] == "strong"
    assert out["lane"] == "strong-reasoning"
    assert out["rule"] == "technical-or-long"
    assert out["score"] is None
    assert isinstance(out["reasons"], list) and all(isinstance(r, str) for r in out["reasons"])


def test_a_scored_request_reports_its_score_and_no_rule():
    out = explained("Summarise this email in one line.")
    assert (out["rule"], out["score"], out["route"]) == (None, 1, "fast")


def test_the_object_is_json_and_deterministic():
    first = json.dumps(explained("debug src/app.py", tools=[WEATHER_TOOL]), sort_keys=True)
    second = json.dumps(explained("debug src/app.py", tools=[WEATHER_TOOL]), sort_keys=True)
    assert first == second


def test_the_object_never_holds_the_prompt_text():
    out = explained("My card 4111-1111 fails in production, please look")
    assert "4111" not in json.dumps(out)


def test_every_triage_rule_is_listed_with_how_it_was_evaluated():
    rules = explained("Our production system is down")["rules"]
    assert [r["name"] for r in rules] == ["tools-or-high-stakes", "technical-or-long", "enterprise"]
    assert rules[0]["evaluated"] and rules[0]["matched"]
    assert "matched 'production'" in rules[0]["detail"]
    assert not rules[1]["evaluated"] and not rules[1]["matched"]
    assert rules[2]["detail"] == "not evaluated: an earlier rule matched"


def test_a_forced_route_lists_the_rules_as_not_evaluated():
    out = explained("hi", model="premium")
    assert out["forced"] is True and out["forcedKind"] == "route"
    assert all(not r["evaluated"] for r in out["rules"])


def test_observe_mode_shows_the_enforce_choice():
    out = explained("Please debug this", config=config_with(mode="observe"))
    assert out["mode"] == "observe"
    assert out["route"] == "fast"
    assert out["enforce"] == {"route": "strong", "rule": "technical-or-long", "score": None}


def test_lanes_carry_estimated_costs_and_skipped_lanes_their_reasons():
    doc = guide_policy()
    doc["lanes"]["fast-mini"]["phase"] = "Down"
    out = explained("hi", config=build(doc))
    assert out["lane"] == "fast-mini-backup"
    assert [lane["lane"] for lane in out["lanes"]] == ["fast-mini-backup"]
    assert out["lanes"][0]["estimatedCostUsd"] > 0
    assert out["skipped"] == [{"lane": "fast-mini", "reason": "phase Down"}]
    assert out["lastResort"] is False


def test_no_servable_lane_gives_a_null_lane():
    out = explained("hi", model="premium", stream=True)
    assert out["lane"] is None
    assert out["skipped"] == [{"lane": "premium-agent", "reason": "missing capability streaming"}]


def test_escalation_says_what_would_escalate_and_where_to():
    esc = explained("Summarise this")["escalation"]
    assert esc["triggers"] == ["schemaInvalid", "toolCallInvalid", "truncated", "uncertain"]
    assert esc["uncertaintyMarkers"] == ["I'm not sure", "I cannot determine"]
    assert esc["nextRoute"] == "strong"
    assert esc["path"] == ["strong"]
    assert esc["maxEscalations"] == 1
    assert esc["latencyBudgetMs"] == 20_000


def test_escalation_path_ends_at_the_top_route():
    assert explained("production down")["escalation"]["nextRoute"] is None


def test_fallback_says_which_lanes_come_next():
    fb = explained("Summarise this")["fallback"]
    assert fb["triggers"] == ["rateLimited", "timeout", "serverError", "connectionError"]
    assert fb["retries"] == {"max": 2, "backoffMs": 200}
    assert fb["nextLanes"] == ["fast-mini-backup"]


def test_signals_and_complexity_parts_are_shown():
    out = explained("Why?\n```\nx\n```", hints=Hints(tier="free"))
    assert out["signals"]["hasCodeBlock"] is True
    assert out["signals"]["tier"] == "free"
    assert {"signal": "code-block", "weight": 1} in out["complexity"]["matched"]
