"""The worker's parts import downwards only and never reach into each other's private members.

Before, `poller`, `event_loop` and `housekeeping` imported each other and used the Worker's
`_take`, `_guard`, `_housekeeper` and friends, so none of them could be read (or changed) alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sqsjobs.worker

WORKER = Path(sqsjobs.worker.__file__).parent


def sources() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(WORKER.glob("*.py"))}


def test_no_part_of_the_worker_imports_a_part_that_imports_it() -> None:
    graph: dict[str, set[str]] = {}
    for name, tree in sources().items():
        graph[name] = {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [name for name in graph if reaches(name, name, set())] == []


def test_no_part_reaches_into_another_objects_private_members() -> None:
    reach_ins = [
        f"{name}.py:{node.lineno}: {ast.unparse(node)}"
        for name, tree in sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert reach_ins == []


def test_no_part_is_longer_than_400_lines() -> None:
    assert {p.name: n for p in WORKER.glob("*.py") if (n := len(p.read_text().splitlines())) > 400} == {}
