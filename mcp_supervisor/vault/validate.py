"""Pure validation of watched files: is this content something the MCP client can use?

Why "lost entries" counts as damage: MCP clients themselves rewrite their configs and have been
seen to drop the whole ``mcpServers`` block (Claude Code, Claude Desktop) while leaving valid JSON.
So a server map that lost entries compared with the last backup is treated as corruption unless
the user confirms the removal (``supervisorctl-mcp backup --accept CONFIG``).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

SERVER_MAP_KEYS = ("mcpServers", "servers")


@dataclass(frozen=True)
class Validation:
    ok: bool
    problems: tuple[str, ...] = ()
    servers: frozenset[str] = field(default_factory=frozenset)
    """mcp-client-json: the server names found (for the lost-entries check)."""
    server_key: str | None = None


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's JSONC) -> strict JSON; strings untouched."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def parse_json(content: bytes, *, jsonc: bool) -> Any:
    text = content.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if not jsonc:
            raise
    return json.loads(strip_jsonc(text))


def parse_dotenv(content: bytes) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(content.decode("utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
            raise ValueError(f"line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def validate(
    fmt: str,
    content: bytes,
    required_keys: list[str] | tuple[str, ...] = (),
    previous_servers: frozenset[str] | None = None,
) -> Validation:
    try:
        if fmt == "mcp-client-json":
            return _validate_client_json(content, previous_servers)
        if fmt == "json":
            data = parse_json(content, jsonc=False)
            return _required(data if isinstance(data, dict) else {}, required_keys, "JSON object")
        if fmt == "toml":
            return _required(tomllib.loads(content.decode("utf-8")), required_keys, "TOML table")
        if fmt == "dotenv":
            values = parse_dotenv(content)
            missing = [k for k in required_keys if not values.get(k)]
            if missing:
                return Validation(False, tuple(f"required key {k} is missing or empty" for k in missing))
            return Validation(True)
    except UnicodeDecodeError:
        return Validation(False, ("not UTF-8 text",))
    except json.JSONDecodeError as exc:
        return Validation(False, (f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",))
    except tomllib.TOMLDecodeError as exc:
        return Validation(False, (f"not valid TOML: {exc}",))
    except ValueError as exc:
        return Validation(False, (str(exc),))
    return Validation(False, (f"unknown format {fmt!r}",))


def _required(data: dict[str, Any], required_keys: list[str] | tuple[str, ...], what: str) -> Validation:
    if not isinstance(data, dict):
        return Validation(False, (f"expected a {what}",))
    missing = [k for k in required_keys if k not in data]
    if missing:
        return Validation(False, tuple(f"required key {k!r} is missing" for k in missing))
    return Validation(True)


def _validate_client_json(content: bytes, previous_servers: frozenset[str] | None) -> Validation:
    data = parse_json(content, jsonc=True)
    if not isinstance(data, dict):
        return Validation(False, ("expected a JSON object with an 'mcpServers' (or VS Code 'servers') object",))
    key = next((k for k in SERVER_MAP_KEYS if k in data), None)
    if key is None:
        return Validation(False, ("no 'mcpServers' (or VS Code 'servers') object: the server map is gone",))
    servers = data[key]
    if not isinstance(servers, dict):
        return Validation(False, (f"'{key}' must be an object mapping server names to definitions",))
    problems = []
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            problems.append(f"{key}.{name}: expected an object")
        elif not any(isinstance(entry.get(f), str) and entry.get(f) for f in ("command", "url", "serverUrl")):
            problems.append(f"{key}.{name}: has neither 'command' nor 'url'")
    names = frozenset(servers)
    if previous_servers:
        lost = sorted(previous_servers - names)
        if lost:
            problems.append(
                f"'{key}' lost server(s) {', '.join(lost)} since the last backup "
                "(if you removed them on purpose: supervisorctl-mcp backup --accept)"
            )
    return Validation(not problems, tuple(problems), names, key)


def merge_server_map(current: bytes, restored: bytes, key: str) -> bytes | None:
    """Put the backup's server map back into a file that is otherwise fine (the app owns the rest).

    Returns None when the whole file should be restored instead: ``current`` is not a JSON object,
    or it holds nothing of the app's own beyond the server map, or the same as the backup (then a
    byte-identical restore loses nothing).
    """
    try:
        data = parse_json(current, jsonc=True)
        good = parse_json(restored, jsonc=True)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(good, dict) or key not in good:
        return None
    rest = {k: v for k, v in data.items() if k not in SERVER_MAP_KEYS}
    if not rest or rest == {k: v for k, v in good.items() if k not in SERVER_MAP_KEYS}:
        return None
    data[key] = good[key]
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
