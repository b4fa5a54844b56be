"""The record: what happened to every server, kept in SQLite, and the reliability numbers from it.

What it is for: pure parts ``metrics``, ``patterns``, ``report`` (and ``ingest``, which decides
rows without I/O); the shell: ``store`` (the SQLite file, one writer thread) and ``service`` (the
daemon service that subscribes to the bus, batches, prunes and answers the API).

What it may import: the layers below it (``config``, ``events``, ``logging``, ``health``) and
its own layer; never ``runtime`` (the daemon hands it the bus), ``api`` or ``web`` (they read it).
"""
