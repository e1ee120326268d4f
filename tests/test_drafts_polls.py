"""Drafts and polls in the read API: from backend events, channel states and local actions."""

from __future__ import annotations

import pytest

from chatledger import ChatStore
from fixtures import T0, channel_state, event, message

CID = "messaging:general"


@pytest.fixture
def store(tmp_path):
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []
    s.close()


def draft_event(kind: str, parent_id: str | None = None, text: str = "half a thought",
                at: str = T0) -> bytes:
    draft = {"channel_cid": CID, "parent_id": parent_id, "created_at": at,
             "message": {"id": "d1", "text": text, "parent_id": parent_id}}
    return event(kind, draft=draft, at=at)


def test_drafts_from_backend_events(store):
    store.ingest(draft_event("draft.updated"))
    store.ingest(draft_event("draft.updated", parent_id="p1", text="in the thread"))
    assert {(d.cid, d.parent_id) for d in store.drafts()} == {(CID, None), (CID, "p1")}
    assert store.draft(CID).draft["message"]["text"] == "half a thought"
    assert store.draft(CID, "p1").draft["message"]["text"] == "in the thread"
    store.ingest(draft_event("draft.deleted", parent_id="p1"))
    assert store.draft(CID, "p1") is None
    assert store.drafts("messaging:other") == []


def test_a_draft_saved_here_is_read_back_at_once(store):
    store.save_draft(CID, "typed offline", parent_id="p1")
    saved = store.draft(CID, "p1")
    assert saved is not None and saved.draft["message"]["text"] == "typed offline"
    assert store.draft(CID) is None  # a thread's draft is not the channel's
    store.delete_draft(CID, parent_id="p1")
    assert store.draft(CID, "p1") is None


def test_a_channel_state_brings_its_draft(store):
    state = channel_state(CID)
    state["draft"] = {"channel_cid": CID, "created_at": T0,
                      "message": {"id": "d9", "text": "from the server"}}
    store.ingest_channel_state(state)
    assert store.draft(CID).draft["message"]["text"] == "from the server"


def test_polls(store):
    poll = {"id": "poll-1", "name": "Lunch?", "options": [{"id": "o1", "text": "Pizza"}],
            "vote_count": 0, "updated_at": T0}
    store.ingest(event("message.new", message=message("m1", poll_id="poll-1")))
    store.ingest(event("poll.updated", poll=poll, message=message("m1", poll_id="poll-1")))
    voted = {**poll, "vote_count": 3, "updated_at": "2026-11-25T11:00:00Z"}
    store.ingest(event("poll.vote_casted", poll=voted, at="2026-11-25T11:00:00Z"))
    [stored] = store.polls(CID)
    assert stored.id == "poll-1" and stored.poll["vote_count"] == 3
    assert store.poll("poll-1").poll["name"] == "Lunch?"
    assert store.poll("nope") is None
    with store.as_of(position=2) as past:
        assert past.poll("poll-1").poll["vote_count"] == 0


def test_threads_from_thread_updated(store):
    store.ingest(event("message.new", message=message("parent")))
    thread = {"parent_message_id": "parent", "channel_cid": CID, "reply_count": 7,
              "participant_count": 3, "last_message_at": "2026-11-25T11:00:00Z",
              "updated_at": "2026-11-25T11:00:00Z", "title": "Lunch"}
    store.ingest(event("thread.updated", thread=thread))
    [stored] = store.threads(CID)
    assert stored.parent_id == "parent" and stored.reply_count == 7
    assert stored.participant_count == 3 and stored.thread["title"] == "Lunch"
    assert store.message("parent").reply_count == 7
    store.ingest(event("thread.updated", thread={"parent_message_id": "parent",
                                                 "reply_count": 8}))
    assert store.threads()[0].reply_count == 8
    assert store.threads()[0].participant_count == 3  # kept when not said again
    assert store.threads("messaging:other") == []


def test_an_integer_too_big_for_sqlite_costs_only_its_own_projection(store):
    """msgspec reads integers of any size; SQLite stores up to 2**63 - 1. The entry stays in the
    log with the value, the value is left out of the tables and recorded, and the rest of the
    batch is stored and projected."""
    huge = 2**63 + 5
    bad = event("message.new", message=message("big", reply_count=huge))
    state = channel_state("messaging:other")
    state["channel"]["member_count"] = huge
    result = store.ingest_many([bad, event("message.new", message=message("fine"))])
    assert result.stored == 2 and not result.quarantined
    assert store.message("fine") is not None and store.message("big") is not None
    assert store.message("big").json()["reply_count"] == huge  # as stored, exactly
    assert store.ingest_channel_state(state).stored >= 1
    assert len(store.history()) >= 3 and not store.quarantine()
    assert {entry.position for entry in store.unprojected()} >= {result.positions[0]}
    assert store.verify() == []
