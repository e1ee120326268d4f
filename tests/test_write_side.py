"""The write side of `projections/` keeps its shape: each read table is written by its row
writer in `projections/rows/` and by nothing else, and the modules import one another without a
circle (each can be read, and loaded, alone)."""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECTIONS = ROOT / "projections"

SKIPPED = {"tests", "benchmarks", "docs", "build"}  # top-level folders outside the package
# The tables the row writers own, and the SQL that writes one.
OWNED = ("messages", "deleted_messages", "reactions", "deleted_reactions", "reads", "channels",
         "deleted_channels", "members", "removed_members", "users", "drafts", "deleted_drafts",
         "polls", "deleted_polls", "threads", "deleted_user_messages", "user_bans",
         "member_bans",
         "connection", "channel_queries", "outbox", "retry_stream")
WRITE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+(" + "|".join(OWNED) + r")\b")


@functools.cache
def _package_modules() -> dict[str, Path]:
    modules = {}
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")
                         and not (folder == str(ROOT) and name in SKIPPED)]
        for file_name in files:
            if file_name.endswith(".py"):
                parts = (Path(folder, file_name)).relative_to(ROOT).parts
                dotted = ".".join(("chatledger", *parts))[: -len(".py")]
                modules[dotted.removesuffix(".__init__")] = Path(folder, file_name)
    return modules


def _writers_of_owned_tables() -> dict[str, set[str]]:
    """By table: the package modules (outside `projections/rows/`) whose SQL writes it."""
    found: dict[str, set[str]] = {}
    for name, path in _package_modules().items():
        if name.startswith("chatledger.projections.rows"):
            continue
        for table in WRITE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(table, set()).add(name)
    return found


def test_only_the_row_writers_write_the_read_tables() -> None:
    assert _writers_of_owned_tables() == {}


def test_the_check_sees_a_writer_outside_rows(tmp_path: Path) -> None:
    # The pattern the test above relies on finds the statements as the modules write them.
    for statement in ("INSERT INTO messages (id) VALUES (?)", "INSERT OR IGNORE INTO reactions",
                      "UPDATE reads SET x=1", "DELETE FROM retry_stream WHERE seq=?"):
        assert WRITE.search(statement), statement
    assert not WRITE.search("SELECT 1 FROM messages")
    assert not WRITE.search("INSERT INTO held_ranges (cid) VALUES (?)")


@functools.cache
def _imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in it, also inside functions and under
    TYPE_CHECKING: a circle there is still a circle for a reader)."""
    modules = _package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        targets &= modules.keys()
        targets.discard(name)
    return graph


def _circle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, None when there is none."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        module, path = stack.pop()
        for target in graph.get(module, ()):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


@pytest.mark.parametrize("module", sorted(
    name for name in _package_modules() if name.startswith("chatledger.projections.")))
def test_no_import_circle_in_projections(module: str) -> None:
    assert _circle_through(_imports(), module) is None


def test_the_circle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle_through(graph, "a") == ["a", "b", "c", "a"]
    assert _circle_through(graph, "d") is None
