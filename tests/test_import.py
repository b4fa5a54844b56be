"""`supervisorctl-mcp import`: every client's documented format, secrets lifted out, all or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mcp_supervisor.config import parse_config
from mcp_supervisor.importer.clients import ClientConfigError, parse_client_config
from mcp_supervisor.importer.render import render_config

CLI = [sys.executable, "-m", "mcp_supervisor.cli.main"]
CANARY = "ghp_CANARY0123456789abcdefCANARY"


def run_cli(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd or home, timeout=60)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def client_home(root: Path) -> tuple[Path, Path]:
    """A home with one config of every client, and a project with the project-level ones."""
    home, project = root / "home", root / "work" / "analysis"
    write(home / ".cursor" / "mcp.json", json.dumps({"mcpServers": {
        "jira": {"command": "npx", "args": ["-y", "mcp-atlassian"],
                 "env": {"JIRA_API_TOKEN": CANARY, "JIRA_URL": "https://acme.atlassian.net"}},
        "gh": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": "${env:GITHUB_TOKEN}"}},
    }}))
    write(home / ".config" / "Claude" / "claude_desktop_config.json", json.dumps({
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]}},
    }))
    write(home / ".claude.json", json.dumps({
        "numStartups": 12,
        "mcpServers": {"time": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time"]}},
        "projects": {
            str(project): {"allowedTools": [], "mcpServers": {
                "gitlab": {"type": "http", "url": "https://gitlab.acme.io/api/v4/mcp",
                           "headers": {"Authorization": f"Bearer {CANARY}"}},
            }},
            "/srv/other": {"mcpServers": {}},
        },
    }))
    write(home / ".codeium" / "windsurf" / "mcp_config.json", json.dumps({"mcpServers": {
        "crawler": {"serverUrl": f"https://crawl.acme.io/sse?api_key={CANARY}"},
    }}))
    write(project / ".mcp.json", json.dumps({"mcpServers": {
        "sheets": {"command": "uvx", "args": ["mcp-google-sheets", "--token", CANARY], "env": {"LOG": "info"}},
    }}))
    write(project / ".vscode" / "mcp.json", """{
  // VS Code keeps comments and trailing commas
  "inputs": [{"type": "promptString", "id": "pg-pass", "description": "Postgres password", "password": true}],
  "servers": {
    "pg": {"type": "stdio", "command": "pg-mcp", "args": ["--sep=,]", "${workspaceFolder}/db"],
           "env": {"PGPASSWORD": "${input:pg-pass}"},},
    "docs": {"type": "sse", "url": "http://127.0.0.1:9/sse", "headers": {"X-Api-Key": "k-123456",},},
  },
}""")
    return home, project


def test_every_client_is_imported_and_no_secret_is_copied(tmp_path: Path) -> None:
    home, project = client_home(tmp_path)
    result = run_cli("import", "--dry-run", "--home", str(home), "--project", str(project), home=home)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert CANARY not in text and CANARY not in result.stderr and "k-123456" not in text
    config = tomllib.loads(text)
    servers = {s["name"]: s for s in config["servers"]}
    assert set(servers) == {"jira", "gh", "memory", "time", "gitlab", "crawler", "sheets", "pg", "docs"}
    assert servers["jira"]["env"] == {"JIRA_API_TOKEN": "${JIRA_API_TOKEN}", "JIRA_URL": "https://acme.atlassian.net"}
    assert servers["gh"]["env"] == {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}  # Cursor's ${env:X} -> ${X}
    assert servers["gitlab"]["transport"] == "http"
    assert servers["gitlab"]["headers"]["Authorization"] == "Bearer ${GITLAB_TOKEN}"
    assert servers["crawler"]["transport"] == "sse" and "${CRAWLER_API_KEY}" in servers["crawler"]["url"]
    assert servers["sheets"]["args"] == ["mcp-google-sheets", "--token", "${SHEETS_TOKEN}"]
    assert servers["pg"]["args"] == ["--sep=,]", f"{project}/db"]  # JSONC strings untouched
    assert servers["pg"]["env"] == {"PGPASSWORD": "${MCP_INPUT_PG_PASS}"}
    assert servers["docs"]["headers"] == {"X-Api-Key": "${DOCS_X_API_KEY}"}
    watched = {c["path"]: c for c in config["configs"]}
    assert str(home / ".claude.json") in watched and str(project / ".vscode" / "mcp.json") in watched
    assert all(c["format"] == "mcp-client-json" for c in watched.values())
    # the user is told which variables to set, and where each came from (never the value)
    for variable in ("JIRA_API_TOKEN", "GITLAB_TOKEN", "CRAWLER_API_KEY", "SHEETS_TOKEN", "MCP_INPUT_PG_PASS"):
        assert f"set {variable}" in result.stderr
    # what it wrote loads as the daemon would load it (unset variables are per-server problems)
    loaded = parse_config(text, tmp_path / "imported.toml", environ={})
    assert {s.name for s in loaded.servers} == set(servers)
    assert "JIRA_API_TOKEN" in next(s for s in loaded.servers if s.name == "jira").missing_env


def test_output_is_written_atomically_and_check_config_accepts_it(tmp_path: Path) -> None:
    home, project = client_home(tmp_path)
    output = tmp_path / "etc" / "mcp-supervisor.toml"
    result = run_cli("import", "--home", str(home), "--project", str(project), "--output", str(output), home=home)
    assert result.returncode == 0, result.stderr
    assert CANARY not in output.read_text()
    assert [p.name for p in output.parent.iterdir()] == ["mcp-supervisor.toml"]  # no temp file left
    check = run_cli("check-config", str(output), home=home)
    assert check.returncode == 0, check.stderr
    # a second import does not silently replace a file the user may have edited
    again = run_cli("import", "--home", str(home), "--project", str(project), "--output", str(output), home=home)
    assert again.returncode == 1 and "--force" in again.stderr


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("cut.json", '{"mcpServers": {"a": {"command": "x"', "not valid JSON"),
        ("list.json", "[1, 2]", "expected a JSON object"),
        ("shape.json", '{"mcpServers": ["a"]}', "'mcpServers' must be an object"),
        ("empty-entry.json", '{"mcpServers": {"a": {"args": ["x"]}}}', "neither 'command'"),
        ("bad-env.json", '{"mcpServers": {"a": {"command": "x", "env": ["A=1"]}}}', "env must be an object"),
    ],
)
def test_a_malformed_client_config_writes_nothing(tmp_path: Path, name: str, text: str, reason: str) -> None:
    good = write(tmp_path / "good" / ".mcp.json", '{"mcpServers": {"ok": {"command": "true"}}}')
    bad = write(tmp_path / name, text)
    output = tmp_path / "out.toml"
    result = run_cli("import", str(good), str(bad), "--output", str(output), home=tmp_path)
    assert result.returncode == 1
    assert str(bad) in result.stderr and reason in result.stderr and "nothing was written" in result.stderr
    assert not output.exists()


def test_no_client_config_found_says_where_it_looked(tmp_path: Path) -> None:
    result = run_cli("import", "--dry-run", "--home", str(tmp_path), "--project", str(tmp_path), home=tmp_path)
    assert result.returncode == 1 and str(tmp_path) in result.stderr and "Cursor" in result.stderr


def test_same_variable_name_with_two_values_gets_two_variables(tmp_path: Path) -> None:
    used: dict[str, str] = {}
    one = parse_client_config('{"mcpServers": {"a": {"command": "x", "env": {"API_TOKEN": "one-secret"}}}}',
                              tmp_path / "a.json", used_variables=used)
    two = parse_client_config('{"mcpServers": {"b": {"command": "x", "env": {"API_TOKEN": "two-secret"}}}}',
                              tmp_path / "b.json", used_variables=used)
    assert one.servers[0].env == (("API_TOKEN", "${API_TOKEN}"),)
    assert two.servers[0].env == (("API_TOKEN", "${B_API_TOKEN}"),)
    text = render_config([one, two])
    assert "one-secret" not in text and "two-secret" not in text


def test_names_clash_across_files_become_unique(tmp_path: Path) -> None:
    one = parse_client_config('{"mcpServers": {"memory": {"command": "x"}}}', tmp_path / ".cursor" / "mcp.json")
    two = parse_client_config('{"mcpServers": {"memory": {"command": "y"}}}', tmp_path / ".mcp.json")
    config = tomllib.loads(render_config([one, two]))
    assert [s["name"] for s in config["servers"]] == ["memory", "mcp-json-memory"]


def test_userinfo_password_is_lifted_out(tmp_path: Path) -> None:
    result = parse_client_config(f'{{"mcpServers": {{"s": {{"url": "https://bot:{CANARY}@mcp.acme.io/mcp"}}}}}}',
                                 tmp_path / ".mcp.json")
    assert result.servers[0].url == "https://bot:${S_PASSWORD}@mcp.acme.io/mcp"


def test_client_config_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match=str(tmp_path / "x.json")):
        parse_client_config('{"mcpServers": 3}', tmp_path / "x.json")
