"""`laneway demo`: the whole request path on one machine, no cluster, in well under a minute.

Called by `laneway.cmd_demo`. It starts one simulated provider per ModelLane of
`examples/10-lanes.yaml` (in-process, free ports, each requiring a fake API key), compiles the
support-bot policy of `examples/20-policy-support-bot.yaml` against them with the operator's
compiler, writes the fake keys as a secrets folder, starts the router sidecar in-process, and sends
realistic requests: FAQs, a code question, a tool-using request, an enterprise customer, one the
fast lane answers "I'm not sure" (so it escalates), a stream, and then FAQs while the primary fast
lane is down (so they fall back to its backup). It prints one row per request from the sidecar's
own decision log and a summary, then stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml

from laneway.errors import BadInput
from laneway.stats import percentile
from laneway_operator.compiler import compile_policy, render_config
from router_sidecar.config import RouterConfig
from router_sidecar.reload import ConfigStore
from router_sidecar.secrets import SecretStore
from router_sidecar.server import build_app
from router_sidecar.simulator import SimulatedProvider

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LANES_FILE = "10-lanes.yaml"
POLICY_FILE = "20-policy-support-bot.yaml"
POLICY = "support-bot"
PREMIUM_LANE = "premium-agent"
# Simulated latency per lane (ms): cheaper models answer faster, as real ones do.
LATENCY_MS = {"fast": 30, "strong": 90, "premium": 180}
QUIET_LOGGERS = ("router_sidecar", "aiohttp", "laneway_operator")

LOOKUP_ORDER = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order by its number",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


@dataclass(frozen=True)
class Step:
    kind: str
    prompt: str
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


SCENARIO = (
    Step("faq", "How do I reset my password?"),
    Step("faq", "What are your opening hours on Sunday?"),
    Step("code", "Why does my python script raise KeyError when it reads settings.yaml?"),
    Step("code", "Please refactor this:\n```js\nfor (a of x) for (b of y) f(a, b)\n```"),
    Step("tools", "Use lookup_order for order 8812 and tell me when it ships",
         extra={"tools": [LOOKUP_ORDER]}),
    Step("enterprise", "Can you summarise my last three invoices?",
         headers={"x-laneway-tier": "enterprise"}),
    Step("unsure", "Can I change the delivery address after I ordered?"),
    Step("stream", "Do you ship to Norway?", stream=True),
)
OUTAGE = tuple(Step("faq (outage)", q) for q in (
    "How do I update my email address?",
    "Where can I download my receipt?",
    "Is there a student discount?",
    "How long does a refund take?",
    "Can I pause my subscription?",
))


@dataclass
class Row:
    """One request as the demo reports it."""

    kind: str
    status: int
    route: str
    lane: str
    reason: str
    fallbacks: int
    escalations: int
    latency_ms: float
    cost_usd: float
    premium_cost_usd: float
    path: str


# ---------------------------------------------------------------------------------------------
# Set-up: simulators, compiled config, secrets, sidecar.


def _load(name: str) -> list[dict[str, Any]]:
    path = EXAMPLES / name
    try:
        with open(path, encoding="utf-8") as fh:
            return [d for d in yaml.safe_load_all(fh) if d]
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the example manifests ({exc.strerror}); run the demo from a "
            "Laneway source checkout (`make demo`)"
        ) from exc


def _tier(lane: str) -> str:
    return next((t for t in LATENCY_MS if lane.startswith(t)), "strong")


async def _start_sims(
    lanes: Mapping[str, dict[str, Any]], keys: Mapping[str, str]
) -> dict[str, SimulatedProvider]:
    sims = {}
    for name, lane in lanes.items():
        provider = lane["spec"]["provider"]
        sim = SimulatedProvider(
            model=name,
            api=provider["type"],
            latency_ms=LATENCY_MS[_tier(name)],
            api_key=keys[provider["apiKeySecretRef"]["name"]],
        )
        await sim.start()
        sims[name] = sim
    return sims


def _write_secrets(folder: Path, lanes: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """One fake key per Secret the lanes reference, at DIR/<name>/<key>."""
    keys: dict[str, str] = {}
    for lane in lanes.values():
        ref = lane["spec"]["provider"]["apiKeySecretRef"]
        keys.setdefault(ref["name"], f"demo-key-for-{ref['name']}")
        path = folder / ref["name"] / ref["key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(keys[ref["name"]] + "\n")
    return keys


def _compile(lanes: dict[str, dict[str, Any]], sims: Mapping[str, SimulatedProvider]) -> str:
    policy = next(d for d in _load(POLICY_FILE) if d.get("kind") == "RoutingPolicy")
    for name, lane in lanes.items():
        lane["spec"]["provider"]["baseURL"] = sims[name].url
    doc = compile_policy(policy, lanes, lane_phases={name: "Healthy" for name in lanes})
    return render_config(doc)


class _DecisionTap(logging.Handler):
    """Keeps the sidecar's decision-log lines, by decision id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        line = json.loads(record.getMessage())
        self.records[line["decisionId"]] = line


@contextlib.contextmanager
def _captured_logs() -> Any:
    """Route decision lines to the tap and keep library logs quiet while the demo prints."""
    tap = _DecisionTap()
    decisions = logging.getLogger("laneway.decisions")
    saved = [(decisions, decisions.level, decisions.propagate)]
    decisions.addHandler(tap)
    decisions.setLevel(logging.INFO)
    decisions.propagate = False
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.ERROR)
    try:
        yield tap
    finally:
        decisions.removeHandler(tap)
        for logger, level, propagate in saved:
            logger.setLevel(level)
            logger.propagate = propagate


@contextlib.asynccontextmanager
async def _sidecar(config_text: str, secrets_dir: Path) -> AsyncIterator[str]:
    store = ConfigStore(SecretStore(str(secrets_dir)))
    if not store.apply_text(config_text, source="demo"):
        raise RuntimeError(f"the compiled demo config did not load: {store.last_error}")
    app = build_app(store)
    try:
        addresses = await app.serve("127.0.0.1", 0)
        yield f"http://127.0.0.1:{addresses[0][1]}"
    finally:
        await app.close(grace_s=5)


# ---------------------------------------------------------------------------------------------
# Requests.


async def _send(session: aiohttp.ClientSession, url: str, step: Step) -> tuple[int, dict, dict]:
    """(status, response headers, usage) for one step."""
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": step.prompt}],
        **step.extra,
    }
    if step.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with session.post(url + "/v1/chat/completions", json=body, headers=step.headers) as resp:
        if not step.stream:
            answer = await resp.json()
            return resp.status, dict(resp.headers), answer.get("usage") or {}
        usage: dict[str, Any] = {}
        async for line in resp.content:
            data = line.decode().removeprefix("data: ").strip()
            if data and data != "[DONE]" and json.loads(data).get("usage"):
                usage = json.loads(data)["usage"]
        return resp.status, dict(resp.headers), usage


def _path(record: Mapping[str, Any]) -> str:
    """The lanes a request went through, e.g. `fast-mini connectionError x3 > fast-mini-backup`;
    empty when the first lane it tried answered."""
    steps: list[list[Any]] = []  # [label, count]
    for attempt in record.get("lanesTried", ()):
        outcome, lane = attempt["outcome"], attempt["lane"]
        if outcome == "skipped":
            label = f"{lane} skipped ({attempt.get('detail', '')})"
        else:
            label = lane if outcome == "ok" else f"{lane} {outcome}"
        if steps and steps[-1][0] == label:
            steps[-1][1] += 1
        else:
            steps.append([label, 1])
    if len(steps) < 2:
        return ""
    return " > ".join(label + (f" x{count}" if count > 1 else "") for label, count in steps)


def _row(
    step: Step,
    status: int,
    headers: Mapping[str, str],
    usage: Mapping[str, Any],
    latency_ms: float,
    record: Mapping[str, Any],
    premium_price: Callable[[int, int], float],
) -> Row:
    return Row(
        kind=step.kind,
        status=status,
        route=headers.get("x-laneway-route", "-"),
        lane=headers.get("x-laneway-lane", "-"),
        reason=headers.get("x-laneway-reason", ""),
        fallbacks=int(headers.get("x-laneway-fallbacks", 0)),
        escalations=int(headers.get("x-laneway-escalations", 0)),
        latency_ms=latency_ms,
        cost_usd=float(record.get("costUsd", 0.0)),
        premium_cost_usd=premium_price(
            int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        ),
        path=_path(record),
    )


async def _play(
    url: str,
    steps: tuple[Step, ...],
    tap: _DecisionTap,
    config: RouterConfig,
    sims: Mapping[str, SimulatedProvider],
    out: TextIO,
) -> list[Row]:
    """Send each step in turn, printing its row as soon as it is answered."""
    rows: list[Row] = []
    premium = config.lanes[PREMIUM_LANE]
    async with aiohttp.ClientSession() as session:
        for step in steps:
            if step.kind == "unsure":
                sims["fast-mini"].set_mode("uncertain")
            started = time.monotonic()
            status, headers, usage = await _send(session, url, step)
            latency_ms = (time.monotonic() - started) * 1000
            if step.kind == "unsure":
                sims["fast-mini"].set_mode("ok")
            record = tap.records.get(headers.get("x-laneway-decision-id", ""), {})
            row = _row(step, status, headers, usage, latency_ms, record, premium.cost)
            rows.append(row)
            _print_row(len(tap.records), row, out)
    return rows


# ---------------------------------------------------------------------------------------------
# Output.

_HEAD = (
    f"{'#':>2}  {'request':<13} {'route':<8} {'lane':<17} {'fb':>2} {'esc':>3} {'ms':>5} "
    f"{'cost $':>9}  why"
)


def _print_row(number: int, r: Row, out: TextIO) -> None:
    lane = r.lane if r.status == 200 else f"HTTP {r.status}"
    why = r.reason + (f" | {r.path}" if r.path else "")
    print(
        f"{number:>2}  {r.kind:<13} {r.route:<8} {lane:<17} {r.fallbacks:>2} {r.escalations:>3} "
        f"{r.latency_ms:>5.0f} {r.cost_usd:>9.6f}  {why}",
        file=out,
    )


def _summary(rows: list[Row], config: RouterConfig, out: TextIO) -> dict[str, float]:
    primaries = {name: route.lanes[0] for name, route in config.routes.items()}
    ok = [r for r in rows if r.status == 200]
    latencies = [r.latency_ms for r in ok]
    cost = sum(r.cost_usd for r in rows)
    premium = sum(r.premium_cost_usd for r in ok)
    moved = [r for r in ok if r.lane != primaries.get(r.route)]
    summary = {
        "requests": len(rows),
        "succeeded": len(ok),
        "cost_per_success_usd": cost / max(1, len(ok)),
        "p50_ms": statistics.median(latencies) if latencies else 0.0,
        "p95_ms": percentile(latencies, 0.95) or 0.0,
        "fallback_rate": len(moved) / max(1, len(rows)),
        "escalation_rate": sum(1 for r in rows if r.escalations) / max(1, len(rows)),
        "cost_usd": cost,
        "all_premium_cost_usd": premium,
    }
    print("\nSummary", file=out)
    print(f"  requests            {len(rows)} ({len(ok)} succeeded)", file=out)
    print(f"  cost per success    ${summary['cost_per_success_usd']:.6f}", file=out)
    print(f"  latency p50 / p95   {summary['p50_ms']:.0f} ms / {summary['p95_ms']:.0f} ms",
          file=out)
    print(f"  fallback rate       {summary['fallback_rate']:.0%} of requests were served by a "
          "backup lane", file=out)
    print(f"  escalation rate     {summary['escalation_rate']:.0%}", file=out)
    ratio = premium / cost if cost else 0.0
    print(f"  total cost          ${cost:.6f}; everything on {PREMIUM_LANE} would have cost "
          f"${premium:.6f} ({ratio:.1f}x)", file=out)
    return summary


# ---------------------------------------------------------------------------------------------
# The demo.


async def run_demo(out: TextIO) -> dict[str, float]:
    """Run the whole demo, printing to `out`; returns the summary numbers."""
    lanes = {d["metadata"]["name"]: d for d in _load(LANES_FILE) if d.get("kind") == "ModelLane"}
    with tempfile.TemporaryDirectory(prefix="laneway-demo-") as tmp, _captured_logs() as tap:
        secrets_dir = Path(tmp) / "secrets"
        sims = await _start_sims(lanes, _write_secrets(secrets_dir, lanes))
        try:
            config_text = _compile(lanes, sims)
            store = ConfigStore()
            store.apply_text(config_text, "demo")
            assert store.current is not None
            print(f"Laneway demo: policy {POLICY}, {len(lanes)} simulated lanes, config "
                  f"{store.current.version}\n", file=out)
            print(_HEAD + "\n" + "-" * (len(_HEAD) + 40), file=out)
            async with _sidecar(config_text, secrets_dir) as url:
                rows = await _play(url, SCENARIO, tap, store.current, sims, out)
                print("--  fast-mini goes down: its traffic moves to fast-mini-backup", file=out)
                sims["fast-mini"].set_mode("down")
                rows += await _play(url, OUTAGE, tap, store.current, sims, out)
            return _summary(rows, store.current, out)
        finally:
            for sim in sims.values():
                await sim.stop()
