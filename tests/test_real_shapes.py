"""Shapes the backend sends in real traffic: reminders, mutes, channel states whose pinned
messages are older than their page (held history ranges). Hand-written payloads."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import msgspec
import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.wire import parse_time
from fixtures import T0, event, message, user

CID = "messaging:general"


@pytest.fixture
def store(tmp_path: Path):
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []
    s.close()


def run_cli(tmp_path: Path, *args: str):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# -- reminders -------------------------------------------------------------------------------


def reminder_event(kind: str, message_id: str = "m1", *, remind_at: str | None = None,
                   updated_at: str = T0, at: str = T0, cid: str = CID) -> bytes:
    reminder = {"message_id": message_id, "cid": cid, "user_id": "alice",
                "remind_at": remind_at, "created_at": T0, "updated_at": updated_at,
                "message": message(message_id), "user": user("alice")}
    return event(kind, cid=cid, at=at, user_id="alice", reminder=reminder)


def test_reminders_are_created_updated_due_and_deleted(store) -> None:
    store.ingest(reminder_event("reminder.created", "m1", remind_at="2026-11-26T09:00:00Z"))
    store.ingest(reminder_event("reminder.created", "m2"))  # no time: "save for later"
    store.ingest(reminder_event("reminder.created", "m3", remind_at="2026-11-25T12:00:00Z",
                                cid="messaging:other"))
    rows = store.reminders()
    assert [r.message_id for r in rows] == ["m3", "m1", "m2"]  # soonest first, no time last
    assert rows[2].remind_at is None and rows[2].reminder["message"]["id"] == "m2"
    assert [r.message_id for r in store.reminders("messaging:other")] == ["m3"]

    later = "2026-11-25T11:00:00Z"
    store.ingest(reminder_event("reminder.updated", "m1", remind_at="2026-11-25T11:30:00Z",
                                updated_at=later, at=later))
    store.ingest(reminder_event("notification.reminder_due", "m3", updated_at=later, at=later,
                                remind_at="2026-11-25T12:00:00Z", cid="messaging:other"))
    assert [r.message_id for r in store.reminders()] == ["m1", "m3", "m2"]
    assert [r.message_id for r in store.reminders(due=True)] == ["m3"]

    store.ingest(reminder_event("reminder.deleted", "m2", at=later))
    assert [r.message_id for r in store.reminders()] == ["m1", "m3"]


def test_an_older_reminder_event_arriving_late_changes_nothing(store) -> None:
    later = "2026-11-25T11:00:00Z"
    store.ingest(reminder_event("reminder.updated", "m1", remind_at="2026-11-27T00:00:00Z",
                                updated_at=later, at=later))
    store.ingest(reminder_event("reminder.created", "m1", remind_at="2026-11-26T00:00:00Z"))
    assert store.reminders()[0].remind_at == 1795737600000000  # 2026-11-27, the newer state
    # A deletion is sticky against older states, and a newer creation brings it back.
    store.ingest(reminder_event("reminder.deleted", "m1", updated_at=later,
                                at="2026-11-25T12:00:00Z"))
    store.ingest(reminder_event("reminder.updated", "m1", updated_at=later, at=later))
    assert store.reminders() == []
    again = "2026-11-25T13:00:00Z"
    store.ingest(reminder_event("reminder.created", "m1", updated_at=again, at=again))
    assert [r.message_id for r in store.reminders()] == ["m1"]


def test_reminders_command(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as s:
        s.ingest(reminder_event("reminder.created", "m1", remind_at="2026-11-26T09:00:00Z"))
        s.ingest(reminder_event("reminder.created", "m2"))
    human = run_cli(tmp_path, "reminders").stdout
    assert "m1" in human and "2026-11-26 09:00:00.000" in human and "m2" in human
    lines = run_cli(tmp_path, "reminders", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["message_id"] for r in rows] == ["m1", "m2"]
    assert rows[0]["remind_at"] == "2026-11-26T09:00:00Z" and rows[0]["cid"] == CID
    assert rows[0]["reminder"]["message_id"] == "m1"


# -- mutes -----------------------------------------------------------------------------------

MUTED = "messaging:muted"
HOUR = 3_600_000_000


def at_hour(hours: float) -> str:
    """T0 plus some hours, as RFC 3339."""
    from chatledger.eventstore.wire.times import format_time

    return format_time(parse_time(T0) + int(hours * HOUR))


def channel_mute(cid: str, expires: str | None = None) -> dict:
    kind, ident = cid.split(":", 1)
    return {"user": user("alice"), "channel": {"id": ident, "type": kind, "cid": cid},
            "created_at": T0, "updated_at": T0, "expires": expires}


def me(*, mutes: list | None = None, channel_mutes: list | None = None) -> dict:
    body = {**user("alice"), "total_unread_count": 0, "unread_channels": 0, "devices": []}
    if mutes is not None:
        body["mutes"] = mutes
    if channel_mutes is not None:
        body["channel_mutes"] = channel_mutes
    return body


def connected(*, at: str = T0, **lists) -> bytes:
    return msgspec.json.encode({"type": "health.check", "cid": "*", "created_at": at,
                                "connection_id": "c1", "me": me(**lists)})


def new_message(cid: str, mid: str, at: str = T0, uid: str = "bob") -> bytes:
    return event("message.new", cid=cid, at=at, message=message(mid, cid, at=at, uid=uid),
                 user=user(uid))


def unread(store: ChatStore) -> dict:
    return store.unread_counts().channels


def test_a_muted_channel_does_not_count_unread_and_filters_on_muted(store) -> None:
    user_mute = {"user": user("alice"), "target": user("carol"), "created_at": T0,
                 "updated_at": T0, "expires": None}
    store.ingest(connected(mutes=[user_mute], channel_mutes=[channel_mute(MUTED)]))
    store.ingest_many([new_message(MUTED, "x1"), new_message(CID, "g1"), new_message(MUTED, "x2")])
    assert unread(store) == {CID: 1}
    assert store.unread_counts().total_unread_count == 1
    assert [c.cid for c in store.channels({"muted": True})] == [MUTED]
    assert [c.cid for c in store.channels({"muted": False})] == [CID]
    assert [m.cid for m in store.channel_mutes()] == [MUTED]
    assert store.channel_mutes()[0].mute["channel"]["cid"] == MUTED
    assert [(m.user_id, m.expires) for m in store.mutes()] == [("carol", None)]


def test_an_expired_mute_no_longer_counts(store) -> None:
    store.ingest(connected(channel_mutes=[channel_mute(MUTED, expires=at_hour(1))]))
    store.ingest(new_message(MUTED, "x1", at=at_hour(0.5)))  # while muted
    store.ingest(new_message(MUTED, "x2", at=at_hour(2)))  # after the mute expired
    assert unread(store) == {MUTED: 1}
    # Read now (weeks after T0), the mute has expired: not listed, not `muted`.
    assert store.channel_mutes() == [] and len(store.channel_mutes(expired=True)) == 1
    assert store.channels({"muted": True}) == []


def test_mutes_updated_replaces_the_list_and_an_older_one_changes_nothing(store) -> None:
    store.ingest(connected(channel_mutes=[channel_mute(MUTED)]))
    later = at_hour(1)
    store.ingest(event("notification.channel_mutes_updated", cid=None, at=later,
                       me=me(channel_mutes=[])))
    # A list older than the one on file (a late frame) does not mute it again.
    store.ingest(event("notification.channel_mutes_updated", cid=None, at=at_hour(0.5),
                       me=me(channel_mutes=[channel_mute(MUTED)])))
    # A `me` without the list leaves the list alone.
    store.ingest(event("notification.mutes_updated", cid=None, at=at_hour(1.5),
                       me=me(mutes=[{"target": user("dave"), "created_at": later}])))
    assert store.channel_mutes() == []
    assert [m.user_id for m in store.mutes()] == ["dave"]
    store.ingest(new_message(MUTED, "x1", at=at_hour(2)))
    assert unread(store) == {MUTED: 1}


def test_a_hidden_muted_channel_stays_hidden_on_new_messages(store) -> None:
    store.ingest(connected(channel_mutes=[channel_mute(MUTED)]))
    store.ingest(event("channel.hidden", cid=MUTED, clear_history=False))
    store.ingest(new_message(MUTED, "x1", at=at_hour(1)))
    assert store.channels() == [] and [c.cid for c in store.channels({"hidden": True})] == [MUTED]
    assert unread(store) == {}


def test_mutes_command(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as s:
        s.ingest(connected(mutes=[{"target": user("carol"), "created_at": T0}],
                           channel_mutes=[channel_mute(MUTED, expires="2999-01-01T00:00:00Z")]))
        s.ingest_many([new_message(MUTED, "x1"), new_message(CID, "g1")])
    human = run_cli(tmp_path, "mutes").stdout
    assert "carol" in human and MUTED in human and "never" in human and "2999-01-01" in human
    rows = [json.loads(line) for line in run_cli(tmp_path, "mutes", "--json").stdout.splitlines()]
    assert [(r["kind"], r.get("user_id") or r.get("cid")) for r in rows] == [
        ("user", "carol"), ("channel", MUTED)]
    assert rows[1]["expires"] == "2999-01-01T00:00:00Z"
    listed = run_cli(tmp_path, "channels", "--filter", '{"muted": true}', "--json").stdout
    assert [json.loads(line)["cid"] for line in listed.splitlines()] == [MUTED]


# -- held history: pinned messages older than a channel state's page ------------------------


def minutes(n: int) -> str:
    return at_hour(n / 60)


def state_with_old_pin(cid: str = CID) -> dict:
    kind, ident = cid.split(":", 1)
    page = [message(f"p{n}", cid, at=minutes(n)) for n in range(50, 55)]
    pinned = message("old-pin", cid, at=minutes(1), pinned=True, pinned_at=minutes(2),
                     pinned_by=user("bob"))
    return {"channel": {"id": ident, "type": kind, "cid": cid, "created_at": T0,
                        "updated_at": T0, "last_message_at": minutes(54)},
            "messages": page, "pinned_messages": [pinned],
            "members": [{"user_id": "alice", "user": user("alice"), "role": "owner"}],
            "read": [], "watcher_count": 1}


def key(store: ChatStore, message_id: str) -> tuple[int, str]:
    found = store.message(message_id)
    assert found is not None
    return (found.created_at, found.id)


def test_a_pinned_message_older_than_the_page_is_reachable_but_not_contiguous(store) -> None:
    store.ingest_channel_state(state_with_old_pin())
    assert store.message("old-pin") is not None
    assert [m.id for m in store.pinned(CID)] == ["old-pin"]

    newest = store.messages(CID, limit=5)
    assert [m.id for m in newest] == ["p50", "p51", "p52", "p53", "p54"]
    assert newest.contiguous and newest.gaps == ()

    wide = store.messages(CID, limit=10)
    assert [m.id for m in wide][:2] == ["old-pin", "p50"]
    assert not wide.contiguous
    assert wide.gaps == ((key(store, "old-pin"), key(store, "p50")),)

    # Paging older from the page's oldest message lands on the pin, across the gap.
    older = store.messages(CID, before=key(store, "p50"), limit=5)
    assert [m.id for m in older] == ["old-pin"] and not older.contiguous
    assert older.gaps[0].newer == key(store, "p50")
    # And the other way: from the pin to the page.
    newer = store.messages(CID, after=key(store, "old-pin"), limit=2)
    assert [m.id for m in newer] == ["p50", "p51"] and newer.gaps[0].older == key(store, "old-pin")
    assert store.channel(CID, messages=10).messages.gaps == wide.gaps


def test_live_messages_and_sync_extend_the_held_history(store) -> None:
    store.ingest_channel_state(state_with_old_pin())
    store.ingest(new_message(CID, "live1", at=minutes(60)))
    store.ingest_sync(b'{"events":[' + new_message(CID, "synced", at=minutes(70))
                      + b'],"duration":"1ms"}', synced_at=minutes(71))
    page = store.messages(CID, limit=7)
    assert [m.id for m in page][-2:] == ["live1", "synced"] and page.contiguous
    # A message heard of outside the channel's history (a notification) is no part of it.
    store.ingest(event("notification.message_new", cid="messaging:elsewhere", at=minutes(80),
                       message=message("n1", "messaging:elsewhere", at=minutes(80))))
    store.ingest(event("notification.message_new", cid="messaging:elsewhere", at=minutes(90),
                       message=message("n2", "messaging:elsewhere", at=minutes(90))))
    assert not store.messages("messaging:elsewhere").contiguous
    # A later channel state whose page reaches back over the gap closes it.
    bridged = state_with_old_pin()
    bridged["messages"] = [message(f"p{n}", CID, at=minutes(n)) for n in range(1, 55)]
    bridged["messages"][0] = message("old-pin", CID, at=minutes(1), pinned=True,
                                     pinned_at=minutes(2))
    store.ingest_channel_state(bridged)
    assert store.messages(CID, limit=100).contiguous


def test_a_local_send_not_yet_echoed_is_no_gap(store) -> None:
    store.ingest_channel_state(state_with_old_pin())
    store.send_message(CID, "from here")
    page = store.messages(CID, limit=6)
    assert page[-1].local_state == "sending" and page.contiguous


def test_a_made_up_cursor_joins_nothing(store) -> None:
    store.ingest_channel_state(state_with_old_pin())
    # Only a cursor that is a message on file says the page continues another one.
    assert store.messages(CID, after=(0, ""), limit=1).contiguous
    assert store.messages(CID, before=(2**62, ""), limit=5).contiguous
    first_two = store.messages(CID, after=(0, ""), limit=2)
    assert [m.id for m in first_two] == ["old-pin", "p50"] and not first_two.contiguous


def test_show_channel_says_where_its_messages_cross_a_gap(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as s:
        s.ingest_channel_state(state_with_old_pin())
        pin, first = key(s, "old-pin"), key(s, "p50")
    human = run_cli(tmp_path, "show", "channel", CID).stdout
    assert "gap: the store may lack messages between old-pin" in human and "and p50" in human
    shown = json.loads(run_cli(tmp_path, "show", "channel", CID, "--json").stdout)
    assert shown["message_gaps"] == [[list(pin), list(first)]]


def test_the_held_history_follows_another_connections_writes(tmp_path: Path) -> None:
    # The newest stretch of a channel is remembered between appends; another connection's
    # channel state that merges it into a longer stretch (a new start) must not be missed, or
    # the next live message would extend a stretch no longer on file.
    first = ChatStore.open(tmp_path, "alice")
    second = ChatStore.open(tmp_path, "alice")
    try:
        first.ingest(new_message(CID, "live1", at=minutes(60)))
        first.ingest(new_message(CID, "live2", at=minutes(61)))
        state = state_with_old_pin()
        state["messages"] = ([message(f"p{n}", CID, at=minutes(n)) for n in range(50, 60)]
                             + [message("live1", CID, at=minutes(60), uid="bob"),
                                message("live2", CID, at=minutes(61), uid="bob")])
        second.ingest_channel_state(state)
        first.ingest(new_message(CID, "live3", at=minutes(62)))
        page = first.messages(CID, limit=13)  # (not back to the old pin, outside it)
        assert [m.id for m in page][-3:] == ["live1", "live2", "live3"] and page.contiguous
        assert first.verify() == []
    finally:
        second.close()
        first.close()


def test_a_channels_held_history_is_read_once_across_appends(tmp_path: Path) -> None:
    heads: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        if sql.startswith("SELECT start_at, start_id, end_at, end_id FROM held_ranges WHERE cid=?"):
            heads.append(sql)
        return True

    def hook(connection: apsw.Connection) -> None:
        connection.exec_trace = trace

    apsw.connection_hooks.append(hook)
    try:
        store = ChatStore.open(tmp_path, "alice")
    finally:
        apsw.connection_hooks.remove(hook)
    try:
        for n in range(5):
            store.ingest(new_message(CID, f"live{n}", at=minutes(60 + n)))
        assert len(heads) == 1
        assert store.messages(CID, limit=10).contiguous
    finally:
        store.close()
