"""`make controlplane` / `make controlplane-stop`: run the test control plane for people.

    python -m tests.controlplane start   # starts it if it is not running; last line: kubeconfig
    python -m tests.controlplane stop    # stops what `start` started, by process id
    python -m tests.controlplane status

State lives in $LANEWAY_CONTROLPLANE_DIR, by default ~/.cache/laneway/run/controlplane.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.controlplane.plane import ControlPlane, ControlPlaneError, binaries_dir


def _workdir() -> Path:
    if os.environ.get("LANEWAY_CONTROLPLANE_DIR"):
        return Path(os.environ["LANEWAY_CONTROLPLANE_DIR"])
    root = os.environ.get("LANEWAY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "laneway"
    )
    return Path(root) / "run" / "controlplane"


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "status"
    workdir = _workdir()
    plane = ControlPlane.from_state(workdir)
    if action == "start":
        if plane is not None and plane.is_running():
            print(f"control plane already running at {plane.api_url}", file=sys.stderr)
            print(plane.kubeconfig)
            return 0
        if plane is not None:
            plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            plane = ControlPlane(workdir=workdir, bin_dir=binaries_dir())
            plane.start()
        except ControlPlaneError as exc:
            print(f"controlplane: {exc}", file=sys.stderr)
            return 1
        print(f"control plane running at {plane.api_url} (logs in {workdir}/logs)", file=sys.stderr)
        print(f"use: kubectl --kubeconfig {plane.kubeconfig} get namespaces", file=sys.stderr)
        print(plane.kubeconfig)
        return 0
    if action == "stop":
        if plane is None:
            print("control plane is not running", file=sys.stderr)
            return 0
        plane.stop()
        print("control plane stopped", file=sys.stderr)
        return 0
    if action == "status":
        running = plane is not None and plane.is_running()
        print("running" if running else "stopped")
        return 0 if running else 3
    usage = "usage: python -m tests.controlplane start|stop|status"
    print(f"{usage} (got {action!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
