"""The routing decision: triage, complexity bands, observe mode, forced models, lane screening."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_sidecar.config import validate_condition
from router_sidecar.decision import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    DEFAULT_SIGNALS,
    UnknownModel,
    decide,
    header_safe,
    lanes_for_route,
)
from router_sidecar.signals import Hints, Signals
from tests.unit.routing_fixtures import (
    WEATHER_TOOL,
    build,
    config_with,
    guide_policy,
    lane_doc,
    signals_for,
)

GUIDE = build(guide_policy())


# --- the guide's example policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "body", "hints", "route", "rule"),
    [
        ("Summarise this email in one line.", {}, Hints(), "fast", None),
        ("Please debug this stack trace", {}, Hints(), "strong", "technical-or-long"),
        ("Write a unit test for the parser", {}, Hints(), "strong", "technical-or-long"),
        ("Our production database is down", {}, Hints(), "premium", "tools-or-high-stakes"),
        ("Draft a reply to this customer", {}, Hints(), "premium", "tools-or-high-stakes"),
        ("What is the weather in Oslo?", {"tools": [WEATHER_TOOL]}, Hints(), "premium",
         "tools-or-high-stakes"),
        ("word " * 900, {}, Hints(), "strong", "technical-or-long"),
        ("Say hello", {}, Hints(tier="enterprise"), "strong", "enterprise"),
        ("Say hello", {}, Hints(tier="free"), "fast", None),
        ("Is sqlite fine for a hobby app?", {}, Hints(), "fast", None),
        ("Hello", {"system": "You are a security and compliance expert."}, Hints(), "fast", None),
    ],
)  # fmt: skip
def test_the_guide_policy_routes_each_prompt_as_documented(prompt, body, hints, route, rule):
    decision = decide(GUIDE, signals_for(prompt, hints, **body))
    assert (decision.route, decision.rule) == (route, rule)
    assert decision.lanes == GUIDE.routes[route].lanes
    assert decision.enforce_route == route


def test_a_tight_latency_budget_can_route_a_request_to_the_fast_route():
    doc = guide_policy()
    doc["triage"].insert(0, {"name": "tight-deadline", "when": {"latencyBudgetMsUnder": 2000},
                             "route": "fast"})
    config = build(doc)
    prompt = "Please debug this stack trace"

    tight = decide(config, signals_for(prompt, Hints(latency_budget_ms=1500)))
    assert (tight.route, tight.rule) == ("fast", "tight-deadline")
    assert tight.reason == "rule tight-deadline: latencyBudgetMsUnder 2000 (1500 ms)"
    assert decide(config, signals_for(prompt, Hints(latency_budget_ms=5000))).route == "strong"
    assert decide(config, signals_for(prompt)).route == "strong"


def test_a_matched_rule_gives_a_short_header_reason_naming_the_keyword():
    decision = decide(GUIDE, signals_for("Why does my SQL query fail?"))
    assert decision.reason == "rule technical-or-long: keywordsAny matched 'sql'"
    assert decision.score is None


def test_triage_stops_at_the_first_matching_rule():
    decision = decide(GUIDE, signals_for("debug our production outage"))
    assert decision.rule == "tools-or-high-stakes"
    assert [t.name for t in decision.trace] == ["tools-or-high-stakes"]
    assert decision.trace[0].matched


def test_reasons_explain_every_evaluated_rule_and_the_lanes():
    decision = decide(GUIDE, signals_for("Summarise this email in one line."))
    text = "\n".join(decision.reasons)
    for rule in ("tools-or-high-stakes", "technical-or-long", "enterprise"):
        assert f"rule {rule} -> " in text
    assert "complexity score 1 = base 1" in text
    assert "candidate lanes: fast-mini" in text
    assert "Summarise" not in text


# --- complexity ------------------------------------------------------------------------------


def scored(signals, base=1, bands=True, **doc_changes):
    doc = guide_policy()
    doc["triage"] = []
    doc["complexity"] = {"base": base, "signals": signals}
    if bands:
        doc["complexity"]["bands"] = guide_policy()["complexity"]["bands"]
    doc.update(doc_changes)
    return build(doc)


CODE_AND_WHY = signals_for("Why?\n```\nx = 1\n```")


@pytest.mark.parametrize(
    ("base", "weights", "score", "route"),
    [
        (1, (1, 1), 3, "strong"),
        (1, (0.5, 0.5), 2, "fast"),
        (1.5, (0.5, 0.5), 3, "strong"),  # 2.5 rounds half up
        (1, (0.4, 0.0), 1, "fast"),
        (2, (2, 3), 5, "premium"),  # 7 is kept within 1..5
        (1, (-3, -3), 1, "fast"),
    ],
)
def test_the_complexity_score_picks_the_band(base, weights, score, route):
    config = scored(
        [
            {"name": "code", "when": {"hasCodeBlock": True}, "weight": weights[0]},
            {"name": "why", "when": {"keywordsAny": ["why"]}, "weight": weights[1]},
            {"name": "tools", "when": {"hasTools": True}, "weight": 10},
        ],
        base=base,
    )
    decision = decide(config, CODE_AND_WHY)
    assert (decision.score, decision.route, decision.rule) == (score, route, None)
    assert decision.score_parts == (("code", weights[0]), ("why", weights[1]))
    assert decision.reason == f"score {score} -> {route}"


def test_without_bands_the_default_route_serves_and_the_score_is_still_reported():
    config = scored([{"name": "code", "when": {"hasCodeBlock": True}, "weight": 3}], bands=False)
    decision = decide(config, CODE_AND_WHY)
    assert decision.route == "fast"
    assert decision.score == 4
    assert decision.reason == "score 4 -> default fast"


def test_a_policy_without_signals_uses_the_built_in_set():
    for signal in DEFAULT_SIGNALS:
        validate_condition(signal.when, signal.name)
    heavy = signals_for(
        "Why does the build break? See src/a.py and src/b.py\n```\ntrace\n```",
        Hints(risk="high"),
        tools=[WEATHER_TOOL],
    )
    decision = decide(scored([]), heavy)
    assert decision.score == 5
    assert decision.route == "premium"
    names = {name for name, _ in decision.score_parts}
    assert {"code-block", "several-files", "tools", "reasoning-words", "high-risk"} <= names
    assert decide(scored([]), signals_for("Format this date")).score == 1


def test_the_guide_policy_sends_an_unmatched_but_involved_prompt_to_strong_by_score():
    decision = decide(GUIDE, signals_for("Why is this slow?\n```\nSELECT 1\n```"))
    assert (decision.rule, decision.score, decision.route) == (None, 3, "strong")


# --- tool failures ---------------------------------------------------------------------------


def test_tool_failures_at_the_threshold_escalate_the_chosen_route():
    decision = decide(GUIDE, signals_for("Say hello", Hints(tool_failures=2)))
    assert decision.route == "strong"
    assert decision.tool_failure_escalation == ("fast", "strong")
    assert any("2 tool failures >= toolFailureThreshold 2" in r for r in decision.reasons)
    assert decision.reason.endswith("; 2 tool failures -> strong")


def test_tool_failures_below_the_threshold_change_nothing():
    assert decide(GUIDE, signals_for("Say hello", Hints(tool_failures=1))).route == "fast"


def test_tool_failures_at_the_end_of_the_path_stay_on_the_route():
    decision = decide(GUIDE, signals_for("production issue", Hints(tool_failures=3)))
    assert decision.route == "premium"
    assert any("no escalation target" in r for r in decision.reasons)


def test_a_zero_threshold_turns_tool_failure_escalation_off():
    doc = guide_policy()
    doc["escalation"]["toolFailureThreshold"] = 0
    decision = decide(build(doc), signals_for("Say hello", Hints(tool_failures=9)))
    assert decision.route == "fast"


# --- observe mode ----------------------------------------------------------------------------


def test_observe_mode_serves_the_default_route_and_records_the_enforce_choice():
    config = config_with(mode="observe")
    decision = decide(config, signals_for("Please debug this"))
    assert (decision.route, decision.rule, decision.score) == ("fast", None, None)
    assert decision.lanes == ("fast-mini", "fast-mini-backup")
    assert (decision.enforce_route, decision.enforce_rule) == ("strong", "technical-or-long")
    assert decision.mode == "observe"
    assert decision.reason.startswith("observe: default fast; enforce rule technical-or-long")


def test_observe_mode_records_the_enforce_score():
    decision = decide(config_with(mode="observe"), signals_for("Why?\n```\nSELECT 1\n```"))
    assert (decision.route, decision.enforce_route, decision.enforce_score) == ("fast", "strong", 3)


def test_enforce_mode_serves_what_it_records():
    decision = decide(GUIDE, signals_for("Please debug this"))
    assert (decision.route, decision.rule) == (decision.enforce_route, decision.enforce_rule)


def test_observe_mode_serves_a_forced_route_as_asked():
    decision = decide(config_with(mode="observe"), signals_for("hi"), "premium")
    assert decision.route == "premium"


# --- forced models ---------------------------------------------------------------------------


def test_a_route_name_forces_that_route_without_triage():
    decision = decide(GUIDE, signals_for("production outage"), "strong")
    assert decision.route == "strong"
    assert decision.forced and decision.forced_kind == "route"
    assert decision.trace == ()
    assert decision.rule is None and decision.score is None
    assert decision.reason == "model strong (route)"


def test_a_lane_name_serves_that_lane_alone():
    decision = decide(GUIDE, signals_for("hi"), "strong-backup")
    assert decision.lanes == ("strong-backup",)
    assert decision.route == "strong"
    assert decision.forced_kind == "lane"


def test_a_forced_lane_is_not_escalated_by_tool_failures():
    decision = decide(GUIDE, signals_for("hi", Hints(tool_failures=5)), "fast-mini")
    assert decision.lanes == ("fast-mini",)
    assert decision.tool_failure_escalation is None


def test_an_unknown_model_names_the_routes_and_lanes_that_exist():
    with pytest.raises(UnknownModel) as err:
        decide(GUIDE, signals_for("hi"), "gpt-4o")
    message = str(err.value)
    assert "'gpt-4o'" in message
    assert "fast, strong, premium" in message
    assert "fast-mini-backup" in message


# --- lane screening --------------------------------------------------------------------------


def with_lane(name, **lane_changes):
    doc = guide_policy()
    base = doc["lanes"][name]
    doc["lanes"][name] = lane_doc(
        base["provider"]["model"],
        inp=base["pricing"]["inputPerMillion"],
        out=base["pricing"]["outputPerMillion"],
        **lane_changes,
    )
    return build(doc)


def test_a_lane_marked_down_is_skipped():
    decision = decide(with_lane("fast-mini", phase="Down"), signals_for("hi"))
    assert decision.lanes == ("fast-mini-backup",)
    assert decision.skipped == (("fast-mini", "phase Down"),)
    assert "lane fast-mini skipped: phase Down" in decision.reasons


def test_a_degraded_lane_still_serves():
    decision = decide(with_lane("fast-mini", phase="Degraded"), signals_for("hi"))
    assert decision.lanes == ("fast-mini", "fast-mini-backup")


def test_a_lane_the_engine_reports_unavailable_is_skipped_with_its_reason():
    def unavailable(lane):
        return "circuit open" if lane == "fast-mini" else None

    decision = decide(GUIDE, signals_for("hi"), lane_unavailable=unavailable)
    assert decision.lanes == ("fast-mini-backup",)
    assert decision.skipped == (("fast-mini", "circuit open"),)


def test_unhealthy_lanes_are_kept_as_a_last_resort_in_order():
    decision = decide(GUIDE, signals_for("hi"), lane_unavailable=lambda lane: "cooling down")
    assert decision.lanes == ("fast-mini", "fast-mini-backup")
    assert decision.last_resort
    assert decision.skipped == ()
    assert any("last resort" in r for r in decision.reasons)


def test_a_lane_too_small_for_the_prompt_is_skipped():
    config = with_lane("fast-mini", context=1_100, max_out=500)
    sig = signals_for("word " * 200)  # 250 tokens + 500 expected output (lane-capped)
    assert decide(config, sig, "fast").lanes == ("fast-mini", "fast-mini-backup")
    big = signals_for("word " * 700)  # 875 + 500 > 1100
    decision = decide(config, big, "fast")
    assert decision.lanes == ("fast-mini-backup",)
    assert decision.skipped[0][1] == "context window 1100 < 1375 tokens (875 prompt + 500 output)"


def test_requested_max_tokens_counts_against_the_context_window():
    config = with_lane("fast-mini", context=4_000, max_out=4_000)
    sig = signals_for("word " * 400, max_tokens=3_600)
    assert decide(config, sig, "fast").skipped[0][0] == "fast-mini"
    sig = signals_for("word " * 400, max_tokens=100)
    assert decide(config, sig, "fast").skipped == ()


def test_without_max_tokens_a_lane_whose_output_limit_equals_its_window_still_serves():
    config = with_lane("fast-mini", context=8_192, max_out=8_192)
    assert decide(config, signals_for("short question"), "fast").lanes[0] == "fast-mini"


@pytest.mark.parametrize(
    ("caps", "body", "missing"),
    [
        (("jsonSchema", "streaming"), {"tools": [WEATHER_TOOL]}, "tools"),
        (("tools", "streaming"), {"response_format": {"type": "json_object"}}, "jsonSchema"),
        (("tools", "jsonSchema"), {"stream": True}, "streaming"),
        (
            ("tools", "jsonSchema", "streaming"),
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "vision",
        ),
    ],
)
def test_a_lane_missing_a_needed_capability_is_skipped(caps, body, missing):
    config = with_lane("fast-mini", caps=caps)
    sig = signals_for("hi", **body)
    decision = decide(config, sig, "fast")
    assert ("fast-mini", f"missing capability {missing}") in decision.skipped
    assert "fast-mini" not in decision.lanes


def test_a_capability_miss_is_never_rescued_as_a_last_resort():
    decision = decide(GUIDE, signals_for("hi", tools=[WEATHER_TOOL], stream=True))
    assert decision.route == "premium"
    assert decision.lanes == ()
    assert decision.skipped == (("premium-agent", "missing capability streaming"),)
    assert not decision.last_resort
    assert "no lane of route premium can serve this request" in decision.reasons


def test_only_lanes_that_pass_hard_checks_are_last_resorts():
    doc = guide_policy()
    doc["lanes"]["fast-mini"]["phase"] = "Down"
    doc["lanes"]["fast-mini-backup"]["capabilities"] = []
    decision = decide(build(doc), signals_for("hi", tools=[WEATHER_TOOL]), "fast")
    assert decision.lanes == ("fast-mini",)
    assert decision.last_resort
    assert decision.skipped == (("fast-mini-backup", "missing capability tools"),)


def budget_config(limit, on_exceed="skipLane"):
    return config_with(budget={"maxCostPerRequest": limit, "onExceed": on_exceed})


def test_a_lane_over_the_cost_budget_is_skipped():
    sig = signals_for("hi")  # 1 token in; 1000 expected out
    decision = decide(budget_config(0.012), sig, "strong")
    assert decision.lanes == ("strong-backup",)
    lane, why = decision.skipped[0]
    assert lane == "strong-reasoning"
    assert why == "estimated cost $0.015003 over budget $0.012000"


def test_a_smaller_max_tokens_brings_a_lane_under_budget():
    decision = decide(budget_config(0.012), signals_for("hi", max_tokens=200), "strong")
    assert decision.lanes == ("strong-reasoning", "strong-backup")


def test_on_exceed_reject_serves_no_lane_when_the_first_choice_is_over_budget():
    decision = decide(budget_config(0.012, "reject"), signals_for("hi"), "strong")
    assert decision.lanes == ()
    assert decision.skipped[0] == (
        "strong-reasoning",
        "estimated cost $0.015003 over budget $0.012000 (budget.onExceed is reject)",
    )
    assert decision.skipped[1] == ("strong-backup", "not tried: budget.onExceed is reject")


def test_on_exceed_reject_still_serves_when_the_first_choice_is_within_budget():
    decision = decide(budget_config(0.012, "reject"), signals_for("hi"), "fast")
    assert decision.lanes == ("fast-mini", "fast-mini-backup")
    assert not decision.budget_rejected


def test_a_decision_says_when_the_budget_left_no_lane():
    rejected = decide(budget_config(0.012, "reject"), signals_for("hi"), "strong")
    assert rejected.lanes == () and rejected.budget_rejected
    every_lane_over = decide(budget_config(0.0000001), signals_for("hi"), "strong")
    assert every_lane_over.lanes == () and every_lane_over.budget_rejected
    one_lane_over = decide(budget_config(0.012), signals_for("hi"), "strong")
    assert one_lane_over.lanes == ("strong-backup",) and not one_lane_over.budget_rejected


def test_a_reject_after_a_lane_that_cannot_serve_still_counts_as_the_budget():
    doc = guide_policy()
    doc["budget"] = {"maxCostPerRequest": 0.012, "onExceed": "reject"}
    doc["lanes"]["strong-reasoning"]["capabilities"] = []
    doc["lanes"]["strong-backup"]["pricing"] = {"inputPerMillion": 100, "outputPerMillion": 100}
    decision = decide(build(doc), signals_for("hi", tools=[WEATHER_TOOL]), "strong")
    assert decision.lanes == ()
    assert decision.skipped[0] == ("strong-reasoning", "missing capability tools")
    assert decision.budget_rejected


def test_skipping_lanes_that_cannot_serve_and_lanes_over_budget_is_no_budget_rejection():
    doc = guide_policy()
    doc["budget"] = {"maxCostPerRequest": 0.012, "onExceed": "skipLane"}
    doc["lanes"]["strong-reasoning"]["capabilities"] = []
    doc["lanes"]["strong-backup"]["pricing"] = {"inputPerMillion": 100, "outputPerMillion": 100}
    decision = decide(build(doc), signals_for("hi", tools=[WEATHER_TOOL]), "strong")
    assert decision.lanes == ()
    assert not decision.budget_rejected


def test_estimated_cost_is_prompt_at_input_price_plus_expected_output_at_output_price():
    sig = signals_for("word " * 400)  # 500 tokens
    decision = decide(GUIDE, sig, "fast")
    expected_out = DEFAULT_EXPECTED_OUTPUT_TOKENS
    assert decision.estimated_cost["fast-mini"] == pytest.approx(
        (500 * 0.15 + expected_out * 0.6) / 1e6
    )
    assert set(decision.estimated_cost) == set(decision.lanes)


def test_lanes_for_route_screens_another_route_for_escalation():
    lanes, skipped = lanes_for_route(
        GUIDE, "premium", signals_for("hi", stream=True), lambda lane: None
    )
    assert lanes == ()
    assert skipped == (("premium-agent", "missing capability streaming"),)


# --- the header reason -----------------------------------------------------------------------


def test_the_reason_is_header_safe_ascii_and_short():
    doc = guide_policy()
    doc["triage"] = [
        {"name": "r" * 300, "when": {"keywordsAny": ["café"]}, "route": "strong"},
    ]
    decision = decide(build(doc), signals_for("un café noir"))
    assert decision.rule == "r" * 300
    assert decision.reason.isascii()
    assert decision.reason.isprintable()
    assert len(decision.reason) <= 200


@given(st.text(max_size=260))
def test_header_safe_keeps_printable_ascii_and_marks_each_other_character(text: str) -> None:
    marked = "".join(c if " " <= c <= "~" else "?" for c in text)
    assert header_safe(text) == (marked if len(marked) <= 200 else marked[:197] + "...")


# --- properties ------------------------------------------------------------------------------

WORDS = ["sql", "debug", "production", "hello", "why", "src/a.py", "```", "customer", "x" * 50]
MODELS = ["auto", "auto", "fast", "strong", "premium", "fast-mini", "premium-agent"]
CONFIGS = [GUIDE, config_with(mode="observe"), budget_config(0.001, "reject"), scored([])]

signals_strategy = st.builds(
    Signals,
    prompt_chars=st.integers(0, 10**6),
    prompt_tokens=st.integers(0, 300_000),
    has_code_block=st.booleans(),
    files=st.integers(0, 20),
    user_text=st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join),
    tier=st.sampled_from([None, "free", "enterprise"]),
    task=st.sampled_from([None, "chat", "extract"]),
    risk=st.sampled_from([None, "low", "high"]),
    has_tools=st.booleans(),
    tool_names=st.just(()),
    needs_json_schema=st.booleans(),
    needs_vision=st.booleans(),
    streaming=st.booleans(),
    max_tokens=st.one_of(st.none(), st.integers(1, 200_000)),
    latency_budget_ms=st.one_of(st.none(), st.integers(1, 10**6)),
    tool_failures=st.integers(0, 5),
)


@settings(max_examples=150, deadline=None)
@given(
    signals=signals_strategy,
    model=st.sampled_from(MODELS),
    config=st.sampled_from(CONFIGS),
    down=st.sets(st.sampled_from(sorted(GUIDE.lanes))),
)
def test_decide_never_raises_for_valid_signals_and_picks_from_the_config(
    signals, model, config, down
):
    decision = decide(config, signals, model, lambda lane: "down" if lane in down else None)
    assert decision.route in config.routes
    assert decision.enforce_route in config.routes
    allowed = (model,) if model in config.lanes else config.routes[decision.route].lanes
    assert set(decision.lanes) <= set(allowed)
    assert [lane for lane in allowed if lane in decision.lanes] == list(decision.lanes)
    skipped = [lane for lane, _ in decision.skipped]
    assert not set(skipped) & set(decision.lanes)
    assert decision.score is None or 1 <= decision.score <= 5
    assert decision.reason.isascii() and len(decision.reason) <= 200
    if config.mode == "enforce":
        assert decision.route == decision.enforce_route
