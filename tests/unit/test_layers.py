"""The import graph of `sqsjobs` has no cycle and no module is too long (docs/architecture.md).

Every import counts — lazy ones inside functions and `TYPE_CHECKING` ones too — because a
cycle hidden behind a lazy import is still two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sqsjobs

ROOT = Path(sqsjobs.__file__).parent
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ("sqsjobs", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the sqsjobs modules it names in any import statement, anywhere in its code."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        edges.add(sub)  # `from . import aws` imports the module aws, not the package
                    elif target in modules:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert find_cycles(graph) == []


def test_only_the_composition_root_and_the_cli_import_the_public_package() -> None:
    """Modules inside sqsjobs import what they use directly, never the package's facade."""
    importers = sorted(name for name, edges in import_graph().items() if "sqsjobs" in edges)
    assert importers == [name for name in importers if name.startswith("sqsjobs.cli")]


def test_the_checker_sees_a_cycle_hidden_behind_a_lazy_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_module_is_longer_than_400_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_module_of_the_handlers_samples_or_benchmarks_is_longer_than_400_lines() -> None:
    """The same rule for the code shipped or run beside the package (the tests are not held to it)."""
    checkout = Path(__file__).resolve().parents[2]
    folders = [checkout / name for name in ("lambda_handlers", "samples", "benchmarks")]
    assert all(folder.is_dir() for folder in folders)
    long = {
        str(path.relative_to(checkout)): n
        for folder in folders
        for path in folder.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


#: docs/architecture.md's layers, bottom (0) to top. A module may import its own layer and those below.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        [
            "errors",
            "decisions",
            "policy",
            "timing",
            "events",
            "_version",
            "dispatched",
            "chunks",
            "cron",
            "cron_fields",
            "connections.base",
            "stores.base",
        ],
        0,
    ),
    **dict.fromkeys(
        [
            "settings",
            "registry",
            "object_keys",
            "signing",
            "envelope",
            "aws",
            "logs",
            "testing",
            "tracing",
            "payload_fields",
        ],
        1,
    ),
    **dict.fromkeys(
        [
            "connections",
            "stores",
            "payloads",
            "encryption",
            "failures",
            "failed_copies",
            "dlq_reading",
            "settling",
            "unique",
            "idempotency",
            "once",
            "batch_shards",
            "runs",
            "steps",
            "exception_counts",
            "local",
            "metrics",
            "metric_snapshots",
            "failed_filters",
            "workers",
            "triage",
            "job_log",
            "schemas",
            "schema_compat",
            "schema_walk",
            "schema_facts",
        ],
        2,
    ),
    "context": 3,
    **dict.fromkeys(
        [
            "job_class",
            "dispatch_plan",
            "bulk_plan",
            "dispatching",
            "dispatching_async",
            "links",
            "flow",
            "batches",
            "chains",
            "middleware",
            "schedules",
            "function_jobs",
            "function_job_options",
            "after_commit",
            "after_commit_batches",
        ],
        4,
    ),
    **dict.fromkeys(["runner", "executors"], 5),
    "hooks": 6,
    **dict.fromkeys(
        [
            "app",
            "provisioning",
            "failed_jobs",
            "resigning",
            "queue_monitor",
            "failed_review",
            "pausing",
            "failed_triage",
            "redrive",
            "scheduling",
            "testing.fake",
            "testing.fake_records",
            "testing.schemas",
            "testing.job_run",
            "testing.drain",
            "testing.drain_summary",
        ],
        7,
    ),
    **dict.fromkeys(["worker", "cli", "__main__", "", "testing.pytest_plugin", "integrations", "dashboard"], 8),
}


def layer_of(module: str) -> int:
    """The layer of the longest LAYERS prefix naming this module (`sqsjobs.` left off)."""
    name = module.removeprefix("sqsjobs").removeprefix(".")
    parts = name.split(".") if name else [""]
    for size in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:size]))
        if found is not None:
            return found
    raise AssertionError(f"{module} has no layer in LAYERS; add it (and to docs/architecture.md)")


def test_imports_point_down_the_layers_of_docs_architecture() -> None:
    upward = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []
