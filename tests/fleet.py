"""Real fleet engines for the tests: a CA and certificates, Prometheus and Alertmanager from Debian,
and daemons with their own configs and metrics ports, all on loopback.

Every process here is started by the test and stopped by its pid (``tests.test_e2e.stop``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.live_daemon import BIN, ROOT, free_port, stop, wait_for

DEPLOY = ROOT / "deploy" / "prometheus"


def make_ca_and_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """(ca.pem, server cert, server key) for ``host``, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "metrics.crt", directory / "metrics.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def http_json(url: str, *, timeout: float = 5.0, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
        return json.loads(response.read())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Engine:
    """A Prometheus or Alertmanager process and its HTTP port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    config: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        stop(self.proc)


def start_prometheus(directory: Path, config: dict[str, Any]) -> Engine:
    port = free_port()
    return _start("prometheus", directory, config, port, [f"--storage.tsdb.path={directory / 'data'}"])


def start_alertmanager(directory: Path, config: dict[str, Any]) -> Engine:
    port, cluster = free_port(), free_port()
    return _start("prometheus-alertmanager", directory, config, port,
                  [f"--storage.path={directory / 'am-data'}", f"--cluster.listen-address=127.0.0.1:{cluster}"])


def _start(binary: str, directory: Path, config: dict[str, Any], port: int, args: list[str]) -> Engine:
    """Write ``<binary>.yml``, start the engine on ``127.0.0.1:port`` and wait for ``/-/ready``."""
    path = directory / f"{binary}.yml"
    path.write_text(yaml.safe_dump(config))
    log = directory / f"{binary}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([shutil.which(binary) or binary, f"--config.file={path}",
                                 f"--web.listen-address=127.0.0.1:{port}", *args], stdout=out, stderr=out)
    engine = Engine(proc, port, log, path)
    _wait_ready(engine, binary)
    return engine


def _wait_ready(engine: Engine, what: str) -> None:
    def ready() -> bool:
        if engine.proc.poll() is not None:
            raise AssertionError(f"{what} exited: {engine.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(engine.url("/-/ready"), timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_for(ready, 30, f"{what} ready", every=0.1)
    except BaseException:
        engine.stop()
        raise


@dataclass
class Daemon:
    name: str
    directory: Path
    metrics_port: int
    metrics: str = ""
    """Extra lines under [metrics] (TLS, basic auth)."""
    notify: str = ""
    servers: str = ""
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def sock(self) -> Path:
        return self.directory / "ctl.sock"

    def write(self) -> Path:
        config = self.directory / "mcp-supervisor.toml"
        config.write_text(f"""
[supervisor]
socket = "{self.sock}"
state_dir = "{self.directory}/state"
log_format = "json"
shutdown_timeout = "2s"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
{self.metrics}
{self.notify}
{self.servers}
""")
        return config

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.write()
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "MCP_SUPERVISOR_SOCKET")}
        with open(self.directory / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)], env=env, stderr=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
