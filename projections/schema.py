"""The read tables: what queries need, not a second copy of every payload.

A row keeps the fields that filters, sorts and joins use, plus `position`: the log position of
the entry whose payload holds the object as it now stands (and `slot`, its place inside that
payload when the entry carries many, such as a channel state). Whoever needs the whole object
reads those bytes from the log, which already has them.

Times are epoch microseconds (INTEGER), booleans 0/1, custom fields a JSON object (TEXT).
"""

from __future__ import annotations

# Bumped whenever what the tables hold, or how events change them, changes: a file whose tables
# were built by another version is rebuilt from the log when it is opened.
PROJECTION_VERSION = 15

# `slot` says where the object sits in the payload at `position`:
SLOT_EVENT = -1  # the event's own `message` / `channel` / `user` / ... object
SLOT_RESPONSE = -2  # a command's `Succeeded` entry: the `message` of the server's answer
# slot >= 0: index into the `messages` (or `pinned_messages` + 10_000_000) list of a channel state
SLOT_PINNED_BASE = 10_000_000

TABLES: dict[str, str] = {
    "channels": """CREATE TABLE channels (
        cid TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT,
        created_by TEXT,
        created_at INTEGER,
        updated_at INTEGER,
        last_message_at INTEGER,
        member_count INTEGER,
        message_count INTEGER,
        frozen INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        hidden INTEGER NOT NULL DEFAULT 0,
        team TEXT,
        truncated_at INTEGER,
        deleted_at INTEGER,
        custom TEXT,                      -- JSON object of the channel's custom fields
        position INTEGER,                 -- entry holding the channel object as it stands
        slot INTEGER NOT NULL DEFAULT -1, -- -1: the event's `channel`; 0: a channel state's `channel`
        hidden_at INTEGER,                -- server time `hidden` was last set: older news loses
        counts_at INTEGER,                -- server time of the member/message counts events gave
        cleared_at INTEGER                -- `clear_history` up to here: older messages stay out
    ) WITHOUT ROWID""",
    # Clustered by channel and time, so a page of a channel's messages is a few adjacent pages;
    # `messages_id` finds a message by id for updates, deletes and reactions.
    "messages": """CREATE TABLE messages (
        cid TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        id TEXT NOT NULL,
        user_id TEXT,
        type TEXT,
        parent_id TEXT,
        show_in_channel INTEGER NOT NULL DEFAULT 0,
        reply_count INTEGER NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0,
        pinned_at INTEGER,
        updated_at INTEGER,
        deleted_at INTEGER,
        deleted_for_me INTEGER NOT NULL DEFAULT 0,
        silent INTEGER NOT NULL DEFAULT 0,
        local_state TEXT,                 -- sending, updating, deleting, *_failed; NULL when confirmed
        local_command TEXT,               -- the command that put it in that state
        position INTEGER NOT NULL,
        slot INTEGER NOT NULL DEFAULT -1,
        -- the server's time of the state the row shows (the newest of the object's updated_at
        -- and deleted_at and the event's created_at); NULL for a local send not yet confirmed.
        -- An older state never replaces it: events arrive out of order.
        state_at INTEGER,
        PRIMARY KEY (cid, created_at, id)
    ) WITHOUT ROWID""",
    "reactions": """CREATE TABLE reactions (
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        type TEXT NOT NULL,
        score INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER,
        updated_at INTEGER,
        position INTEGER NOT NULL,
        PRIMARY KEY (message_id, user_id, type)
    ) WITHOUT ROWID""",
    "members": """CREATE TABLE members (
        cid TEXT NOT NULL,
        user_id TEXT NOT NULL,
        role TEXT,
        channel_role TEXT,
        banned INTEGER NOT NULL DEFAULT 0,
        pinned_at INTEGER,
        archived_at INTEGER,
        created_at INTEGER,
        updated_at INTEGER,
        PRIMARY KEY (cid, user_id)
    ) WITHOUT ROWID""",
    "reads": """CREATE TABLE reads (
        cid TEXT NOT NULL,
        user_id TEXT NOT NULL,
        last_read INTEGER,
        unread_messages INTEGER NOT NULL DEFAULT 0,
        last_read_message_id TEXT,
        first_unread_message_id TEXT,
        last_delivered_at INTEGER,
        last_delivered_message_id TEXT,
        -- the server's time of the read state (the event's created_at; for a channel state, its
        -- newest message): an older read event does not replace it, and a message created
        -- before it is already counted in `unread_messages`
        state_at INTEGER,
        PRIMARY KEY (cid, user_id)
    ) WITHOUT ROWID""",
    # Messages the backend hard-deleted: a late event that mentions one (a `/sync` answer
    # replaying older events, a retried request's answer) must not bring it or its reactions
    # back, nor count it again as a reply.
    "deleted_messages": """CREATE TABLE deleted_messages (
        id TEXT PRIMARY KEY,
        cid TEXT,
        parent_id TEXT,                   -- for a reply: its parent's count (see apply)
        created_at INTEGER,
        deleted_at INTEGER
    ) WITHOUT ROWID""",
    # Reactions the backend deleted, while no newer one of the same key is on file: an older
    # `reaction.new` delivered after the deletion does not add it again.
    "deleted_reactions": """CREATE TABLE deleted_reactions (
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        type TEXT NOT NULL,
        deleted_at INTEGER NOT NULL,
        PRIMARY KEY (message_id, user_id, type)
    ) WITHOUT ROWID""",
    # Channels deleted, or left by the own user, with the latest time that happened: an event
    # from before it, delivered late, does not bring the channel back.
    "deleted_channels": """CREATE TABLE deleted_channels (
        cid TEXT PRIMARY KEY,
        deleted_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # Members removed (other than the own user, whose removal is the channel's), and when: an
    # older event about the member, delivered late, does not add them back.
    "removed_members": """CREATE TABLE removed_members (
        cid TEXT NOT NULL,
        user_id TEXT NOT NULL,
        removed_at INTEGER NOT NULL,
        PRIMARY KEY (cid, user_id)
    ) WITHOUT ROWID""",
    "users": """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT,
        role TEXT,
        online INTEGER NOT NULL DEFAULT 0,
        banned INTEGER NOT NULL DEFAULT 0,
        last_active INTEGER,
        updated_at INTEGER,
        deleted_at INTEGER,
        custom TEXT,
        position INTEGER NOT NULL,
        slot INTEGER NOT NULL DEFAULT -1  -- -1: the entry's `user` (or `me`); k: a channel state's k-th member's
    ) WITHOUT ROWID""",
    # The server time of the last ban or unban of a user, everywhere (`user_bans`) and in one
    # channel (`member_bans`): an older ban event, or an object of the user or member older than
    # it, delivered late, does not change the `banned` flag back.
    "user_bans": """CREATE TABLE user_bans (
        user_id TEXT PRIMARY KEY,
        banned_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "member_bans": """CREATE TABLE member_bans (
        cid TEXT NOT NULL,
        user_id TEXT NOT NULL,
        banned_at INTEGER NOT NULL,
        PRIMARY KEY (cid, user_id)
    ) WITHOUT ROWID""",
    "drafts": """CREATE TABLE drafts (
        cid TEXT NOT NULL,
        parent_id TEXT NOT NULL DEFAULT '',  -- '' for the channel's own draft
        created_at INTEGER,
        position INTEGER NOT NULL,
        PRIMARY KEY (cid, parent_id)
    ) WITHOUT ROWID""",
    # `user.messages.deleted`: whose messages were deleted, in which channel ('' everywhere), up
    # to when, hard or soft: a message of theirs from before that, delivered late, is filed as
    # deleted (soft) or not at all (hard).
    "deleted_user_messages": """CREATE TABLE deleted_user_messages (
        user_id TEXT NOT NULL,
        cid TEXT NOT NULL DEFAULT '',
        hard INTEGER NOT NULL,
        deleted_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, cid, hard)
    ) WITHOUT ROWID""",
    # Drafts the backend deleted, and when: an older `draft.updated` (or channel state's draft)
    # delivered after the deletion does not bring the draft back.
    "deleted_drafts": """CREATE TABLE deleted_drafts (
        cid TEXT NOT NULL,
        parent_id TEXT NOT NULL DEFAULT '',
        deleted_at INTEGER NOT NULL,
        PRIMARY KEY (cid, parent_id)
    ) WITHOUT ROWID""",
    # Polls the backend deleted: poll ids are never used again, so no event about one, however
    # late, brings it back.
    "deleted_polls": """CREATE TABLE deleted_polls (
        id TEXT PRIMARY KEY
    ) WITHOUT ROWID""",
    "polls": """CREATE TABLE polls (
        id TEXT PRIMARY KEY,
        cid TEXT,
        message_id TEXT,
        updated_at INTEGER,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # Threads as the backend last described them (`thread.updated`); their replies are rows of
    # `messages` with `parent_id`.
    "threads": """CREATE TABLE threads (
        parent_id TEXT PRIMARY KEY,
        cid TEXT,
        reply_count INTEGER,
        participant_count INTEGER,
        last_message_at INTEGER,
        updated_at INTEGER,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "connection": """CREATE TABLE connection (
        key TEXT PRIMARY KEY,             -- connection_id, me_position, last_event_at, last_sync_at
        value
    ) WITHOUT ROWID""",
    # One row per local command (see eventstore.commands): the outbox, and the retry stream
    # (status pending, in_flight or failed) in request order.
    # Keyed by `seq`, not by the (random) command id: a replay updates the rows of the commands
    # it sends in request order, so a batch of outcomes writes neighbouring pages; lookups by id
    # read the unique index, which those updates never change.
    "outbox": """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,          -- log position of the request: the order of requests
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        cid TEXT,
        message_id TEXT,
        status TEXT NOT NULL,             -- pending, in_flight, failed, succeeded, rejected, cancelled
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,                  -- JSON {status, code, message, retry_at}
        next_try_at REAL,                 -- unix seconds
        depends_on TEXT,
        created_at INTEGER NOT NULL,      -- epoch microseconds, the request's time
        updated_at INTEGER NOT NULL,
        reason TEXT,                      -- why it was rejected or cancelled
        version INTEGER NOT NULL,         -- the command aggregate's version
        position INTEGER NOT NULL,        -- entry holding the request as it stands (requested/amended)
        response_position INTEGER,        -- the `Succeeded` entry, when its answer has a message
        undo TEXT                         -- JSON: what the optimistic change replaced
    )""",
    # The retry stream (unfinished commands) in request order. A table of its own rather than
    # an index on `outbox.status`: every attempt changes the status, and keeping such an index
    # doubled the cost of recording one; this table changes only when a command enters or
    # leaves the stream.
    "retry_stream": """CREATE TABLE retry_stream (
        seq INTEGER PRIMARY KEY,          -- outbox.seq
        id TEXT NOT NULL                  -- outbox.id
    )""",
    # Log entries stored but not wholly projected: a value the tables cannot hold (an integer
    # beyond 64 bits) was left out of them (see projections.screen).
    "unprojected": """CREATE TABLE unprojected (
        position INTEGER PRIMARY KEY,     -- the log entry
        type TEXT NOT NULL,
        reason TEXT NOT NULL              -- what was left out, and why
    )""",
    "channel_queries": """CREATE TABLE channel_queries (
        query TEXT PRIMARY KEY,           -- canonical JSON of {"filter": ..., "sort": ...}
        cids TEXT NOT NULL,               -- JSON list, in the order the backend returned them
        position INTEGER NOT NULL,
        received_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
}

# Needed while events are applied (lookups by id): created with the tables.
LOOKUP_INDEXES: list[str] = [
    "CREATE UNIQUE INDEX messages_id ON messages (id)",
    # A message's reply count counts its replies on file newer than its state, and the deleted
    # ones older (see apply): kept for replies only.
    "CREATE INDEX messages_by_parent ON messages (parent_id, created_at, id) "
    "WHERE parent_id IS NOT NULL",
    "CREATE INDEX deleted_replies ON deleted_messages (parent_id, created_at) "
    "WHERE parent_id IS NOT NULL",
    # Outcomes carry over to the commands waiting for one.
    "CREATE INDEX outbox_dependents ON outbox (depends_on) WHERE depends_on IS NOT NULL",
]

# Only queries need these: a rebuild creates them after filling the tables, which is cheaper
# than maintaining them row by row.
INDEXES: list[str] = [
    "CREATE INDEX messages_pinned ON messages (cid, pinned_at) WHERE pinned = 1",
    "CREATE INDEX members_by_user ON members (user_id, cid)",
    "CREATE INDEX channels_by_last_message ON channels (last_message_at)",
]

# -- tables added for the own user's reminders, mutes and held history ranges -------------------

# Reminders (projections.reminders), one per (message, user).
TABLES["reminders"] = """CREATE TABLE reminders (
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        cid TEXT,
        remind_at INTEGER,                -- NULL: no time set ("save for later")
        created_at INTEGER,
        updated_at INTEGER,               -- the server time of the state the row holds
        due INTEGER NOT NULL DEFAULT 0,   -- 1 after notification.reminder_due, until changed
        deleted_at INTEGER,               -- set by reminder.deleted: a tombstone, never listed
        position INTEGER NOT NULL,        -- entry whose `reminder` is the object as it stands
        PRIMARY KEY (message_id, user_id)
    ) WITHOUT ROWID"""

# The own user's mutes (projections.mutes), as the newest `me` lists them: one row per muted
# user, one per muted channel. `position`/`slot`: the entry whose `me` holds the list, and the
# index in it.
TABLES["user_mutes"] = """CREATE TABLE user_mutes (
        user_id TEXT PRIMARY KEY,         -- the muted user
        created_at INTEGER,
        updated_at INTEGER,
        expires INTEGER,                  -- NULL: until unmuted
        position INTEGER NOT NULL,
        slot INTEGER NOT NULL
    ) WITHOUT ROWID"""
TABLES["channel_mutes"] = """CREATE TABLE channel_mutes (
        cid TEXT PRIMARY KEY,             -- the muted channel
        created_at INTEGER,
        updated_at INTEGER,
        expires INTEGER,                  -- NULL: until unmuted
        position INTEGER NOT NULL,
        slot INTEGER NOT NULL
    ) WITHOUT ROWID"""

# The stretches of each channel's history held whole (projections.ranges): every message of the
# channel from (start_at, start_id) to (end_at, end_id), inclusive, is on file. Disjoint.
TABLES["held_ranges"] = """CREATE TABLE held_ranges (
        cid TEXT NOT NULL,
        start_at INTEGER NOT NULL,
        start_id TEXT NOT NULL,
        end_at INTEGER NOT NULL,
        end_id TEXT NOT NULL,
        PRIMARY KEY (cid, start_at, start_id)
    ) WITHOUT ROWID"""

# How far each user has read one thread (projections.thread_reads): a `message.read` with
# `thread` moves this row, never the channel's `reads` row.
TABLES["thread_reads"] = """CREATE TABLE thread_reads (
        parent_id TEXT NOT NULL,          -- the thread's parent message
        user_id TEXT NOT NULL,
        cid TEXT,
        last_read INTEGER,                -- the read event's server time: the newest wins
        last_read_message_id TEXT,
        position INTEGER NOT NULL,        -- the entry of that read
        PRIMARY KEY (parent_id, user_id)
    ) WITHOUT ROWID"""
