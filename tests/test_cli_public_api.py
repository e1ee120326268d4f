"""The CLI is a client of the public API, and the package root exports what the docs show.

The public API is the package root (`chatledger`), `chatledger.errors`, and the documented
modules listed in docs/python-api.md ("What is public"). `PUBLIC` below is that list as the CLI
may use it: a module with None may be imported whole; a module with a set of names only those.
A command that needs anything else needs a `ChatStore` method (or a root export) first.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import chatledger

ROOT = Path(chatledger.__file__).parent
CLI = ROOT / "cli"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

PUBLIC: dict[str, frozenset[str] | None] = {
    "chatledger": None,
    "chatledger.errors": None,
    # the sync layer's documented modules (docs/python-api.md, "The sync layer")
    "chatledger.sync.demo": None,
    "chatledger.sync.devserver": None,
    "chatledger.sync.diff": None,
    "chatledger.sync.http": frozenset({"redact"}),
    "chatledger.sync.outcomes": None,
    # keys and chain heads of sealed stores (docs/security.md)
    "chatledger.eventstore.seal": None,
    # the browse server (docs/browse.md)
    "chatledger.projections.browse.server": None,
    # the helpers of the wire format and of the time forms the API takes
    "chatledger.eventstore.wire": frozenset({"compact_json", "format_time", "repair_utf8"}),
    "chatledger.projections.times": frozenset({"to_micros", "EPOCH", "API_FORMS",
                                               "COMMAND_LINE_FORMS"}),
}


def is_module(dotted: str) -> bool:
    """Whether `chatledger.a.b` names a module or package of the source tree."""
    where = ROOT.joinpath(*dotted.split(".")[1:])
    return where.with_suffix(".py").exists() or (where / "__init__.py").exists()


def imports_of(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) for each `chatledger` import of a file; name None for `import x`.
    `from chatledger.eventstore import seal` counts as the module `chatledger.eventstore.seal`
    when that is a module."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names
                      if alias.name.split(".")[0] == "chatledger"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "chatledger":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in PUBLIC or is_module(submodule):
                    found.append((node.lineno, submodule, None))
                else:
                    found.append((node.lineno, node.module, alias.name))
    return found


def leaks(path: Path) -> list[str]:
    """The imports of `path` that reach past the public API."""
    problems = []
    for line, module, name in imports_of(path):
        if module == "chatledger.cli" or module.startswith("chatledger.cli."):
            continue
        if module not in PUBLIC:
            problems.append(f"{path.name}:{line}: {module}" + (f".{name}" if name else ""))
            continue
        allowed = PUBLIC[module]
        if allowed is not None and name not in allowed:
            problems.append(f"{path.name}:{line}: {module}.{name}")
    return problems


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda path: path.name)
def test_the_cli_imports_only_the_public_api(path: Path) -> None:
    assert leaks(path) == []


def test_the_scan_sees_a_reach_past_the_public_api(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from chatledger import ChatStore\n"
        "from chatledger.errors import StoreError\n"
        "from chatledger.cli.output import echo_json\n"
        "from chatledger.eventstore import seal\n"
        "def later():\n"
        "    from chatledger.eventstore.log import EventLog\n"
        "    from chatledger.eventstore import log\n"
        "    from chatledger.sync.http import redact, Http\n"
        "    import chatledger.projections.engine\n")
    assert leaks(sample) == [
        "sample.py:6: chatledger.eventstore.log.EventLog",
        "sample.py:7: chatledger.eventstore.log",
        "sample.py:8: chatledger.sync.http.Http",
        "sample.py:9: chatledger.projections.engine",
    ]


def test_each_allowed_module_is_documented_as_public() -> None:
    text = (ROOT / "docs" / "python-api.md").read_text()
    for module in PUBLIC:
        if module != "chatledger":
            assert f"`{module}`" in text, module


# -- what the docs import from the root -------------------------------------------------------------

FROM_ROOT = re.compile(r"^\s*from chatledger import \(?([\w, \n]+?)\)?\s*(?:#.*)?$", re.M)
ROOT_ROW = re.compile(r"^\|([^|]*)\|\s*`chatledger`[^|]*\|\s*$", re.M)


def names_the_docs_import_from_the_root() -> set[str]:
    names: set[str] = set()
    for doc in DOCS:
        text = doc.read_text()
        for match in FROM_ROOT.finditer(text):
            names |= {name.strip() for name in match.group(1).split(",") if name.strip()}
        for row in ROOT_ROW.finditer(text):  # "| `ChatStore`, `LogEntry` | `chatledger` |"
            names |= set(re.findall(r"`(\w+)`", row.group(1)))
    return names


def test_the_root_exports_what_the_docs_import_from_it() -> None:
    names = names_the_docs_import_from_the_root()
    assert {"ChatStore", "AsyncChatStore", "LogEntry", "Damage", "StoreFile"} <= names
    missing = sorted(name for name in names if name not in chatledger.__all__)
    assert missing == []
    for name in names:
        assert getattr(chatledger, name) is not None
