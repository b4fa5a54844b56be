"""Telling a person: incidents grouped into alerts, a durable outbox, Slack and apprise channels.

What it is for: ``incidents.py`` (pure: events -> notifications per incident), ``render.py`` and
``advice.py`` (pure: the words and the fix), ``policy.py``/``checks.py`` (pure: retry backoff,
quiet hours, config warnings), ``outbox.py`` (SQLite: nothing is lost), ``channels.py`` (the
senders), ``service.py`` (the daemon service: intake and delivery).

What it may import: the layers below it (``config``, ``events``, ``logging``, ``redact``,
``health``) and its own layer; never ``runtime``, ``api``, ``web``, ``cli`` or ``guard``.
"""
