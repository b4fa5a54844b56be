"""The record's tables. Why these and not one event log: uptime and MTTR need *intervals* (a state
from-to), recoveries need their outcome and duration, and probes are far too many to keep one
row each (they are rolled up per server per minute, then per hour)."""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- the daemon's own life: time outside every run is "unknown", never "healthy"
CREATE TABLE IF NOT EXISTS daemon_runs (
    id INTEGER PRIMARY KEY,
    pid INTEGER,
    began REAL NOT NULL,
    heartbeat REAL NOT NULL,
    ended REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS intervals (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    state TEXT NOT NULL,
    began REAL NOT NULL,
    ended REAL,
    failure_class TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS intervals_open ON intervals (server) WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS intervals_began ON intervals (began);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    rung TEXT,
    attempt INTEGER,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts (started);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    server TEXT,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    detail TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
-- span 60: per minute; span 3600: per hour (older minutes folded in by retention)
CREATE TABLE IF NOT EXISTS probes (
    server TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    span INTEGER NOT NULL,
    count INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    classes TEXT,
    p50 REAL,
    p95 REAL,
    max REAL,
    PRIMARY KEY (server, bucket, span)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    command TEXT,
    started REAL,
    finished REAL,
    exit_code INTEGER,
    report TEXT
);
"""
