"""``check-config`` warnings about notification secrets written inline. Pure: raw TOML in, text out.

Why a warning and not an error: an inline webhook URL works, but the config file then is a secret
(backups, screenshots, a paste in a support thread). ``${SLACK_WEBHOOK_URL}`` or ``${file:...}``
keeps the secret out of it; the daemon's redactor masks it either way.
"""

from __future__ import annotations

from typing import Any


def _inline(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "${" not in value


def inline_secret_warnings(raw: dict[str, Any]) -> list[str]:
    warnings = []
    notify = _table(raw, "notify")
    slack = _table(notify, "slack")
    for key, env in (("webhook_url", "SLACK_WEBHOOK_URL"), ("token", "SLACK_BOT_TOKEN")):
        if _inline(slack.get(key)):
            warnings.append(
                f"notify.slack.{key}: the secret is written inline; use \"${{{env}}}\" (set in the daemon's "
                f"environment) or \"${{file:/etc/mcp-supervisor/{key}}}\" so the config file holds no secret"
            )
    legacy = _table(raw, "slack")
    if _inline(legacy.get("token")):
        warnings.append('slack.token: the secret is written inline; use "${SLACK_BOT_TOKEN}" or "${file:...}"')
    urls = _table(notify, "apprise").get("urls")
    urls = urls if isinstance(urls, list) else []
    for index, url in enumerate(urls):
        if _inline(url) and _has_credentials(url):
            warnings.append(
                f"notify.apprise.urls[{index}]: this URL carries credentials inline; use \"${{NAME}}\" or "
                "\"${file:...}\" for it"
            )
    return warnings


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _has_credentials(url: str) -> bool:
    """``scheme://user:pass@host`` or a token-like path segment (webhook IDs and keys)."""
    _, sep, rest = url.partition("://")
    if not sep:
        return False
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        return True
    segments = [s for s in rest.split("/")[1:] if s]
    return any(len(s) >= 16 and any(c.isdigit() for c in s) and any(c.isalpha() for c in s) for s in segments)
