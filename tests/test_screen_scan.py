"""The screen's scan for long digit runs finds exactly what `re` `\\d{19}` finds (bytes)."""

import re

from hypothesis import given
from hypothesis import strategies as st

from chatledger.projections.screen import has_long_digits

_REFERENCE = re.compile(rb"\d{19}")


@given(st.lists(st.one_of(st.binary(max_size=8), st.sampled_from([b"1" * 18, b"9" * 19,
                                                                    b"0" * 25, b"\xd9\xa0"])),
                max_size=12))
def test_same_as_the_regular_expression(parts: list[bytes]) -> None:
    payload = b"".join(parts)
    assert has_long_digits(payload) == (_REFERENCE.search(payload) is not None)


def test_edges() -> None:
    assert has_long_digits(b'{"n":1234567890123456789}')
    assert not has_long_digits(b'{"n":123456789012345678}')
    assert not has_long_digits(b'{"t":"2026-01-01T00:00:00.123456Z"}')
