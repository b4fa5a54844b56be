"""The typed keys under which the daemon's services hang on the control API's aiohttp app.

Why a module of their own: the server (``server.py``) puts the services there and the route
modules (``history_routes.py``, ``vault_routes.py``) read them; with the keys below both, neither
imports the other to find them (no import circle between the server and its routes).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mcp_supervisor.api.control import SupervisorControl

CONTROL_KEY: web.AppKey[SupervisorControl] = web.AppKey("control", SupervisorControl)
"""The running supervisor (status, readiness, commands, the event bus)."""
VAULT_KEY: web.AppKey[Any] = web.AppKey("vault", object)
"""The vault service, or absent when the daemon runs without ``[backup]``."""
