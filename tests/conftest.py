"""Shared pytest options: `--long` runs the reliability suites at full length (local runs).

CI runs `python -m pytest -q`: short mode, a few minutes in all. `python -m pytest --long
tests/test_crash.py tests/test_fault_matrix.py tests/test_fuzz_entry_points.py` kills the crash
worker more often and draws more hypothesis examples.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the reliability suites longer (more kills, more examples)")


def pytest_configure(config: pytest.Config) -> None:
    import os

    # Read at import time by the suites (hypothesis settings are decorators).
    os.environ["CHATLEDGER_TEST_LONG"] = "1" if config.getoption("--long") else ""


@pytest.fixture(scope="session")
def long_mode(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))
