"""The real authorization server (npm ``oidc-provider``) and the SDK-protected MCP server, shared by
the OAuth tests: one provider per test module, skipped, saying why, when node/npm cannot install it.

The provider (``tests/servers/oidc_provider.mjs``) issues access tokens that live ``TTL`` seconds;
it knows a secret client (``mcp-supervisor``), a ``private_key_jwt`` client (``mcp-jwt``, whose
RSA key this fixture makes: ``key_file``), a public device client (``mcp-device``) and registers
more on request. ``resource`` is one MCP server (``tests/servers/oauth_resource.py``) that accepts
only the provider's tokens for its own URL and writes every token it accepted to ``seen``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.live_daemon import PY, stop
from tests.servers.fixtures import ROOT, free_port, wait_port_open

PROVIDER_SCRIPT = ROOT / "tests" / "servers" / "oidc_provider.mjs"
RESOURCE_SERVER = ROOT / "tests" / "servers" / "oauth_resource.py"
TTL = 10
"""Seconds an access token lives: renewed at 8 s, the provider's whole-second ``exp`` leaves >= 1 s."""
SECRET = "client-secret-7f3a9c2e"


@dataclass
class AuthServer:
    directory: Path
    port: int
    resource_port: int
    jwk: str = ""
    proc: subprocess.Popen[bytes] | None = None
    resource_proc: subprocess.Popen[bytes] | None = None
    ttl: int = TTL
    """Seconds its access tokens live (a test of restarts wants minutes, a bench of renewals seconds)."""

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resource(self) -> str:
        return f"http://127.0.0.1:{self.resource_port}/mcp"

    @property
    def key_file(self) -> Path:
        return self.directory / "mcp-jwt.pem"

    @property
    def seen(self) -> Path:
        return self.directory / "tokens-seen"

    @property
    def revoked(self) -> Path:
        """Tokens written here are refused by the resource server (a revocation at the server)."""
        return self.directory / "tokens-revoked"

    @property
    def log(self) -> Path:
        return self.directory / "provider.log"

    def start(self, *extra: str) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(self.directory / "oidc_provider.mjs"), str(self.port), self.resource, str(self.ttl), *extra],
                cwd=self.directory, stdout=log, stderr=log,
                env={"PATH": "/usr/bin:/bin:/usr/local/bin", "OIDC_CLIENT_SECRET": SECRET, "OIDC_JWT_CLIENT_JWK": self.jwk})
        wait_port_open(self.port, 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def start_resource(self) -> None:
        with open(self.directory / "resource.log", "ab") as log:
            self.resource_proc = subprocess.Popen([PY, str(RESOURCE_SERVER), str(self.resource_port), self.issuer,
                                                   str(self.seen), str(self.revoked)], stdout=log, stderr=log)
        wait_port_open(self.resource_port, 30, self.resource_proc)

    def revoke_grants(self) -> int:
        """An administrator revokes every grant issued so far (the provider's own Grant records)."""
        request = urllib.request.Request(f"{self.issuer}/test/revoke-grants", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(json.load(answer)["revoked"])

    def seen_tokens(self) -> list[str]:
        return [line for line in self.seen.read_text().splitlines() if line] if self.seen.exists() else []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _signing_key(directory: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = directory / "mcp-jwt.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return json.dumps({**public, "use": "sig", "alg": "RS256", "kid": "mcp-jwt-1"})


def install_provider(directory: Path) -> str | None:
    """npm ``oidc-provider`` and the provider script into ``directory``; the reason when it cannot be."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are needed to run oidc-provider (apt-get install nodejs npm)"
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", "oidc-provider@9"],
                               cwd=directory, capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        return f"npm cannot install oidc-provider: {installed.stderr.strip()[-300:]}"
    shutil.copy(PROVIDER_SCRIPT, directory / "oidc_provider.mjs")
    return None


@contextlib.contextmanager
def provider(directory: Path, ttl: int = TTL) -> Iterator[AuthServer]:
    """A provider issuing ``ttl``-second tokens and its resource server, in an installed ``directory``
    (``install_provider``), stopped at the end (also for ``bench/bench_oauth.py``)."""
    server = AuthServer(directory, free_port(), free_port(), jwk=_signing_key(directory), ttl=ttl)
    server.start()
    try:
        server.start_resource()
        yield server
    finally:
        if server.resource_proc is not None:
            stop(server.resource_proc)
        server.stop()


def provider_fixture(name: str, ttl: int = TTL) -> Any:
    """A module-scoped fixture ``name`` of a provider issuing ``ttl``-second tokens (skipped, saying
    why, when npm cannot install it): ``authority = provider_fixture("authority", 120)``."""

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
        directory = tmp_path_factory.mktemp("oidc")
        problem = install_provider(directory)
        if problem:
            pytest.skip(problem)
        with provider(directory, ttl) as server:
            yield server

    return fixture


auth_server = provider_fixture("auth_server")


def exposed_text(*places: Path) -> bytes:
    """Every byte under these files and directories (symlinks not followed)."""
    out = b""
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file() and not p.is_symlink()]
        out += b"".join(path.read_bytes() for path in files)
    return out
