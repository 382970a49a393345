"""`laneway eval --live` against simulated providers: every prompt on every lane, graded, and the
routing map that says which lane is cheapest, fastest and best per family and what should move."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from laneway.cli import main
from router_sidecar.simulator import SimulatedProvider

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PREMIUM_KEY = "sk-eval-test"

LANE = """\
apiVersion: routing.laneway.dev/v1alpha1
kind: ModelLane
metadata: {{name: {name}, namespace: evals}}
spec:
  provider: {{type: {api}, baseURL: "{url}", model: {model}{secret}}}
  pricing: {{inputPerMillion: {inp}, outputPerMillion: {out}}}
  limits: {{contextWindow: 128000, maxOutputTokens: 4000}}
  capabilities: [tools, jsonSchema, streaming]
  timeouts: {{connect: 2s, firstToken: 5s, total: 10s}}
---
"""
POLICY = """\
apiVersion: routing.laneway.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: evals, namespace: evals}
spec:
  selector: {matchLabels: {app: evals}}
  routes:
    - {name: fast, lanes: [cheap]}
    - {name: strong, lanes: [strong]}
    - {name: premium, lanes: [premium]}
  defaultRoute: fast
  triage:
    - {name: customer-facing, when: {keywordsAny: [customer]}, route: premium}
  complexity:
    bands:
      - {min: 1, max: 2, route: fast}
      - {min: 3, max: 4, route: strong}
      - {min: 5, max: 5, route: premium}
  escalation:
    triggers: [truncated, uncertain]
    uncertaintyMarkers: ["I'm not sure"]
    maxEscalations: 1
    path:
      - {from: fast, to: strong}
      - {from: strong, to: premium}
"""
# Two families: arithmetic goes to the fast route, where the cheap lane hedges and misses "42";
# capitals go to premium (the "customer" rule), though the cheap lane's answer names Paris too.
PROMPTS = [
    {"id": "a1", "prompt": "What is six times seven?", "family": "arithmetic", "expected": "42"},
    {
        "id": "a2",
        "prompt": "What is forty plus two?",
        "family": "arithmetic",
        "check": {"type": "regex", "pattern": r"\b42\b"},
    },
    {"id": "a3", "prompt": "How much is 84 / 2?", "family": "arithmetic", "answer": 42},
    {
        "id": "c1",
        "prompt": "A customer asks: what is the capital of France?",
        "family": "capitals",
        "answer": "Paris",
    },
    {
        "id": "c2",
        "prompt": "Tell the customer which city is France's capital.",
        "family": "capitals",
        "check": {"type": "contains", "value": "PARIS"},
    },
    {"id": "o1", "prompt": "Write a haiku about autumn.", "family": "open-ended"},
]


@pytest.fixture
def sims() -> Iterator[dict[str, SimulatedProvider]]:
    with (
        SimulatedProvider(model="small") as cheap,
        SimulatedProvider(model="big", latency_ms=150) as strong,
        SimulatedProvider(
            model="agent", api="anthropic", latency_ms=300, api_key=PREMIUM_KEY
        ) as premium,
    ):
        cheap.set_mode("uncertain", answer="Paris, I think.")
        strong.set_mode("ok", answer="The answer is 42; the capital of France is Paris.")
        # The premium lane is also the default judge (highest output price): it passes everything.
        premium.set_mode("ok", answer="PASS: 42, and Paris.")
        yield {"cheap": cheap, "strong": strong, "premium": premium}


def write_inputs(
    tmp_path: Path, sims: dict[str, SimulatedProvider], prompt_set: list[dict] = PROMPTS
) -> tuple[Path, Path, Path]:
    prices = {"cheap": (0.1, 0.4), "strong": (3, 15), "premium": (10, 50)}
    lanes = ""
    for name, sim in sims.items():
        api = "anthropic" if name == "premium" else "openai"
        secret = (
            ", apiKeySecretRef: {name: premium-provider, key: apiKey}" if api == "anthropic" else ""
        )
        inp, out = prices[name]
        lanes += LANE.format(
            name=name, api=api, url=sim.url, model=f"{name}-model", secret=secret, inp=inp, out=out
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(lanes + POLICY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in prompt_set))
    secrets = tmp_path / "secrets"
    (secrets / "premium-provider").mkdir(parents=True)
    (secrets / "premium-provider" / "apiKey").write_text(PREMIUM_KEY + "\n")
    return policy, prompts, secrets


def run_live(
    tmp_path: Path, sims: dict[str, SimulatedProvider], prompt_set: list[dict] = PROMPTS
) -> Path:
    policy, prompts, secrets = write_inputs(tmp_path, sims, prompt_set)
    out = tmp_path / "out"
    argv = ["eval", "-f", str(policy), "--policy", "evals", "--live"]
    argv += ["--secrets-dir", str(secrets), "--out", str(out), str(prompts)]
    assert main(argv) == 0
    return out


def by_family(summary: dict) -> dict[str, dict]:
    return {fam["family"]: fam for fam in summary["live"]["families"]}


def test_live_eval_maps_each_family_to_its_cheapest_fastest_and_best_lane(tmp_path, sims, capsys):
    out = run_live(tmp_path, sims)
    families = by_family(json.loads((out / "summary.json").read_text()))

    arithmetic = families["arithmetic"]
    assert arithmetic["routedRoutes"] == {"fast": 3}
    assert arithmetic["routedPassRate"] == 0
    assert (arithmetic["cheapestPassing"], arithmetic["fastestPassing"]) == ("strong", "strong")
    assert arithmetic["best"] == "strong"
    assert arithmetic["recommendation"]["action"] == "up"
    assert arithmetic["recommendation"]["target"] == "strong"
    # The cheap lane hedged ("I'm not sure"), so escalation to strong would have rescued all three.
    assert arithmetic["escalation"] == {"failures": 3, "escalated": 3, "rescued": 3, "silent": 0}

    capitals = families["capitals"]
    assert capitals["routedRoutes"] == {"premium": 2}
    assert capitals["routedPassRate"] == 1
    assert (capitals["cheapestPassing"], capitals["fastestPassing"]) == ("cheap", "cheap")
    assert capitals["best"] == "cheap"
    assert capitals["recommendation"]["action"] == "down"
    assert capitals["recommendation"]["target"] == "fast"

    lanes = {lane["lane"]: lane for lane in arithmetic["lanes"]}
    assert lanes["cheap"]["passRate"] == 0 and lanes["strong"]["passRate"] == 1
    assert lanes["strong"]["costPerPrompt"] > lanes["cheap"]["costPerPrompt"] > 0
    assert lanes["strong"]["latencyP50Ms"] >= 150

    printed = capsys.readouterr().out
    assert "arithmetic: move up to strong" in printed
    assert "capitals: move down to fast" in printed


def test_live_eval_writes_every_graded_answer_the_report_and_the_cost_chart(tmp_path, sims):
    out = run_live(tmp_path, sims)

    with (out / "live-results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(PROMPTS) * 3
    assert all(row["called"] == "yes" and not row["error"] for row in rows)
    cheap_a1 = next(r for r in rows if (r["id"], r["lane"]) == ("a1", "cheap"))
    assert (cheap_a1["passed"], cheap_a1["escalation_trigger"]) == ("no", "uncertain")
    assert cheap_a1["routed_lane"] == "yes"
    # A prompt without a check is graded by the judge lane, whose cost is kept apart.
    judged = [r for r in rows if r["id"] == "o1"]
    assert {r["judge_lane"] for r in judged} == {"premium"}
    assert all(r["passed"] == "yes" and float(r["judge_cost_usd"]) > 0 for r in judged)
    # The premium lane needs its API key, read from --secrets-dir: it answered.
    assert sims["premium"].state["requests"] >= len(PROMPTS) + len(judged)

    report = (out / "report.md").read_text()
    assert "## Routing map" in report
    assert "| arithmetic | 3 | fast 3 | 0% | strong | strong | strong | 3/3 rescued" in report
    assert "- **capitals**: move down to fast:" in report
    for png in ("cost-vs-pass.png", "routing.png"):
        data = (out / png).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_a_failing_lane_counts_as_not_passing_and_the_run_still_succeeds(tmp_path, sims):
    sims["strong"].set_mode("error500")
    out = run_live(tmp_path, sims)

    arithmetic = by_family(json.loads((out / "summary.json").read_text()))["arithmetic"]
    strong = next(lane for lane in arithmetic["lanes"] if lane["lane"] == "strong")
    assert (strong["passRate"], strong["errors"], strong["costPerPrompt"]) == (0, 3, 0)
    assert arithmetic["cheapestPassing"] == "premium"
    assert (arithmetic["recommendation"]["action"], arithmetic["recommendation"]["target"]) == (
        "up",
        "premium",
    )
    # Escalation from fast goes to strong, which fails: nothing is rescued.
    assert arithmetic["escalation"]["rescued"] == 0
    assert "lane errors: 6" in (out / "report.md").read_text()


def test_a_right_answer_slower_than_the_prompts_latency_budget_does_not_pass(tmp_path, sims):
    # a2 must be answered within 100 ms: strong (150 ms) and premium (300 ms) answer "42" too late.
    prompt_set = [dict(p, latency_budget_ms=100) if p["id"] == "a2" else p for p in PROMPTS]
    out = run_live(tmp_path, sims, prompt_set)

    with (out / "live-results.csv").open(newline="") as fh:
        rows = {(r["id"], r["lane"]): r for r in csv.DictReader(fh)}
    late = rows[("a2", "strong")]
    assert late["passed"] == "no"
    assert "over the prompt's latency budget of 100 ms" in late["reason"]
    assert rows[("a1", "strong")]["passed"] == "yes"  # no budget: the same answer passes
    assert rows[("a2", "premium")]["passed"] == "no"
