"""The layout shows the architecture: the import graph of the five packages, read from
the source with ``ast`` (nothing is imported), has no circles, and only the composition
root (``surgeguard/cli/``, and ``python -m surgeguard`` which starts it) imports more
than one app. The library imports no app; an app imports the library and itself.

Every import counts: at module level, inside a function, under ``TYPE_CHECKING``. A
lazy or type-only import hides a dependency from Python, not from a reader.

Run as a script (``python tests/test_layout.py``) it prints the circles and the
imports that cross from one app to another, allowed or not.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Package -> the folder that holds it (each app folder is a source root).
PACKAGES = {
    "surgeguard": ROOT / "surgeguard",
    "surgeguard_controller": ROOT / "controller" / "surgeguard_controller",
    "surgeguard_dashboard": ROOT / "dashboard" / "surgeguard_dashboard",
    "surgeguard_loadtest": ROOT / "loadtest" / "surgeguard_loadtest",
    "surgeguard_target_app": ROOT / "target_app" / "surgeguard_target_app",
}
APPS = frozenset(PACKAGES) - {"surgeguard"}
LIBRARY = "surgeguard"
ROOT_PART = "composition root"
# The composition root: the CLI (and the stack runner in it), and ``python -m
# surgeguard``, which only starts the CLI.
COMPOSITION_ROOT = ("surgeguard.cli", "surgeguard.__main__")

# Circles known and being removed, each as the set of modules in it. An entry that no
# longer matches a circle fails the test too: remove it with the circle.
KNOWN_CIRCLES: list[frozenset[str]] = []

# Imports from one app into another that are allowed, each (importer, imported) with
# why. All are the load tests' (a harness that drives and measures the other apps);
# an entry that no longer matches an import fails the test too.
_SIGNALS = "a run is judged by the controller's own signals of the replica's /metrics"
_SCRAPE = "a replica's /metrics is read as the controller reads it"
CROSS_APP_ALLOWED: dict[tuple[str, str], str] = {
    ("surgeguard_loadtest.load.watch", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.load.watch", "surgeguard_controller.sensing.signals"): _SIGNALS,
    ("surgeguard_loadtest.storm.watch", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.storm.bench", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.storm.measure", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.storm.measure", "surgeguard_controller.sensing.signals"): _SIGNALS,
    ("surgeguard_loadtest.bench.spike", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.bench.spike", "surgeguard_controller.sensing.signals"): _SIGNALS,
    ("surgeguard_loadtest.bench.shape_rows", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.bench.shape_rows", "surgeguard_controller.sensing.signals"): _SIGNALS,
    ("surgeguard_loadtest.bench.shared_db", "surgeguard_controller.sensing.scrape"): _SCRAPE,
    ("surgeguard_loadtest.bench.shared_db", "surgeguard_controller.sensing.signals"): _SIGNALS,
    ("surgeguard_loadtest.bench.shared_db", "surgeguard_target_app.db.schema"): (
        "the shared-db benchmark measures the demo's database alone, before any replica"
    ),
    ("surgeguard_loadtest.bench.history", "surgeguard_controller.store"): (
        "the history benchmark fills the controller's history key to its cap"
    ),
    ("surgeguard_loadtest.bench.jobs", "surgeguard_target_app.jobs.streams"): (
        "the jobs benchmark enqueues signups on the demo's streams and counts its outbox"
    ),
    ("surgeguard_loadtest.bench.fsync", "surgeguard_target_app.jobs.streams"): (
        "the fsync benchmark times the demo's signup store on Redis alone, next to HTTP"
    ),
}


Graph = Mapping[str, frozenset[str]]


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the five packages -> its file."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            found[module_name(package, folder, path)] = path
    return found


def _imported(node: ast.AST, here: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement may mean (a module, or a name in one)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the importing module's package
            base = here.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            prefix = ".".join([*base, node.module] if node.module else base)
        else:
            prefix = node.module or ""
        yield prefix
        for alias in node.names:
            yield f"{prefix}.{alias.name}"


def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the modules of the five packages it imports."""
    known = modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                names = list(_imported(node, name, is_package))
                if isinstance(node, ast.ImportFrom):
                    # ``from a import b``: b the module when it is one, else a.
                    prefix, *members = names
                    modules_named = [m for m in members if m in known]
                    if len(modules_named) < len(members) and prefix in known:
                        modules_named.append(prefix)
                    targets.update(modules_named)
                else:
                    targets.update(n for n in names if n in known)
        targets.discard(name)
        graph[name] = frozenset(targets)
    return graph


def _components(graph: Graph) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _shortest_cycle(graph: Graph, start: str, within: frozenset[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component."""
    came: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & within):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if nxt not in came:
                came[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is on no cycle in its component")


def circles(graph: Graph) -> list[tuple[frozenset[str], list[str]]]:
    """Each circle: its modules, and one path round it (the shortest from its first
    module in name order)."""
    return [
        (component, _shortest_cycle(graph, min(component), component))
        for component in sorted(_components(graph), key=min)
    ]


def part(module: str) -> str:
    """Which part of the architecture a module belongs to."""
    if any(module == r or module.startswith(f"{r}.") for r in COMPOSITION_ROOT):
        return ROOT_PART
    return module.split(".")[0]


def crossings(graph: Graph) -> list[tuple[str, str]]:
    """Imports that leave the importer's part for somewhere it may not go: the library
    into an app or the composition root, an app into another app or the root."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = part(module)
        if here == ROOT_PART:
            continue
        for target in sorted(targets):
            there = part(target)
            if there == here or (there == LIBRARY and here in APPS):
                continue
            bad.append((module, target))
    return bad


def test_the_graph_sees_the_packages_and_their_imports() -> None:
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    # A module-level import, a ``from package import module`` and a lazy import.
    assert "surgeguard_controller.decide" in graph["surgeguard_controller.loop"]
    assert "surgeguard.runtime.embedded_redis" in graph["surgeguard.cli.main"]
    assert "surgeguard_controller.server" in graph["surgeguard.cli.main"]


def test_no_import_circles() -> None:
    found = circles(import_graph())
    unexpected = [" -> ".join(path) for members, path in found if members not in KNOWN_CIRCLES]
    assert not unexpected, "import circles:\n" + "\n".join(unexpected)
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in {members for members, _ in found}]
    assert not gone, f"circles allowed in KNOWN_CIRCLES that no longer exist: {gone}"


def test_only_the_composition_root_imports_more_than_one_app() -> None:
    found = crossings(import_graph())
    unexpected = [f"{a} imports {b}" for a, b in found if (a, b) not in CROSS_APP_ALLOWED]
    assert not unexpected, "imports across parts:\n" + "\n".join(unexpected)
    gone = [edge for edge in CROSS_APP_ALLOWED if edge not in found]
    assert not gone, f"imports allowed in CROSS_APP_ALLOWED that no longer exist: {gone}"


def test_the_composition_root_is_the_one_place_that_imports_every_app() -> None:
    graph = import_graph()
    reached = {part(t) for m, targets in graph.items() if part(m) == ROOT_PART for t in targets}
    assert reached >= APPS


if __name__ == "__main__":
    g = import_graph()
    for members, path in circles(g):
        known = " (known)" if members in KNOWN_CIRCLES else ""
        print(f"circle{known}: {' -> '.join(path)}")
    for a, b in crossings(g):
        allowed = " (allowed)" if (a, b) in CROSS_APP_ALLOWED else ""
        print(f"crossing{allowed}: {a} -> {b}")
