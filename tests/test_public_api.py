"""The package root is the public face: every name it promises resolves, cheaply."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import chatledger


@pytest.mark.parametrize("name", chatledger.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(chatledger, name)
    if isinstance(value, (type, types.ModuleType, types.FunctionType)):
        assert value.__name__.rpartition(".")[2] == name  # a class, a module, a function
    else:  # a type alias (`IdKind`) or a constant (`MAX_RESPONSE_BYTES`)
        assert value is not None


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


def test_one_error_tree() -> None:
    import chatledger.errors as errors

    classes = [getattr(errors, name) for name in errors.__all__]
    for cls in classes:
        if cls is errors.ImportStopped:  # Ctrl-C stays a KeyboardInterrupt, outside the tree
            assert issubclass(cls, KeyboardInterrupt) and not issubclass(cls, Exception)
            continue
        assert issubclass(cls, chatledger.ChatledgerError), cls
        assert getattr(chatledger, cls.__name__) is cls  # the root exports each
    # The built-in bases callers catch stay.
    for cls in (errors.WireError, errors.FilterError, errors.RejectedInput, errors.UserIdError,
                errors.AmbiguousId):
        assert issubclass(cls, ValueError)
    from eventsourcing.persistence import OperationalError

    assert issubclass(errors.WriteLockTimeout, OperationalError)
    # The modules that raise them still offer the same classes.
    from chatledger.eventstore.log import StoreError
    from chatledger.sync.backend import BackendError

    assert StoreError is errors.StoreError and BackendError is errors.BackendError
