"""The imperative shell: per-server runners (runner.py), the grid scheduler (schedule.py), the
executor of recovery actions (executor.py) and the Supervisor, the control API's backend
(supervisor.py). Import from the submodules; this package imports nothing so the pure parts load
without the SDK.

What it may import: every layer below it (``config``, ``events``, ``logging``, ``health``,
``probes``, ``spawn``, ``actuators``, ``vault``, ``history``, ``notify``, ``metrics``); never
``api``, ``web``, ``proxy``, ``cli``, ``guard`` or ``daemon``: the API reaches the runtime through
the protocol in ``api/control.py``, which the Supervisor implements without importing it.
"""
