"""The imperative shell: per-server runners (runner.py), the grid scheduler (schedule.py), the
executor of recovery actions (executor.py) and the Supervisor, the control API's backend
(supervisor.py). Import from the submodules; this package imports nothing so the pure parts load
without the SDK."""
