"""`diff`: the store's read tables against the server's current view, each difference explained.

The server's view is fetched through the `Backend` (query channels with their newest messages,
members, reads and the own reactions; one channel query for each channel the list leaves out)
and compared field by field with what the store shows, **without changing the store**: an
answer that cannot be used raises, and is not quarantined.

Each difference gets one of five causes:

- `pending`: a local action not yet delivered (pending, in flight, failed) accounts for it;
- `refused`: a local action the backend refused accounts for it (its reason is shown);
- `missed`: the server changed the object and the store never got the change; `window` says
  which part of the sync should have carried it: `after_last_sync` (it happened after
  `last_sync_at`: the next sync brings it), `gap` (the message lies in history the store does
  not hold whole), `quarantine` (an answer that arrived after it was quarantined), `live` (it
  happened while the event stream was followed, and its frame never arrived);
- `local_only`: state that exists only here by design (deleted for me, ephemeral messages);
- `unexplained`: none of the above. These are the bugs.

Every difference names the command that shows the object's history (`explain`, or `log` for
what `explain` does not cover).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from chatledger.eventstore.wire.times import parse_time
from chatledger.projections.results import ChannelState, QuarantineEntry
from chatledger.sync.answers import obviously_unusable
from chatledger.sync.backend import Backend, BackendError, UnusableAnswer
from chatledger.sync.stores import AnyStore, done

PENDING, REFUSED, MISSED, LOCAL_ONLY, UNEXPLAINED = (
    "pending", "refused", "missed", "local_only", "unexplained")
CAUSES = (PENDING, REFUSED, MISSED, LOCAL_ONLY, UNEXPLAINED)
AFTER_LAST_SYNC, GAP, QUARANTINE, LIVE = "after_last_sync", "gap", "quarantine", "live"

DEFAULT_MESSAGES = 25
CHANNELS_PER_PAGE = 30
MAX_CHANNEL_PAGES = 20  # 600 channels: more than a client follows
# Commands whose status is still open (see eventstore.commands.CommandStatus).
_UNFINISHED = ("pending", "in_flight", "failed")
_READ_KINDS = ("mark_read", "mark_unread")
_REACTION_KINDS = ("send_reaction", "delete_reaction")
# A message's fields that are the backend's own (compared one by one, or not at all): every
# other key of the object is a custom field, compared too.
_MESSAGE_COMPARED = ("text", "type", "deleted_at", "reply_count", "pinned", "reaction_counts",
                     "attachments")
_MESSAGE_STANDARD = frozenset({
    "id", "cid", "html", "user", "mentioned_users", "parent_id", "show_in_channel",
    "quoted_message_id", "quoted_message", "deleted_reply_count", "reaction_scores",
    "reaction_groups", "latest_reactions", "own_reactions", "pinned_at", "pinned_by",
    "pin_expires", "silent", "created_at", "updated_at", "poll_id", "poll", "i18n",
    "thread_participants", "command", "args", "deleted_for_me", "message_text_updated_at",
    *_MESSAGE_COMPARED,
})
_CHANNEL_STANDARD = frozenset({
    "id", "type", "cid", "created_by", "created_at", "updated_at", "last_message_at",
    "member_count", "frozen", "disabled", "hidden", "truncated_at", "team", "config",
    "own_capabilities", "cooldown", "members", "message_count",
})
_LOCAL_ONLY_TYPES = ("ephemeral", "error")
_GONE = (403, 404)  # a channel query's "not yours" and "no such channel"

ProgressCallback = Callable[[int, int], None]  # (channels compared, channels in all)


# -- the server's answers, typed where the comparison reads them --------------------------------

class _ChannelState(msgspec.Struct):
    channel: dict[str, Any]
    messages: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    read: list[dict[str, Any]] = []


class _ChannelsAnswer(msgspec.Struct):
    channels: list[_ChannelState]


_CHANNELS = msgspec.json.Decoder(_ChannelsAnswer)
_STATE = msgspec.json.Decoder(_ChannelState)


# -- what a diff reports -------------------------------------------------------------------------

class Mismatch(msgspec.Struct, kw_only=True):
    """One field of one object that differs between the store and the server.

    `kind` is `channel`, `message`, `reaction`, `member` or `read`; `object_id` the channel's
    cid, the message's id, `message_id/type` of an own reaction, the member's or reader's user
    id. `local` and `server` are the two values (None: absent on that side). `cause` is one of
    `CAUSES`, `why` says what accounts for it, `window` (for `missed`) which sync window should
    have carried the change, `explain` the command that shows the object's history."""

    kind: str
    cid: str
    object_id: str
    field: str
    local: Any
    server: Any
    cause: str
    why: str
    window: str | None = None
    command_id: str | None = None
    explain: str = ""


class DiffReport(msgspec.Struct, kw_only=True):
    """What one diff compared and found; `in_sync` when nothing differs."""

    channels: int = 0
    messages: int = 0
    last_sync_at: str | None = None
    mismatches: list[Mismatch] = []

    @property
    def in_sync(self) -> bool:
        return not self.mismatches

    def counts(self) -> dict[str, int]:
        """Mismatches per cause, every cause named."""
        return {cause: sum(1 for m in self.mismatches if m.cause == cause) for cause in CAUSES}


# -- the comparison ------------------------------------------------------------------------------

class _Context:
    """What classifying needs from the store, read once per diff."""

    def __init__(self, commands: Sequence[Any], quarantined: Sequence[QuarantineEntry],
                 last_sync_at: str | None) -> None:
        self.last_sync_at = last_sync_at
        self.last_sync_us = parse_time(last_sync_at) if last_sync_at else None
        self.quarantined = sorted(quarantined, key=lambda item: item.received_at)
        self.by_message: dict[str, list[Any]] = {}
        self.by_cid: dict[str, list[Any]] = {}
        for command in sorted(commands, key=lambda c: c.created_at):
            if command.message_id:
                self.by_message.setdefault(command.message_id, []).append(command)
            if command.cid:
                self.by_cid.setdefault(command.cid, []).append(command)
        self.covered: set[str] = set()  # commands some mismatch was put down to


class Differ:
    """Compares one store with one backend. `await Differ(store, backend).run()`."""

    def __init__(self, store: AnyStore, backend: Backend, *, user_id: str | None = None) -> None:
        self.store = store
        self.backend = backend
        self.user_id = user_id or store.user_id

    async def run(
        self, cids: Iterable[str] | None = None, *, messages: int = DEFAULT_MESSAGES,
        on_progress: ProgressCallback | None = None,
    ) -> DiffReport:
        """Compare the channels `cids` (default: the user's channels on the server and every
        channel the store lists) with their newest `messages` messages."""
        if messages < 1:
            raise ValueError("messages must be 1 or more")
        store = self.store
        context = _Context(await done(store.outbox.list()),
                           await done(store.quarantine()),
                           await done(store.last_sync_at()))
        report = DiffReport(last_sync_at=context.last_sync_at)
        states: dict[str, _ChannelState | None] = {}
        if cids is None:
            for state in await self._query_own_channels(messages):
                states[state.channel.get("cid", "")] = state
            local = [summary.cid for summary in await done(store.channels(limit=10_000))]
            # The channels of local actions that still wait for someone (a refused send into
            # a channel the server does not list, say) are compared too.
            waiting = [cid for cid, commands in context.by_cid.items() if any(
                command.status in (*_UNFINISHED, "rejected") for command in commands)]
            wanted = list(dict.fromkeys([*states, *local, *waiting]))
        else:
            wanted = list(dict.fromkeys(cids))
        for number, cid in enumerate(wanted, 1):
            if cid not in states:
                states[cid] = await self._query_channel(cid, messages)
            await self._compare_channel(cid, states[cid], messages, context, report)
            if on_progress is not None:
                on_progress(number, len(wanted))
        report.channels = len(wanted)
        self._uncovered_commands(set(wanted), context, report)
        return report

    # -- fetching ------------------------------------------------------------------------------

    async def _query_own_channels(self, messages: int) -> list[_ChannelState]:
        found: list[_ChannelState] = []
        members = {"members": {"$in": [self.user_id]}} if self.user_id else {}
        for page in range(MAX_CHANNEL_PAGES):
            raw = await self.backend.query_channels(
                members, [{"field": "last_message_at", "direction": -1}],
                limit=CHANNELS_PER_PAGE, offset=page * CHANNELS_PER_PAGE,
                message_limit=messages, watch=False)
            answer = _decode(_CHANNELS, raw, "POST /channels")
            found += answer.channels
            if len(answer.channels) < CHANNELS_PER_PAGE:
                break
        return found

    async def _query_channel(self, cid: str, messages: int) -> _ChannelState | None:
        """The channel's state, or None when the server says it is not there for this user."""
        try:
            raw = await self.backend.query_channel(cid, messages_limit=messages, watch=False)
        except UnusableAnswer:
            raise
        except BackendError as error:
            if error.status in _GONE:
                return None
            raise
        return _decode(_STATE, raw, "POST /channels/{type}/{id}/query")

    # -- comparing -----------------------------------------------------------------------------

    async def _compare_channel(self, cid: str, state: _ChannelState | None, limit: int,
                               context: _Context, report: DiffReport) -> None:
        store = self.store
        local = await done(store.channel(cid, messages=1))
        summaries = (await done(store.channels(filter={"cid": cid}, limit=1))
                     if local is not None else [])
        if state is None:
            if local is not None:
                report.mismatches.append(self._classify(
                    "channel", cid, cid, "exists", True, None, context,
                    server_at=None, local_at=None, via_cid=True))
            await self._compare_messages(cid, [], limit, context, report, readable=False)
            return
        channel = state.channel
        if local is None:
            report.mismatches.append(self._classify(
                "channel", cid, cid, "exists", None, True, context,
                server_at=_time(channel.get("created_at")), local_at=None))
        else:
            newest = max(state.messages, key=lambda m: _time(m.get("created_at")) or 0,
                         default=None)
            self._compare_channel_fields(cid, channel, local, summaries, context, report,
                                         newest_id=(newest or {}).get("id"))
            # The member and read rows as plain dicts: compared field by field with the
            # server's objects, by the same names.
            self._compare_members(cid, state.members,
                                  [msgspec.structs.asdict(m) for m in local.members],
                                  context, report)
            self._compare_read(cid, state.read, [msgspec.structs.asdict(r) for r in local.read],
                               context, report)
        shown = [m for m in state.messages
                 if not m.get("parent_id") or m.get("show_in_channel")]
        await self._compare_messages(cid, shown, limit, context, report, readable=True)

    def _compare_channel_fields(self, cid: str, server: dict[str, Any], local: ChannelState,
                                summaries: list[Any], context: _Context,
                                report: DiffReport, *, newest_id: str | None) -> None:
        mine = local.channel or {}
        summary = summaries[0] if summaries else None
        values = {
            "name": (summary.name if summary else mine.get("name"), server.get("name")),
            "member_count": (summary.member_count if summary else mine.get("member_count"),
                             server.get("member_count")),
            "last_message_at": (summary.last_message_at if summary else
                                _time(mine.get("last_message_at")),
                                _time(server.get("last_message_at"))),
            "frozen": (bool(mine.get("frozen")), bool(server.get("frozen"))),
            "disabled": (bool(mine.get("disabled")), bool(server.get("disabled"))),
        }
        custom = dict(summary.custom) if summary else {
            key: value for key, value in mine.items() if key not in _CHANNEL_STANDARD}
        for key in sorted(set(custom) | {k for k in server if k not in _CHANNEL_STANDARD}):
            if key != "name":
                values[key] = (custom.get(key), server.get(key))
        server_at = _time(server.get("updated_at"))
        for field, (mine_value, theirs) in values.items():
            if mine_value != theirs:
                changed_at = (theirs if field == "last_message_at" and isinstance(theirs, int)
                              else server_at)
                # The newest message moves `last_message_at`: a local action on it (a send
                # whose answer was lost) accounts for the channel's time as well.
                report.mismatches.append(self._classify(
                    "channel", cid, cid, field, mine_value, theirs, context,
                    server_at=changed_at, local_at=_time(mine.get("updated_at")),
                    via_message=newest_id if field == "last_message_at" else None))

    def _compare_members(self, cid: str, server: list[dict[str, Any]],
                         local: list[dict[str, Any]], context: _Context,
                         report: DiffReport) -> None:
        theirs = {m.get("user_id") or (m.get("user") or {}).get("id"): m for m in server}
        mine = {row["user_id"]: row for row in local}
        for user_id in sorted(set(theirs) | set(mine), key=str):
            server_member, local_member = theirs.get(user_id), mine.get(user_id)
            if server_member is None or local_member is None:
                report.mismatches.append(self._classify(
                    "member", cid, str(user_id), "exists", local_member is not None or None,
                    server_member is not None or None, context,
                    server_at=_time((server_member or {}).get("updated_at")),
                    local_at=(local_member or {}).get("updated_at")))
                continue
            for field in ("role", "channel_role", "banned"):
                mine_value = local_member.get(field)
                theirs_value = server_member.get(field)
                if field == "banned":
                    mine_value, theirs_value = bool(mine_value), bool(theirs_value)
                elif theirs_value is None:
                    continue  # a partial member object: a missing field says nothing
                if mine_value != theirs_value:
                    report.mismatches.append(self._classify(
                        "member", cid, str(user_id), field, mine_value, theirs_value, context,
                        server_at=_time(server_member.get("updated_at")),
                        local_at=local_member.get("updated_at")))

    def _compare_read(self, cid: str, server: list[dict[str, Any]],
                      local: list[dict[str, Any]], context: _Context,
                      report: DiffReport) -> None:
        """The own user's read state: the one this client changes."""
        theirs = next((r for r in server
                       if (r.get("user") or {}).get("id", r.get("user_id")) == self.user_id),
                      None)
        mine = next((r for r in local if r["user_id"] == self.user_id), None)
        if theirs is None:
            return  # the server keeps no read state for us here: nothing to hold against
        # `last_read` itself is not compared: the server moves it on the user's own sends
        # without an event (and Stream's clients ignore that); what the user sees is the
        # unread count and the last message read. It dates the change for classifying.
        values = {
            "unread_messages": ((mine or {}).get("unread_messages"),
                                theirs.get("unread_messages")),
            "last_read_message_id": ((mine or {}).get("last_read_message_id"),
                                     theirs.get("last_read_message_id")),
        }
        for field, (mine_value, theirs_value) in values.items():
            if mine_value != theirs_value:
                report.mismatches.append(self._classify(
                    "read", cid, str(self.user_id), field, mine_value, theirs_value, context,
                    server_at=_time(theirs.get("last_read")),
                    local_at=(mine or {}).get("last_read")))

    async def _compare_messages(self, cid: str, server: list[dict[str, Any]], limit: int,
                                context: _Context, report: DiffReport, *,
                                readable: bool) -> None:
        store = self.store
        # Local messages not yet echoed by the server sit among the newest: read enough to
        # cover the server's window whatever the store adds to it.
        page = await done(store.messages(cid, limit=limit * 2))
        theirs = {m.get("id"): m for m in server}
        keys = sorted((_time(m.get("created_at")) or 0, str(m.get("id"))) for m in server)
        # The server sent its newest `limit`: older local messages are outside the window.
        oldest = keys[0] if keys and len(server) >= limit else None
        mine = {m.id: m for m in page if oldest is None or (m.created_at, m.id) >= oldest}
        report.messages += len(set(theirs) | set(mine))
        gaps = list(page.gaps)
        held_from = (page[0].created_at, page[0].id) if page else None
        for message_id in [key[1] for key in keys] + sorted(set(mine) - set(theirs)):
            theirs_message = theirs.get(message_id)
            local = mine.get(message_id)
            if local is None and theirs_message is not None:
                local = await done(store.message(message_id))
            if theirs_message is None:
                # In a channel the server does not let us read, a message of a local action
                # is reported with that action (see `_uncovered_commands`).
                if local is not None and (readable or not context.by_message.get(message_id)):
                    report.mismatches.append(self._classify(
                        "message", cid, message_id, "exists", True, None, context,
                        server_at=None, local_at=local.created_at, local_row=local))
                continue
            server_at = _message_time(theirs_message)
            if local is None:
                key = (_time(theirs_message.get("created_at")) or 0, message_id)
                report.mismatches.append(self._classify(
                    "message", cid, message_id, "exists", None, True, context,
                    server_at=server_at, local_at=None,
                    in_gap=_in_gap(key, gaps, held_from)))
                continue
            await self._compare_message(cid, local, theirs_message, context, report)

    async def _compare_message(self, cid: str, local: Any, server: dict[str, Any],
                         context: _Context, report: DiffReport) -> None:
        mine = local.json()
        server_at = _message_time(server)
        local_at = _message_time(mine) if mine else local.created_at
        fields: dict[str, tuple[Any, Any]] = {}
        if local.deleted_for_me:
            fields["deleted_for_me"] = (True, False)
        if local.local_state is not None:
            fields["local_state"] = (local.local_state, None)
        for field in _MESSAGE_COMPARED:
            mine_value, theirs = mine.get(field), server.get(field)
            if field == "deleted_at":
                mine_value, theirs = _time(mine_value), _time(theirs)
            elif field == "reaction_counts":
                mine_value, theirs = _counts(mine_value), _counts(theirs)
            elif field in ("attachments",):
                mine_value, theirs = mine_value or [], theirs or []
            elif field in ("reply_count",):
                mine_value, theirs = mine_value or 0, theirs or 0
            elif field == "pinned":
                mine_value, theirs = bool(mine_value), bool(theirs)
            fields[field] = (mine_value, theirs)
        for key in sorted({*mine, *server} - _MESSAGE_STANDARD):
            fields[key] = (mine.get(key), server.get(key))
        for field, (mine_value, theirs) in fields.items():
            if mine_value != theirs:
                report.mismatches.append(self._classify(
                    "message", cid, local.id, field, mine_value, theirs, context,
                    server_at=server_at, local_at=local_at, local_row=local))
        # The own reactions: each type the server or the store has for this user.
        own_server = {r.get("type") for r in server.get("own_reactions") or []
                      if (r.get("user_id") or (r.get("user") or {}).get("id")) in
                      (self.user_id, None)}
        own_local = {row.type for row in
                     await done(self.store.reactions(local.id, own=True, limit=100))}
        for reaction_type in sorted(own_server ^ own_local, key=str):
            report.mismatches.append(self._classify(
                "reaction", cid, f"{local.id}/{reaction_type}", "exists",
                True if reaction_type in own_local else None,
                True if reaction_type in own_server else None, context,
                server_at=server_at, local_at=local_at, message_id=local.id))

    def _uncovered_commands(self, cids: set[str], context: _Context,
                            report: DiffReport) -> None:
        """Local actions still waiting (or refused) that no mismatch was put down to: the
        change they make is one the server does not show."""
        for commands in context.by_message.values():
            for command in commands:
                if command.id in context.covered or (
                        command.status not in (*_UNFINISHED, "rejected")):
                    continue
                if command.cid is not None and command.cid not in cids:
                    continue
                cause = REFUSED if command.status == "rejected" else PENDING
                report.mismatches.append(Mismatch(
                    kind="message", cid=command.cid or "", object_id=command.message_id or "",
                    field=command.kind, local=command.status, server=None, cause=cause,
                    why=_command_why(command), command_id=command.id,
                    explain=f"chatledger explain {command.message_id}"))
                context.covered.add(command.id)

    # -- classifying ---------------------------------------------------------------------------

    def _classify(
        self, kind: str, cid: str, object_id: str, field: str, local: Any, server: Any,
        context: _Context, *, server_at: int | None, local_at: int | None,
        local_row: Any = None, in_gap: bool = False, message_id: str | None = None,
        via_message: str | None = None, via_cid: bool = False,
    ) -> Mismatch:
        message_id = message_id or (object_id if kind == "message" else None)
        explain = (f"chatledger explain {message_id}" if message_id
                   else f"chatledger log --cid {cid}")
        found = Mismatch(kind=kind, cid=cid, object_id=object_id, field=field, local=local,
                         server=server, cause=UNEXPLAINED, why="", explain=explain)
        command = _accounting_command(kind if kind != "channel" or via_cid else "",
                                      cid, message_id, context)
        if command is None and via_message is not None:
            command = _accounting_command("message", cid, via_message, context)
        if command is not None:
            if not via_cid:  # the action's own message is reported besides its channel
                context.covered.add(command.id)
            found.cause = REFUSED if command.status == "rejected" else PENDING
            found.why = _command_why(command)
            found.command_id = command.id
            return found
        if local_row is not None and (local_row.deleted_for_me
                                      or local_row.type in _LOCAL_ONLY_TYPES):
            found.cause = LOCAL_ONLY
            found.why = ("deleted for me: the server keeps it for the others"
                         if local_row.deleted_for_me else
                         f"a {local_row.type} message: the server never keeps those")
            return found
        server_newer = server_at is not None and (local_at is None or server_at > local_at)
        if not server_newer:
            if server is None:
                found.why = ("the server does not have it (deleted for good, truncated, or "
                             "never sent) and nothing here accounts for it")
            elif local_at is not None and server_at is not None and local_at > server_at:
                found.why = ("the store shows a change the server does not have, and no local "
                             "action accounts for it")
            else:
                found.why = "the two sides disagree at the same version"
            return found
        found.cause = MISSED
        assert server_at is not None
        if context.last_sync_us is None or server_at > context.last_sync_us:
            found.window = AFTER_LAST_SYNC
            found.why = (f"changed on the server after last_sync_at ({context.last_sync_at}): "
                         "the next sync brings it" if context.last_sync_at else
                         "the store never synced: the first sync brings it")
        elif in_gap:
            found.window = GAP
            found.why = ("in a gap of the channel's held history: no page or event covered "
                         "this stretch of it")
        elif (quarantined := next((item for item in context.quarantined
                                   if item.received_at >= server_at), None)) is not None:
            found.window = QUARANTINE
            found.why = (f"an answer received after the change was quarantined "
                         f"(#{quarantined.id}: {quarantined.reason})")
        else:
            found.window = LIVE
            found.why = (f"changed while the event stream was followed, before last_sync_at "
                         f"({context.last_sync_at}): its event never arrived, and the sync "
                         "point moved past it")
        return found


# -- helpers -------------------------------------------------------------------------------------

def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, what: str) -> Any:
    problem = obviously_unusable(raw)
    if problem is None:
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as error:
            problem = f"the wrong shape: {error}"
    raise UnusableAnswer(f"the answer to {what} could not be used: {problem}", body=raw[:4096])


def _time(value: Any) -> int | None:
    """Epoch µs of an RFC 3339 time (None for none, the zero time, or an integer already)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    return parse_time(value)


def _message_time(message: dict[str, Any]) -> int | None:
    times = [_time(message.get(key)) for key in ("updated_at", "deleted_at", "created_at")]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, int) and v > 0}


def _in_gap(key: tuple[int, str], gaps: Sequence[Any], held_from: tuple[int, str] | None
            ) -> bool:
    """Whether a message the store lacks lies where the store does not hold history whole:
    inside a gap of its page, or older than everything the page holds."""
    if held_from is None or key < held_from:
        return True
    return any(gap.older < key < gap.newer for gap in gaps)


def _accounting_command(kind: str, cid: str, message_id: str | None, context: _Context) -> Any:
    """The newest local action on the object that is unfinished or refused, if any."""
    if kind == "read":
        candidates = [c for c in context.by_cid.get(cid, ()) if c.kind in _READ_KINDS]
    elif kind == "channel":
        # A channel the store has only through local actions (a send into a channel the
        # server does not let us read): the newest of them accounts for it.
        candidates = list(context.by_cid.get(cid, ()))
    elif kind == "reaction" and message_id:
        candidates = [c for c in context.by_message.get(message_id, ())
                      if c.kind in _REACTION_KINDS]
    elif message_id:
        candidates = [c for c in context.by_message.get(message_id, ())
                      if c.kind not in _REACTION_KINDS]
    else:
        return None
    for command in reversed(candidates):
        if command.status in (*_UNFINISHED, "rejected"):
            return command
        if command.status == "succeeded":
            return None  # the newest action was delivered: it accounts for nothing
    return None


def _command_why(command: Any) -> str:
    if command.status == "rejected":
        return f"{command.kind} refused by the server: {command.reason or 'no reason given'}"
    error = command.last_error or {}
    tried = (f"; attempt {command.attempts} failed: {error.get('message')}"
             if error.get("message") else "")
    return f"{command.kind} {command.status.replace('_', ' ')} in the outbox{tried}"


def mismatch_dict(mismatch: Mismatch) -> dict[str, Any]:
    """A mismatch as plain JSON values."""
    return msgspec.to_builtins(mismatch)


__all__ = ["AFTER_LAST_SYNC", "CAUSES", "DEFAULT_MESSAGES", "DiffReport", "Differ", "GAP",
           "LIVE", "LOCAL_ONLY", "MISSED", "Mismatch", "PENDING", "QUARANTINE", "REFUSED",
           "UNEXPLAINED", "mismatch_dict"]
