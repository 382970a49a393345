"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Used by the pytest fixtures in `tests/conftest.py` and by `make controlplane` (`python -m
tests.controlplane start|stop`). The binaries come from `tests/controlplane/build.sh`, which builds
them from Go modules into a cache outside the repository. Everything listens on free loopback
ports; the API server serves TLS, authorizes with RBAC, signs ServiceAccount tokens (so
TokenRequest works) and accepts one static admin token, which the written kubeconfig uses.

Processes are started in their own session and stopped by the process ids recorded here, so
nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
ADMIN_TOKEN = "laneway-admin-token"  # loopback-only test credential, never a real secret


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says which part and why."""


def binaries_dir() -> Path:
    """Build (first time) or find the cached binaries and return their directory."""
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=3600
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ControlPlane:
    """One running control plane rooted at `workdir`."""

    workdir: Path
    bin_dir: Path
    etcd_port: int = 0
    api_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def admin_token(self) -> str:
        return ADMIN_TOKEN

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that should talk to this control plane."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm" / "data")
        return env

    # -- running tools against it -----------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, input=input, check=check, timeout=timeout)

    def _run(
        self, tool: str, args: tuple[str, ...], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, cmd, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_port, self.api_port = free_port(), free_port()
        self._write_pki()
        self._write_kubeconfig()
        try:
            self._start_etcd()
            self._wait(f"http://127.0.0.1:{self.etcd_port}/readyz", "etcd", timeout)
            self._start_apiserver()
            self._wait(f"{self.api_url}/readyz", "kube-apiserver", timeout)
            self._start_controller_manager()
            self._wait_for_default_serviceaccount(timeout)
        except BaseException:
            self.stop()
            raise
        self._save_state()

    def stop(self) -> None:
        """Stop every process this control plane started, newest first, by its process id."""
        for name in reversed(list(self.pids)):
            _terminate(self.pids[name], name)
        self.pids.clear()
        state = self.workdir / "state.json"
        if state.exists():
            state.unlink()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals ----------------------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(pki / "ca.crt"))
        server = ca.issue_cert(
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        server.cert_chain_pems[0].write_to_path(str(pki / "apiserver.crt"))
        server.private_key_pem.write_to_path(str(pki / "apiserver.key"))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pki / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "laneway-test",
                    "cluster": {"server": self.api_url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [
                {"name": "laneway-test", "context": {"cluster": "laneway-test", "user": "admin"}}
            ],
            "current-context": "laneway-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def _spawn(self, name: str, args: list[str]) -> None:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        out.close()
        self.pids[name] = proc.pid
        log.debug("started %s pid=%d", name, proc.pid)

    def _start_etcd(self) -> None:
        peer = free_port()
        self._spawn(
            "etcd",
            [
                "etcd",
                f"--data-dir={self.workdir / 'etcd'}",
                "--name=default",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self) -> None:
        pki = self.workdir / "pki"
        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )

    def _wait(self, url: str, name: str, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive(name)
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        tail = self.log_tail(name)
        raise ControlPlaneError(f"{name} not ready after {timeout}s ({last})\n{tail}")

    def _wait_for_default_serviceaccount(self, timeout: float) -> None:
        # The controller manager creates the `default` ServiceAccount of each namespace; seeing it
        # proves the controllers run and are authorized.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("kube-controller-manager")
            proc = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            if proc.returncode == 0:
                return
            time.sleep(0.5)
        raise ControlPlaneError(
            "kube-controller-manager did not create the default ServiceAccount in "
            f"{timeout}s\n{self.log_tail('kube-controller-manager')}"
        )

    def _check_alive(self, name: str) -> None:
        pid = self.pids.get(name)
        if pid is None:
            return
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if process_alive(pid) else pid
        if done:
            raise ControlPlaneError(f"{name} exited during start-up:\n{self.log_tail(name)}")

    def _save_state(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "bin_dir": str(self.bin_dir),
            "etcd_port": self.etcd_port,
            "api_port": self.api_port,
            "pids": self.pids,
            "started": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, workdir: Path) -> ControlPlane | None:
        path = workdir / "state.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return cls(
            workdir=Path(state["workdir"]),
            bin_dir=Path(state["bin_dir"]),
            etcd_port=state["etcd_port"],
            api_port=state["api_port"],
            pids=dict(state["pids"]),
        )

    def is_running(self) -> bool:
        return bool(self.pids) and all(process_alive(pid) for pid in self.pids.values())


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _terminate(pid: int, name: str, grace: float = 10) -> None:
    if not process_alive(pid):
        _reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid):
            return
        time.sleep(0.1)
    log.warning("%s pid=%d ignored SIGTERM for %ss; sending SIGKILL", name, pid, grace)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
