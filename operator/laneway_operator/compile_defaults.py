"""The values the policy compiler fills in for fields a manifest leaves out.

Pure data. Offline (`laneway compile`, `laneway explain`) no API server applies the CRDs'
`default:` values, so `compile_lanes.py` and `compile_routing.py` apply these themselves; they are
the same as the CRD schemas' defaults (`crds/*.yaml`, listed in `docs/crds.md`), and
`tests/unit/test_compiler_crds.py` keeps the two in step through the re-exports in `compiler.py`.
"""

from __future__ import annotations

# ModelLane spec.
DEFAULT_TIMEOUTS = {"connect": "5s", "firstToken": "30s", "total": "120s"}
DEFAULT_PROBE = {"interval": "10s", "timeout": "3s", "failureThreshold": 3, "successThreshold": 2}

# RoutingPolicy spec.
DEFAULT_FALLBACK_TRIGGERS = (
    "rateLimited",
    "timeout",
    "serverError",
    "connectionError",
    "contextOverflow",
)
DEFAULT_RETRIES = {"max": 1, "backoff": "200ms"}
DEFAULT_BREAKER = {"consecutiveFailures": 5, "cooldown": "30s"}
DEFAULT_RETRY_BUDGET_PERCENT = 20.0
DEFAULT_MAX_ESCALATIONS = 1
DEFAULT_LOW_RISK_LEVELS = ("low",)
DEFAULT_COMPLEXITY_BASE = 1.0
