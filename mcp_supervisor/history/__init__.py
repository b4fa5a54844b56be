"""The record: what happened to every server, kept in SQLite, and the reliability numbers from it.

Pure parts: ``metrics``, ``patterns``, ``report`` (and ``ingest``, which decides rows without I/O);
the shell: ``store`` (the SQLite file, one writer thread) and ``service`` (the daemon service).
"""
