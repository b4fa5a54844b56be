"""The vault routes over the real control socket: list, back up, restore, and their errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_supervisor.api.server import ApiServer, start_api_server
from mcp_supervisor.vault.service import VaultService
from tests.test_api import DrivenControl, error_of, raw
from tests.test_vault import CANARY, write_config


@pytest.fixture
async def vault_api(short_tmp: Path, tmp_path: Path) -> AsyncIterator[tuple[Path, VaultService]]:
    vault = VaultService(write_config(tmp_path))
    sock = short_tmp / "v.sock"
    server: ApiServer = await start_api_server(DrivenControl({"a": "healthy"}, critical={"a"}), sock, vault=vault)
    try:
        yield sock, vault
    finally:
        await server.close()


async def test_backup_list_and_restore_over_the_socket(vault_api: tuple[Path, VaultService], tmp_path: Path) -> None:
    sock, _ = vault_api
    status, _, body = await raw(sock, "POST", "/v1/backups", b"{}")
    assert status == 200 and json.loads(body)["safe"] is True
    status, _, body = await raw(sock, "GET", "/v1/backups")
    snapshots = json.loads(body)["snapshots"]
    assert status == 200 and len(snapshots) == 1 and snapshots[0]["copies"] == 2
    (tmp_path / "home" / ".env").write_text("JIRA_TOKEN=\n")
    status, _, body = await raw(sock, "POST", "/v1/configs/secrets/restore", b"{}")
    assert status == 200 and json.loads(body)["config"] == "secrets"
    assert CANARY in (tmp_path / "home" / ".env").read_text()
    assert CANARY.encode() not in body


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/v1/configs/nope/restore", b"{}", 404, "restore_failed"),
        ("/v1/configs/secrets/restore", b'{"snapshot": "20990101"}', 404, "restore_failed"),
        ("/v1/configs/secrets/restore", b'{"snapshot": 7}', 400, "bad_request"),
        ("/v1/configs/secrets/restore", b'{"snap": "x"}', 400, "bad_request"),
        ("/v1/configs/secrets/restore", b"{not json", 400, "bad_json"),
        ("/v1/backups", b'{"accept": "yes"}', 400, "bad_request"),
    ],
)
async def test_bad_vault_requests_get_clear_4xx(
    vault_api: tuple[Path, VaultService], path: str, payload: bytes, status: int, code: str
) -> None:
    sock, _ = vault_api
    got, _, body = await raw(sock, "POST", path, payload)
    assert got == status and error_of(body)["code"] == code


async def test_without_a_vault_the_routes_say_how_to_configure_one(short_tmp: Path) -> None:
    sock = short_tmp / "n.sock"
    server = await start_api_server(DrivenControl({"a": "healthy"}, critical={"a"}), sock)
    try:
        status, _, body = await raw(sock, "GET", "/v1/backups")
        assert status == 404 and "[backup] locations" in error_of(body)["message"]
    finally:
        await server.close()
