"""Bundles: a consistent copy of a store that opens with every command; redacted, it holds no
byte of the original texts and names anywhere in its files, and keeps ids, types, times,
counts, the outbox and the errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner

from chatledger import AsyncChatStore, ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.bundle import Redactor
from chatledger.eventstore.log import StoreError
from chatledger.eventstore.userfiles import user_db_path
from chatledger.projections.schema import PROJECTION_VERSION
from reliability import connected, run_async

USER = "alice"
SECRETS = {
    "channel name": "Project Nightingale",
    "custom channel value": "codename-aurora",
    "user name": "Zebediah Quux",
    "user image": "https://cdn.example.org/zq-avatar.png",
    "user custom value": "chief wizard of finance",
    "text": "The secret launch plan is Tuesday",
    "attachment title": "quarterly-numbers.xlsx",
    "attachment url": "https://files.example.org/q3-secret.xlsx",
    "custom message value": "ticket about the merger",
    "offline text": "my offline confession",
    "refused text": "posted where I may not",
    "quarantined": "Unreadable confidential page",
    "quoted in a reason": "Welcome back Agent Smithers",
    "filler": "filler chatter about Nightingale",
}
OPS = "messaging:ops"


def _seed(server: Any) -> None:
    server.seed(
        users=[{"id": "zed", "name": SECRETS["user name"], "image": SECRETS["user image"],
                "title": SECRETS["user custom value"]}],
        channels=[{"type": "messaging", "id": "ops", "name": SECRETS["channel name"],
                   "codename": SECRETS["custom channel value"], "members": ["zed", "alice"],
                   "messages": [
                       {"user_id": "zed", "text": SECRETS["text"], "id": "ops-1",
                        "attachments": [{"type": "file", "title": SECRETS["attachment title"],
                                         "asset_url": SECRETS["attachment url"]}],
                        "topic": SECRETS["custom message value"]},
                   ]}])


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alice's store, synced with the development server: channels, messages, a refused
    action, an offline one, a quarantined answer, and a compression dictionary."""
    directory = tmp_path_factory.mktemp("original")

    async def main() -> None:
        async with connected(directory) as (server, store, client):
            _seed(server)
            await client.run_once()
            server.act("zed", "send_reaction", message_id="ops-1", type="like")
            for n in range(80):  # enough payloads to train a dictionary on
                server.act("zed", "send_message", cid=OPS, text=f"{SECRETS['filler']} {n}",
                           id=f"fill-{n}")
            server.faults.add("send_message", "reject", times=1)
            store.send_message(OPS, SECRETS["refused text"], id="refused-1")
            await client.run_once()
            store.send_message(OPS, SECRETS["offline text"], id="offline-1")
            body = f"{SECRETS['quoted in a reason']} <p>{SECRETS['quarantined']}</p>"
            store.record_unusable_answer(  # the reason quotes the answer's start (sync.answers)
                body.encode(), f"not JSON ({len(body)} bytes, starting {body[:40]!r})")
            assert store.log.train_dictionary() is not None
            assert store.message("refused-1").local_state == "send_failed"

    run_async(main(), 60)
    return directory


def _all_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file())


def test_a_redacted_bundle_holds_no_original_byte(original: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with ChatStore.open(original, USER) as store:
        before_ids = {m.id for m in store.messages(OPS, limit=500)}
        before_outbox = sorted((c.id, c.kind, c.status, c.reason) for c in store.outbox.list())
        report = store.bundle(out, redact=True)
        assert report["redacted"] and report["replaced"] > 0 and report["left_out"] == 0
    target = user_db_path(out, USER)
    assert report["path"] == str(target)
    assert [p.name for p in out.iterdir()] == [target.name]  # no -wal, -journal, partial copy
    everything = _all_bytes(out)
    for what, secret in SECRETS.items():
        assert secret.encode() not in everything, what
    database = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert database.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert database.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        database.close()

    with ChatStore.open(out, USER, create=False) as bundled:
        assert bundled.verify() == []
        stats = bundled.stats()
        assert stats.bundle["redacted"] is True
        assert stats.bundle["projection_version"] == PROJECTION_VERSION
        assert stats.bundle["chatledger_version"]
        assert stats.dictionaries == 1  # compressed again, with a redacted dictionary
        # Decoded, too: every payload and quarantined item.
        decoded = b"".join(entry.payload for entry in bundled.history())
        decoded += b"".join(item.raw + item.reason.encode()
                            for item in bundled.quarantine())
        for what, secret in SECRETS.items():
            assert secret.encode() not in decoded, what
        # Ids, types, times, counts, the outbox and the errors are kept.
        assert {m.id for m in bundled.messages(OPS, limit=500)} == before_ids
        assert sorted((c.id, c.kind, c.status, c.reason)
                      for c in bundled.outbox.list()) == before_outbox
        [conflict] = bundled.outbox.conflicts()
        assert "injected fault" in (conflict.reason or "")
        message = bundled.message("ops-1")
        fields = message.json()
        assert len(fields["text"]) == len(SECRETS["text"]) and fields["text"] != SECRETS["text"]
        assert fields["text"].count(" ") == SECRETS["text"].count(" ")
        assert fields["reaction_counts"] == {"like": 1} and fields["type"] == "regular"
        assert fields["attachments"][0]["type"] == "file"
        url = fields["attachments"][0]["asset_url"]
        assert url != SECRETS["attachment url"] and len(url) == len(SECRETS["attachment url"])
        assert [c for c in url if not c.isalnum()] == [
            c for c in SECRETS["attachment url"] if not c.isalnum()]  # still an URL's shape
        # The same original, the same placeholder: the user's name in every event.
        names = {json.loads(entry.payload).get("message", {}).get("user", {}).get("name")
                 for entry in bundled.history(cid=OPS, types=["message.new"])}
        assert len(names - {None}) == 1
        channel = bundled.channel(OPS).channel
        assert len(channel["name"]) == len(SECRETS["channel name"])
        assert channel["codename"] != SECRETS["custom channel value"]
        assert bundled.message("offline-1").local_state == "sending"
        assert bundled.explain("ops-1")
    with pytest.raises(StoreError, match="already exists"):
        with ChatStore.open(original, USER) as store:
            store.bundle(out)


def test_a_plain_bundle_cut_to_one_channel_and_a_time(original: Path, tmp_path: Path) -> None:
    with ChatStore.open(original, USER) as store:
        entries = store.history()
        middle = entries[len(entries) // 2].received_at
        report = store.bundle(tmp_path / "ops", cids=[OPS])
        later = store.bundle(tmp_path / "later", since=middle)
        own_channels = {c.cid for c in store.channels(limit=50)}
    assert report["left_out"] > 0 and not report["redacted"]
    with ChatStore.open(tmp_path / "ops", USER, create=False) as bundled:
        assert {c.cid for c in bundled.channels(limit=50)} == {OPS}
        assert SECRETS["text"] in bundled.message("ops-1").json()["text"]  # not redacted
        assert {c.cid for c in bundled.outbox.list()} == {OPS}
        info = bundled.stats().bundle
        assert info["redacted"] is False and info["cids"] == [OPS]
        assert bundled.verify() == []
        # Positions are the original's: a bug report's positions match the user's store.
        assert {e.position for e in bundled.history()} <= {e.position for e in entries}
    with ChatStore.open(tmp_path / "later", USER, create=False) as bundled:
        assert all(e.received_at >= middle for e in bundled.history())
        assert later["left_out"] > 0 and bundled.verify() == []
    assert own_channels > {OPS}


def test_the_command_and_the_async_store(original: Path, tmp_path: Path) -> None:
    base = ["--data-dir", str(original), "--user", USER]
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, [*base, "bundle", str(out), "--redact"])
    assert result.exit_code == 0, result.output
    assert "redacted bundle" in result.output
    on_bundle = ["--data-dir", str(out), "--user", USER]
    result = CliRunner().invoke(cli, [*on_bundle, "stats"])
    assert result.exit_code == 0 and "a redacted bundle made by chatledger" in result.output
    for command in (["verify"], ["channels"], ["show", "channel", OPS], ["explain", "ops-1"],
                    ["outbox", "--all"], ["conflicts"], ["log"], ["quarantine"]):
        result = CliRunner().invoke(cli, [*on_bundle, *command])
        assert result.exit_code == 0, (command, result.output)
        assert SECRETS["text"] not in result.output
    result = CliRunner().invoke(cli, [*base, "bundle", str(out)])
    assert result.exit_code == 1 and "already exists" in result.output
    result = CliRunner().invoke(cli, [*base, "bundle", str(tmp_path / "b2"), "--since", "1h",
                                      "--cid", OPS, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["info"]["cids"] == [OPS]

    async def main() -> None:
        async with await AsyncChatStore.open(original, USER) as store:
            report = await store.bundle(tmp_path / "async", redact=True)
            assert report["redacted"] and (await store.bundle_info()) is None

    asyncio.run(main())


def test_redactor_keeps_shape_and_ids() -> None:
    redactor = Redactor(b"k")
    value = {"id": "m1", "type": "regular", "created_at": "2026-11-25T10:00:00Z",
             "text": "Hi Bob, 12:30?", "user": {"id": "bob", "name": "Bob B"},
             "reaction_counts": {"like": 2}, "filter": {"members": {"$in": ["bob"]},
                                                        "name": {"$eq": "Bob B"}},
             "error": {"message": "not allowed", "code": 17}}
    out = redactor.value(value)
    assert out["id"] == "m1" and out["type"] == "regular"
    assert out["created_at"] == value["created_at"]
    assert out["user"]["id"] == "bob" and out["reaction_counts"] == {"like": 2}
    assert out["error"] == value["error"] and out["filter"]["members"] == {"$in": ["bob"]}
    text = out["text"]
    assert len(text) == len(value["text"]) and text != value["text"]
    assert [c.isupper() for c in text] == [c.isupper() for c in value["text"]]
    assert [c.isdigit() for c in text] == [c.isdigit() for c in value["text"]]
    assert text[2] == " " and text[6] == "," and text[-1] == "?"
    assert out["filter"]["name"]["$eq"] == out["user"]["name"]  # consistent
    assert redactor.payload(b"<html>Secret</html>") != b"<html>Secret</html>"
    reason = "not JSON (9 bytes, starting 'Secret...')"
    assert redactor.error_text(reason).startswith("not JSON (9 bytes, starting '")
    assert "Secret" not in redactor.error_text(reason)
    refusal = "not a member (HTTP 403, code 17)"
    assert redactor.error_text(refusal) == refusal
    assert len(redactor.text("é中x")) == 3
