"""From the rounds' raw numbers to the summary, the PASS/FAIL checks and the Markdown table.

`bench.run` hands `summarise` the per-round measurements of every target and the memory of each
proxy after the run; `checks_for_laneway` compares Laneway's summary with its targets;
`render_markdown` writes the table that goes into bench/README.md between the results markers
(`replace_results`). Pure functions, no I/O except `write_readme`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.stats import (
    Round,
    median_cpu_per_request_us,
    median_difference,
    median_of,
    median_ratio,
)

DIRECT = "direct"
TARGET_ORDER = ("direct", "nginx", "litellm", "laneway")
TITLES = {"direct": "direct", "nginx": "nginx", "litellm": "LiteLLM", "laneway": "Laneway"}
RESULTS_START = "<!-- bench-results:start -->"
RESULTS_END = "<!-- bench-results:end -->"

# Laneway's targets on one core (the issue): limits and which way they point.
LIMIT_ADDED_P50_MS = 0.5
LIMIT_ADDED_P99_MS = 2.0
LIMIT_THROUGHPUT_SHARE = 0.15
LIMIT_RSS_MB = 80.0
LIMIT_ADDED_TTFC_MS = 1.0


def summarise_target(
    rounds: Sequence[Round], direct: Sequence[Round], rss_mb: float | None
) -> dict[str, float | None]:
    """Medians over rounds for one target; `added_*` are paired with direct's same round."""
    return {
        "rounds": float(len(rounds)),
        "p50_ms": median_of(rounds, "plain_p50_ms"),
        "p99_ms": median_of(rounds, "plain_p99_ms"),
        "added_p50_ms": median_difference(rounds, direct, "plain_p50_ms"),
        "added_p99_ms": median_difference(rounds, direct, "plain_p99_ms"),
        "ttfc_p50_ms": median_of(rounds, "stream_ttfc_p50_ms"),
        "added_ttfc_ms": median_difference(rounds, direct, "stream_ttfc_p50_ms"),
        "plain_rps": median_of(rounds, "plain_rps"),
        "stream_rps": median_of(rounds, "stream_rps"),
        "plain_cpu": median_of(rounds, "plain_cpu"),
        "stream_cpu": median_of(rounds, "stream_cpu"),
        "plain_cpu_us": median_cpu_per_request_us(rounds, "plain_cpu", "plain_rps"),
        "stream_cpu_us": median_cpu_per_request_us(rounds, "stream_cpu", "stream_rps"),
        "rss_mb": rss_mb,
    }


def summarise(
    rounds: Mapping[str, Sequence[Round]], rss_mb: Mapping[str, float | None]
) -> dict[str, dict[str, float | None]]:
    """The summary of every target that has at least one round."""
    direct = rounds.get(DIRECT, ())
    return {
        name: summarise_target(rounds[name], direct, rss_mb.get(name))
        for name in TARGET_ORDER
        if rounds.get(name)
    }


def ratios(rounds: Mapping[str, Sequence[Round]]) -> dict[str, float | None]:
    """Throughput ratios, each the median of the per-round ratios."""
    out: dict[str, float | None] = {}
    for kind in ("plain", "stream"):
        key = f"{kind}_rps"
        for proxy, base in (("laneway", "nginx"), ("laneway", "litellm"), ("litellm", "nginx")):
            if rounds.get(proxy) and rounds.get(base):
                out[f"{proxy}_vs_{base}_{kind}"] = median_ratio(rounds[proxy], rounds[base], key)
    return out


@dataclass(frozen=True)
class Check:
    """One of Laneway's targets: what was measured, the limit, and whether it holds."""

    name: str
    measured: float | None
    limit: float
    unit: str
    at_most: bool  # True: measured must be <= limit (strictly < when `strict`); False: >= limit
    strict: bool = False

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "NOT RUN"
        if self.at_most:
            ok = self.measured < self.limit if self.strict else self.measured <= self.limit
        else:
            ok = self.measured >= self.limit
        return "PASS" if ok else "FAIL"


def checks_for_laneway(
    summary: Mapping[str, Mapping[str, float | None]], ratio: Mapping[str, float | None]
) -> list[Check]:
    lane = summary.get("laneway", {})
    share = LIMIT_THROUGHPUT_SHARE
    return [
        Check("added latency p50, 1 connection", lane.get("added_p50_ms"), LIMIT_ADDED_P50_MS,
              "ms", at_most=True),
        Check("added latency p99, 1 connection", lane.get("added_p99_ms"), LIMIT_ADDED_P99_MS,
              "ms", at_most=True),
        Check("non-streaming throughput vs nginx", ratio.get("laneway_vs_nginx_plain"), share,
              "x", at_most=False),
        Check("streaming throughput vs nginx", ratio.get("laneway_vs_nginx_stream"), share,
              "x", at_most=False),
        Check("RSS after the run", lane.get("rss_mb"), LIMIT_RSS_MB, "MB", at_most=True,
              strict=True),
        Check("time to first chunk added", lane.get("added_ttfc_ms"), LIMIT_ADDED_TTFC_MS, "ms",
              at_most=True, strict=True),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Markdown.


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _ratio(value: float | None) -> str:
    """A throughput ratio: a share in percent below 1, a multiple above."""
    if value is None:
        return "–"
    return f"{value * 100:.1f} %" if value < 1 else f"{value:.1f}×"


def _check_value(check: Check) -> str:
    if check.unit == "x":
        return _ratio(check.measured)
    return _num(check.measured, 2, f" {check.unit}")


def _check_limit(check: Check) -> str:
    if check.unit == "x":
        return f"≥ {check.limit * 100:.0f} % of nginx"
    sign = ("<" if check.strict else "≤") if check.at_most else "≥"
    return f"{sign} {check.limit:g} {check.unit}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def table_rows(summary: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    rows = [
        _row("target", "p50 ms", "added p50", "p99 ms", "added p99", "TTFC p50 ms", "added TTFC",
             "req/s", "req/s streaming", "proxy CPU plain / stream", "RSS MB"),
        _row("---", *["---:"] * 10),
    ]  # fmt: skip
    for name in TARGET_ORDER:
        row = summary.get(name)
        if row is None:
            continue
        direct = name == DIRECT

        def added(key: str, row: Mapping[str, float | None] = row, direct: bool = direct) -> str:
            return "–" if direct else _signed(row[key], 3)

        cpu = "–" if direct else f"{_num(row['plain_cpu'], 0)} / {_num(row['stream_cpu'], 0)} %"
        rows.append(
            _row(TITLES[name], _num(row["p50_ms"], 3), added("added_p50_ms"),
                 _num(row["p99_ms"], 3), added("added_p99_ms"), _num(row["ttfc_p50_ms"], 3),
                 added("added_ttfc_ms"), _num(row["plain_rps"], 0), _num(row["stream_rps"], 0),
                 cpu, _num(row["rss_mb"], 1))
        )  # fmt: skip
    return rows


def ratio_rows(ratio: Mapping[str, float | None]) -> list[str]:
    rows = [_row("throughput ratio (median of rounds)", "non-streaming", "streaming")]
    rows.append(_row("---", "---:", "---:"))
    for proxy, base in (("laneway", "nginx"), ("laneway", "litellm"), ("litellm", "nginx")):
        plain = ratio.get(f"{proxy}_vs_{base}_plain")
        stream = ratio.get(f"{proxy}_vs_{base}_stream")
        if plain is not None or stream is not None:
            rows.append(_row(f"{TITLES[proxy]} / {TITLES[base]}", _ratio(plain), _ratio(stream)))
    return rows


def cpu_rows(summary: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Each proxy's CPU per request at saturation: what the throughput ratios come from."""
    rows = [_row("proxy CPU per request (median of rounds)", "non-streaming", "streaming")]
    rows.append(_row("---", "---:", "---:"))
    for name in TARGET_ORDER:
        row = summary.get(name)
        if name == DIRECT or row is None:
            continue
        plain, stream = row.get("plain_cpu_us"), row.get("stream_cpu_us")
        rows.append(_row(TITLES[name], _num(plain, 0, " µs"), _num(stream, 0, " µs")))
    return rows


def check_rows(checks: Sequence[Check]) -> list[str]:
    rows = [
        _row("Laneway target", "measured", "limit", "verdict"),
        _row("---", "---:", "---:", "---"),
    ]
    for check in checks:
        cells = (_check_value(check), _check_limit(check), f"**{check.verdict}**")
        rows.append(_row(check.name, *cells))
    return rows


def render_markdown(result: Mapping[str, Any]) -> str:
    """The results section: context, the table, the ratios and Laneway's checks."""
    machine, settings = result["machine"], result["settings"]
    lines = [
        f"Run {result['date']} on {machine['nproc']} cores ({machine['cpu_model']}), "
        f"load average {machine['load_start']} before and {machine['load_end']} after; "
        f"{settings['rounds_done']} rounds, {settings['wrk_seconds']} s of wrk per "
        f"measurement at {settings['connections']} connections, up to "
        f"{settings['latency_requests']} sequential requests per latency measurement; "
        f"upstream: {settings['upstream']}; {settings['mode']} run."
        + (
            f" Laneway and LiteLLM on {machine['proxies_python']}."
            if "proxies_python" in machine
            else ""
        ),
        "",
        *table_rows(result["summary"]),
        "",
        *ratio_rows(result["ratios"]),
        "",
        *cpu_rows(result["summary"]),
        "",
        *check_rows(result["checks"]),
    ]
    for name, reason in result.get("not_run", {}).items():
        lines += ["", f"{TITLES.get(name, name)} did not run: {reason}"]
    for note in result.get("notes", ()):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def replace_results(readme: str, section: str) -> str:
    """`readme` with the text between the results markers replaced by `section`."""
    start, end = readme.find(RESULTS_START), readme.find(RESULTS_END)
    if start < 0 or end < start:
        return readme.rstrip("\n") + f"\n\n{RESULTS_START}\n{section}{RESULTS_END}\n"
    return readme[: start + len(RESULTS_START)] + "\n" + section + readme[end:]


def write_readme(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_results(text, section))


def to_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result as plain JSON data, checks included with their verdicts."""
    out = dict(result)
    out["checks"] = [{**asdict(c), "verdict": c.verdict} for c in result["checks"]]
    return out
