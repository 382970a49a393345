"""Processes the benchmark starts: pinned to a core, waited for, measured and stopped by pid.

`bench.servers` starts every upstream and proxy through `start`; `bench.run` stops them all in a
`finally` block. Each process gets its own session, so stopping one also reaches the workers it
forked (nginx's worker, uvicorn's) and nothing else on the machine. Memory and CPU time are read
from /proc for the process and its descendants. `ensure_installed` brings in the Debian
packages (nginx, wrk) the benchmark needs when they are missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Placement:
    """Where and how urgently a process runs: the core it is pinned to and its niceness."""

    cpu: int | None = None
    nice: int | None = None


class StartError(RuntimeError):
    """A process did not come up; the message carries the end of its log."""


@dataclass
class Proc:
    """One process the benchmark started, with the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: Sequence[str] = field(default_factory=tuple)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def ensure_installed(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first if it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found:
        return found
    log.info("%s is missing; installing the Debian package %s", binary, package)
    install = ["apt-get", "install", "-y", "-q", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        raise StartError(f"installed {package} but cannot find {binary}")
    return found


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """`argv` run under `taskset -c cpu`, or as it is when there is no core to pin to."""
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


def set_priority(pid: int, nice: int) -> None:
    """Give `pid` the niceness `nice`, also for its autogroup where the kernel groups sessions.

    With autogroups (the default on desktop and many cloud kernels) a process's own niceness
    counts only against processes of its session; the group's niceness is what weighs against
    other sessions' work on a shared machine. Lowering either needs root; without it, or on
    kernels without autogroups, this leaves things as they are.
    """
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def _autogroup_nice(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def prioritised(nice: int | None) -> Iterator[None]:
    """Run the calling process at `nice` meanwhile; then restore its own and its group's."""
    if nice is None:
        yield
        return
    pid = os.getpid()
    own, group = os.getpriority(os.PRIO_PROCESS, 0), _autogroup_nice(pid)
    set_priority(pid, nice)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, own)
        if group is not None:
            # The group is the whole session (the shell that ran make), which outlives us.
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/autogroup").write_text(str(group))


def start(
    name: str,
    argv: Sequence[str],
    *,
    place: Placement,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv` on `place`'s core at its priority, its output to `log_dir/name.log`."""
    log_path = log_dir / f"{name}.log"
    command = pinned(argv, place.cpu)
    log.debug("starting %s: %s", name, " ".join(command))
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    if place.nice is not None:
        set_priority(popen.pid, place.nice)  # before it forks workers, which inherit it
    return Proc(name=name, popen=popen, log_path=log_path, argv=command)


def wait_for_port(proc: Proc, port: int, timeout_s: float) -> None:
    """Return once `port` accepts connections; raise StartError if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise StartError(
        f"{proc.name} did not listen on {port} in {timeout_s:.0f}s:\n{proc.log_tail()}"
    )


def stop(proc: Proc, grace_s: float = 5.0) -> None:
    """Stop `proc` and the processes it forked: SIGTERM, then SIGKILL after `grace_s`."""
    if proc.alive():
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", proc.name, grace_s)
    # Workers may outlive their parent for a moment; the group still names only our processes.
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.popen.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) did not exit after SIGKILL", proc.name, proc.pid)


def _signal_group(proc: Proc, sig: signal.Signals) -> None:
    # The group id is the pid we started (start_new_session), so this reaches only its tree.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, read from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        task_dir = Path(f"/proc/{current}/task")
        try:
            tids = [entry.name for entry in task_dir.iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                children = (task_dir / tid / "children").read_text().split()
            except OSError:
                continue
            todo.extend(int(child) for child in children)
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of `pid` and its descendants, in KiB (0 for processes already gone)."""
    total = 0
    for each in descendants(pid):
        try:
            fields = Path(f"/proc/{each}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * PAGE_KB
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by `pid` and its live descendants."""
    total = 0
    for each in descendants(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = stat[stat.rindex(")") + 2 :].split()
        total += int(rest[11]) + int(rest[12])
    return total / CLOCK_TICKS
