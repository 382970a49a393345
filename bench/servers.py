"""The upstream and the three proxies under test: their configs, how each starts, where it listens.

`bench.run` calls `start_upstream` once and then `start_nginx`, `start_litellm` and
`start_laneway`, each returning a `Target` that says which URL paths carry the non-streaming and
the streaming request. Every process is pinned with `taskset`: the proxies to the proxy core, the
upstream to the load core (see bench/README.md for why). Config files go to a temporary work dir.

The default upstream is nginx answering every request with a fixed body (`return 200`), because
it is cheap enough to saturate any proxy on one core; it tells the streaming and the
non-streaming request apart by path (`/stream/v1/...`, `/plain/v1/...`), and the proxies map
the two `model` names to those two paths. `--upstream simulator` uses `laneway
simulate-provider` instead, which reads `stream` from the body.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import interpreter, payloads
from bench.interpreter import Interpreter
from bench.procs import (
    Placement,
    Proc,
    ensure_installed,
    free_port,
    start,
    wait_for_port,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.106.12"


@dataclass
class Upstream:
    kind: str  # "static" or "simulator"
    port: int
    proc: Proc

    def path(self, *, stream: bool) -> str:
        if self.kind == "simulator":
            return payloads.CHAT_PATH
        return ("/stream" if stream else "/plain") + payloads.CHAT_PATH

    def base_url(self, *, stream: bool) -> str:
        """The OpenAI base URL (ending in /v1) a proxy is given for this kind of request."""
        path = self.path(stream=stream)
        return f"http://127.0.0.1:{self.port}{path.removesuffix('/chat/completions')}"


@dataclass
class Target:
    """One thing the load is sent to: the upstream itself or a proxy in front of it."""

    name: str
    port: int
    plain_path: str
    stream_path: str
    proc: Proc | None  # the proxy process; None for the direct target

    def path(self, *, stream: bool) -> str:
        return self.stream_path if stream else self.plain_path


# ---------------------------------------------------------------------------------------------
# nginx: the static upstream and the reverse proxy.


def _nginx_quote(text: str) -> str:
    """`text` as a single-quoted nginx string; `$` would start a variable, so it is refused."""
    if "$" in text:
        raise ValueError("a fixed nginx body must not contain '$'")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _nginx_main(prefix: Path, name: str, http_body: str) -> str:
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
daemon off;
master_process on;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
{temp}
{http_body}
}}
"""


def static_upstream_conf(prefix: Path, port: int) -> str:
    plain = _nginx_quote(payloads.plain_answer())
    stream = _nginx_quote(payloads.stream_answer())
    server = f"""  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /plain{payloads.CHAT_PATH} {{ default_type application/json; return 200 {plain}; }}
    location = /stream{payloads.CHAT_PATH} {{
      default_type text/event-stream;
      return 200 {stream};
    }}
    location / {{ return 404; }}
  }}"""
    return _nginx_main(prefix, "upstream", server)


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    server = f"""  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 128;
    keepalive_requests 10000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}"""
    return _nginx_main(prefix, "nginx", server)


def _start_nginx_with(name: str, conf: str, port: int, *, place: Placement, work: Path) -> Proc:
    nginx = ensure_installed("nginx", "nginx")
    conf_path = work / f"{name}.conf"
    conf_path.write_text(conf)
    argv = [nginx, "-p", str(work), "-c", str(conf_path), "-e", str(work / f"{name}-error.log")]
    proc = start(name, argv, place=place, log_dir=work)
    wait_for_port(proc, port, timeout_s=10)
    return proc


def start_upstream(kind: str, *, place: Placement, work: Path) -> Upstream:
    port = free_port()
    if kind == "static":
        proc = _start_nginx_with(
            "upstream", static_upstream_conf(work, port), port, place=place, work=work
        )
    elif kind == "simulator":
        argv = [sys.executable, "-m", "laneway", "--log-level", "WARNING", "simulate-provider"]
        argv += ["--port", str(port), "--model", payloads.UPSTREAM_MODEL, "--latency-ms", "0"]
        proc = start("upstream", argv, place=place, log_dir=work)
        wait_for_port(proc, port, timeout_s=20)
    else:
        raise ValueError(f"unknown upstream kind {kind!r}")
    return Upstream(kind=kind, port=port, proc=proc)


def direct_target(upstream: Upstream) -> Target:
    return Target(
        name="direct",
        port=upstream.port,
        plain_path=upstream.path(stream=False),
        stream_path=upstream.path(stream=True),
        proc=None,
    )


def start_nginx(upstream: Upstream, *, place: Placement, work: Path) -> Target:
    port = free_port()
    proc = _start_nginx_with(
        "nginx", nginx_proxy_conf(work, port, upstream.port), port, place=place, work=work
    )
    # A plain reverse proxy forwards the path as it is, so clients use the upstream's paths.
    return Target(
        name="nginx",
        port=port,
        plain_path=upstream.path(stream=False),
        stream_path=upstream.path(stream=True),
        proc=proc,
    )


# ---------------------------------------------------------------------------------------------
# LiteLLM, in its own virtualenv outside the repo.


def ensure_litellm(interp: Interpreter) -> Path:
    """The `litellm` command of the pinned version, in its own venv of `interp` (made once)."""
    python = interpreter.venv(
        interp, "litellm", [f"litellm[proxy]=={LITELLM_VERSION}"], stamp=LITELLM_VERSION
    )
    return python.parent / "litellm"


def litellm_config(plain_url: str, stream_url: str) -> dict[str, object]:
    """A proxy config tuned for speed: no database, no callbacks, no spend tracking, no retries.

    `plain_url` and `stream_url` are the OpenAI base URLs for the two model names.
    """
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": "openai/" + payloads.UPSTREAM_MODEL,
                "api_base": url,
                "api_key": "bench-placeholder-key",
            },
        }
        for name, url in ((payloads.PLAIN_MODEL, plain_url), (payloads.STREAM_MODEL, stream_url))
    ]
    return {
        "model_list": models,
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "drop_params": True,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "turn_off_message_logging": True,
            "request_timeout": 30,
            "num_retries": 0,
        },
        "general_settings": {
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "disable_reset_budget": True,
            "background_health_checks": False,
            # Like the sidecar, which trusts its pod's loopback, LiteLLM runs without keys here:
            # checking a master key would only add work to every request.
            "dangerously_permit_weak_or_unset_master_key": True,
        },
        "router_settings": {"num_retries": 0, "routing_strategy": "simple-shuffle"},
    }


def litellm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_DONT_SHOW_FEEDBACK_BOX="true",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        DISABLE_SCHEMA_UPDATE="true",
    )
    for name in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"):
        env.pop(name, None)
    return env


def start_litellm(
    upstream: Upstream, *, place: Placement, work: Path, interp: Interpreter
) -> Target:
    binary = ensure_litellm(interp)
    port = free_port()
    conf_path = work / "litellm.json"
    config = litellm_config(upstream.base_url(stream=False), upstream.base_url(stream=True))
    conf_path.write_text(json.dumps(config, indent=2))
    argv = [str(binary), "--config", str(conf_path), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1", "--keepalive_timeout", "300"]
    proc = start("litellm", argv, place=place, log_dir=work, env=litellm_env(), cwd=work)
    wait_for_port(proc, port, timeout_s=120)
    return Target("litellm", port, payloads.CHAT_PATH, payloads.CHAT_PATH, proc)


# ---------------------------------------------------------------------------------------------
# Laneway's router sidecar.


def _bench_lane(base_url: str) -> dict[str, object]:
    return {
        "provider": {
            "type": "openai",
            "baseURL": base_url,
            "model": payloads.UPSTREAM_MODEL,
        },
        "pricing": {"inputPerMillion": 0.15, "outputPerMillion": 0.6},
        "limits": {"contextWindow": 128_000, "maxOutputTokens": 4_096},
        "capabilities": ["streaming"],
        "timeouts": {"connectMs": 2_000, "firstTokenMs": 10_000, "totalMs": 30_000},
        "phase": "Healthy",
    }


def laneway_config(plain_url: str, stream_url: str) -> dict[str, object]:
    """A valid RouterConfig with one route per request kind, each with one lane at that URL."""
    from router_sidecar.config import API_VERSION, KIND, content_version, parse_config

    plain, stream = payloads.PLAIN_MODEL, payloads.STREAM_MODEL
    doc: dict[str, object] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "policy": {"name": "bench", "namespace": "bench"},
        "mode": "enforce",
        "defaultRoute": plain,
        "latencyBudgetMs": None,
        "budget": {"maxCostPerRequest": 0.5, "onExceed": "skipLane"},
        "lanes": {
            f"{plain}-lane": _bench_lane(plain_url),
            f"{stream}-lane": _bench_lane(stream_url),
        },
        "routes": [
            {"name": plain, "lanes": [f"{plain}-lane"]},
            {"name": stream, "lanes": [f"{stream}-lane"]},
        ],
        "triage": [],
        "escalation": {
            "triggers": ["truncated", "uncertain"],
            "uncertaintyMarkers": ["I'm not sure"],
            "maxEscalations": 1,
            "path": {},
        },
        "fallback": {"retries": {"max": 1, "backoffMs": 100}},
    }
    doc["version"] = content_version(doc)
    parse_config(doc)  # fail here, with the schema's message, rather than in the sidecar
    return doc


def start_laneway(
    upstream: Upstream, *, place: Placement, work: Path, interp: Interpreter
) -> Target:
    port = free_port()
    conf_path = work / "laneway-config.json"
    config = laneway_config(upstream.base_url(stream=False), upstream.base_url(stream=True))
    conf_path.write_text(json.dumps(config, indent=2))
    secrets = work / "laneway-secrets"
    secrets.mkdir(exist_ok=True)
    # The default log level (INFO): one decision line per request, as in production.
    argv = [interpreter.laneway_python(interp), "-m", "laneway", "serve"]
    argv += ["--config", str(conf_path), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--secrets-dir", str(secrets)]
    proc = start("laneway", argv, place=place, log_dir=work, cwd=REPO)
    wait_for_port(proc, port, timeout_s=30)
    return Target("laneway", port, payloads.CHAT_PATH, payloads.CHAT_PATH, proc)
