"""The read-only status page on a loopback TCP address (``[web] listen``).

What it is for: ``summary.py`` (pure: status + record -> the page's JSON), ``record.py`` (the
record's figures for the page), ``server.py`` (aiohttp: the page, its JSON and its event pings;
GET only), ``static/`` (HTML, CSS, JS; no CDN, no build step).

What it may import: everything below the surfaces layer (``runtime``, ``history``, ``health``,
``config``, ``events``, ...); never ``cli``, ``guard`` or ``daemon``.
"""
