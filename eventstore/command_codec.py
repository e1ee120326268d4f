"""The codec of command events: msgspec both ways, one typed struct per event class.

A stored command event's state is the JSON of the event's fields (all but the originator's id and
version, which are columns of the row); `Succeeded.response` is embedded as the exact bytes the
backend sent.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from chatledger.eventstore.commands import TOPICS, Command, CommandError

class MsgspecTranscoder(Transcoder):
    """The library's transcoder interface over msgspec JSON (datetimes as RFC 3339)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return msgspec.json.decode(data)


def _state_struct(cls: type) -> type[msgspec.Struct]:
    """A msgspec struct with the stored fields of an event class (all but the originator's id
    and version, which are columns of the row), typed as the event declares them."""
    hints = typing.get_type_hints(cls)
    fields = [
        (f.name, hints[f.name]) if f.default is dataclasses.MISSING
        else (f.name, hints[f.name], f.default)  # added later: events stored before lack it
        for f in dataclasses.fields(cls)
        if f.name not in ("originator_id", "originator_version")
    ]
    return msgspec.defstruct(f"{cls.__name__}State", fields, forbid_unknown_fields=False)


_STATE_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    topic: msgspec.json.Decoder(_state_struct(cls)) for topic, cls in TOPICS.items()
}


class CommandMapper(Mapper[str]):
    """Domain events <-> stored events with msgspec: one encode of the event's fields, one typed
    decode back (no generic transcoding walk over the values)."""

    def __init__(self) -> None:
        super().__init__(transcoder=MsgspecTranscoder())
        self._encode = msgspec.json.Encoder().encode

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                           topic=type(domain_event).TOPIC, state=self._encode(state))

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        cls = TOPICS.get(stored_event.topic)
        if cls is None:
            raise CommandError(f"not a command event: {stored_event.topic!r}")
        decoded = _STATE_DECODERS[stored_event.topic].decode(stored_event.state)
        state = {f: getattr(decoded, f) for f in decoded.__struct_fields__}
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event


MAPPER = CommandMapper()


def replay(stored_events: Sequence[StoredEvent]) -> Command | None:
    """The command as its stored events made it (None for no events)."""
    aggregate: Command | None = None
    for stored in stored_events:
        aggregate = MAPPER.to_domain_event(stored).mutate(aggregate)
    return aggregate
