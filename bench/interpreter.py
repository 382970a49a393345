"""The CPython that runs the Python proxies (Laneway and LiteLLM) in the benchmark.

How a CPython is built changes how fast it runs Python code by more than most changes to the
code do. The image Laneway ships in (`python:3.11-slim`, see the Dockerfile) and the interpreters
of Linux distributions are built with profile-guided and link-time optimisation; pyenv's default
build, which developers' virtualenvs often come from, is not, and runs the sidecar's request path
10-15 % slower. The benchmark asks what a proxy costs in production, so `choose` picks the
fastest CPython 3.11 or newer among the one running the benchmark and those where distributions
and the official images install theirs (`/usr/local/bin/python3`, `/usr/bin/python3`), timing
the same pure-Python loop on each; `--python` names one instead. Both Python proxies run on the
chosen one, each from its own virtualenv under `~/.cache/laneway/bench`, and the results name it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "laneway" / "bench"
CANDIDATES = ("/usr/local/bin/python3", "/usr/bin/python3")
MIN_VERSION = (3, 11)

# Dict, string and list work in small functions, as on the router's request path; prints the
# best of seven timings in seconds.
_CALIBRATION = """
import time
def step(d, i):
    key = "k%d" % (i % 64)
    d[key] = d.get(key, 0) + len(key)
    return [key, i][0]
def work():
    d = {}
    for i in range(30000):
        step(d, i)
    return d
times = []
for _ in range(7):
    t = time.perf_counter()
    work()
    times.append(time.perf_counter() - t)
print(min(times))
"""


@dataclass(frozen=True)
class Interpreter:
    """A CPython for the proxies: `path` makes their virtualenvs; `speed` is how many times
    faster than the benchmark's own interpreter it ran the calibration loop."""

    path: str
    version: str
    speed: float
    own: bool  # the interpreter running the benchmark: Laneway runs from the project's venv

    @property
    def tag(self) -> str:
        """Short and stable per interpreter: names its virtualenvs."""
        real = os.path.realpath(self.path)
        return "py" + self.version + "-" + hashlib.sha256(real.encode()).hexdigest()[:8]

    def describe(self) -> str:
        if self.own:
            return f"CPython {self.version} ({self.path}, the benchmark's own)"
        return (
            f"CPython {self.version} ({self.path}), {self.speed:.2f}x as fast as the "
            f"benchmark's own on a pure-Python loop"
        )


def _probe(python: str) -> tuple[str, float] | None:
    """(version, seconds for the calibration loop) or None if `python` is not a usable CPython
    of at least MIN_VERSION (one that can make a virtualenv with pip, too)."""
    check = (
        "import sys, platform, venv, ensurepip; "
        f"print(platform.python_implementation(), sys.version_info >= {MIN_VERSION!r}, "
        "platform.python_version())"
    )
    try:
        out = subprocess.run(
            [python, "-c", check], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        if out[:2] != ["CPython", "True"]:
            return None
        seconds = subprocess.run(
            [python, "-c", _CALIBRATION], capture_output=True, text=True, timeout=120, check=True
        ).stdout.strip()
        return out[2], float(seconds)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def choose(requested: str | None, candidates: Sequence[str] = CANDIDATES) -> Interpreter:
    """The interpreter for the proxies: `requested` if given (it must be a CPython of at least
    3.11), else the fastest of the benchmark's own and the `candidates` that exist."""
    own = _probe(sys.executable)
    if own is None:
        raise SystemExit(f"the benchmark's own interpreter {sys.executable} is unusable")
    if requested:
        probed = _probe(requested)
        if probed is None:
            least = ".".join(map(str, MIN_VERSION))
            raise SystemExit(f"--python {requested}: not a CPython {least} or newer")
        return Interpreter(requested, probed[0], own[1] / probed[1], own=False)
    best = Interpreter(sys.executable, own[0], 1.0, own=True)
    ours = {os.path.realpath(p) for p in (sys.executable, getattr(sys, "_base_executable", ""))}
    for path in candidates:
        if not os.access(path, os.X_OK) or os.path.realpath(path) in ours:
            continue  # missing, or the benchmark's own under another name
        probed = _probe(path)
        if probed is None:
            continue
        speed = own[1] / probed[1]
        log.info("%s: CPython %s, %.2fx the benchmark's own interpreter", path, probed[0], speed)
        # Only clearly faster: two equal builds time within a few percent of each other.
        if speed > max(best.speed, 1.0) * 1.05:
            best = Interpreter(path, probed[0], speed, own=False)
    return best


def venv(interp: Interpreter, name: str, packages: Sequence[str], stamp: str) -> Path:
    """The python of a virtualenv made by `interp` holding `packages` (pip arguments), made or
    brought up to date once per `stamp`."""
    home = CACHE / f"{name}-{interp.tag}"
    python = home / "bin" / "python"
    marker = home / f".installed-{stamp}"
    if python.exists() and marker.exists():
        return python
    log.info("installing %s into %s (once)", " ".join(packages), home)
    if not python.exists():
        subprocess.run([interp.path, "-m", "venv", str(home)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *packages], check=True)
    for old in home.glob(".installed-*"):
        old.unlink()
    marker.touch()
    return python


def laneway_python(interp: Interpreter) -> str:
    """The python that runs `laneway serve`: the project's own venv when the benchmark runs on
    the chosen interpreter, else a venv of it with this checkout installed (editable, so the
    code measured is the code here) at the pinned versions."""
    if interp.own:
        return sys.executable
    pins = (REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes()
    stamp = hashlib.sha256(pins).hexdigest()[:12]
    packages = ["-c", str(REPO / "constraints.txt"), "-e", str(REPO)]
    # One venv per checkout: an editable install points at one source tree.
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    return str(venv(interp, f"laneway-{checkout}", packages, stamp))
