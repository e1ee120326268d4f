"""The streams' back-pointers (eventstore/links.py): the audit reads that use them (`log --cid`,
`explain`, `as-of` of a channel) answer exactly what a scan of the whole log answers; an older
store is linked on open (and after a kill, goes on); restore, bundles and appends without links
keep them right."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.eventstore import links, schema
from chatledger.eventstore.log import EventLog
from chatledger.projections import history
from chatledger.projections.history import as_of, explain
from fixtures import event, message, query_channels_response, user

A, B = "messaging:general", "messaging:random"
# Message ids are the backend's, unique across channels: "a..." in A, "b..." in B.
IDS = ["a1", "a2", "a3", "b1", "b2", "b3"]


def channel_of(mid: str) -> str:
    return A if mid.startswith("a") else B


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}Z"


# -- generated logs ----------------------------------------------------------------------------------

def _op(kind: str, cid: str, mid: str, parent: str, n: int) -> list[bytes]:
    """One batch of the generated log: `kind` on message `mid` of channel `cid`, at time n."""
    if kind == "new":
        return [event("message.new", cid=cid, at=at(n), user=user("bob"),
                      message=message(mid, cid=cid, at=at(n), text=f"t{n}"))]
    if kind == "reply":
        return [event("message.new", cid=cid, at=at(n), user=user("bob"),
                      message=message(mid, cid=cid, at=at(n), parent_id=parent))]
    if kind == "edit":
        return [event("message.updated", cid=cid, at=at(n),
                      message=message(mid, cid=cid, at=at(0), text=f"edit {n}"))]
    if kind == "soft":
        return [event("message.deleted", cid=cid, at=at(n),
                      message=message(mid, cid=cid, at=at(0), type="deleted", deleted_at=at(n)))]
    if kind == "hard":  # like the backend, without the parent of a reply
        return [event("message.deleted", cid=cid, at=at(n), message=message(mid, cid=cid, at=at(0)),
                      hard_delete=True)]
    if kind == "react":
        return [event("reaction.new", cid=cid, at=at(n),
                      reaction={"message_id": mid, "user_id": "alice", "type": "like"},
                      message=message(mid, cid=cid, at=at(0), reaction_counts={"like": 1}))]
    if kind == "unreact":
        return [event("reaction.deleted", cid=cid, at=at(n),
                      reaction={"message_id": mid, "user_id": "alice", "type": "like"},
                      message=message(mid, cid=cid, at=at(0)))]
    if kind == "truncate":
        return [event("channel.truncated", cid=cid, at=at(n),
                      channel={"cid": cid, "type": "messaging", "id": cid.split(":")[1],
                               "truncated_at": at(n - 1)})]
    if kind == "hide":
        return [event("channel.hidden", cid=cid, at=at(n), clear_history=True)]
    if kind == "user_deleted":
        return [event("user.messages.deleted", cid=None, at=at(n), user=user("bob"))]
    if kind == "presence":
        return [event("user.presence.changed", cid=None, at=at(n), user=user("carol"))]
    if kind == "profile":  # the author's profile: only the users table
        return [event("user.updated", cid=None, at=at(n),
                      user={**user("bob"), "name": f"Bob {n}", "updated_at": at(n)})]
    if kind == "typing":
        return [event("typing.start", cid=cid, at=at(n), user=user("bob"))]
    if kind == "mark_all":  # every channel read, from the user's stream
        return [event("notification.mark_read", cid=None, at=at(n), user=user("alice"))]
    if kind == "read":
        return [event("message.read", cid=cid, at=at(n), user=user("alice"),
                      last_read_message_id=mid)]
    if kind == "updated":
        return [event("channel.updated", cid=cid, at=at(n),
                      channel={"cid": cid, "type": "messaging", "id": cid.split(":")[1],
                               "name": f"name {n}"})]
    if kind == "query":  # a query answer: channel states, whose messages the store files
        return [query_channels_response([cid])]
    if kind in ("send", "local_edit", "local_react"):
        return []
    if kind == "batch":  # several entries of both channels in one append
        return [*_op("new", channel_of(mid), mid, parent, n),
                *_op("react", channel_of(parent), parent, parent, n),
                *_op("edit", channel_of(parent), parent, parent, n)]
    raise AssertionError(kind)


KINDS = ["new", "new", "new", "reply", "edit", "soft", "hard", "react", "unreact", "truncate",
         "hide", "user_deleted", "presence", "read", "updated", "query", "batch", "send",
         "local_edit", "local_react", "profile", "typing", "mark_all"]
ops = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([A, B]), st.sampled_from(IDS),
                         st.sampled_from(["1", "2", "3"])), min_size=1, max_size=30)


def build(tmp_path: Path, steps: list[tuple[str, str, str, str]]) -> ChatStore:
    store = ChatStore.open(tmp_path, "alice")
    for n, (kind, cid, mid, parent) in enumerate(steps, start=1):
        if kind not in ("truncate", "hide", "updated", "query", "user_deleted", "presence",
                        "profile", "typing", "mark_all"):
            cid = channel_of(mid)
        # A reply's parent is in its channel.
        batch = _op(kind, cid, mid, mid[0] + parent[-1], n)
        if kind == "send":  # local actions: commands, in their own streams
            if store.message(mid) is None:
                store.send_message(cid, f"local {n}", id=mid)
        elif kind == "local_edit":
            if store.message(mid) is not None:
                store.update_message(mid, f"local edit {n}")
        elif kind == "local_react":
            if store.message(mid) is not None:
                store.send_reaction(mid, "wow")
        elif kind == "query":
            store.log.append_query_channels(batch[0])
        else:
            store.ingest_many(batch)
    return store


def full_scan(store: ChatStore) -> Any:
    """A context in which the links cannot answer: every read scans the log, as before them."""
    class Scan:
        def __enter__(self) -> None:
            store.log.set_meta(links.META_LINKS_PENDING, store.log.max_position())

        def __exit__(self, *exc: object) -> None:
            with store.log.datastore.transaction(commit=True) as c:
                c.execute("DELETE FROM chatledger_meta WHERE key=?", (links.META_LINKS_PENDING,))
    return Scan()


def answers(store: ChatStore, positions: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mid in [*IDS, "nope"]:
        out[f"explain {mid}"] = explain(store, mid, unchanged=True)
    for cid in (A, B, "@user", "messaging:none"):
        out[f"log {cid}"] = store.history(cid=cid)
        out[f"log {cid} newest 3"] = store.history(cid=cid, limit=3, newest_first=True)
        out[f"log {cid} message.new"] = store.history(cid=cid, types=["message.new"])
        out[f"iter {cid}"] = list(store.log.iter_entries(stream=cid, batch=3, newest_first=True))
        out[f"iter {cid} after 5"] = list(store.log.iter_entries(
            stream=cid, batch=2, after=5, types=["message.new", "reaction.new"]))
    for position in positions:
        for cid in (A, B):
            with as_of(store, position=position, cids=[cid]) as past:
                out[f"as-of {position} {cid}"] = (
                    past.channel(cid, messages=50), past.messages(cid, limit=50),
                    [past.message(m) for m in IDS])
        for mid in [*IDS, "nope"]:
            with as_of(store, position=position, message_id=mid) as past:
                out[f"as-of {position} message {mid}"] = (
                    past.message(mid), past.reactions(mid), past.thread(mid))
    return out


def scoped_answers_equal_full_ones(store: ChatStore) -> None:
    end = store.log.max_position()
    positions = sorted({0, end, end // 2, min(1, end)})
    scoped = answers(store, positions)
    with full_scan(store):
        scanned = answers(store, positions)
    assert scoped.keys() == scanned.keys()
    for key in scoped:
        if key.startswith("as-of") and " message " not in key:
            # The whole replay's store: what it says of the channel asked about.
            position, cid = key.split()[1], key.split()[2]
            with as_of(store, position=int(position)) as past:
                whole = (past.channel(cid, messages=50), past.messages(cid, limit=50),
                         [past.message(m) for m in IDS])
            channel, page, found = scoped[key]
            assert (channel, page) == whole[:2], key
            assert ([m for m in found if m is not None and m.cid == cid]
                    == [m for m in whole[2] if m is not None and m.cid == cid]), key
        else:
            assert scoped[key] == scanned[key], key


@settings(max_examples=int(os.environ.get("AUDIT_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=ops)
def test_audit_answers_from_links_equal_a_scan_of_the_whole_log(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, str, str, str]],
) -> None:
    with build(tmp_path_factory.mktemp("gen"), steps) as store:
        scoped_answers_equal_full_ones(store)


def test_the_story_of_test_history_explains_the_same_both_ways(tmp_path: Path) -> None:
    steps = [("new", A, "a1", "1"), ("new", A, "a2", "2"), ("reply", A, "a3", "2"),
             ("react", A, "a2", "2"), ("query", B, "a1", "1"), ("hard", A, "a3", "2"),
             ("user_deleted", A, "a1", "1"), ("truncate", A, "a1", "1"),
             ("batch", B, "b1", "1"), ("send", A, "a4", "1"), ("local_edit", A, "a4", "1"),
             ("local_react", A, "a1", "1"), ("reply", A, "a5", "4")]
    with build(tmp_path, steps) as store:
        assert any(e.command for e in explain(store, "a4"))
        scoped_answers_equal_full_ones(store)
        assert any("reply removed" in e.note for e in explain(store, "a2"))


def test_explain_and_log_read_only_the_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With links, nothing scans the whole log: the scan functions are not called, and the
    statements never read rows of the other channel."""
    with build(tmp_path, [("new", A, "a1", "1"), ("new", B, "b2", "2"),
                          ("edit", A, "a1", "1"), ("react", B, "b2", "2")] * 5) as store:
        def no_scan(*args: object, **kwargs: object) -> None:
            raise AssertionError("scanned the whole log")
        monkeypatch.setattr(history, "_named_by", no_scan)
        monkeypatch.setattr(history, "replay", no_scan)
        assert [e.note for e in explain(store, "a1")][:2] == ["stored", "edited"]
        with as_of(store, position=10, cids=[A]) as past:
            assert past.channel(A) is not None and past.cids == (A,)
        with as_of(store, position=10, message_id="a1") as past:
            message_then = past.message("a1")
            assert message_then is not None and message_then.cid == A and past.cids == (A,)
        entries = store.history(cid=A, limit=50)
        assert {e.stream for e in entries} == {A} and len(entries) == 10


# -- the links themselves ----------------------------------------------------------------------------

def expected_links(path: Path) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """The links and head positions computed from the log alone."""
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    last: dict[str, int] = {}
    rows = []
    for position, stream, topic in connection.execute(
            "SELECT rowid, originator_id, topic FROM stored_events WHERE source != 0 "
            "ORDER BY rowid"):
        back = position - last[stream] if stream in last else 0
        bits = ((topic in links.QUIET_TOPICS) * links.QUIET
                + (topic in links.PROFILE_TOPICS) * links.PROFILE)
        rows.append((position, back * 4 + bits))
        last[stream] = position
    connection.close()
    return rows, last


def stored_links(path: Path) -> list[tuple[int, int]]:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(connection.execute("SELECT position, back FROM stream_links ORDER BY position"))
    finally:
        connection.close()


def assert_linked(store: ChatStore) -> None:
    path = store.log.datastore.path
    assert path is not None
    links_wanted, heads = expected_links(path)
    assert stored_links(path) == links_wanted
    with store.log.datastore.transaction(commit=False) as c:
        assert not links.pending(c)
        for stream, head in heads.items():
            found = links.stream_positions(c, "stored_events", stream)
            assert found is not None and found[-1] == head


def test_appends_of_every_kind_keep_the_links(tmp_path: Path) -> None:
    from benchmarks.workload import generate_events  # a mix over many channels
    with ChatStore.open(tmp_path, "alice") as store:
        payloads = list(generate_events(12_000, seed=3, channels=30))
        for start in range(0, len(payloads), 1_000):
            store.ingest_many(payloads[start:start + 1_000])
        store.log.append_query_channels(query_channels_response([A, B]))
        store.ingest_many([payloads[0]])  # one at a time too
        assert_linked(store)


def _as_version_2(path: Path) -> None:
    """What a store written before the links looks like: schema 2, neither table nor column."""
    connection = apsw.Connection(str(path))
    connection.execute("DROP TABLE stream_links")
    connection.execute("ALTER TABLE streams DROP COLUMN position")
    connection.execute("UPDATE chatledger_meta SET value=2 WHERE key='schema_version'")
    connection.close()


def test_an_older_store_is_linked_on_open_page_by_page(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [("new", A, "a1", "1"), ("new", B, "b2", "2"), ("reply", A, "a3", "1"),
             ("query", B, "b1", "1"), ("react", A, "a1", "1")] * 8
    with build(tmp_path, steps) as store:
        path = store.log.datastore.path
        assert path is not None
        before = answers(store, [store.log.max_position()])
    _as_version_2(path)
    monkeypatch.setattr(links, "RELINK_PAGE", 7)
    pages: list[int] = []
    log = EventLog.open(path)  # an older store opened: upgraded, linked a page at a time
    assert log.get_meta("schema_version") == schema.SCHEMA_VERSION
    log.close()
    with ChatStore.open(tmp_path, "alice") as store:
        assert_linked(store)
        assert answers(store, [store.log.max_position()]) == before
        # A kill in the middle: the next open goes on from the last page committed.
        with store.log.datastore.transaction(commit=True) as c:
            c.execute("DELETE FROM stream_links WHERE position > 20")
            c.execute("UPDATE stream_links SET back = back + 1 WHERE position > 15")  # half a page
            c.execute("INSERT INTO chatledger_meta (key, value) VALUES (?, 15)",
                      (links.META_LINKS_PENDING,))
        store.log.finish_links(on_page=pages.append)
        assert pages and pages[0] > 15
        assert_linked(store)


def test_appends_without_links_are_linked_on_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "alice.chatledger"
    log = EventLog.open(path)
    log.append_events([event("message.new", cid=A, at=at(1), message=message("m1", at=at(1)))])
    log.close()
    log = EventLog.open(path)
    log.stream_links = False  # what `benchmarks audit` measures against
    log.append_events([event("message.new", cid=c, at=at(n), message=message(f"m{n}", cid=c))
                       for n in range(2, 40) for c in (A, B)])
    assert log.entries(stream=A)[-1].position == 76  # read by a scan meanwhile
    assert log.get_meta(links.META_LINKS_PENDING) == 1
    log.close()
    with ChatStore.open(tmp_path, "alice") as store:
        assert_linked(store)


def test_restored_and_bundled_copies_are_linked(tmp_path: Path) -> None:
    steps = [("new", A, "a1", "1"), ("new", B, "b2", "2"), ("react", A, "a1", "1"),
             ("query", B, "b1", "1")] * 6
    with build(tmp_path / "a", steps) as source:
        rows = source.log.stored_rows(limit=10_000)
        with ChatStore.open(tmp_path / "b", "alice") as copy:
            copy.log.restore(source.log.stored_dictionaries(), rows[:30])
            copy.log.restore([], rows[30:])
            assert_linked(copy)
        source.bundle(tmp_path / "bundle", cids=[B])
    with ChatStore.open(tmp_path / "bundle", "alice") as bundled:
        assert_linked(bundled)
        assert {e.stream for e in bundled.history(cid=B)} == {B}
        with full_scan(bundled):
            scanned = bundled.history(cid=B)
        assert bundled.history(cid=B) == scanned and scanned
