"""Where `laneway serve` spends its time under load: cProfile of the sidecar while wrk drives it.

Run as `.venv/bin/python bench/profile_laneway.py [--stream] [--seconds 10]`. It starts the same
static upstream and one-route config as `bench/run.py`, runs `laneway serve` under cProfile on
the proxy core, loads it with wrk from the load core, stops it with SIGINT (so the profile is
written) and prints the functions that took the most time, own and cumulative. cProfile slows
Python down by a factor of about two, evenly enough that the shares are still telling.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a folder of the repo, not an installed package

from bench import loadgen, payloads, procs, servers  # noqa: E402
from bench.procs import Placement  # noqa: E402


def profile(stream: bool, seconds: float, out: Path, work: Path, top: int) -> str:
    load, proxy = Placement(0, -10), Placement(1, -10)
    if len(os.sched_getaffinity(0)) < 2:
        load, proxy = Placement(None, -10), Placement(None, -10)
    upstream = servers.start_upstream("static", place=load, work=work)
    port = procs.free_port()
    conf = work / "laneway-config.json"
    config = servers.laneway_config(upstream.base_url(stream=False), upstream.base_url(stream=True))
    conf.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "laneway"]
    argv += ["serve", "--config", str(conf), "--port", str(port)]  # decision lines on, as in bench
    argv += ["--secrets-dir", str(work)]
    sidecar = procs.start("laneway-profiled", argv, place=proxy, log_dir=work, cwd=REPO)
    try:
        procs.wait_for_port(sidecar, port, timeout_s=30)
        url = f"http://127.0.0.1:{port}{payloads.CHAT_PATH}"
        result = loadgen.run_wrk(
            url, stream=stream, seconds=seconds, connections=16, place=load, work=work
        )
        os.kill(sidecar.pid, signal.SIGINT)  # a clean exit writes the profile
        sidecar.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"laneway did not exit after SIGINT; see {sidecar.log_path}") from None
    finally:
        procs.stop(sidecar)
        procs.stop(upstream.proc)
    text = io.StringIO()
    text.write(f"{result.requests} requests in {result.duration_s:.1f}s under cProfile\n")
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"router_sidecar|aiohttp/web|client", top)
    return text.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="profile the streaming request")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=35, help="rows per listing")
    parser.add_argument("--out", type=Path, default=None, help="keep the .prof file here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laneway-profile-") as tmp:
        work = Path(tmp)
        out = args.out or work / "laneway.prof"
        with procs.prioritised(-10):
            sys.stdout.write(profile(args.stream, args.seconds, out, work, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
