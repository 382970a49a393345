"""`laneway eval -f PATH --policy NAME [-n NS] [--live] [--out DIR] PROMPTS.jsonl`.

Called by `laneway.cli`. Compiles the policy from manifest files, routes every prompt of the
labelled set offline and, with `--live`, calls every lane and builds the routing map. Writes
`report.md`, `routes.csv`, `routing.png` and `summary.json` (plus `live-results.csv` and
`cost-vs-pass.png` with `--live`) to DIR, prints a short summary to stdout and progress to stderr.
The work itself lives in `laneway.evaluation`; see `docs/eval.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
from collections.abc import Sequence

from laneway.errors import BadInput
from laneway.evaluation import chart, exports, report
from laneway.evaluation.dataset import EvalPrompt, load_prompts
from laneway.evaluation.live import DEFAULT_CONCURRENCY, read_api_keys, run_live
from laneway.evaluation.offline import OfflineSummary, route_prompts, summarize
from laneway.evaluation.routing_map import ALL, RoutingMap, build_routing_map
from laneway_operator.manifests import compile_files
from router_sidecar.config import ConfigError, RouterConfig, parse_config

log = logging.getLogger(__name__)


# Routing offline takes about a millisecond a prompt: only long runs report progress.
OFFLINE_PROGRESS_MIN = 500


class _Progress:
    """Writes `laneway eval: <verb> N/TOTAL (P%)` to stderr at every tenth of the work, for runs
    of at least `min_total` steps."""

    def __init__(self, verb: str, min_total: int = 1) -> None:
        self.verb = verb
        self.min_total = min_total

    def __call__(self, done: int, total: int) -> None:
        step = max(1, math.ceil(total / 10))
        if total >= self.min_total and (done % step == 0 or done == total):
            print(
                f"laneway eval: {self.verb} {done}/{total} ({done / total:.0%})",
                file=sys.stderr,
                flush=True,
            )


def _load_config(args: argparse.Namespace) -> RouterConfig:
    doc = compile_files(args.files, args.policy, args.namespace)
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise BadInput(f"policy {args.policy}: the compiled config does not load: {exc}") from exc


def _check_judge_lanes(path: str, prompts: Sequence[EvalPrompt], config: RouterConfig) -> None:
    for prompt in prompts:
        lane = prompt.check.lane if prompt.check else None
        if lane is not None and lane not in config.lanes:
            raise BadInput(
                f"{path} line {prompt.line}: check.lane {lane!r} is not a lane of the policy; "
                f"use one of {', '.join(sorted(config.lanes))}"
            )


def _out_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {path}: cannot create the folder ({exc.strerror})") from exc
    return path


def _cost_points(routing_map: RoutingMap) -> list[chart.CostPoint]:
    points = []
    for fam in (*routing_map.families, routing_map.overall):
        for s in fam.lanes:
            family = None if fam.family == ALL else fam.family
            points.append(chart.CostPoint(s.lane, family, s.cost_per_prompt, s.pass_rate))
    return points


def _write(
    out: str,
    config: RouterConfig,
    prompts_path: str,
    summary: OfflineSummary,
    live: report.LiveRun | None,
) -> None:
    policy = f"{config.policy_namespace}/{config.policy_name}"
    chart.routing_chart(
        os.path.join(out, report.ROUTING_PNG),
        summary.by_family,
        summary.routes,
        title=f"Routes per task family: {policy}",
    )
    if live is not None:
        chart.cost_vs_pass_chart(
            os.path.join(out, report.COST_PNG),
            _cost_points(live.routing_map),
            title=f"Cost per prompt against pass rate, per lane and family: {policy}",
        )
    text = report.render_report(config, prompts_path, summary, live)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    doc = exports.summary_document(config, summary, live.routing_map if live else None)
    with open(os.path.join(out, report.SUMMARY_JSON), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")


def run(args: argparse.Namespace) -> int:
    config = _load_config(args)
    prompts = load_prompts(args.prompts, args.limit)
    if args.live:
        _check_judge_lanes(args.prompts, prompts, config)
    if not chart.available():
        log.error("laneway eval draws PNG charts with matplotlib; install laneway[eval]")
        return 1
    out = _out_dir(args.out)

    routed = route_prompts(config, prompts, progress=_Progress("routed", OFFLINE_PROGRESS_MIN))
    summary = summarize(config, routed)
    exports.write_routes_csv(os.path.join(out, report.ROUTES_CSV), routed)

    live = None
    if args.live:
        keys = read_api_keys(config, args.secrets_dir)
        answers = asyncio.run(run_live(config, routed, keys, progress=_Progress("answered")))
        exports.write_answers_csv(os.path.join(out, report.ANSWERS_CSV), routed, answers)
        live = report.LiveRun(
            answers, build_routing_map(config, routed, answers), DEFAULT_CONCURRENCY
        )

    _write(out, config, args.prompts, summary, live)
    for line in report.summary_lines(summary, live, out):
        print(line)
    return 0
