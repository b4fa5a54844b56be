"""The house rules, read from the source: layers, no import circles, small modules, package docs.

Why a test and not a tool: the rules are few and the AST answers them in a few milliseconds, so
they run with every ``pytest`` and a change that breaks one fails where its author looks. What is
counted as an import: every ``import``/``from ... import`` of ``mcp_supervisor`` anywhere in a
module, including the ones inside functions and under ``TYPE_CHECKING`` (a lazy import is still a
dependency; it only moves the cost). docs/architecture.md "Layers" explains the table below.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = "mcp_supervisor"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (layer name, the packages and top-level modules in it), bottom first. "" is the package's
    # own __init__ (the version). A module may import its own layer and the layers below it.
    ("foundation", ("", "events", "event_text", "sse", "sdnotify", "importer")),
    ("config", ("config", "redact", "logging")),
    ("core", ("health",)),
    ("services", ("probes", "spawn", "actuators", "auth", "vault", "history", "notify", "metrics", "metrics_web")),
    ("runtime", ("runtime",)),
    ("surfaces", ("api", "web", "proxy")),
    ("entry points", ("cli", "guard", "daemon")),
)

KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        # (importer, imported) pairs tolerated while someone removes them, each with a comment
        # naming who. Each fails the test once its import is gone, so the list stays the truth.
        # (Empty: api/client -> guard (h15bounds), actuators/process -> runtime/process_records
        # (h15spawn) and runtime/status -> runner (h22scale) were removed this session.)
    }
)

MAX_LINES = 400
KNOWN_LONG: frozenset[str] = frozenset(
    {
        # modules known to be over the limit, each naming who splits it; the test fails once one
        # is short enough. (vault/service.py, vault/snapshots.py, api/client.py, runtime/
        # supervisor.py, runtime/runner.py, probes/mcp.py, proxy/core.py and notify/service.py were split
        # this session.)
        "cli/dashboard.py",  # h16words: grew past 400 with the idle budget's smoothing
    }
)

ENTRY_POINTS = ("mcp_supervisor.cli.main", "mcp_supervisor.daemon")
"""Imported by no module: ``cli/main.py`` loads its plug-in command modules by name, so a plug-in
importing it back would be a circle the AST cannot see (shared CLI pieces live in cli/common.py)."""

PURE_CORE = "health"
IMPURE = frozenset({"asyncio", "os", "subprocess", "socket", "threading", "time", "logging", "structlog",
                    "aiohttp", "httpx", "httpx2", "pathlib", "shutil", "sqlite3"})
"""What the functional core never imports: clocks, I/O, processes, logging."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"), filename=str(modules()[name]))


def _known(name: str) -> str | None:
    """The module ``name`` refers to: itself, else its longest prefix that is a module."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of this package in module ``name``."""
    return imports_in(tree(name), name, is_package=modules()[name].name == "__init__.py")


def imports_in(module: ast.Module, name: str, *, is_package: bool = False) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of this package anywhere in ``module``'s code."""
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name) if alias.name.split(".")[0] == PACKAGE else None
                if target and target != name:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules() else _known(base)
                if target and target != name:
                    yield target, node.lineno


@cache
def graph() -> dict[str, dict[str, int]]:
    """{module: {imported module: first line}} over the whole package, known exceptions left out."""
    edges: dict[str, dict[str, int]] = {}
    for name in modules():
        edges[name] = {}
        for target, line in imports_of(name):
            if (name, target) not in KNOWN_EXCEPTIONS:
                edges[name].setdefault(target, line)
    return edges


def layer_of(name: str) -> tuple[int, str] | None:
    """(index, layer name) of a module, from its first component below the package."""
    top = name.split(".")[1] if "." in name else ""
    for index, (layer, members) in enumerate(LAYERS):
        if top in members:
            return index, layer
    return None


def where(name: str, line: int) -> str:
    return f"{modules()[name].relative_to(SOURCE.parent)}:{line}"


def missing_modules(module: ast.Module) -> Iterator[tuple[str, int]]:
    """(name, line) of every import of this package that names no module (a moved or deleted one:
    an ImportError waiting for the code path, found here before it runs)."""
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and alias.name not in modules():
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == PACKAGE and node.module not in modules():
                yield node.module, node.lineno


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    problems = [f"{where(name, line)}: {name} imports {target}, which does not exist (moved? see docs/architecture.md)"
                for name in modules() for target, line in missing_modules(tree(name))]
    assert not problems, "\n".join(problems)


def test_every_module_has_a_layer() -> None:
    missing = sorted(name for name in modules() if layer_of(name) is None)
    assert not missing, (
        f"{missing}: not in any layer; add the package or module to LAYERS in tests/test_layers.py "
        "and to the layer table in docs/architecture.md"
    )


def layer_problems(edges: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for name, targets in edges.items():
        own = layer_of(name)
        for target, line in targets.items():
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs[0] > own[0]:
                problems.append(
                    f"{where(name, line)}: {name} (layer {own[1]!r}) imports {target} (layer {theirs[1]!r}, "
                    "higher): move what it needs down, or invert the dependency"
                )
    return problems


def test_no_module_imports_a_higher_layer() -> None:
    problems = layer_problems(graph())
    assert not problems, "\n".join(problems)


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _path(edges: dict[str, dict[str, int]], members: list[str]) -> str:
    """One circle through the component, as ``a (file:line) -> b (file:line) -> a``."""
    inside = set(members)
    start = members[0]
    trail = [start]
    seen = {start}
    node = start
    while True:
        nexts = [t for t in edges[node] if t in inside]
        step = start if start in nexts and len(trail) > 1 else next((t for t in nexts if t not in seen), nexts[0])
        trail.append(step)
        if step == start or step in seen:
            break
        seen.add(step)
        node = step
    return " -> ".join(f"{a} ({where(a, edges[a][b])})" for a, b in itertools.pairwise(trail)) + f" -> {trail[-1]}"


def test_no_import_circles() -> None:
    edges = graph()
    circles = [_path(edges, members) for members in _cycles(edges)]
    assert not circles, "import circles (move the shared part below both):\n" + "\n".join(circles)


def test_known_exceptions_still_exist() -> None:
    """An exception whose import is gone must leave the list, so the list stays the truth."""
    present = {(name, target) for name in modules() for target, _ in imports_of(name)}
    stale = sorted(KNOWN_EXCEPTIONS - present)
    assert not stale, f"{stale}: these imports are gone; remove them from KNOWN_EXCEPTIONS in tests/test_layers.py"


def test_entry_points_are_imported_by_no_module() -> None:
    problems = [
        f"{where(name, line)}: {name} imports {target}; import the shared piece from a module below it "
        "(cli/common.py for the CLI)"
        for name, targets in graph().items()
        for target, line in targets.items()
        if target in ENTRY_POINTS
    ]
    assert not problems, "\n".join(problems)


def test_the_health_core_stays_pure() -> None:
    problems = []
    for name in modules():
        if not name.startswith(f"{PACKAGE}.{PURE_CORE}"):
            continue
        for node in ast.walk(tree(name)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            )
            for imported in names:
                if imported.split(".")[0] in IMPURE:
                    problems.append(f"{where(name, node.lineno)}: {name} imports {imported} (no clocks, I/O or logging in {PURE_CORE}/)")
    assert not problems, "\n".join(problems)


def test_no_module_is_over_400_lines() -> None:
    lengths = {
        path.relative_to(SOURCE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules().values()
    }
    long = sorted(f"{PACKAGE}/{rel}: {n} lines" for rel, n in lengths.items() if n > MAX_LINES and rel not in KNOWN_LONG)
    assert not long, f"modules over {MAX_LINES} lines (split along a real seam, never in halves):\n" + "\n".join(long)
    fixed = sorted(rel for rel in KNOWN_LONG if lengths.get(rel, 0) <= MAX_LINES)
    assert not fixed, f"{fixed}: now {MAX_LINES} lines or fewer (or gone); remove them from KNOWN_LONG in tests/test_layers.py"


def test_every_package_says_what_it_is_for_and_what_it_may_import() -> None:
    problems = []
    for name, path in modules().items():
        if path.name != "__init__.py" or name == PACKAGE:
            continue
        doc = ast.get_docstring(tree(name)) or ""
        if "may import" not in doc:
            problems.append(f"{path.relative_to(SOURCE.parent)}: its docstring must say what the package is for "
                            "and what it may import ('What it may import: ...')")
    assert not problems, "\n".join(problems)


def test_the_checks_see_a_lazy_upward_import_and_name_both_layers() -> None:
    """The checker itself: an import inside a function counts, and the message names both ends."""
    source = "def later():\n    from mcp_supervisor.web.server import StatusPage\n    import mcp_supervisor.runtime.runner\n"
    found = dict(imports_in(ast.parse(source), "mcp_supervisor.config.loading"))
    assert found == {"mcp_supervisor.web.server": 2, "mcp_supervisor.runtime.runner": 3}
    problems = layer_problems({"mcp_supervisor.config.loading": found})
    assert len(problems) == 2
    assert "mcp_supervisor.config.loading (layer 'config') imports mcp_supervisor.web.server (layer 'surfaces'" in problems[0]
    moved = "from mcp_supervisor.web.listen import parse_listen\nimport mcp_supervisor.nowhere\n"
    assert list(missing_modules(ast.parse(moved))) == [("mcp_supervisor.web.listen", 1), ("mcp_supervisor.nowhere", 2)]


def test_the_checks_find_a_circle_and_show_it() -> None:
    a, b, c, d = (f"mcp_supervisor.{m}" for m in ("events", "sdnotify", "redact", "logging"))
    edges = {a: {b: 1}, b: {c: 2}, c: {a: 3}, d: {a: 4}}
    assert _cycles(edges) == [sorted([a, b, c])]
    assert _path(edges, sorted([a, b, c])).endswith(f"-> {a}")
