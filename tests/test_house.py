"""A house rule kept by a test: names say what a thing is, so no one-letter name (a parameter,
a variable, a loop or `with`/`except` target, an import alias) outside comprehensions and
lambdas in the package's layers. `_` (a value ignored) and TypeVars are allowed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("projections", "eventstore", "sync", "cli")

# Modules another branch is editing now, which may hold one-letter names until that work lands
# (then its entry goes: `test_allowed_modules_still_need_it` says when). Empty: every module is
# checked.
ALLOWED: set[str] = set()


class _OneLetterNames(ast.NodeVisitor):
    """Collects (line, name) of each one-letter name bound outside comprehensions and lambdas."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.found: list[tuple[int, str]] = []

    def _bind(self, name: str, node: ast.AST) -> None:
        if len(name) == 1 and name not in self.allowed:
            self.found.append((getattr(node, "lineno", 0), name))

    # A comprehension's or a lambda's names live inside it: a short name there reads fine.
    def _skip(self, node: ast.AST) -> None:
        return None

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _skip
    visit_Lambda = _skip

    def visit_arguments(self, node: ast.arguments) -> None:
        every = [*node.posonlyargs, *node.args, *node.kwonlyargs]
        every += [arg for arg in (node.vararg, node.kwarg) if arg is not None]
        for arg in every:
            self._bind(arg.arg, arg)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self._bind(node.id, node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name, node)
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        if node.asname:
            self._bind(node.asname, node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self._bind(node.name, node)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name, node)


def _type_vars(tree: ast.Module) -> set[str]:
    """The module's TypeVars (`T = TypeVar("T")`): a one-letter name by convention."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            called = node.value.func
            name = called.id if isinstance(called, ast.Name) else getattr(called, "attr", None)
            if name in ("TypeVar", "ParamSpec", "TypeVarTuple"):
                names.update(target.id for target in node.targets
                             if isinstance(target, ast.Name))
    return names


def one_letter_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each one-letter name the house rule forbids in `source`."""
    tree = ast.parse(source)
    visitor = _OneLetterNames({"_"} | _type_vars(tree))
    visitor.visit(tree)
    return visitor.found


def _modules() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix()
                  for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("module", [name for name in _modules() if name not in ALLOWED])
def test_no_one_letter_names(module: str) -> None:
    found = one_letter_names((ROOT / module).read_text(encoding="utf-8"))
    assert not found, f"{module}: one-letter names (line, name): {found}"


def test_allowed_modules_still_need_it() -> None:
    # The allow-list only shrinks: a module cleaned (or gone) leaves it. (Empty today; one test
    # over the list rather than one per entry, so that an empty list is not a skipped test.)
    cleaned = [module for module in sorted(ALLOWED)
               if not ((ROOT / module).exists()
                       and one_letter_names((ROOT / module).read_text(encoding="utf-8")))]
    assert not cleaned, f"{cleaned} hold no one-letter names now: take them off ALLOWED"


def test_the_check_finds_what_it_forbids() -> None:
    source = '''
import json as j
from typing import TypeVar
T = TypeVar("T")
def read(c, *, key: T, **k) -> T:
    for r in c:
        x = r
    with open("f") as f:
        pass
    try:
        pass
    except OSError as e:
        pass
    match key:
        case [a, *b]:
            pass
    return key
class Row:
    n: int = 0
'''
    assert [name for _line, name in one_letter_names(source)] == [
        "j", "c", "k", "r", "x", "f", "e", "a", "b", "n"]


def test_the_check_allows_comprehensions_lambdas_and_underscore() -> None:
    source = '''
from typing import TypeVar
T = TypeVar("T")
def total(rows: list[tuple[int, int]], key: T) -> T:
    first, _ = rows[0]
    values = [a + b for a, b in rows]
    lookup = {k: v for k, v in rows}
    pick = lambda x: x
    return key
'''
    assert one_letter_names(source) == []
