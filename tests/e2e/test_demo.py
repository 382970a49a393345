"""`laneway demo` runs the whole path on one machine and reports what the router did."""

from __future__ import annotations

import io

from laneway.demo import run_demo


async def test_the_demo_routes_escalates_falls_back_and_reports_a_cheaper_total() -> None:
    out = io.StringIO()
    summary = await run_demo(out)
    report = out.getvalue()

    assert summary["succeeded"] == summary["requests"] == 13
    assert summary["cost_usd"] < summary["all_premium_cost_usd"]
    assert 0 < summary["fallback_rate"] < 1
    assert summary["escalation_rate"] > 0
    rows = {line.split()[0]: line for line in report.splitlines() if line[:2].strip().isdigit()}
    assert " tools " in rows["5"] and " premium-agent " in rows["5"]
    assert " enterprise " in rows["6"] and " strong " in rows["6"]
    assert "escalated fast->strong (uncertain)" in rows["7"]
    assert "fast-mini connectionError" in rows["9"] and " fast-mini-backup " in rows["9"]
    assert "fast-mini skipped (circuitOpen)" in rows["13"]
    assert "would have cost" in report
