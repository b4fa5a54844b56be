"""Functional core: the per-server health machine and its policies (no I/O, no clock reads)."""
