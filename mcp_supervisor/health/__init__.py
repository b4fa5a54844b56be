"""The functional core: each server's health machine, its policy and its vocabulary.

What it is for: deciding, from probe results, action outcomes, timers and operator commands, what
state a server is in and what to do next, as values (``Action``) the imperative shell performs.
``model.py`` is the shared vocabulary (states, failure classes, probe results, actions),
``policy.py`` what a server's config allows (thresholds, ladder, backoff), ``transitions.py`` the
table of allowed moves, ``incident.py`` the incident and recovery-budget record, ``machine.py``
the transition logic, ``tokens.py`` token-expiry arithmetic.

What it may import: the standard library and ``mcp_supervisor.config`` only. No clock reads, no
I/O, no logging, no asyncio: ``now`` is passed in, so a server's whole behaviour can be driven by
tables and by hypothesis with a simulated clock (tests/test_health_*.py).

The lifecycle (docs/architecture.md has the full table):

    starting -> healthy <-> degraded -> failed -> recovering -> healthy
                                          |  |       |  ^
                                          |  +---> backoff      (flapping / failed attempts)
                                          v          |
                                    needs_human <----+----> fallback   (alert levels, not stops)

* One failed probe is not an outage: ``failure_threshold`` consecutive failures make ``failed``;
  failures during ``start_period`` do not count (Kubernetes startup probes).
* A recovery that brings the server back is a success. A server that fails again within
  ``stable_after`` of its last recovery is *flapping*: each such failure waits a growing, jittered,
  capped delay before the next restart (Kubernetes' CrashLoopBackOff). ``stable_after`` of
  continuous health resets it.
* Healing never stops for a server a restart can bring back. When ``max_attempts`` within
  ``window`` are used up a person is alerted once for the incident (``needs_human``, or
  ``fallback`` when one is configured) and the restarts go on at the backoff cap; those two states
  are alert levels: the server is still probed, and a success heals it and sends the resolution.
* ``auth`` and ``config`` failures are never restarted (a restart cannot renew a token); they are
  re-probed, so a renewed token or a fixed file heals them without a command.
* A failed COLD probe (a fresh spawn, the MCP client's real path) is a failure on its own: while
  one stands, a warm copy answering proves nothing and counts neither way; only a cold success
  clears it (``wants_cold`` tells the shell to check cold on every tick meanwhile).
* One alert per incident, one resolution (Alertmanager-style grouping). While a server flaps the
  resolution waits for ``stable_after`` of health, so a crash loop cannot send alert storms.
"""
