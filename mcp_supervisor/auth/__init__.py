"""OAuth for http/sse servers: one owner per server obtains and renews its access token.

Why in the daemon (services layer, beside ``probes``): a headless job cannot wait for a person's
browser, so the daemon is the single owner of each token. Machine grants (``client_credentials``,
``private_key_jwt``) are obtained with the installed SDK's providers (``mcp.client.auth``:
discovery by RFC 9728 / RFC 8414, the RFC 8707 ``resource`` parameter); person grants start with
one ``supervisorctl-mcp login`` (the device grant with ``authlib``, or authorization code + PKCE
with the SDK's provider) and are renewed with rotating refresh tokens. Renewal is ahead of expiry
(80 % or ``refresh_before``), one at a time per server across every process (a lock file, the
store re-read under it), the new refresh token stored before the new access token is used. Tokens
are kept AES-256-GCM encrypted under ``state_dir/auth/`` and handed only to the probes' and the
proxy's HTTP requests (``Authorization: Bearer``); never in logs, events or API answers.
Modules: ``store`` (the encrypted record, the SDK's TokenStorage), ``lock`` (the cross-process
lock), ``discovery``, ``machine`` (the SDK's machine-grant providers), ``exchange`` (a refresh and
the sentence for every refusal), ``owner`` (one server's token), ``device`` and ``login`` (the
person's one step), ``service`` (owners kept in step with the config), ``registry`` (what the
probes, the proxy and ``status`` read).

What it may import: the layers below it (``config``, ``events``, ``logging``, ``redact``,
``health``), ``vault.crypto`` / ``vault.fsutil`` of its own layer, the MCP SDK's
``mcp.client.auth``, ``authlib`` (the device grant) and aiohttp (``login``'s loopback redirect);
never ``probes`` (they read ``auth.registry``, not the other way round), ``runtime``, ``api``,
``web``, ``proxy``, ``cli`` or ``guard``.
"""
