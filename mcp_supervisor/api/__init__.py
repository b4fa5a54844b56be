"""The control API: aiohttp on the daemon's Unix socket (``/v1`` JSON and SSE) and its small client.

What it is for: ``server.py`` (the routes, ``start_api_server``), ``middleware.py`` (peer check,
bounded bodies, errors as JSON, redaction), ``unix_socket.py`` (the socket and its directory),
``app_keys.py`` (where the daemon's services hang on the app), ``history_routes.py`` and
``vault_routes.py`` (the record and the vault over the API), ``control.py`` (the protocol the API
needs from the supervisor, so routes never see runtime classes), ``client.py`` (a stdlib-only
client for the CLI, the guardian and Python jobs: transport only).

What it may import: everything below the surfaces layer (``runtime`` and what it stands on:
``history``, ``vault``, ``health``, ``config``, ``events``, ...); never ``cli``, ``guard`` or
``daemon``. ``client.py`` imports nothing outside the standard library and ``config`` (a job
imports it; aiohttp and pydantic must not load with it).
"""
