"""The device grant (RFC 8628) with ``authlib``: the one person step on a headless host.

Why authlib: the MCP SDK has no device grant, and authlib is the well-kept standard OAuth client
(its ``AsyncOAuth2Client`` runs on the same ``httpx2`` as the SDK). The device authorization
request and the polling of the token endpoint (``authorization_pending`` → wait, ``slow_down`` →
wait 5 s longer, RFC 8628 §3.5) are authlib's; the person is shown the verification URL and the
user code, never a token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from mcp.shared.auth import OAuthClientInformationFull

from mcp_supervisor.auth.exchange import GrantProblem


class DeviceLoginError(GrantProblem):
    pass


async def device_login(client_info: OAuthClientInformationFull, device_endpoint: str, token_endpoint: str,
                       scope: str | None, resource: str, say: Callable[[str], None], timeout: float,
                       wait: float) -> dict[str, Any]:
    """Ask for a device code, show the URL and code, poll until the person approves (or ``wait``)."""
    method = client_info.token_endpoint_auth_method or ("client_secret_basic" if client_info.client_secret else "none")
    async with AsyncOAuth2Client(client_id=client_info.client_id, client_secret=client_info.client_secret,
                                 token_endpoint_auth_method=method, scope=scope, timeout=timeout) as client:
        body = {"scope": scope, "resource": resource} if scope else {"resource": resource}
        answer = await client.request("POST", device_endpoint, data=body, withhold_token=True,
                                      auth=client.client_auth(method))
        try:
            grant = answer.json()
        except ValueError:
            grant = {}
        if answer.status_code != 200 or "device_code" not in grant:
            code = grant.get("error", f"HTTP {answer.status_code}") if isinstance(grant, dict) else answer.status_code
            why = str(grant.get("error_description", ""))[:120] if isinstance(grant, dict) else ""
            raise DeviceLoginError(f"the device authorization endpoint {device_endpoint} refused ({code}"
                                   f"{': ' + why if why else ''})")
        url = grant.get("verification_uri_complete") or grant.get("verification_uri")
        say(f"To sign in, open {grant.get('verification_uri')} and enter the code {grant.get('user_code')}")
        if grant.get("verification_uri_complete"):
            say(f"(or open {url} directly)")
        interval = float(grant.get("interval") or 5)
        deadline = time.monotonic() + min(float(grant.get("expires_in") or wait), wait)
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            try:
                token: dict[str, Any] = dict(await client.fetch_token(
                    token_endpoint, grant_type=DEVICE_CODE_GRANT_TYPE, device_code=grant["device_code"],
                    resource=resource))
                return token
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                raise DeviceLoginError(f"the sign-in was not completed ({exc.error}); run the login again") from None
        raise DeviceLoginError("the code was not approved in time; run the login again")
