"""What a job is told about the proxy (pure): one URL variable per server, and the token file.

Why variables and not a file: ``run -- CMD`` already hands the job its context in the
environment (``MCP_SUPERVISOR_SOCKET``, ``MCP_SUPERVISOR_FALLBACK``); a job reads
``MCP_SUPERVISOR_PROXY_URL_GITLAB`` instead of the server's own URL and keeps working across
restarts. The token itself is never put in the environment (children and /proc would see it):
only the path of the file that holds it.
"""

from __future__ import annotations

import re
from typing import Any

URL_PREFIX = "MCP_SUPERVISOR_PROXY_URL_"
TOKEN_FILE_VAR = "MCP_SUPERVISOR_PROXY_TOKEN_FILE"


def variable_name(server: str) -> str:
    """``gitlab-prod.eu`` -> ``MCP_SUPERVISOR_PROXY_URL_GITLAB_PROD_EU``."""
    return URL_PREFIX + re.sub(r"[^A-Z0-9]", "_", server.upper())


def server_url(listen: str, server: str) -> str:
    return f"http://{listen}/servers/{server}/mcp"


def proxy_environment(info: dict[str, Any]) -> dict[str, str]:
    """From the daemon's ``GET /v1/proxy`` answer; empty when the proxy does not listen."""
    listen = info.get("listen")
    if not isinstance(listen, str) or not listen:
        return {}
    env = {variable_name(name): server_url(listen, name) for name in info.get("servers", [])}
    if info.get("token_file"):
        env[TOKEN_FILE_VAR] = str(info["token_file"])
    return env


def restart_sentences(events: list[dict[str, Any]]) -> list[str]:
    """The run report's lines about the proxy: "3 calls held 0.6 s during the pay restart, 0 failed"."""
    lines = []
    for event in events:
        if event.get("kind") != "proxy" or event.get("event") != "restored":
            continue
        held, failed, retried = event.get("held", 0), event.get("failed", 0), event.get("retried", 0)
        seconds = float(event.get("max_held_s") or 0.0)
        lines.append(f"{held} call{'s' if held != 1 else ''} held {seconds:.1f} s during the "
                     f"{event.get('server')} restart ({retried} retried), {failed} failed")
    return lines
