"""Where the MCP clients keep their configs on this machine (the user's and a project's)."""

from __future__ import annotations

from pathlib import Path


def known_locations(home: Path, project: Path | None) -> list[tuple[str, Path]]:
    """(client, path) pairs, user-level first; only the documented places of each client."""
    places = [
        ("cursor", home / ".cursor" / "mcp.json"),
        ("claude-desktop", home / ".config" / "Claude" / "claude_desktop_config.json"),
        ("claude-code", home / ".claude.json"),
        ("windsurf", home / ".codeium" / "windsurf" / "mcp_config.json"),
    ]
    if project is not None:
        places += [
            ("cursor", project / ".cursor" / "mcp.json"),
            ("mcp-json", project / ".mcp.json"),
            ("vscode", project / ".vscode" / "mcp.json"),
        ]
    seen: set[Path] = set()
    found: list[tuple[str, Path]] = []
    for client, path in places:
        if path in seen:
            continue
        seen.add(path)
        if path.is_file():
            found.append((client, path))
    return found
