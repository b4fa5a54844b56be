"""Fingerprinting a 200-tool ``tools/list`` (probes/contracts.py): CPU per list. Goal: <= 2 ms.

The tools are the SDK's own ``Tool`` models, as the prober gets them, each with a realistic input
schema (5 properties), an output schema, a description of a few sentences and annotations.
"""

from __future__ import annotations

import statistics
import time

from mcp_types import Tool, ToolAnnotations

from mcp_supervisor.probes.contracts import Memo, diff, fingerprint


def tools(n: int = 200, variant: str = "") -> list[Tool]:
    props = {f"arg{i}": {"type": "string", "description": f"argument {i} of the call"} for i in range(5)}
    return [
        Tool(name=f"tool_{i}", description=f"Does thing {i}{variant}. " * 4,
             input_schema={"type": "object", "properties": props, "required": ["arg0"]},
             output_schema={"type": "object", "properties": {"result": {"type": "string"}}},
             annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
        for i in range(n)
    ]


def main() -> None:
    listing = tools()
    memo: Memo = {}
    fingerprint(listing, memo)  # the first list of a server: canonical JSON of every field
    cold, runs = [], []
    for _ in range(50):
        t0 = time.process_time_ns()
        fingerprint(listing)
        cold.append((time.process_time_ns() - t0) / 1e6)
    for _ in range(200):
        fresh = tools()  # every tools/list parses new objects
        t0 = time.process_time_ns()
        fingerprint(fresh, memo)
        runs.append((time.process_time_ns() - t0) / 1e6)
    old, new = fingerprint(listing), fingerprint(tools(variant=" now"))
    t0 = time.process_time_ns()
    change = diff(old, new)
    diff_ms = (time.process_time_ns() - t0) / 1e6
    runs.sort()
    print(f"fingerprint a 200-tool tools/list: median {statistics.median(runs):.3f} ms CPU, p95 "
          f"{runs[int(len(runs) * 0.95)]:.3f} ms (goal <= 2 ms); the first list of a server (no memo): "
          f"median {statistics.median(cold):.3f} ms; diff of 200 changed tools {diff_ms:.3f} ms "
          f"({len(change.changed)} changed)")


if __name__ == "__main__":
    main()
