"""Shapes the backend sends in real traffic: reminders, mutes, channel states whose pinned
messages are older than their page (held history ranges). Hand-written payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
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
    assert [r["message_id"] for r in rows] == ["m3", "m1", "m2"]  # soonest first, no time last
    assert rows[2]["remind_at"] is None and rows[2]["reminder"]["message"]["id"] == "m2"
    assert [r["message_id"] for r in store.reminders("messaging:other")] == ["m3"]

    later = "2026-11-25T11:00:00Z"
    store.ingest(reminder_event("reminder.updated", "m1", remind_at="2026-11-25T11:30:00Z",
                                updated_at=later, at=later))
    store.ingest(reminder_event("notification.reminder_due", "m3", updated_at=later, at=later,
                                remind_at="2026-11-25T12:00:00Z", cid="messaging:other"))
    assert [r["message_id"] for r in store.reminders()] == ["m1", "m3", "m2"]
    assert [r["message_id"] for r in store.reminders(due=True)] == ["m3"]

    store.ingest(reminder_event("reminder.deleted", "m2", at=later))
    assert [r["message_id"] for r in store.reminders()] == ["m1", "m3"]


def test_an_older_reminder_event_arriving_late_changes_nothing(store) -> None:
    later = "2026-11-25T11:00:00Z"
    store.ingest(reminder_event("reminder.updated", "m1", remind_at="2026-11-27T00:00:00Z",
                                updated_at=later, at=later))
    store.ingest(reminder_event("reminder.created", "m1", remind_at="2026-11-26T00:00:00Z"))
    assert store.reminders()[0]["remind_at"] == 1795737600000000  # 2026-11-27, the newer state
    # A deletion is sticky against older states, and a newer creation brings it back.
    store.ingest(reminder_event("reminder.deleted", "m1", updated_at=later,
                                at="2026-11-25T12:00:00Z"))
    store.ingest(reminder_event("reminder.updated", "m1", updated_at=later, at=later))
    assert store.reminders() == []
    again = "2026-11-25T13:00:00Z"
    store.ingest(reminder_event("reminder.created", "m1", updated_at=again, at=again))
    assert [r["message_id"] for r in store.reminders()] == ["m1"]


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
