"""The row writers: for each read table, the one class that writes it.

Every handler (`projections.apply` for backend events, `projections.local` and
`projections.local_outcomes` for local commands) changes the tables only through these public
methods; each module here names its statements once, at the top. `Rows` holds one writer of
each table for one projector, with what they remember of rows between appends.
"""

from __future__ import annotations

import apsw

from chatledger.projections.ranges import HeldRanges
from chatledger.projections.rows.channels import ChannelRows, RemovedChannels
from chatledger.projections.rows.connection import ConnectionRows
from chatledger.projections.rows.drafts import DraftRows
from chatledger.projections.rows.members import MemberRows
from chatledger.projections.rows.messages import MessageRows
from chatledger.projections.rows.outbox import OutboxRows
from chatledger.projections.rows.polls import PollRows
from chatledger.projections.rows.reactions import ReactionRows
from chatledger.projections.rows.reads import ReadRows
from chatledger.projections.rows.threads import ThreadRows
from chatledger.projections.rows.users import UserRows
from chatledger.projections.thread_reads import ThreadReads

__all__ = ["ChannelRows", "ConnectionRows", "DraftRows", "MemberRows", "MessageRows",
           "OutboxRows", "PollRows", "ReactionRows", "ReadRows", "RemovedChannels", "Rows",
           "ThreadRows", "UserRows"]


class Rows:
    """The writers of every read table, for the own user `own_user_id`."""

    def __init__(self, own_user_id: str | None) -> None:
        self.reactions = ReactionRows()
        self.threads = ThreadRows()
        self.messages = MessageRows(self.reactions, self.threads)
        self.reads = ReadRows(own_user_id)
        self.channels = ChannelRows()
        self.members = MemberRows(own_user_id)
        self.users = UserRows()
        self.drafts = DraftRows()
        self.polls = PollRows()
        self.thread_reads = ThreadReads()
        self.connection = ConnectionRows()
        self.outbox = OutboxRows()
        self.ranges = HeldRanges()

    def drop_channel(self, cursor: apsw.Cursor, cid: str, when: int | None) -> None:
        """The channel is gone (deleted, or the own user left it at `when`): its rows go, and
        what happened in it before `when`, delivered late, is not applied."""
        self.channels.removed.record(cursor, cid, when)
        self.reactions.forget_channel(cursor, cid)  # (first: found through the messages)
        self.messages.forget_channel(cursor, cid)
        self.members.forget_channel(cursor, cid)
        self.reads.forget_channel(cursor, cid)
        self.drafts.forget_channel(cursor, cid)
        # Its threads (and their reads) and polls go too: `threads()` and `polls()` list none
        # of a channel gone.
        self.threads.forget_channel(cursor, cid)
        self.polls.forget_channel(cursor, cid)
        self.thread_reads.forget_channel(cursor, cid)
        self.channels.delete(cursor, cid)
        self.ranges.forget(cursor, cid)

    def forget_others_rows(self) -> None:
        """Forget rows remembered as on file: another connection may have changed them."""
        self.users.forget()
        self.messages.forget_others_rows()
        self.members.forget()
        self.channels.forget()
        self.ranges.discard()  # (called between appends: every head is written already)

    def forget(self) -> None:
        """Forget everything remembered (after a rollback or a rebuild), and drop what was not
        written yet."""
        self.forget_others_rows()
        self.messages.forget()
        self.ranges.discard()
