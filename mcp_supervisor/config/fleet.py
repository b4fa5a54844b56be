"""``[metrics]``: the TCP ``/metrics`` listener, and its TLS and basic auth for a fleet.

Why exporter-toolkit's keys: every Prometheus exporter reads a ``web.yml`` with
``tls_server_config`` (``cert_file``, ``key_file``, ...) and ``basic_auth_users`` (user -> bcrypt
hash), and Prometheus' own scrape config speaks the other end of it. An operator who runs
node_exporter already has that file; the same keys here (inline, or ``web_config_file`` naming the
shared ``web.yml``) mean one way of securing every exporter on the host.

Why a non-loopback listen is refused without both: the series name every server, its state and
when its token expires; on a network they must be encrypted and only for the Prometheus server.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mcp_supervisor.config.base import Duration, _Model

_BCRYPT_RE = re.compile(r"^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$")
_FIX = (
    'put [metrics.tls_server_config] cert_file/key_file and [metrics.basic_auth_users] name = "<bcrypt hash>" '
    "in the config (or web_config_file = \"/etc/mcp-supervisor/web.yml\" in exporter-toolkit's format; make a hash "
    "with: htpasswd -nBC 10 \"\" | tr -d ':\\n'), or listen on loopback (127.0.0.1:9464)"
)


class TLSServerConfig(_Model):
    """exporter-toolkit's ``tls_server_config`` (the keys this listener honours)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    """When set, a client certificate signed by this CA is required (RequireAndVerifyClientCert)."""
    client_auth_type: Literal["NoClientCert", "RequireAndVerifyClientCert"] | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @model_validator(mode="after")
    def _client_auth_needs_ca(self) -> TLSServerConfig:
        if self.client_auth_type == "RequireAndVerifyClientCert" and self.client_ca_file is None:
            raise ValueError("client_auth_type = RequireAndVerifyClientCert needs client_ca_file")
        return self


class MetricsSettings(_Model):
    listen: str | None = None
    """``host:port`` for a TCP ``/metrics`` (e.g. ``127.0.0.1:9464``); off by default."""
    web_config_file: Path | None = None
    """An exporter-toolkit ``web.yml`` (tls_server_config, basic_auth_users) shared with other exporters."""
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)
    """User name -> bcrypt hash (``$2y$10$...``), as in exporter-toolkit's web.yml."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port; use e.g. \"127.0.0.1:9464\"")
        return value

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not _BCRYPT_RE.match(hashed):
                raise ValueError(
                    f"basic_auth_users.{user}: not a bcrypt hash (it must look like \"$2y$10$...\", 60 characters; "
                    "never the password itself): make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
                )
        return users

    @model_validator(mode="after")
    def _exposed_needs_tls_and_auth(self) -> MetricsSettings:
        if self.web_config_file is not None and (self.tls_server_config or self.basic_auth_users):
            raise ValueError("set either web_config_file or tls_server_config/basic_auth_users inline, not both")
        if self.listen is None or is_loopback(self.listen):
            return self
        effective = self.web_config()  # the web.yml is read now, so check-config names its problems
        missing = [what for what, have in (("tls_server_config", effective.tls_server_config),
                                           ("basic_auth_users", effective.basic_auth_users)) if not have]
        if missing:
            raise ValueError(f"listen = {self.listen!r} is not loopback, so /metrics needs TLS and basic auth; "
                             f"missing {' and '.join(missing)}: {_FIX}")
        return self

    def web_config(self) -> MetricsSettings:
        """These settings with ``web_config_file`` read in (a ValueError names the file and key)."""
        if self.web_config_file is None:
            return self
        return self.model_copy(update=dict(read_web_config(self.web_config_file, self.listen)))


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0: reachable from elsewhere


def read_web_config(path: Path, listen: str | None) -> dict[str, Any]:
    """The checked ``tls_server_config`` and ``basic_auth_users`` of an exporter-toolkit web.yml."""
    import yaml
    from pydantic import ValidationError

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"[metrics] web_config_file {path}: cannot read it: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"[metrics] web_config_file {path}: expected a mapping with tls_server_config and "
                         "basic_auth_users")
    unknown = sorted(set(raw) - {"tls_server_config", "basic_auth_users", "http_server_config"})
    if unknown:
        raise ValueError(f"[metrics] web_config_file {path}: unsupported key(s) {', '.join(unknown)}")
    base = path.parent
    tls = raw.get("tls_server_config")
    if isinstance(tls, dict):  # relative paths are relative to the web.yml, as in exporter-toolkit
        tls = {k: str(base / v) if k.endswith("_file") and isinstance(v, str) else v for k, v in tls.items()}
    try:
        checked = MetricsSettings(listen=listen, tls_server_config=tls, basic_auth_users=raw.get("basic_auth_users") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"[metrics] web_config_file {path}: {where}: {first['msg']}") from None
    return {"tls_server_config": checked.tls_server_config, "basic_auth_users": checked.basic_auth_users,
            "web_config_file": None}


class SFTPSettings(_Model):
    """``[backup.sftp]``: how ``sftp://`` locations connect (key authentication, known hosts only)."""

    identity_file: Path = Path("~/.ssh/id_ed25519")
    known_hosts: Path = Path("~/.ssh/known_hosts")
    """The server's host key must be listed here; an unknown or changed key is refused."""
    timeout: Duration = 30.0


class RcloneSettings(_Model):
    """``[backup.rclone]``: how ``rclone:REMOTE:path`` locations run the ``rclone`` binary."""

    config: Path | None = None
    """The rclone.conf naming the remotes (default: rclone's own, ``~/.config/rclone/rclone.conf``)."""
    binary: str = "rclone"
    timeout: Duration = 120.0


def remote_kind(location: str) -> str | None:
    """``"sftp"`` or ``"rclone"`` for an off-host location, None for a folder."""
    if location.startswith("sftp://"):
        return "sftp"
    if location.startswith("rclone:"):
        return "rclone"
    return None


def check_location(location: str) -> str:
    """A location string as the config accepts it (ValueError names the expected form)."""
    kind = remote_kind(location)
    if kind == "sftp":
        return str(parse_sftp(location))
    if kind == "rclone":
        return "rclone:" + parse_rclone(location)
    if "://" in location:
        raise ValueError(f"{location!r}: off-host locations are sftp://user@host:port/path or rclone:REMOTE:path")
    return location


@dataclass(frozen=True)
class SFTPTarget:
    user: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sftp://{self.user}@{host}:{self.port}{self.path}"


def parse_sftp(spec: str) -> SFTPTarget:
    """``sftp://user@host[:port]/absolute/path`` (ValueError with the expected form)."""
    parts = urllib.parse.urlsplit(spec)
    form = 'use sftp://user@host:port/absolute/path, e.g. "sftp://backup@nas.example:22/srv/mcp-vault"'
    if parts.scheme != "sftp" or not parts.hostname or not parts.username:
        raise ValueError(f"{spec!r} is not an sftp location; {form}")
    if parts.password is not None:
        raise ValueError(f"sftp://{parts.username}:***@{parts.hostname}...: a password in the location; sftp "
                         "locations use key authentication ([backup.sftp] identity_file), never a password")
    if parts.query or parts.fragment or not parts.path.startswith("/") or parts.path == "/":
        raise ValueError(f"{spec!r}: {form}")
    try:
        port = parts.port or 22
    except ValueError:
        raise ValueError(f"{spec!r}: the port is not a number; {form}") from None
    return SFTPTarget(urllib.parse.unquote(parts.username), parts.hostname, port, parts.path.rstrip("/"))


def parse_rclone(spec: str) -> str:
    """``rclone:REMOTE:path`` -> ``REMOTE:path`` (ValueError with the expected form)."""
    rest = spec.removeprefix("rclone:")
    remote, sep, path = rest.partition(":")
    if not sep or not re.fullmatch(r"[\w.\- ]+", remote or "") or remote.startswith("-"):
        raise ValueError(f"{spec!r} is not an rclone location; use rclone:REMOTE:path with a remote named in "
                         'your rclone.conf, e.g. "rclone:s3backup:my-bucket/mcp-vault"')
    if path.startswith("-") or "\n" in path:
        raise ValueError(f"{spec!r}: the path after the remote name is not usable")
    return f"{remote}:{path.rstrip('/')}"
