"""Names as people type them: id prefixes that resolve, close names suggested, and what shell
completion offers (cids, user ids, message and command ids from the store)."""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import CompletionItem

from chatledger import ChatStore, IdKind, default_data_dir
from chatledger.cli.context import Context, fail
from chatledger.errors import AmbiguousId

_COMPLETIONS = 50
# Where a global option given after the command is kept while the shell completes (ctx.meta).
GLOBAL_OPTION_KEY = "chatledger.global."


def resolve(ctx: Context, kind: IdKind, text: str) -> str:
    """The stored id a unique prefix names; `text` itself when it names none (the command
    then says what is missing). An ambiguous prefix is an error listing the candidates."""
    try:
        return ctx.store(create=False).resolve_id(kind, text) or text
    except AmbiguousId as error:
        fail(str(error))


def not_stored(ctx: Context, kind: IdKind, text: str, what: str) -> str:
    """`no channel 'general' is stored`, with the close names the store has."""
    close = ctx.store(create=False).suggest_ids(kind, text)
    hint = f" (did you mean {' or '.join(repr(name) for name in close)}?)" if close else ""
    return f"{what}{hint}"


def _completion_store(ctx: click.Context) -> ChatStore | None:
    """The store the command line names so far, for completion (the group's callback has not
    run: read its parameters, then the environment)."""
    root = ctx.find_root()
    data_dir = (ctx.meta.get(GLOBAL_OPTION_KEY + "data_dir") or root.params.get("data_dir")
                or default_data_dir())
    user = (ctx.meta.get(GLOBAL_OPTION_KEY + "user") or root.params.get("user")
            or os.environ.get("CHATLEDGER_USER"))
    if not user:
        return None
    try:
        return ChatStore.open(data_dir, user, create=False)
    except Exception:  # completion never fails: it offers nothing instead
        return None


class StoredId(click.ParamType):
    """A message id, command id, cid or user id: completed from the store."""

    def __init__(self, kind: IdKind) -> None:
        self.kind = kind
        self.name = f"{kind}_id" if kind != "channel" else "cid"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        store = _completion_store(ctx)
        if store is None:
            return []
        try:
            return [CompletionItem(found)
                    for found in store.ids_with_prefix(self.kind, incomplete, limit=_COMPLETIONS)]
        except Exception:
            return []
        finally:
            store.close()


class StoredUser(click.ParamType):
    """A user id: completed from the stores in the data directory."""

    name = "user_id"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        data_dir = (ctx.meta.get(GLOBAL_OPTION_KEY + "data_dir")
                    or ctx.find_root().params.get("data_dir") or default_data_dir())
        return [CompletionItem(store.user_id) for store in ChatStore.list_users(data_dir)
                if store.user_id and store.user_id.startswith(incomplete)]


MESSAGE_ID = StoredId("message")
COMMAND_ID = StoredId("command")
CID = StoredId("channel")
USER_ID = StoredUser()


def complete_with(param_type: click.ParamType) -> Any:
    """A `shell_complete=` callback for options that keep their own type (`--user`)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        return param_type.shell_complete(ctx, param, incomplete)

    return complete
