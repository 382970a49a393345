"""The routing map built from graded live answers: per family cheapest, fastest and best lane,
escalation outcome, and the move up or down a tier."""

from __future__ import annotations

from pathlib import Path

from laneway.evaluation.dataset import EvalPrompt
from laneway.evaluation.live import LaneAnswer
from laneway.evaluation.offline import RoutedPrompt
from laneway.evaluation.routing_map import FamilyMap, build_routing_map
from laneway_operator.manifests import compile_files
from router_sidecar.config import parse_config
from router_sidecar.signals import Hints

POLICY = str(Path(__file__).parent / "eval_data" / "policy.yaml")
CONFIG = parse_config(compile_files([POLICY], "evals", None))
FIRST_LANES = {"fast": "cheap", "strong": "strong", "premium": "premium"}
ROUTE_OF = {lane: route for route, lane in FIRST_LANES.items()}
# Cost per call and latency per lane, unless a test says otherwise.
COST = {"cheap": 0.001, "strong": 0.01, "premium": 0.05}
LATENCY = {"cheap": 100.0, "strong": 900.0, "premium": 400.0}


def routed(pid: str, family: str, route: str) -> RoutedPrompt:
    prompt = EvalPrompt(line=1, id=pid, text="q", family=family, hints=Hints(), labels={})
    return RoutedPrompt(
        prompt=prompt,
        route=route,
        lane=FIRST_LANES[route],
        rule=None,
        score=1,
        reason="",
        estimated_cost=0.0,
        route_lanes=FIRST_LANES,
        route_costs={r: COST[lane] for r, lane in FIRST_LANES.items()},
    )


def answer(pid: str, family: str, lane: str, passed: bool, trigger: str | None = None):
    return LaneAnswer(
        prompt_id=pid,
        family=family,
        lane=lane,
        called=True,
        passed=passed,
        reason="",
        latency_ms=LATENCY[lane],
        input_tokens=10,
        output_tokens=10,
        cost=COST[lane],
        error=None,
        trigger=trigger,
    )


def family_map(route: str, passes: dict[str, list[bool]], triggers=None) -> FamilyMap:
    """One family of len(passes[lane]) prompts, all routed to `route`."""
    count = len(next(iter(passes.values())))
    items = [routed(f"p{i}", "fam", route) for i in range(count)]
    answers = [
        answer(f"p{i}", "fam", lane, ok, (triggers or {}).get(lane))
        for lane, results in passes.items()
        for i, ok in enumerate(results)
    ]
    rmap = build_routing_map(CONFIG, items, answers)
    assert len(rmap.families) == 1
    return rmap.families[0]


T, F = True, False


def test_cheapest_and_fastest_passing_lanes_can_differ_and_best_breaks_ties_on_cost():
    fam = family_map(
        "fast",
        {"cheap": [F, F, T, F, F], "strong": [T] * 5, "premium": [T] * 5},
    )
    assert fam.cheapest_passing == "strong"
    assert fam.fastest_passing == "premium"
    assert fam.best == "strong"


def test_a_family_failing_on_its_route_moves_up_to_the_cheapest_route_that_passes():
    fam = family_map("fast", {"cheap": [T, F, F, T], "strong": [T, T, T, F], "premium": [T] * 4})
    assert fam.routed.pass_rate == 0.5
    assert (fam.recommendation.action, fam.recommendation.target) == ("up", "premium")
    assert "routed pass rate 50% < 80%" in fam.recommendation.why


def test_a_family_a_cheaper_route_serves_as_well_moves_down():
    fam = family_map("premium", {"cheap": [T] * 4, "strong": [T] * 4, "premium": [T] * 4})
    assert (fam.recommendation.action, fam.recommendation.target) == ("down", "fast")


def test_a_cheaper_route_that_passes_less_often_is_no_reason_to_move_down():
    fam = family_map("strong", {"cheap": [T, T, T, T, F], "strong": [T] * 5, "premium": [T] * 5})
    assert fam.recommendation.action == "keep"
    assert fam.recommendation.target == "strong"


def test_a_family_no_route_passes_is_reported_as_such():
    fam = family_map("fast", {"cheap": [F, F], "strong": [T, F], "premium": [F, T]})
    assert fam.recommendation.action == "none-passes"
    assert fam.cheapest_passing is None and fam.fastest_passing is None
    assert fam.best == "strong"  # same pass rate as premium, cheaper


def test_escalation_rescues_only_failures_a_trigger_catches_and_the_next_route_fixes():
    items = [routed(pid, "fam", "fast") for pid in ("caught", "silent", "unfixed")]
    answers = [
        answer("caught", "fam", "cheap", False, trigger="uncertain"),
        answer("caught", "fam", "strong", True),
        answer("silent", "fam", "cheap", False, trigger=None),
        answer("silent", "fam", "strong", True),
        answer("unfixed", "fam", "cheap", False, trigger="truncated"),
        answer("unfixed", "fam", "strong", False, trigger="uncertain"),
        # maxEscalations is 1: premium is never reached from fast.
        *(answer(pid, "fam", "premium", True) for pid in ("caught", "silent", "unfixed")),
    ]
    esc = build_routing_map(CONFIG, items, answers).families[0].escalation
    assert (esc.failures, esc.escalated, esc.rescued, esc.silent) == (3, 2, 1, 1)


def test_a_lane_that_could_not_serve_a_prompt_counts_as_not_passing():
    items = [routed("p0", "fam", "strong"), routed("p1", "fam", "strong")]
    skipped = LaneAnswer("p1", "fam", "cheap", False, False, "not called", 0, 0, 0, 0, None, None)
    answers = [
        answer("p0", "fam", "cheap", True),
        skipped,
        *(answer(p, "fam", lane, True) for p in ("p0", "p1") for lane in ("strong", "premium")),
    ]
    fam = build_routing_map(CONFIG, items, answers).families[0]
    cheap = next(s for s in fam.lanes if s.lane == "cheap")
    assert (cheap.prompts, cheap.passed, cheap.latency_p50_ms) == (2, 1, LATENCY["cheap"])
    assert fam.cheapest_passing == "strong"


def test_families_are_ordered_by_size_and_the_overall_row_covers_every_prompt():
    items = [routed("a", "small", "fast"), routed("b", "big", "fast"), routed("c", "big", "fast")]
    answers = [answer(p.prompt.id, p.prompt.family, lane, True) for p in items for lane in COST]
    rmap = build_routing_map(CONFIG, items, answers)
    assert [f.family for f in rmap.families] == ["big", "small"]
    assert rmap.overall.prompts == 3
    assert rmap.overall.routed_routes == {"fast": 3}
