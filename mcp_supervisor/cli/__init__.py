"""``supervisorctl-mcp``: the operator's commands, their rendering, the dashboard.

What it is for: ``main.py`` (the parser, the built-in commands, exit codes), ``common.py`` (what
every command module shares: socket, config, client, JSON output, common options), plug-in command
modules ``*_commands.py`` / ``run_command.py`` (loaded by name only when their command may be
named), ``render.py`` (tables and lines), ``guardian.py`` (``run -- CMD``), ``dashboard.py``.

What it may import: anything in the package (it is the top layer, with ``guard`` and ``daemon``),
but lazily: ``ready`` and ``status`` must cost little more than the interpreter's start, so
pydantic, rich, asyncio and aiohttp load inside the commands that use them. Nothing imports
``cli/main.py``: a command module takes shared pieces from ``cli/common.py``.
"""
