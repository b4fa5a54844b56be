"""mcp-supervisor: keeps MCP servers alive for an unattended daily job."""

__version__ = "0.1.0"
