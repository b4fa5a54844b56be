"""The vault: encrypted, verified copies of the MCP clients' config files, and their restore.

What it is for: ``crypto.py`` (AES-256-GCM, keys), ``snapshots.py`` (content-addressed blobs and
manifests in each location), ``retention.py`` and ``validate.py`` (pure), ``fsutil.py``/``safefs.py``/
``placement.py`` (root-safe file operations in the daemon's and in users' folders), ``locks.py``,
``watcher.py`` (inotify), ``service.py`` (``VaultService``: the async facade the daemon, the API
and the CLI use).

What it may import: the layers below it (``config``, ``logging``, ``redact``, ``events``,
``health``) and its own layer; never ``runtime``, ``api``, ``web``, ``cli`` or ``guard``.
"""
