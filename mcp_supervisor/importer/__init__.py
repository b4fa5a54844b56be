"""The MCP clients' config files: read, turned into server descriptions, rendered as TOML.

What it is for: ``clients.py`` (pure: each client's format -> servers; literal secrets become
``${VAR}`` references), ``render.py`` (pure: -> TOML), ``discover.py`` (the clients' known paths),
``follow.py`` (``servers_from``: a client file's servers read at config load, root-safe).

What it may import: the standard library and json5 only, nothing else of ``mcp_supervisor``. It
sits in the foundation layer, below ``config``: ``servers_from`` makes a client file part of the
configuration, so the config loader reads through ``follow.py``.
"""
