"""The read API's results are typed structs: their fields, their datetime properties, their
dict-style reading (deprecated, warning) and their JSON (the shape the dicts had)."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import msgspec
import pytest
from click.testing import CliRunner

import chatledger
from chatledger import (
    ChannelMute, ChannelState, ChatStore, ConnectionInfo, QuarantineEntry, RejectedInput,
    StoredDraft, StoredMember, StoredPoll, StoredRead, StoredReaction, StoredReminder,
    StoredThread, StoredUser, StoreStats, ThreadRead, UnprojectedEntry, UnreadCounts, UserMute,
)
from chatledger.cli.main import cli
from chatledger.eventstore.wire import parse_time
from chatledger.projections import results
from fixtures import event, message, user

CID = "messaging:general"
AT = "2026-11-25T10:00:05.000001Z"  # a time with microseconds, for the datetime properties
AT_US = parse_time(AT)
AT_DATETIME = datetime(2026, 11, 25, 10, 0, 5, 1, tzinfo=timezone.utc)


def _fill(store: ChatStore) -> None:
    """One of everything the read API returns."""
    store.ingest(event("health.check", cid=None, connection_id="conn-7", me={
        "id": "alice", "name": "Alice",
        "mutes": [{"user": {"id": "alice"}, "target": {"id": "carol"},
                   "created_at": AT, "updated_at": AT}],
        "channel_mutes": [{"user": {"id": "alice"}, "channel": {"cid": "messaging:noisy"},
                           "created_at": AT, "updated_at": AT,
                           "expires": "2099-01-01T00:00:00Z"}]}))
    store.ingest(event("member.added", member={"user_id": "alice", "user": user("alice"),
                                                "role": "owner", "created_at": AT,
                                                "updated_at": AT}))
    store.ingest(event("message.new", at=AT, message=message("m1", at=AT)))
    store.ingest(event("reaction.new", at=AT, message=message("m1", at=AT), reaction={
        "message_id": "m1", "user_id": "alice", "type": "like", "score": 2,
        "created_at": AT, "updated_at": AT}))
    store.ingest(event("message.read", at=AT, user=user("alice"), last_read_message_id="m1",
                       thread={"parent_message_id": "m1", "channel_cid": CID}))
    store.ingest(event("draft.updated", at=AT, draft={
        "channel_cid": CID, "created_at": AT, "message": {"id": "d1", "text": "half"}}))
    store.ingest(event("poll.updated", at=AT, message=message("m1", at=AT), poll={
        "id": "poll-1", "name": "Lunch?", "updated_at": AT}))
    store.ingest(event("thread.updated", at=AT, thread={
        "parent_message_id": "m1", "channel_cid": CID, "reply_count": 3,
        "participant_count": 2, "last_message_at": AT}))
    store.ingest(event("reminder.created", at=AT, reminder={
        "message_id": "m1", "user_id": "alice", "channel_cid": CID, "remind_at": AT,
        "created_at": AT, "updated_at": AT}))
    with pytest.raises(RejectedInput):
        store.ingest(b'{"type": 3}')


@pytest.fixture
def store(tmp_path):
    s = ChatStore.open(tmp_path, "alice")
    _fill(s)
    yield s
    s.close()


def test_each_read_method_returns_its_struct_with_the_row_fields(store: ChatStore) -> None:
    [reaction] = store.reactions("m1")
    assert isinstance(reaction, StoredReaction)
    assert (reaction.user_id, reaction.type, reaction.score) == ("alice", "like", 2)
    [member] = store.members(CID)
    assert isinstance(member, StoredMember) and (member.user_id, member.role) == ("alice", "owner")
    assert member.banned == 0 and member.pinned_at is None and member.pinned is None
    reads = store.reads(CID)
    assert reads and all(isinstance(read, StoredRead) for read in reads)
    counts = store.unread_counts()
    assert isinstance(counts, UnreadCounts) and counts.channels == {CID: 1}
    assert (counts.total_unread_count, counts.unread_channels) == (1, 1)
    [thread_read] = store.thread_reads("m1")
    assert isinstance(thread_read, ThreadRead) and thread_read.last_read_message_id == "m1"
    [draft] = store.drafts()
    assert isinstance(draft, StoredDraft) and draft.parent_id is None
    assert draft.draft is not None and draft.draft["message"]["text"] == "half"
    assert store.draft(CID) == draft
    [poll] = store.polls()
    assert isinstance(poll, StoredPoll) and poll.poll is not None and poll.poll["name"] == "Lunch?"
    assert store.poll("poll-1") == poll and store.poll("nope") is None
    [thread] = store.threads()
    assert isinstance(thread, StoredThread)
    assert (thread.parent_id, thread.reply_count, thread.participant_count) == ("m1", 3, 2)
    [reminder] = store.reminders()
    assert isinstance(reminder, StoredReminder) and reminder.due is False
    [mute] = store.mutes()
    assert isinstance(mute, UserMute) and mute.user_id == "carol" and mute.expires is None
    [channel_mute] = store.channel_mutes()
    assert isinstance(channel_mute, ChannelMute) and channel_mute.cid == "messaging:noisy"
    info = store.connection_info()
    assert isinstance(info, ConnectionInfo) and info.connection_id == "conn-7"
    assert info.last_sync_at is None and isinstance(info.me_position, int)
    [item] = store.quarantine()
    assert isinstance(item, QuarantineEntry) and item.raw == b'{"type": 3}'
    stats = store.stats()
    assert isinstance(stats, StoreStats) and stats.quarantined == 1 and stats.user_id == "alice"
    state = store.channel(CID)
    assert isinstance(state, ChannelState) and state.membership == member
    assert state.members == [member] and [m.id for m in state.messages] == ["m1"]
    [summary] = store.channels()
    assert summary.membership == member


def test_the_own_user_is_a_struct_with_the_object_and_the_row(store: ChatStore) -> None:
    alice = store.user("alice")
    assert isinstance(alice, StoredUser)
    assert (alice.id, alice.name, alice.online, alice.banned) == ("alice", "Alice", False, False)
    # The figures the store keeps current replace those of the object as received.
    assert alice.user["total_unread_count"] == 1
    assert [m["target"]["id"] for m in alice.user["mutes"]] == ["carol"]
    assert alice.row["id"] == "alice" and alice.position == alice.row["position"]
    assert store.user("nobody") is None


def test_times_stay_integers_with_aware_utc_datetimes_beside_them(store: ChatStore) -> None:
    [reaction] = store.reactions("m1")
    assert reaction.created_at == AT_US and reaction.created == AT_DATETIME
    assert reaction.updated == AT_DATETIME
    [member] = store.members(CID)
    assert member.created == AT_DATETIME and member.created.tzinfo is timezone.utc
    [thread_read] = store.thread_reads("m1")
    assert thread_read.last_read == AT_US and thread_read.last_read_time == AT_DATETIME
    assert store.drafts()[0].created == AT_DATETIME
    assert store.polls()[0].updated == AT_DATETIME
    assert store.threads()[0].last_message_time == AT_DATETIME
    [reminder] = store.reminders()
    assert reminder.remind_time == AT_DATETIME and reminder.created == AT_DATETIME
    [mute] = store.mutes()
    assert mute.created == AT_DATETIME and mute.expires_time is None
    assert store.channel_mutes()[0].expires_time == datetime(2099, 1, 1, tzinfo=timezone.utc)
    assert store.quarantine()[0].received is not None
    assert store.connection_info().last_health_check is not None
    own = [read for read in store.reads(CID) if read.user_id == "alice"]
    assert all(read.last_read_time is None for read in own)  # a thread read leaves it


def test_reading_a_result_like_a_dict_still_works_and_warns(store: ChatStore) -> None:
    [member] = store.members(CID)
    with pytest.warns(DeprecationWarning, match=r"\['user_id'\].*use \.user_id"):
        assert member["user_id"] == "alice"
    with pytest.warns(DeprecationWarning):
        assert member.get("role") == "owner" and member.get("nope", 7) == 7
    with pytest.warns(DeprecationWarning):
        assert "cid" in member and "nope" not in member
    with pytest.warns(DeprecationWarning):
        assert dict(member) == msgspec.structs.asdict(member)
    with pytest.warns(DeprecationWarning):
        assert list(member.keys()) == list(member.__struct_fields__)
    with pytest.raises(KeyError), pytest.warns(DeprecationWarning):
        member["nope"]
    # The user and the connection read as the dicts they were.
    alice = store.user("alice")
    assert alice is not None
    with pytest.warns(DeprecationWarning):
        assert alice["name"] == "Alice" and alice["_row"]["id"] == "alice"
        assert alice["total_unread_count"] == 1
    with pytest.warns(DeprecationWarning):
        assert "last_sync_at" not in store.connection_info()  # unknown: absent, as before
    with pytest.warns(DeprecationWarning):
        assert store.channel(CID)["members"] == [member]
    # Compared with a dict, a result compares as that dict did (not False without a word).
    with pytest.warns(DeprecationWarning, match="== a dict"):
        assert store.unread_counts() == {"total_unread_count": 1, "unread_channels": 1,
                                         "channels": {CID: 1}}
    with pytest.warns(DeprecationWarning):
        assert store.members(CID) == [msgspec.structs.asdict(member)]
    with pytest.warns(DeprecationWarning):
        assert store.unread_counts() != {"total_unread_count": 0}
    # Between structs, equality is by type and fields, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert store.members(CID) == [member] and store.unread_counts() == store.unread_counts()
        assert store.mutes()[0] != store.channel_mutes()[0]
        assert len({member, store.members(CID)[0]}) == 1  # rows without dicts are hashable


def test_the_structs_encode_as_the_dicts_did(store: ChatStore) -> None:
    """The JSON of each struct is the JSON of the dict it replaces: the table's columns in
    order (what `SELECT *` gave), the same keys for the composed ones."""
    with store.log.datastore.transaction(commit=False) as c:
        def table(sql: str) -> list[dict]:
            cursor = c.execute(sql)
            names = [d[0] for d in cursor.getdescription()]
            return [dict(zip(names, row)) for row in cursor]
        old_members = table(f"SELECT * FROM members WHERE cid='{CID}' ORDER BY created_at, user_id")
        old_reads = table(f"SELECT * FROM reads WHERE cid='{CID}' ORDER BY user_id")
        old_reactions = table("SELECT * FROM reactions WHERE message_id='m1'")
    encode = msgspec.json.encode
    assert encode(store.members(CID)) == encode(old_members)
    assert encode(store.reads(CID)) == encode(old_reads)
    assert encode(store.reactions("m1")) == encode(old_reactions)
    counts = store.unread_counts()
    assert encode(counts) == encode({"total_unread_count": 1, "unread_channels": 1,
                                     "channels": {CID: 1}})
    [mute] = store.mutes()
    assert encode(mute) == encode({"user_id": "carol", "created_at": AT_US,
                                   "updated_at": AT_US, "expires": None, "mute": mute.mute})
    state = store.channel(CID)
    assert state is not None
    assert list(msgspec.structs.asdict(state)) == [
        "channel", "members", "read", "messages", "pinned_messages", "membership",
        "draft_position", "unread_count"]
    stats = msgspec.json.decode(encode(store.stats()))
    assert list(stats)[:11] == ["events", "streams", "channels", "quarantined", "payload_bytes",
                                "stored_payload_bytes", "compression_ratio", "dictionaries",
                                "file_bytes", "by_source", "by_type"]
    assert list(stats)[11:] == ["channel_streams", "hidden_channels", "unprojected",
                                "unprojected_latest", "user_id", "path", "bundle"]


def test_json_output_of_the_commands_is_unchanged_and_reads_no_deprecated_path(tmp_path) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        _fill(store)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    with warnings.catch_warnings():
        # The commands read the results by attribute: a dict-style read would raise here.
        warnings.simplefilter("error", DeprecationWarning)
        outputs = {}
        for command in (["show", "channel", CID, "--json"], ["show", "user", "alice", "--json"],
                        ["stats", "--json"], ["quarantine", "--json"], ["mutes", "--json"],
                        ["reminders", "--json"], ["show", "channel", CID], ["stats"],
                        ["show", "user", "alice"], ["mutes"], ["reminders"], ["quarantine"]):
            result = runner.invoke(cli, [*base, *command], catch_exceptions=False)
            assert result.exit_code == 0, (command, result.output)
            outputs[" ".join(command)] = result.output
    with ChatStore.open(tmp_path, "alice") as store:
        alice = store.user("alice")
        [member] = store.members(CID)
        [mute] = store.mutes()
    assert alice is not None
    shown_user = msgspec.json.decode(outputs["show user alice --json"])
    assert shown_user == msgspec.json.decode(msgspec.json.encode({**alice.user, "_row": alice.row}))
    assert list(shown_user)[-1] == "_row" and shown_user["name"] == "Alice"
    channel = msgspec.json.decode(outputs[f"show channel {CID} --json"])
    assert list(channel) == ["channel", "members", "read", "messages", "pinned_messages",
                             "membership", "draft_position", "unread_count", "message_gaps"]
    assert channel["members"] == [msgspec.structs.asdict(member)]
    assert channel["membership"] == msgspec.structs.asdict(member)
    mutes = [msgspec.json.decode(line) for line in outputs["mutes --json"].splitlines()]
    assert mutes[0] == {"kind": "user", "user_id": "carol", "created_at": AT,
                        "updated_at": AT, "expires": None, "mute": mute.mute}
    [item] = [msgspec.json.decode(line) for line in outputs["quarantine --json"].splitlines()]
    assert list(item) == ["id", "received_at", "source", "connection_id", "reason", "size", "raw"]
    assert item["raw"] == '{"type": 3}'
    [reminder] = [msgspec.json.decode(line) for line in outputs["reminders --json"].splitlines()]
    assert reminder["remind_at"] == AT and reminder["due"] is False
    assert "carol" in outputs["mutes"] and "Alice" in outputs["show user alice"]


def test_unprojected_entries_are_structs(tmp_path) -> None:
    # A value the tables cannot hold (an integer beyond SQLite's) is left out, and said so.
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(event("message.new", message=message("m1", reply_count=2**70)))
        entries = store.unprojected()
        assert entries and all(isinstance(entry, UnprojectedEntry) for entry in entries)
        assert entries[0].type == "message.new" and entries[0].reason
        assert store.stats().unprojected_latest == entries


def test_every_result_type_is_exported_from_the_package_root() -> None:
    for name in results.__all__:
        assert name in chatledger.__all__ and getattr(chatledger, name) is getattr(results, name)
    assert chatledger.StoredMessage is results.StoredMessage
    # The old import path of the two that moved keeps working.
    from chatledger.projections.queries import ChannelSummary, StoredMessage
    assert (ChannelSummary, StoredMessage) == (results.ChannelSummary, results.StoredMessage)


def test_results_are_frozen(store: ChatStore) -> None:
    [member] = store.members(CID)
    with pytest.raises(AttributeError):
        member.role = "admin"  # type: ignore[misc]

