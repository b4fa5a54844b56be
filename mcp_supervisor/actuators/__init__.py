"""The hands that act on a server: a managed process and a Docker container.

What it is for: ``process.py`` (``ManagedProcess``: a supervisord-style program in its own process
group, stopped TERM-then-KILL, output in rotating logs), ``process_env.py`` (the identity and the
clean environment it runs with) and ``container.py`` (``DockerActuator``: inspect, follow the
engine's events, restart, recreate). The runtime decides *when*; these only know *how*.

What it may import: the layers below it (``config``, ``events``, ``logging``, ``redact``,
``health``) and its own layer's ``spawn`` (the one way a child starts); never ``runtime``, ``api``,
``web``, ``proxy``, ``cli`` or ``guard`` (docs/architecture.md "Layers", tests/test_layers.py).
"""
