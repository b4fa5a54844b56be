"""Pure validation of watched files: is this content something the MCP client can use?

Why server loss is judged apart from validity: MCP clients themselves rewrite their configs and
have been seen to drop the whole ``mcpServers`` block (Claude Code, Claude Desktop) while leaving
valid JSON, which is damage; a person deleting one server in an editor is not
(``judge_server_loss``).
"""

from __future__ import annotations

import io
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

import json5
from dotenv.parser import parse_stream

SERVER_MAP_KEYS = ("mcpServers", "servers")


@dataclass(frozen=True)
class Validation:
    ok: bool
    problems: tuple[str, ...] = ()
    servers: frozenset[str] = field(default_factory=frozenset)
    """mcp-client-json: the server names found (for the lost-entries check)."""
    server_key: str | None = None
    map_missing: bool = False
    """mcp-client-json: the server map is absent (the only problem when ``problems`` has one entry)."""


def parse_json(content: bytes, *, jsonc: bool) -> Any:
    """Strict JSON first (fast, and most files are); JSONC (comments, trailing commas) through ``json5``.

    Why a real parser: comment and trailing-comma handling by hand once edited string contents
    (``"--sep=,]"`` became ``"--sep=]"``); a tokenizer knows where strings are.
    """
    text = content.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if not jsonc:
            raise
    try:
        return json5.loads(text)
    except ValueError as exc:  # json5 reports "<string>:LINE Unexpected ... at column N"
        raise ValueError(f"not valid JSON: {str(exc).replace('<string>:', 'line ')}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None


def parse_dotenv(content: bytes) -> dict[str, str | None]:
    """KEY=VALUE lines as ``python-dotenv`` (what the tools that read them use) understands them."""
    values: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(content.decode("utf-8"))):
        if binding.error:
            raise ValueError(f"line {binding.original.line}: expected KEY=VALUE")
        if binding.key is not None:
            values[binding.key] = binding.value
    return values


def validate(fmt: str, content: bytes, required_keys: list[str] | tuple[str, ...] = ()) -> Validation:
    try:
        if fmt == "mcp-client-json":
            return _validate_client_json(content)
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
    except RecursionError:
        return Validation(False, ("nested too deeply to be a config file",))
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


PROJECTS_KEY = "projects"
"""Claude Code's ``~/.claude.json`` keeps a server map per project: ``projects[<path>].mcpServers``."""


def project_server_maps(data: Any) -> dict[str, Any]:
    """Claude Code: project path -> its ``mcpServers`` value (only projects that have the key)."""
    projects = data.get(PROJECTS_KEY) if isinstance(data, dict) else None
    if not isinstance(projects, dict):
        return {}
    return {str(p): v["mcpServers"] for p, v in projects.items() if isinstance(v, dict) and "mcpServers" in v}


def project_server_name(project: str, name: str) -> str:
    """How a per-project server is named in ``Validation.servers`` (and in events)."""
    return f"projects[{project}].{name}"


def _map_problems(where: str, servers: Any) -> list[str]:
    if not isinstance(servers, dict):
        return [f"'{where}' must be an object mapping server names to definitions"]
    problems = []
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            problems.append(f"{where}.{name}: expected an object")
        elif not any(isinstance(entry.get(f), str) and entry.get(f) for f in ("command", "url", "serverUrl")):
            problems.append(f"{where}.{name}: has neither 'command' nor 'url'")
    return problems


def _validate_client_json(content: bytes) -> Validation:
    data = parse_json(content, jsonc=True)
    if not isinstance(data, dict):
        return Validation(False, ("expected a JSON object with an 'mcpServers' (or VS Code 'servers') object",))
    projects = project_server_maps(data)
    problems: list[str] = []
    names: set[str] = set()
    for project, servers in projects.items():
        problems += _map_problems(f"projects[{project!r}].mcpServers", servers)
        if isinstance(servers, dict):
            names |= {project_server_name(project, n) for n in servers}
    key = next((k for k in SERVER_MAP_KEYS if k in data), None)
    if key is None:
        if isinstance(data.get(PROJECTS_KEY), dict):  # ~/.claude.json may hold per-project maps only
            return Validation(not problems, tuple(problems), frozenset(names), PROJECTS_KEY)
        return Validation(
            False, ("no 'mcpServers' (or VS Code 'servers') object: the server map is gone",), map_missing=True
        )
    servers = data[key]
    if not isinstance(servers, dict):
        return Validation(False, (f"'{key}' must be an object mapping server names to definitions",))
    problems = _map_problems(key, servers) + problems
    return Validation(not problems, tuple(problems), frozenset(servers) | names, key)


def _map_of(name: str) -> str:
    """Which map a name in ``Validation.servers`` belongs to: '' (top level) or 'projects[<path>]'."""
    if name.startswith("projects[") and "]." in name:
        return name[: name.rindex("].") + 1]
    return ""


ServerLossPolicy = Literal["restore", "alert", "ignore"]


@dataclass(frozen=True)
class LossVerdict:
    action: Literal["keep", "restore", "alert"]
    """keep: nothing lost (or loss ignored); restore: treat as damage; alert: an edit, say so."""
    lost: tuple[str, ...] = ()
    reason: str = ""


def judge_server_loss(
    previous: frozenset[str] | None, current: Validation, policy: ServerLossPolicy | None
) -> LossVerdict | None:
    """How a person would read a server map that shrank; None when the file is damaged otherwise.

    A map that vanished or became empty is what MCP clients do to their own files when they
    rewrite them badly (Claude Desktop, Claude Code): damage, restore it. A few entries gone while
    others remain is what a person does in an editor: keep it, back it up, and say how to undo.
    ``on_server_loss`` overrides: "restore" every loss, "alert" without restoring, "ignore".
    """
    if not current.ok and not (current.map_missing and len(current.problems) == 1):
        return None
    lost = tuple(sorted(previous - current.servers)) if previous else ()
    # a map (the top-level one, or one project's in ~/.claude.json) that had servers and has none now
    had = {_map_of(n) for n in previous or ()}
    has = {_map_of(n) for n in current.servers}
    wiped = current.map_missing or (bool(previous) and not current.servers) or bool(had - has)
    if not lost and (not current.map_missing or previous == frozenset()):  # an empty map was accepted
        return LossVerdict("keep")
    if policy == "ignore":
        return LossVerdict("keep", lost, "server loss ignored (on_server_loss = \"ignore\")")
    what = "the server map is gone" if current.map_missing else f"server(s) {', '.join(lost)} removed"
    if policy == "restore" or (policy is None and wiped):
        return LossVerdict("restore", lost, what)
    return LossVerdict("alert", lost, what)


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
    if not isinstance(data, dict) or not isinstance(good, dict) or (key not in good and key != PROJECTS_KEY):
        return None
    rest = {k: v for k, v in data.items() if k not in SERVER_MAP_KEYS}
    if not rest or rest == {k: v for k, v in good.items() if k not in SERVER_MAP_KEYS}:
        return None
    if key in good and key in SERVER_MAP_KEYS:
        mine = data.get(key)
        # entries the app or the user added since the backup stay; the backup's come back
        data[key] = {**good[key], **mine} if isinstance(mine, dict) and isinstance(good[key], dict) else good[key]
    _put_back_wiped_projects(data, good)
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _put_back_wiped_projects(data: dict[str, Any], good: dict[str, Any]) -> None:
    """Claude Code: a project whose map vanished or emptied gets the backup's map back, that project
    only; every other project and key stays as the app wrote it."""
    current = project_server_maps(data)
    for project, servers in project_server_maps(good).items():
        if not (isinstance(servers, dict) and servers) or current.get(project):
            continue
        projects = data.setdefault(PROJECTS_KEY, {})
        if not isinstance(projects, dict):
            return
        entry = projects.get(project)
        if isinstance(entry, dict):
            entry["mcpServers"] = servers
        else:
            projects[project] = good[PROJECTS_KEY][project]
