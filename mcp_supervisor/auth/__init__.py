"""OAuth for http/sse servers: one owner per server obtains and renews its access token.

Why in the daemon (services layer, beside ``probes``): a headless job cannot wait for a person's
browser, so the daemon is the single owner of each token. It obtains it with the installed SDK's
client-credentials provider (``mcp.client.auth``: discovery by RFC 9728 / RFC 8414, the RFC 8707
``resource`` parameter), renews it at 80 % of its lifetime with one request in flight per server,
keeps it AES-256-GCM encrypted under ``state_dir/auth/`` and hands it only to the probes' HTTP
requests (``Authorization: Bearer``). It never appears in logs, events or API answers; ``status``
shows the auth type and the expiry. Modules: ``store`` (the encrypted TokenStorage), ``owner``
(one server's token), ``service`` (owners kept in step with the config), ``registry`` (what the
probes and ``status`` read).

What it may import: the layers below it (``config``, ``events``, ``logging``, ``redact``,
``health``), ``vault.crypto`` of its own layer (the AES-256-GCM primitives and key) and the MCP SDK's
``mcp.client.auth``; never ``probes`` (they read ``auth.registry``, not the other way round),
``runtime``, ``api``, ``web``, ``proxy``, ``cli`` or ``guard``.
"""
