"""`make bench`: Laneway's router side by side with direct calls, nginx and the LiteLLM proxy.

Run as `.venv/bin/python bench/run.py [--quick]`. It starts one upstream and the three proxies in
front of it, each proxy pinned to the proxy core, then measures every target in interleaved
rounds: latency at one connection, time to first chunk, and requests per second at saturation
with wrk on the load core. The medians go to stdout, to bench/results/latest.json and (for a
full run of every target) to the table in bench/README.md. Every process it starts is stopped
by pid when it ends, also on errors and Ctrl-C. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a folder of the repo, not an installed package

from bench import client, interpreter, loadgen, procs, report, servers  # noqa: E402
from bench.interpreter import Interpreter  # noqa: E402
from bench.procs import Placement  # noqa: E402
from bench.servers import Target, Upstream  # noqa: E402
from bench.stats import summarise_latency  # noqa: E402

log = logging.getLogger("bench")

BENCH_DIR = REPO / "bench"
PROXIES = ("nginx", "litellm", "laneway")
STARTERS: dict[str, Callable[..., Target]] = {
    "nginx": servers.start_nginx,
    "litellm": servers.start_litellm,
    "laneway": servers.start_laneway,
}
PYTHON_PROXIES = ("litellm", "laneway")  # run on the interpreter `interpreter.choose` picks
NGINX_SATURATED_CPU = 80.0  # percent of its core; below this nginx waited on the load core


@dataclass(frozen=True)
class Plan:
    """How much to measure. `budget_s` bounds the rounds: none starts that would end after it."""

    mode: str
    rounds: int
    wrk_seconds: float
    connections: int
    latency_requests: int
    latency_seconds: float
    warmup_requests: int
    budget_s: float
    upstream: str = "static"
    targets: tuple[str, ...] = PROXIES
    nice: int = 0


FULL = Plan(
    "full",
    rounds=5,
    wrk_seconds=5,
    connections=16,
    latency_requests=1000,
    latency_seconds=4,
    warmup_requests=50,
    budget_s=420,
)
QUICK = Plan(
    "quick",
    rounds=2,
    wrk_seconds=2,
    connections=16,
    latency_requests=300,
    latency_seconds=1.5,
    warmup_requests=20,
    budget_s=60,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 2 minutes instead of 10")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=None, help="wrk seconds per measurement")
    parser.add_argument(
        "--targets",
        default=",".join(PROXIES),
        help="comma-separated proxies to measure besides direct (default: %(default)s)",
    )
    parser.add_argument(
        "--upstream",
        choices=("static", "simulator"),
        default="static",
        help="static: nginx with fixed answers (default); simulator: laneway simulate-provider",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="scheduling priority for the bench and every process it starts, so that other "
        "work on a shared machine disturbs the numbers less (default: %(default)s)",
    )
    parser.add_argument(
        "--python",
        default=None,
        help="the CPython (3.11+) that runs Laneway and LiteLLM (default: the fastest of this "
        "one, /usr/local/bin/python3 and /usr/bin/python3; see bench/interpreter.py)",
    )
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    parser.add_argument("--keep-work", action="store_true", help="keep configs and logs")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = sorted(set(targets) - set(PROXIES))
    if unknown:
        raise SystemExit(
            f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(PROXIES)}"
        )
    return replace(
        plan,
        rounds=args.rounds or plan.rounds,
        wrk_seconds=args.seconds or plan.wrk_seconds,
        upstream=args.upstream,
        targets=targets,
        nice=args.nice,
    )


# ---------------------------------------------------------------------------------------------
# The machine.


def placements(nice: int | None) -> tuple[Placement, Placement]:
    """(load, proxy): two different cores, or no pinning at all on a one-core machine."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Placement(None, nice), Placement(None, nice)
    return Placement(cores[0], nice), Placement(cores[1], nice)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------
# Measuring.


def measure_latency(target: Target, plan: Plan, *, stream: bool) -> client.Samples:
    return client.measure(
        target.port,
        target.path(stream=stream),
        stream=stream,
        count=plan.latency_requests,
        warmup=plan.warmup_requests,
        max_seconds=plan.latency_seconds,
    )


def measure_rps(
    target: Target, plan: Plan, *, stream: bool, place: Placement, work: Path, seconds: float
) -> tuple[loadgen.WrkResult, float | None]:
    """wrk's result and the proxy's CPU use meanwhile, in percent of one core."""
    url = f"http://127.0.0.1:{target.port}{target.path(stream=stream)}"
    before = procs.cpu_seconds(target.proc.pid) if target.proc else None
    result = loadgen.run_wrk(
        url,
        stream=stream,
        seconds=seconds,
        connections=plan.connections,
        place=place,
        work=work,
    )
    if target.proc is None or before is None:
        return result, None
    used = procs.cpu_seconds(target.proc.pid) - before
    return result, 100 * used / result.duration_s


def measure_round(target: Target, plan: Plan, *, place: Placement, work: Path) -> dict[str, Any]:
    """One round for one target: both latency measurements, then both throughput runs."""
    row: dict[str, Any] = {}
    plain = summarise_latency(measure_latency(target, plan, stream=False).total)
    streamed = measure_latency(target, plan, stream=True)
    ttfc = summarise_latency(streamed.first_chunk, streamed.errors)
    row.update(plain_p50_ms=plain.p50_ms, plain_p99_ms=plain.p99_ms, plain_count=plain.count)
    row.update(stream_ttfc_p50_ms=ttfc.p50_ms, stream_ttfc_p99_ms=ttfc.p99_ms)
    row["stream_p50_ms"] = summarise_latency(streamed.total).p50_ms
    for kind, stream in (("plain", False), ("stream", True)):
        result, cpu_pct = measure_rps(
            target, plan, stream=stream, place=place, work=work, seconds=plan.wrk_seconds
        )
        row[f"{kind}_rps"] = result.rps if result.valid else None
        row[f"{kind}_error_share"] = result.error_share
        row[f"{kind}_wrk_p99_ms"] = result.p99_ms
        row[f"{kind}_cpu"] = cpu_pct
    return row


def warm_up(target: Target, plan: Plan, *, place: Placement, work: Path) -> None:
    """Check both answers once and load the target briefly, so round 1 is not its first use."""
    for stream in (False, True):
        client.measure(
            target.port, target.path(stream=stream), stream=stream, count=0, warmup=20,
            max_seconds=5,
        )  # fmt: skip
        measure_rps(target, plan, stream=stream, place=place, work=work, seconds=1)


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass
class Bench:
    plan: Plan
    work: Path
    load: Placement
    proxy: Placement
    interp: Interpreter
    upstream: Upstream | None = None

    def __post_init__(self) -> None:
        self.targets: list[Target] = []
        self.rounds: dict[str, list[dict[str, Any]]] = {}
        self.not_run: dict[str, str] = {}
        self.rss_mb: dict[str, float | None] = {}
        self.rounds_done = 0

    def start(self) -> None:
        log.info("starting the %s upstream on core %s", self.plan.upstream, self.load.cpu)
        self.upstream = servers.start_upstream(self.plan.upstream, place=self.load, work=self.work)
        self.targets.append(servers.direct_target(self.upstream))
        for name in self.plan.targets:
            log.info("starting %s on core %s", name, self.proxy.cpu)
            extra = {"interp": self.interp} if name in PYTHON_PROXIES else {}
            try:
                target = STARTERS[name](self.upstream, place=self.proxy, work=self.work, **extra)
            except (procs.StartError, OSError, ValueError, subprocess.CalledProcessError) as exc:
                self._drop(name, f"it did not start: {exc}")
                continue
            self.targets.append(target)

    def _drop(self, name: str, reason: str) -> None:
        log.error("%s is left out: %s", name, reason)
        self.not_run[name] = reason.splitlines()[0]
        self.rounds.pop(name, None)
        self.targets = [t for t in self.targets if t.name != name]

    def warm_up(self) -> None:
        for target in list(self.targets):
            log.info("warming up %s", target.name)
            try:
                warm_up(target, self.plan, place=self.load, work=self.work)
            except (client.BadResponse, OSError, loadgen.WrkError) as exc:
                if target.name == "direct":
                    raise
                self._drop(target.name, f"it answered wrongly: {exc}")

    def run_rounds(self, deadline: float) -> None:
        last_round_s = 0.0
        for number in range(self.plan.rounds):
            if number and time.monotonic() + last_round_s > deadline:
                log.warning("time budget reached after %d rounds", number)
                break
            started = time.monotonic()
            # Rotate the order so no target is always measured first or last in a round.
            shift = number % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for target in order:
                self._measure(target, number)
            self.rounds_done = number + 1
            last_round_s = time.monotonic() - started
            log.info("round %d done in %.0fs", number + 1, last_round_s)

    def _measure(self, target: Target, number: int) -> None:
        waited = self.settle()
        log.info(
            "round %d: %s (after %.1fs for the other processes to go quiet)",
            number + 1,
            target.name,
            waited,
        )
        try:
            row = measure_round(target, self.plan, place=self.load, work=self.work)
        except (client.BadResponse, OSError, loadgen.WrkError) as exc:
            if target.name == "direct":
                raise
            self._drop(target.name, f"it failed in round {number + 1}: {exc}")
            return
        row["round"] = number + 1
        self.rounds.setdefault(target.name, []).append(row)

    def settle(
        self, *, window_s: float = 0.2, quiet_pct: float = 2.0, timeout_s: float = 30.0
    ) -> float:
        """Wait until every started process is idle; the seconds waited.

        A proxy keeps working after wrk stops (LiteLLM finishes the requests it had queued for
        seconds), on the core the next target is measured on; without this wait that work
        would land in the next target's latency tail."""
        running = [t.proc for t in self.targets if t.proc is not None]
        if self.upstream is not None:
            running.append(self.upstream.proc)
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            before = sum(procs.cpu_seconds(p.pid) for p in running)
            time.sleep(window_s)
            used = sum(procs.cpu_seconds(p.pid) for p in running) - before
            if 100 * used / window_s < quiet_pct:
                return time.monotonic() - started
        log.warning("the targets were still busy after %.0fs; measuring anyway", timeout_s)
        return time.monotonic() - started

    def record_memory(self) -> None:
        for target in self.targets:
            if target.proc is not None:
                self.rss_mb[target.name] = procs.rss_kb(target.proc.pid) / 1024

    def stop(self) -> None:
        running = [t.proc for t in self.targets if t.proc is not None]
        if self.upstream is not None:
            running.append(self.upstream.proc)
        for proc in running:
            procs.stop(proc)


def notes_for(summary: dict[str, dict[str, float | None]], load_start: str) -> list[str]:
    notes = []
    nginx = summary.get("nginx", {})
    cpu = [c for c in (nginx.get("plain_cpu"), nginx.get("stream_cpu")) if c is not None]
    if cpu and min(cpu) < NGINX_SATURATED_CPU:
        notes.append(
            f"nginx used only {min(cpu):.0f} % of its core under load: the load core (wrk and "
            "the upstream) ran out first, so nginx's req/s is a floor and the ratios against "
            "nginx are upper bounds."
        )
    if float(load_start.split()[0]) > 1.0:
        notes.append(
            f"Other work was running on the machine (load average {load_start}); absolute "
            "numbers are lower and noisier than on an idle machine, the interleaved ratios less so."
        )
    return notes


def collect(bench: Bench, started: dt.datetime, load_start: str) -> dict[str, Any]:
    summary = report.summarise(bench.rounds, bench.rss_mb)
    ratio = report.ratios(bench.rounds)
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "load_start": load_start,
            "load_end": load_average(),
            "python": platform.python_version(),
            "proxies_python": bench.interp.describe(),
            "cores": {"load": bench.load.cpu, "proxy": bench.proxy.cpu},
        },
        "settings": {
            **asdict(bench.plan),
            "rounds_done": bench.rounds_done,
            "litellm_version": servers.LITELLM_VERSION,
        },
        "rounds": bench.rounds,
        "summary": summary,
        "ratios": ratio,
        "checks": report.checks_for_laneway(summary, ratio),
        "not_run": bench.not_run,
        "notes": notes_for(summary, load_start),
    }


def publish(result: dict[str, Any], plan: Plan, *, readme: bool) -> None:
    section = report.render_markdown(result)
    sys.stdout.write(section)
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    name = "latest.json" if plan.mode == "full" else "latest-quick.json"
    (out_dir / name).write_text(json.dumps(report.to_json(result), indent=2) + "\n")
    log.info("wrote %s", out_dir / name)
    if readme:
        report.write_readme(BENCH_DIR / "README.md", section)
        log.info("updated the results in %s", BENCH_DIR / "README.md")


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop our processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _sigterm)
    plan = plan_from(args)
    load, proxy = placements(plan.nice)
    if load.cpu is not None:
        os.sched_setaffinity(0, {load.cpu})  # this process is the one-connection client
    started, load_start = dt.datetime.now(dt.UTC), load_average()
    work = Path(tempfile.mkdtemp(prefix="laneway-bench-"))
    interp = interpreter.choose(args.python)
    if any(name in PYTHON_PROXIES for name in plan.targets):
        log.info("Laneway and LiteLLM run on %s", interp.describe())
    bench = Bench(plan, work, load, proxy, interp)
    try:
        with procs.prioritised(plan.nice):
            bench.start()
            bench.warm_up()
            bench.run_rounds(deadline=time.monotonic() + plan.budget_s)
            bench.record_memory()
    except KeyboardInterrupt:
        log.error("interrupted; configs and logs are in %s", work)
        return 130
    except BaseException:
        log.error("stopping early; configs and logs are in %s", work)
        raise
    finally:
        bench.stop()
    if args.keep_work:
        log.info("configs and logs are in %s", work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    result = collect(bench, started, load_start)
    complete = plan.mode == "full" and set(plan.targets) == set(PROXIES)
    publish(result, plan, readme=complete and not args.no_readme)
    return 1 if bench.not_run else 0


if __name__ == "__main__":
    sys.exit(main())
