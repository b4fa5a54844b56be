"""Real MCP servers for tests: good ones built with the official SDK and misbehaving ones."""
