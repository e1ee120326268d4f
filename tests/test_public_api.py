"""The package root is the public face: every name it promises resolves, cheaply."""

from __future__ import annotations

import subprocess
import sys

import pytest

import chatledger


@pytest.mark.parametrize("name", chatledger.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(chatledger, name)
    assert getattr(value, "__name__", name) == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(chatledger, "nope")


def test_errors_share_the_root_and_keep_their_mixins() -> None:
    assert issubclass(chatledger.UnknownCommand, chatledger.StoreError)
    assert issubclass(chatledger.UnknownCommand, KeyError)
    assert issubclass(chatledger.WireError, ValueError)
    assert issubclass(chatledger.FilterError, ValueError)


def test_reading_a_store_does_not_import_the_network_stack() -> None:
    code = "import sys, chatledger; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = "import sys, chatledger; chatledger.StreamBackend; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
