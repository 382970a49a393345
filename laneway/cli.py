"""Argument parsing for the `laneway` command; each subcommand's work lives in `laneway.cmd_*`.

Exit codes: 0 success, 2 bad input (`BadInput`, with a message that says what to fix), 1 anything
else. The command forms are part of the product contract (SPEC "Outside a cluster").
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from laneway.errors import BadInput

log = logging.getLogger("laneway")


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or folder of ModelLanes and RoutingPolicies",
    )
    p.add_argument("--policy", required=True, help="name of the RoutingPolicy to use")
    p.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace of the policy (default: the only one, or 'default')",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laneway", description="Laneway: Kubernetes-native LLM routing."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="compile CR manifests into a router config, offline")
    _add_policy_args(p)
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="write the config here instead of stdout",
    )

    p = sub.add_parser("serve", help="run the router sidecar")
    p.add_argument("--config", required=True, metavar="FILE", help="compiled router config")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument(
        "--allow-remote-api",
        action="store_true",
        help="serve /v1/* to callers outside the pod too (default: loopback callers only)",
    )
    p.add_argument(
        "--secrets-dir",
        default="/var/run/secrets/laneway",
        metavar="DIR",
        help="a Secret reference name/key is read from DIR/name/key",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="requests larger than this get 413",
    )
    p.add_argument(
        "--watch-configmap",
        default=None,
        metavar="NAMESPACE/NAME",
        help="also follow this ConfigMap through the Kubernetes API (in a pod)",
    )
    p.add_argument(
        "--kube-api-url",
        default=None,
        help="API server URL for --watch-configmap (default: in-cluster)",
    )
    p.add_argument(
        "--kube-token-file",
        default=None,
        help="bearer token file for --watch-configmap (default: in-cluster)",
    )
    p.add_argument(
        "--kube-ca-file", default=None, help="CA bundle for --watch-configmap (default: in-cluster)"
    )

    p = sub.add_parser("operator", help="run the Kubernetes operator")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="watch only these namespaces (default: all)",
    )
    p.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--webhook-port", type=int, default=9443)
    p.add_argument(
        "--webhook-host", default=None, help="address the API server uses to reach the webhook"
    )
    p.add_argument("--webhook-cert", default=None, help="TLS certificate file for the webhook")
    p.add_argument("--webhook-key", default=None, help="TLS key file for the webhook")

    p = sub.add_parser("explain", help="show which route and lane a prompt would get")
    _add_policy_args(p)
    p.add_argument("--tier", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--risk", default=None)
    p.add_argument("--tools", action="store_true", help="the request offers tools")
    p.add_argument("--latency-budget-ms", default=None, metavar="MS",
                   help="the request's latency budget (as x-laneway-latency-budget-ms)")
    p.add_argument("--tool-failures", default=None, metavar="N",
                   help="tool calls that failed so far in the run (as x-laneway-tool-failures)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("prompt", help="the user prompt")

    p = sub.add_parser("eval", help="route a labeled prompt set and report the routing map")
    _add_policy_args(p)
    p.add_argument("--live", action="store_true", help="call every lane and judge the answers")
    p.add_argument("--out", default="laneway-eval", metavar="DIR")
    p.add_argument("--secrets-dir", default="/var/run/secrets/laneway", metavar="DIR")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("prompts", metavar="PROMPTS.jsonl")

    p = sub.add_parser(
        "review", help="per-route evidence and findings from production decision lines"
    )
    p.add_argument("--by", default="route,task", metavar="KEYS",
                   help="group by these decision fields, comma-separated (default route,task)")
    p.add_argument("--sample", type=int, default=0, metavar="N",
                   help="list N random decision ids per group, to read by hand")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--min-feedback", type=int, default=5, metavar="N",
                   help="feedback a group needs before its correction rate is judged")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="JSON Lines from laneway serve's standard output ('-' or none: stdin)")

    p = sub.add_parser("simulate-provider", help="run a simulated LLM provider")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="sim-model")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--api", choices=["openai", "anthropic"], default="openai")
    p.add_argument("--api-key", default=None, help="require this bearer token / x-api-key")

    p = sub.add_parser("demo", help="run everything on one machine, no cluster")
    p.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    module = importlib.import_module("laneway.cmd_" + args.command.replace("-", "_"))
    try:
        return int(module.run(args) or 0)
    except BadInput as exc:
        print(f"laneway {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
