"""`laneway demo`: run `laneway.demo.run_demo` and print its report to stdout.

Called by `laneway.cli` (and `make demo`). Everything it starts runs in this process and stops
before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from laneway.demo import run_demo


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(run_demo(sys.stdout))
    return 0 if summary["succeeded"] == summary["requests"] else 1
