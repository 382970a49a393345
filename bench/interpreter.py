"""The CPython that runs the Python proxies (Laneway and LiteLLM) in the benchmark.

How a CPython is built changes how fast it runs Python code by more than most changes to the
code do. The image Laneway ships in (`python:3.11-slim`, see the Dockerfile) and the interpreters
of Linux distributions are built with profile-guided and link-time optimisation; pyenv's default
build, which developers' virtualenvs often come from, is not, and runs the sidecar's request path
10-15 % slower. The benchmark asks what a proxy costs in production, so `choose` picks the
fastest CPython 3.11 or newer among the one running the benchmark and those where distributions
and the official images install theirs (`/usr/local/bin/python3`, `/usr/bin/python3`), timing
the same pure-Python loop on each, in turns, best of five turns (a busy moment on a shared
machine once made the faster one look slower); `--python` names one instead. Both Python
proxies run on the chosen one, each from its own virtualenv under `~/.cache/laneway/bench`, and
the results name it.
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


def _version(python: str) -> str | None:
    """The version of `python` if it is a usable CPython of at least MIN_VERSION (one that can
    make a virtualenv with pip, too), else None."""
    check = (
        "import sys, platform, venv, ensurepip; "
        f"print(platform.python_implementation(), sys.version_info >= {MIN_VERSION!r}, "
        "platform.python_version())"
    )
    try:
        out = subprocess.run(
            [python, "-c", check], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[2] if out[:2] == ["CPython", "True"] and len(out) > 2 else None


def _loop_seconds(python: str) -> float | None:
    """The best of seven timings of the calibration loop on `python`, or None if it failed."""
    try:
        out = subprocess.run(
            [python, "-c", _CALIBRATION], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        return float(out.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _fastest_loops(pythons: Sequence[str], rounds: int) -> dict[str, float]:
    """The best calibration time of each interpreter over `rounds` turns taken in rotation, so
    that a busy moment on a shared machine cannot make one of them look slow; interpreters
    whose loop failed are left out."""
    best: dict[str, float] = {}
    failed: set[str] = set()
    for _ in range(rounds):
        for python in pythons:
            if python in failed:
                continue
            seconds = _loop_seconds(python)
            if seconds is None:
                failed.add(python)
                best.pop(python, None)
            else:
                best[python] = min(seconds, best.get(python, seconds))
    return best


def choose(
    requested: str | None, candidates: Sequence[str] = CANDIDATES, *, rounds: int = 5
) -> Interpreter:
    """The interpreter for the proxies: `requested` if given (it must be a CPython of at least
    3.11), else the fastest of the benchmark's own and the `candidates` that exist."""
    own_version = _version(sys.executable)
    if own_version is None:
        raise SystemExit(f"the benchmark's own interpreter {sys.executable} is unusable")
    least = ".".join(map(str, MIN_VERSION))
    if requested:
        version = _version(requested)
        if version is None:
            raise SystemExit(f"--python {requested}: not a CPython {least} or newer")
        loops = _fastest_loops([sys.executable, requested], rounds=1)
        speed = loops.get(sys.executable, 1.0) / loops.get(requested, 1.0)
        return Interpreter(requested, version, speed, own=False)
    ours = {os.path.realpath(p) for p in (sys.executable, getattr(sys, "_base_executable", ""))}
    versions: dict[str, str] = {}
    for path in candidates:
        if not os.access(path, os.X_OK) or os.path.realpath(path) in ours:
            continue  # missing, or the benchmark's own under another name
        version = _version(path)
        if version is not None:
            versions[path] = version
    best = Interpreter(sys.executable, own_version, 1.0, own=True)
    if not versions:
        return best
    loops = _fastest_loops([sys.executable, *versions], rounds)
    if sys.executable not in loops:
        raise SystemExit(f"the benchmark's own interpreter {sys.executable} is unusable")
    for path, version in versions.items():
        if path not in loops:
            continue
        speed = loops[sys.executable] / loops[path]
        log.info("%s: CPython %s, %.2fx the benchmark's own interpreter", path, version, speed)
        # Only clearly faster: two equal builds time within a few percent of each other.
        if speed > max(best.speed, 1.0) * 1.05:
            best = Interpreter(path, version, speed, own=False)
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
