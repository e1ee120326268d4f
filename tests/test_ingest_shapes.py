"""Real and hostile payload shapes through every ingest entry point, and a thread's count that
arrives before its parent: what is stored stays byte for byte, nothing raises but
`RejectedInput`, the rest of a batch goes on, and a rebuild makes the same tables (`verify()`).
Payloads are written by hand from WIRE.md."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatledger import ChatStore
from chatledger.errors import RejectedInput
from chatledger.eventstore.importer import AlreadyImported
from fixtures import event, message, query_channels_response, user

CID = "messaging:general"


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []  # a rebuild replays the log into the same tables
    s.close()


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def new(mid: str, n: int, uid: str = "bob", cid: str = CID, **fields: Any) -> bytes:
    return event("message.new", cid=cid, at=at(n),
                 message=message(mid, cid=cid, at=at(n), uid=uid, **fields), user=user(uid))


def thread(n: int, replies: int, parent: str = "p") -> bytes:
    return event("thread.updated", at=at(n), thread={
        "parent_message_id": parent, "channel_cid": CID, "reply_count": replies,
        "participant_count": 2, "last_message_at": at(n), "updated_at": at(n)})


# -- a thread's count delivered before its parent ----------------------------------------------


def test_a_thread_state_before_its_parent_gives_the_parent_its_count(store: ChatStore) -> None:
    store.ingest(thread(6, 4))
    store.ingest(new("p", 1, reply_count=0))
    assert store.message("p").reply_count == 4  # as in order: message.new p, then the thread


@pytest.mark.parametrize("thread_first", [True, False])
def test_a_thread_state_older_than_its_parents_leaves_the_parents_count(
        store: ChatStore, thread_first: bool) -> None:
    events = [thread(3, 2), new("p", 1, reply_count=5, updated_at=at(8))]  # p's state is newer
    store.ingest_many(events if thread_first else events[::-1])
    assert store.message("p").reply_count == 5


@pytest.mark.parametrize("thread_first", [True, False])
def test_a_reaction_after_the_thread_does_not_hide_the_threads_count(
        store: ChatStore, thread_first: bool) -> None:
    reaction = event("reaction.new", at=at(9), message=message("p", at=at(1)), reaction={
        "message_id": "p", "user_id": "carol", "type": "like", "created_at": at(9),
        "updated_at": at(9)})
    store.ingest(new("p", 1))
    store.ingest_many([thread(6, 4), reaction] if thread_first else [reaction, thread(6, 4)])
    assert store.message("p").reply_count == 4


# -- values of the wrong JSON type cost only themselves ------------------------------------------


@pytest.mark.parametrize("fields, reply_count, pinned", [
    ({"reply_count": "3"}, 3, False),
    ({"reply_count": 2.0}, 2, False),
    ({"reply_count": 1e3}, 1000, False),
    ({"reply_count": 2.5}, 0, False),  # no integer: left out, as if absent
    ({"reply_count": "many"}, 0, False),
    ({"reply_count": "99999999999999999999"}, 0, False),  # beyond 64 bits
    ({"reply_count": True}, 0, False),
    ({"pinned": 1, "pinned_at": at(2)}, 0, True),
    ({"pinned": "true"}, 0, True),
    ({"pinned": "false", "silent": "0"}, 0, False),
    ({"pinned": 2, "silent": "yes"}, 0, False),
    ({"pinned": {"at": 1}, "silent": [1], "type": 3, "user": "bob"}, 0, False),
])
def test_a_value_of_the_wrong_type_costs_only_itself(
        store: ChatStore, fields: dict[str, Any], reply_count: int, pinned: bool) -> None:
    raw = new("m1", 1, **fields)
    position = store.ingest(raw)
    [entry] = store.history()
    assert entry.position == position and entry.payload == raw
    row = store.message("m1")
    assert row is not None, "the message was not projected"
    assert (row.reply_count, row.pinned) == (reply_count, pinned)
    assert row.json()["text"] == "hi"
    assert [c.cid for c in store.channels()] == [CID]
    assert store.unread_counts().channels == {CID: 1}


@pytest.mark.parametrize("shown", [1, "1", "true"])
def test_a_reply_shown_in_the_channel_by_a_number_or_text(store: ChatStore, shown: Any) -> None:
    store.ingest(new("p", 1))
    store.ingest(new("r", 2, parent_id="p", show_in_channel=shown, type="reply"))
    assert [m.id for m in store.messages(CID)] == ["p", "r"]
    assert store.message("p").reply_count == 1


def test_numeric_ids_are_read_as_text(store: ChatStore) -> None:
    body = message("x", at=at(1))
    body["id"] = 42
    body["user"] = {**user("bob"), "id": 7}
    store.ingest(event("message.new", at=at(1), message=body, user={**user("bob"), "id": 7}))
    row = store.message("42")
    assert row is not None and row.user_id == "7"
    assert [m.id for m in store.messages(CID)] == ["42"]


def test_a_member_and_a_read_with_values_of_the_wrong_type(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("member.added", at=at(2), member={
        "user_id": "bob", "user": {**user("bob"), "online": "true"}, "role": "member",
        "banned": 1, "updated_at": at(2)}))
    store.ingest(event("notification.mark_unread", at=at(3), user=user("alice"),
                       last_read_at=at(0), unread_messages="1", first_unread_message_id="m1"))
    [bob] = store.members(CID)
    assert (bob.user_id, bob.banned) == ("bob", 1)
    assert store.unread_counts().channels == {CID: 1}


def test_a_channel_state_with_values_of_the_wrong_type(store: ChatStore) -> None:
    kind, ident = CID.split(":")
    state = {
        "channel": {"id": ident, "type": kind, "cid": CID, "member_count": "2",
                    "frozen": 0, "created_at": at(0), "updated_at": at(0)},
        "messages": [message("m1", at=at(1), reply_count="2"), "not a message",
                     message("m2", at=at(2), pinned=1)],
        "members": [{"user_id": "bob", "banned": "false"}], "read": [], "pinned_messages": []}
    store.ingest_channel_state(state)
    assert [m.id for m in store.messages(CID)] == ["m1", "m2"]
    assert store.message("m1").reply_count == 2 and store.message("m2").pinned
    assert store.message("m2").json()["id"] == "m2"  # its own bytes, past the bad item
    [channel] = store.channels()
    assert channel.member_count == 2


# -- times -------------------------------------------------------------------------------------


def test_a_leap_second_is_stored_and_ordered_within_its_second(store: ChatStore) -> None:
    leap = "2016-12-31T23:59:60.5Z"
    raw = event("message.new", at=leap, message=message("leap", at=leap), user=user("bob"))
    store.ingest(raw)
    before = "2016-12-31T23:59:59.25Z"
    store.ingest(event("message.new", at=before, message=message("before", at=before)))
    assert store.history()[0].payload == raw
    assert [m.id for m in store.messages(CID)] == ["before", "leap"]
    assert store.message("leap").created_at == 1483228799999999  # 23:59:59.999999


def test_a_second_60_that_is_no_leap_second_is_refused(store: ChatStore) -> None:
    with pytest.raises(RejectedInput, match="not a valid time"):
        store.ingest(new("m1", 1)
                     .replace(at(1).encode(), b"2024-03-05T10:11:60Z"))
    assert store.history() == []


# -- imports: a file's byte order mark, CRLF, blank lines, a bad line, a cut last line -----------


def test_an_import_with_a_byte_order_mark_and_crlf_keeps_every_good_line(
        store: ChatStore) -> None:
    good = [new(f"m{n}", n) for n in range(1, 5)]
    body = (b"\xef\xbb\xbf" + good[0] + b"\r\n\r\n" + good[1] + b"\r\n{\"type\":\r\n   \r\n"
            + good[2] + b"\r\n" + good[3][:50])
    report = store.import_file(io.BytesIO(body))
    assert (report.stored, report.quarantined) == (3, 2)
    assert [e.payload for e in store.history()] == good[:3]  # no BOM, no CR: the items' bytes
    assert [m.id for m in store.messages(CID)] == ["m1", "m2", "m3"]
    assert sorted(q.reason.split(":")[0] for q in store.quarantine()) == ["line 4", "line 7"]
    # The same file again: known to the import ledger, nothing stored twice.
    with pytest.raises(AlreadyImported):
        store.import_file(io.BytesIO(body))
    assert len(store.history()) == 3


def test_a_response_file_with_a_byte_order_mark_is_read_as_the_response(
        store: ChatStore) -> None:
    report = store.import_file(io.BytesIO(b"\xef\xbb\xbf" + query_channels_response([CID])))
    assert report.kind == "query" and report.quarantined == 0
    assert [c.cid for c in store.channels()] == [CID]


def test_an_event_with_an_empty_created_at_is_kept_as_one_without_a_time(
        store: ChatStore) -> None:
    raw = event("message.new", at="", message={**message("m1", at=at(1)), "updated_at": ""},
                user=user("bob"))
    store.ingest(raw)
    [entry] = store.history()
    assert entry.payload == raw and entry.event_at is None
    assert store.message("m1").created_at == 1795600801000000
    assert store.unread_counts().channels == {CID: 1}


def test_readers_find_objects_whose_values_the_projection_mended(store: ChatStore) -> None:
    store.ingest(event("user.updated", cid=None, at=at(1), user={**user("x"), "id": 7}))
    assert store.user("7").user["favourite_colour"] == "teal"  # the stored object, not the row
    state = {"channel": {"id": "general", "type": "messaging", "cid": CID},
             "members": ["junk", {"user_id": "carol", "user": user("carol")}],
             "messages": [message("m1", at=at(2), reply_count="2")], "read": []}
    store.ingest_channel_state(state)
    assert store.user("carol").user["favourite_colour"] == "teal"
    out = io.BytesIO()
    store.export_channels(out)
    [exported] = [m for c in msgspec.json.decode(out.getvalue())["channels"]
                  for m in c["messages"]]
    assert exported["text"] == "hi"  # the message as stored, not rebuilt from its row


# -- refusals say what is wrong ------------------------------------------------------------------


def test_a_lone_surrogate_is_refused_as_such_and_its_batch_goes_on(store: ChatStore) -> None:
    bad = new("x", 2)[:-1] + b',"note":"a\\ud800b"}'
    paired = new("ok2", 3)[:-1] + b',"note":"\\ud83d\\ude00 \\\\ud800"}'  # a pair, an escaped "\"
    result = store.ingest_many([new("ok1", 1), bad, paired])
    assert [q.reason for q in result.quarantined] == [
        "not JSON: a lone surrogate escape (not text)"]
    assert [m.id for m in store.messages(CID)] == ["ok1", "ok2"]


def test_a_mute_with_a_value_of_the_wrong_type_costs_only_that_value(store: ChatStore) -> None:
    me = {**user("alice"), "mutes": ["junk", {"target": {"id": "bob"}, "created_at": at(1),
                                               "note": "kept"}],
          "channel_mutes": [{"channel": {"cid": "messaging:x"}, "created_at": at(1),
                             "expires": 5}]}
    store.ingest(event("health.check", cid=None, at=at(1), connection_id="c", me=me))
    [mute] = store.mutes()
    assert mute.user_id == "bob" and mute.mute["note"] == "kept"  # its own object, by its slot
    assert [m.cid for m in store.channel_mutes()] == ["messaging:x"]
