"""Flower's deployment engine on one machine: a SuperLink and SuperNodes as processes, ``flwr run`` against it.

What the tests, ``edgefleet fl start --loopback`` and the demo use; across a real fleet the same commands
run on the hub and beside each agent. Every process gets a free port picked at start, ``FLWR_HOME`` is
a directory of the deployment's own (the ``flwr`` CLI's SuperLink connection lives there), nothing is
installed at run time (``--disable-runtime-dependency-installation``; the app's code is the installed
edgefleet package), and leaving the context manager stops every process it started, children included.

With ``tls`` set, the SuperLink serves HTTPS with the given certificate and the SuperNodes and the CLI
trust the given CA; with ``node_auth`` as well, the SuperLink admits only SuperNodes whose public keys were
registered with ``flwr supernode register`` (each SuperNode signs its requests with its own EC key).
:func:`generate_tls` makes a CA and a server certificate for 127.0.0.1 / localhost with ``cryptography``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud_hub.fl.errors import DeploymentError

APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "edgefleet"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bin(name: str) -> str:
    """A console script of the running environment (the venv's ``flwr``), else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name} is not installed (pip install 'edgefleet[fl]')")
    return found


def flwr_command() -> str:
    """The ``flwr`` CLI of this environment (DeploymentError when Flower is not installed)."""
    return _bin("flwr")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def generate_tls(directory: Path, *, days: int = 2) -> TlsFiles:
    """A CA and a server certificate signed by it, valid for 127.0.0.1 and localhost (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EdgeFleet federated-learning CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.server_key.chmod(0o600)
    return files


def generate_node_key(private_path: Path, public_path: Path) -> None:
    """A SuperNode's authentication key pair (EC P-384, OpenSSH formats, as Flower reads them)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class LoopbackDeployment:
    """A SuperLink and one SuperNode per ``node_configs`` entry, on 127.0.0.1.

    ``with LoopbackDeployment(work_dir, node_configs) as deployment: deployment.run(overrides)``.
    """

    work_dir: Path
    node_configs: Sequence[Mapping[str, str]]
    tls: TlsFiles | None = None
    node_auth: bool = False
    app_dir: Path = APP_DIR
    start_timeout_s: float = 60.0
    port: int = 0
    processes: list[_Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.node_auth and self.tls is None:
            raise DeploymentError("SuperNode authentication needs TLS (Flower refuses it on insecure connections)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.work_dir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.flwr_home)
        # The SuperLink and SuperNodes start flower-superexec by name: find this environment's first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def __enter__(self) -> LoopbackDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.port = free_port()
        self._write_cli_config()
        command = [
            _bin("flower-superlink"),
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database",
            str(self.work_dir / "superlink.db"),
        ]
        command += self._server_tls_arguments()
        if self.node_auth:
            command.append("--enable-supernode-auth")
        self._spawn("superlink", command)
        self._wait_until(lambda: self._listening(self.port), "the SuperLink to listen")
        for index, node_config in enumerate(self.node_configs, start=1):
            self._start_supernode(index, node_config)
        self._wait_until(lambda: len(self.node_ids()) >= len(self.node_configs), "every SuperNode to connect")

    def _server_tls_arguments(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        return [
            "--ssl-ca-certfile",
            str(self.tls.ca_certificate),
            "--ssl-certfile",
            str(self.tls.server_certificate),
            "--ssl-keyfile",
            str(self.tls.server_key),
        ]

    def _start_supernode(self, index: int, node_config: Mapping[str, str]) -> None:
        command = [
            _bin("flower-supernode"),
            "--superlink",
            self.address,
            "--port",
            str(free_port()),
            "--node-config",
            " ".join(f"{key}={json.dumps(str(value))}" for key, value in node_config.items()),
            "--max-retries",
            "30",
        ]
        command += ["--insecure"] if self.tls is None else ["--root-certificates", str(self.tls.ca_certificate)]
        if self.node_auth:
            private_key = self.work_dir / f"supernode-{index}.key"
            public_key = self.work_dir / f"supernode-{index}.pub"
            generate_node_key(private_key, public_key)
            self.flwr("supernode", "register", str(public_key), CONNECTION)
            command += ["--auth-supernode-private-key", str(private_key)]
        self._spawn(f"supernode-{index}", command)

    def _write_cli_config(self) -> None:
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "{self.address}"',
        ]
        if self.tls is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.tls.ca_certificate}"')
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spawn(self, name: str, command: list[str]) -> None:
        log_path = self.work_dir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            command,
            cwd=self.work_dir,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the children (ServerApp, ClientApps) too
        )
        self.processes.append(_Process(name, popen, log_path, log))

    def _listening(self, port: int) -> bool:
        self._check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                tail = process.log_path.read_text(errors="replace")[-2000:]
                raise DeploymentError(f"{process.name} exited with {process.popen.returncode}:\n{tail}")

    def _wait_until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.3)
        raise DeploymentError(f"timed out after {self.start_timeout_s:.0f} s waiting for {what}")

    def flwr(self, *arguments: str, timeout: float = 120.0) -> str:
        """Run the ``flwr`` CLI against this deployment; its standard output."""
        try:
            result = subprocess.run(
                [_bin("flwr"), *arguments],
                cwd=self.work_dir,
                env=self.environment(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"flwr {' '.join(arguments)} timed out after {timeout:.0f} s") from exc
        if result.returncode != 0:
            raise DeploymentError(
                f"flwr {' '.join(arguments)} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result.stdout

    def node_ids(self) -> list[int]:
        """Node ids of the SuperNodes the SuperLink knows as online."""
        self._check_alive()
        try:
            listing = json.loads(self.flwr("supernode", "list", CONNECTION, "--format", "json", timeout=30))
        except (DeploymentError, json.JSONDecodeError):
            return []
        nodes = listing.get("nodes", []) if isinstance(listing, dict) else []
        return [int(node["node-id"]) for node in nodes if str(node.get("status", "online")).lower() == "online"]

    def submit(self, run_config: Mapping[str, Any]) -> int:
        """Submit a run of the app with ``run_config`` overrides; returns its run id."""
        return submit_run(CONNECTION, run_config, app_dir=self.app_dir, work_dir=self.work_dir, env=self.environment())

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it (for example ``finished:completed``)."""
        listing = json.loads(self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=30))
        runs = listing.get("runs", [])
        if not runs:
            raise DeploymentError(f"run {run_id} is unknown to the SuperLink")
        return str(runs[0]["status"])

    def wait(self, run_id: int, *, timeout: float = 600.0) -> str:
        """Block until the run is finished; its final status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(1.0)
        raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s")

    def run(self, run_config: Mapping[str, Any], *, timeout: float = 600.0) -> str:
        """Submit a run and wait for it; its final status."""
        return self.wait(self.submit(run_config), timeout=timeout)

    def stop(self) -> None:
        """SIGTERM each process group (SuperNodes first), SIGKILL what is left after 10 s.

        Flower detaches its SuperExec into a session of its own, so descendants are collected first and
        killed too if they outlive their parents.
        """
        descendants = set().union(*(descendant_pids(process.popen.pid) for process in self.processes))
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)  # children left in the group (a ClientApp in flight)
            process.log.close()
        self.processes.clear()
        deadline = time.monotonic() + 10
        while (alive := [pid for pid in descendants if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def logs(self) -> dict[str, str]:
        return {process.name: process.log_path.read_text(errors="replace") for process in self.processes}


def submit_run(
    connection: str,
    run_config: Mapping[str, Any],
    *,
    app_dir: Path = APP_DIR,
    work_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> int:
    """``flwr run`` the app on the SuperLink connection ``connection`` with ``run_config`` overrides; the run id."""
    overrides = work_dir / f"run-config-{time.monotonic_ns()}.toml"
    work_dir.mkdir(parents=True, exist_ok=True)
    overrides.write_text(run_config_toml(run_config), encoding="utf-8")
    command = [_bin("flwr"), "run", str(app_dir), connection, "--run-config", str(overrides), "--format", "json"]
    try:
        result = subprocess.run(
            command,
            cwd=work_dir,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeploymentError(f"flwr run timed out after {timeout:.0f} s") from exc
    if result.returncode != 0:
        raise DeploymentError(f"flwr run failed ({result.returncode}): {result.stdout}{result.stderr}")
    try:
        return int(json.loads(result.stdout)["run-id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentError(f"flwr run gave no run id: {result.stdout}") from exc


def descendant_pids(root: int) -> set[int]:
    """Every process below ``root`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run_config_toml(values: Mapping[str, Any]) -> str:
    """A flat TOML table of strings, numbers and booleans (the run config)."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        else:
            lines.append(f"{key} = {json.dumps(str(value))}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # refuse to hand flwr a file it cannot read
    return text
