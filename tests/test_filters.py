"""Query-channels filters and sorts compiled to SQL, run against a small hand-made database.

The fixture channels are chosen so each operator has matches and non-matches, with nulls, mixed
custom types and sort ties; the expected cids are worked out by hand. A Python reference
evaluator then checks random filters and sorts against the SQL (hypothesis).
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.eventstore.wire import format_time, parse_time
from chatledger.projections.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_SUBQUERIES,
    ChannelQuery,
    FilterError,
    canonical_query_key,
    compile_channel_query,
)
from chatledger.projections.schema import TABLES

ME = "me"
T0 = parse_time("2026-01-01T00:00:00Z")
HOUR = 3_600_000_000


def h(n: int) -> int:
    return T0 + n * HOUR


def ht(n: int) -> str:
    return format_time(h(n))


GENERAL, RANDOM, DEV = "messaging:general", "messaging:random", "messaging:dev"
LAUNCH, OPS, DM = "livestream:launch", "team:ops", "messaging:dm-me-bob"
HIDDEN, ORDER = "messaging:hidden", "commerce:order-1"
OBRIEN, ZETA = "messaging:o'brien", "messaging:zeta"
ALL = sorted([GENERAL, RANDOM, DEV, LAUNCH, OPS, DM, HIDDEN, ORDER, OBRIEN, ZETA])

# cid, name, created_by, created_at, updated_at, last_message_at, member_count, frozen, disabled,
# hidden, team, custom
CHANNELS: list[tuple[Any, ...]] = [
    (GENERAL, "General Chat", "alice", h(1), h(2), h(10), 3, 0, 0, 0, "red",
     {"priority": 5, "topic": "Weekly Planning", "vip": True}),
    (RANDOM, "Random Stuff", "bob", h(2), h(3), None, 2, 0, 0, 0, None,
     {"priority": 1, "topic": "misc", "vip": False}),
    (DEV, "dev-team", "alice", h(3), h(20), h(5), 4, 1, 0, 0, "blue", {"priority": "high"}),
    (LAUNCH, "Product Launch", "carol", h(4), h(4), h(30), 100, 0, 0, 0, "red",
     {"topic": "launch day", "score": 2.5}),
    (OPS, None, None, h(5), None, None, None, 0, 0, 0, None, None),
    (DM, None, ME, h(6), h(6), h(8), 2, 0, 0, 0, None, {}),
    (HIDDEN, "Hidden Gem", ME, h(7), h(7), h(9), 1, 0, 0, 1, "blue", {"vip": None}),
    (ORDER, "Order #1 100%_off", "dave", h(8), h(8), h(12), 2, 0, 1, 0, None,
     {"topic": "refund_request", "priority": 3}),
    (OBRIEN, "O'Brien's room", "eve", h(9), h(9), h(11), 2, 0, 0, 0, "red", {"priority": 5}),
    (ZETA, "zeta", "bob", h(10), h(10), h(10), 3, 0, 0, 0, None,
     {"topic": "Planning ahead", "score": 7}),
]  # fmt: skip
MEMBERS: dict[str, list[str]] = {
    GENERAL: ["alice", "bob", ME],
    RANDOM: ["bob", ME],
    DEV: ["alice", "bob", "carol", "dave"],
    LAUNCH: ["carol", ME],
    OPS: [],
    DM: [ME, "bob"],
    HIDDEN: [ME],
    ORDER: ["dave", ME],
    OBRIEN: ["eve", "alice"],
    ZETA: ["bob", "carol", ME],
}
PINNED = {GENERAL: h(50), LAUNCH: h(40)}  # own membership's pinned_at
ARCHIVED = {ORDER: h(45)}
# (cid, user) -> unread_messages; the own user has no read row for the other channels
READS = {(GENERAL, ME): 3, (RANDOM, ME): 0, (LAUNCH, ME): 1, (DM, ME): 7, (HIDDEN, ME): 0,
         (ZETA, ME): 0, (DEV, "bob"): 5, (GENERAL, "bob"): 9}  # fmt: skip

# Default sort: last_updated = max(updated_at, last_message_at) descending, nulls last, then cid.
DEFAULT_ORDER = [LAUNCH, DEV, ORDER, OBRIEN, GENERAL, ZETA, HIDDEN, DM, RANDOM, OPS]
BY_CID = [{"field": "cid", "direction": 1}]


def make_db() -> apsw.Connection:
    db = apsw.Connection(":memory:")
    for table in ("channels", "members", "reads"):
        db.execute(TABLES[table])
    db.execute("CREATE INDEX members_by_user ON members (user_id, cid)")
    for cid, name, by, cat, uat, lm, count, frozen, disabled, hidden, team, custom in CHANNELS:
        kind, cid_id = cid.split(":", 1)
        db.execute(
            "INSERT INTO channels (cid, type, id, name, created_by, created_at, updated_at,"
            " last_message_at, member_count, frozen, disabled, hidden, team, custom)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, kind, cid_id, name, by, cat, uat, lm, count, frozen, disabled, hidden, team,
             None if custom is None else json.dumps(custom)),
        )  # fmt: skip
    for cid, users in MEMBERS.items():
        for user in users:
            own = user == ME
            db.execute(
                "INSERT INTO members (cid, user_id, pinned_at, archived_at) VALUES (?, ?, ?, ?)",
                (cid, user, PINNED.get(cid) if own else None, ARCHIVED.get(cid) if own else None),
            )
    for (cid, user), unread in READS.items():
        db.execute("INSERT INTO reads (cid, user_id, unread_messages) VALUES (?, ?, ?)",
                   (cid, user, unread))  # fmt: skip
    return db


DB = make_db()  # read-only for every test but the injection ones, which check it survives


def run(query: ChannelQuery, db: apsw.Connection = DB, limit: int = -1, offset: int = 0
        ) -> list[str]:  # fmt: skip
    """The caller's statement, exactly."""
    sql = (
        f"SELECT c.cid FROM channels c WHERE {query.where} ORDER BY {query.order_by}"
        " LIMIT ? OFFSET ?"
    )
    return [row[0] for row in db.execute(sql, [*query.params, limit, offset])]


def q(filter: Any = None, sort: Any = None, *, own: str = ME, db: apsw.Connection = DB
      ) -> list[str]:  # fmt: skip
    return run(compile_channel_query(filter, sort, own_user_id=own), db)


def matches(filter: Any) -> list[str]:
    return q(filter, BY_CID)


def but(*cids: str) -> list[str]:
    return [c for c in ALL if c not in cids]


def tables(db: apsw.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}


# --------------------------------------------------------------------------------------------
# Operators and fields


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        (None, ALL),
        ({}, ALL),
        ({"type": "messaging"}, [DEV, DM, GENERAL, HIDDEN, OBRIEN, RANDOM, ZETA]),
        ({"type": {"$eq": "messaging"}}, [DEV, DM, GENERAL, HIDDEN, OBRIEN, RANDOM, ZETA]),
        ({"type": {"$ne": "messaging"}}, [ORDER, LAUNCH, OPS]),
        ({"id": "general"}, [GENERAL]),
        ({"cid": OBRIEN}, [OBRIEN]),
        ({"cid": {"$in": [OBRIEN, ZETA, "nope:nope"]}}, [OBRIEN, ZETA]),
        ({"cid": {"$nin": [OBRIEN, ZETA]}}, but(OBRIEN, ZETA)),
        ({"cid": {"$in": []}}, []),
        ({"cid": {"$nin": []}}, ALL),
        ({"created_by": "alice"}, [DEV, GENERAL]),
        ({"created_by_id": ME}, [DM, HIDDEN]),
        ({"created_by": None}, [OPS]),
        # nulls: $ne/$nin/$eq null/$exists
        ({"team": "red"}, [LAUNCH, GENERAL, OBRIEN]),
        ({"team": {"$ne": "red"}}, but(LAUNCH, GENERAL, OBRIEN)),
        ({"team": None}, [ORDER, DM, RANDOM, ZETA, OPS]),
        ({"team": {"$eq": None}}, [ORDER, DM, RANDOM, ZETA, OPS]),
        ({"team": {"$ne": None}}, [LAUNCH, DEV, GENERAL, HIDDEN, OBRIEN]),
        ({"team": {"$exists": True}}, [LAUNCH, DEV, GENERAL, HIDDEN, OBRIEN]),
        ({"team": {"$exists": False}}, [ORDER, DM, RANDOM, ZETA, OPS]),
        ({"team": {"$in": ["red", "blue"]}}, [LAUNCH, DEV, GENERAL, HIDDEN, OBRIEN]),
        ({"team": {"$nin": ["red"]}}, but(LAUNCH, GENERAL, OBRIEN)),
        ({"team": {"$in": ["blue", None]}}, [ORDER, DEV, DM, HIDDEN, RANDOM, ZETA, OPS]),
        ({"team": {"$nin": ["blue", None]}}, [LAUNCH, GENERAL, OBRIEN]),
        ({"team": {"$gte": "blue", "$lt": "c"}}, [DEV, HIDDEN]),
        # numbers
        ({"member_count": 3}, [GENERAL, ZETA]),
        ({"member_count": {"$gt": 2}}, [LAUNCH, DEV, GENERAL, ZETA]),
        ({"member_count": {"$gte": 2}}, but(HIDDEN, OPS)),
        ({"member_count": {"$lt": 2}}, [HIDDEN]),
        ({"member_count": {"$lte": 2}}, [ORDER, DM, HIDDEN, OBRIEN, RANDOM]),
        ({"member_count": {"$gt": 2.5, "$lt": 50}}, [DEV, GENERAL, ZETA]),
        ({"member_count": {"$exists": False}}, [OPS]),
        # times (RFC 3339, any offset; Go's zero time = unset)
        ({"created_at": {"$gte": ht(8)}}, [ORDER, OBRIEN, ZETA]),
        ({"created_at": {"$gte": "2026-01-01T10:00:00+02:00"}}, [ORDER, OBRIEN, ZETA]),
        ({"created_at": ht(4)}, [LAUNCH]),
        ({"created_at": {"$in": [ht(4), ht(5)]}}, [LAUNCH, OPS]),
        ({"last_message_at": {"$gt": "0001-01-01T00:00:00Z"}}, but(RANDOM, OPS)),
        ({"last_message_at": "0001-01-01T00:00:00Z"}, [RANDOM, OPS]),
        ({"last_message_at": {"$lt": "0001-01-01T00:00:00Z"}}, []),
        ({"last_message_at": {"$exists": False}}, [RANDOM, OPS]),
        ({"updated_at": {"$lte": ht(3)}}, [GENERAL, RANDOM]),
        ({"last_updated": {"$lt": ht(9)}}, [DM, RANDOM]),
        ({"last_updated": {"$gte": ht(20)}}, [LAUNCH, DEV]),
        ({"last_updated": None}, [OPS]),
        # booleans
        ({"frozen": True}, [DEV]),
        ({"disabled": True}, [ORDER]),
        ({"hidden": True}, [HIDDEN]),
        ({"hidden": False}, but(HIDDEN)),
        ({"hidden": {"$in": [True, False]}}, ALL),
        ({"frozen": {"$ne": False}}, [DEV]),
        # custom fields, with mixed types and JSON null
        ({"priority": 5}, [GENERAL, OBRIEN]),
        ({"priority": "high"}, [DEV]),
        ({"priority": "5"}, []),  # a string never equals a number
        ({"priority": {"$gt": 2}}, [ORDER, GENERAL, OBRIEN]),  # not the string "high"
        ({"priority": {"$gt": "a"}}, [DEV]),  # not the numbers
        ({"priority": {"$in": [1, "high"]}}, [DEV, RANDOM]),
        ({"priority": {"$nin": [1, "high"]}}, but(DEV, RANDOM)),
        ({"priority": {"$exists": True}}, [ORDER, DEV, GENERAL, OBRIEN, RANDOM]),
        ({"priority": None}, [LAUNCH, DM, HIDDEN, ZETA, OPS]),
        ({"priority": {"$ne": 5}}, but(GENERAL, OBRIEN)),
        ({"vip": True}, [GENERAL]),
        ({"vip": False}, [RANDOM]),
        ({"vip": None}, but(GENERAL, RANDOM)),
        ({"vip": {"$exists": True}}, [GENERAL, RANDOM]),  # JSON null counts as no value
        ({"score": {"$gte": 2.5}}, [LAUNCH, ZETA]),
        ({"score": {"$lt": 5}}, [LAUNCH]),
        ({"no-such_field": {"$exists": True}}, []),
        ({"no-such_field": None}, ALL),
        # members
        ({"members": {"$in": ["carol"]}}, [LAUNCH, DEV, ZETA]),
        ({"members": {"$in": ["carol", "eve"]}}, [LAUNCH, DEV, OBRIEN, ZETA]),
        ({"members": {"$nin": [ME]}}, [DEV, OBRIEN, OPS]),
        ({"members": {"$in": []}}, []),
        ({"members": {"$nin": []}}, ALL),
        ({"members": [ME, "bob"]}, [DM, RANDOM]),
        ({"members": {"$eq": ["bob", ME, ME]}}, [DM, RANDOM]),
        ({"members": {"$eq": [ME]}}, [HIDDEN]),
        ({"members": []}, [OPS]),
        ({"members": {"$ne": [ME, "bob"]}}, but(DM, RANDOM)),
        ({"members": "eve"}, [OBRIEN]),
        ({"members": {"$eq": "eve"}}, [OBRIEN]),
        ({"members": {"$ne": ME}}, [DEV, OBRIEN, OPS]),
        # own membership and reads
        ({"joined": True}, but(DEV, OBRIEN, OPS)),
        ({"joined": False}, [DEV, OBRIEN, OPS]),
        ({"pinned": True}, [LAUNCH, GENERAL]),
        ({"pinned": False}, but(LAUNCH, GENERAL)),
        ({"archived": True}, [ORDER]),
        ({"archived": {"$ne": True}}, but(ORDER)),
        ({"pinned_at": {"$gt": ht(45)}}, [GENERAL]),
        ({"pinned_at": {"$exists": True}}, [LAUNCH, GENERAL]),
        ({"has_unread": True}, [LAUNCH, DM, GENERAL]),
        ({"has_unread": False}, but(LAUNCH, DM, GENERAL)),  # DEV: only bob has unread there
        ({"unread_count": {"$gt": 2}}, [DM, GENERAL]),
        ({"unread_count": 0}, but(LAUNCH, DM, GENERAL)),
        ({"unread_count": {"$gte": 1, "$lt": 5}}, [LAUNCH, GENERAL]),
        ({"unread_count": {"$in": [1, 7]}}, [LAUNCH, DM]),
        # logic
        ({"type": "messaging", "team": "red"}, [GENERAL, OBRIEN]),
        ({"$and": [{"type": "messaging"}, {"team": "red"}]}, [GENERAL, OBRIEN]),
        ({"$or": [{"team": "blue"}, {"members": "eve"}]}, [DEV, HIDDEN, OBRIEN]),
        ({"$nor": [{"team": "red"}, {"joined": True}]}, [DEV, OPS]),  # OPS: null team
        ({"$and": [{"type": "messaging"}, {"$or": [{"frozen": True}, {"hidden": True}]}]},
         [DEV, HIDDEN]),
        ({"$or": [{}, {"cid": "x"}]}, ALL),
        ({"$nor": [{"priority": {"$gt": 2}}]}, but(ORDER, GENERAL, OBRIEN)),
        ({"joined": True, "$or": [{"pinned": True}, {"archived": True}]}, [ORDER, LAUNCH, GENERAL]),
    ],
)  # fmt: skip
def test_filter_matches(filter: Any, expected: list[str]) -> None:
    assert matches(filter) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cha", [GENERAL]),
        ("GEN", [GENERAL]),  # case-insensitive
        ("r", [OBRIEN, RANDOM]),  # "Random", "room": any word
        ("o'b", [OBRIEN]),  # a quote is plain data
        ("dev", [DEV]),
        ("team", []),  # "dev-team" is one word
        ("100%", [ORDER]),
        ("%", []),  # LIKE wildcards are escaped
        ("_", []),
        ("100%_", [ORDER]),
        ("1_0", []),
        ("product launch", [LAUNCH]),
        ("", but(DM, OPS)),  # every named channel
    ],
)
def test_autocomplete_on_name(text: str, expected: list[str]) -> None:
    assert matches({"name": {"$autocomplete": text}}) == expected


def test_autocomplete_on_custom_text_fields_only_matches_strings() -> None:
    assert matches({"topic": {"$autocomplete": "plan"}}) == [GENERAL, ZETA]
    assert matches({"topic": {"$autocomplete": "refund_"}}) == [ORDER]
    assert matches({"topic": {"$autocomplete": "refund%"}}) == []
    assert matches({"priority": {"$autocomplete": "h"}}) == [DEV]
    assert matches({"priority": {"$autocomplete": "5"}}) == []  # numbers are not text


def test_joined_follows_the_own_user() -> None:
    assert q({"joined": True}, BY_CID, own="carol") == [LAUNCH, DEV, ZETA]
    assert q({"has_unread": True}, BY_CID, own="bob") == [DEV, GENERAL]


# --------------------------------------------------------------------------------------------
# Sorting


def test_default_sort_is_last_updated_descending_with_nulls_last() -> None:
    assert q() == DEFAULT_ORDER
    assert q(None, []) == DEFAULT_ORDER
    assert q({}, [{"field": "last_updated", "direction": -1}]) == DEFAULT_ORDER
    query = compile_channel_query(None, None, own_user_id=ME)
    assert query.where == "1"
    assert query.order_by.endswith("c.cid")


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ([{"field": "member_count", "direction": -1}],
         [LAUNCH, DEV, GENERAL, ZETA, ORDER, DM, OBRIEN, RANDOM, HIDDEN, OPS]),
        ([{"field": "member_count", "direction": 1}],
         [HIDDEN, ORDER, DM, OBRIEN, RANDOM, GENERAL, ZETA, DEV, LAUNCH, OPS]),
        ([{"field": "member_count", "direction": -1}, {"field": "name", "direction": 1}],
         [LAUNCH, DEV, GENERAL, ZETA, OBRIEN, ORDER, RANDOM, DM, HIDDEN, OPS]),
        ([{"field": "name", "direction": 1}],
         [GENERAL, HIDDEN, OBRIEN, ORDER, LAUNCH, RANDOM, DEV, ZETA, DM, OPS]),
        ([{"field": "name", "direction": -1}],
         [ZETA, DEV, RANDOM, LAUNCH, ORDER, OBRIEN, HIDDEN, GENERAL, DM, OPS]),
        ([{"field": "last_updated", "direction": 1}],
         [RANDOM, DM, HIDDEN, GENERAL, ZETA, OBRIEN, ORDER, DEV, LAUNCH, OPS]),
        ([{"field": "last_message_at", "direction": 1}],
         [DEV, DM, HIDDEN, GENERAL, ZETA, OBRIEN, ORDER, LAUNCH, RANDOM, OPS]),
        ([{"field": "last_message_at", "direction": -1}],
         [LAUNCH, ORDER, OBRIEN, GENERAL, ZETA, HIDDEN, DM, DEV, RANDOM, OPS]),
        ([{"field": "created_at", "direction": 1}],
         [GENERAL, RANDOM, DEV, LAUNCH, OPS, DM, HIDDEN, ORDER, OBRIEN, ZETA]),
        ([{"field": "updated_at", "direction": -1}],
         [DEV, ZETA, OBRIEN, ORDER, HIDDEN, DM, LAUNCH, RANDOM, GENERAL, OPS]),
        ([{"field": "pinned_at", "direction": -1}],
         [GENERAL, LAUNCH, ORDER, DEV, DM, HIDDEN, OBRIEN, RANDOM, ZETA, OPS]),
        ([{"field": "pinned_at", "direction": 1}],
         [LAUNCH, GENERAL, ORDER, DEV, DM, HIDDEN, OBRIEN, RANDOM, ZETA, OPS]),
        ([{"field": "unread_count", "direction": -1}],
         [DM, GENERAL, LAUNCH, ORDER, DEV, HIDDEN, OBRIEN, RANDOM, ZETA, OPS]),
        ([{"field": "has_unread", "direction": -1}, {"field": "last_message_at", "direction": -1}],
         [LAUNCH, GENERAL, DM, ORDER, OBRIEN, ZETA, HIDDEN, DEV, RANDOM, OPS]),
        # custom: numbers before strings (SQLite's order), no value last
        ([{"field": "priority", "direction": 1}],
         [RANDOM, ORDER, GENERAL, OBRIEN, DEV, LAUNCH, DM, HIDDEN, ZETA, OPS]),
        ([{"field": "priority", "direction": -1}],
         [DEV, GENERAL, OBRIEN, ORDER, RANDOM, LAUNCH, DM, HIDDEN, ZETA, OPS]),
        ([{"field": "cid", "direction": -1}], ALL[::-1]),
        # keys after cid can never matter: dropped
        ([{"field": "cid", "direction": 1}, {"field": "name", "direction": -1}], ALL),
    ],
)  # fmt: skip
def test_sort(sort: list[dict[str, Any]], expected: list[str]) -> None:
    assert q(None, sort) == expected
    order_by = compile_channel_query(None, sort, own_user_id=ME).order_by
    assert order_by.endswith(("c.cid", "c.cid ASC", "c.cid DESC"))


def test_sort_and_filter_together_and_pages_tile() -> None:
    sort = [{"field": "member_count", "direction": -1}]
    query = compile_channel_query({"joined": True}, sort, own_user_id=ME)
    full = run(query)
    assert full == [LAUNCH, GENERAL, ZETA, ORDER, DM, RANDOM, HIDDEN]
    pages = [run(query, limit=3, offset=o) for o in (0, 3, 6)]
    assert [c for page in pages for c in page] == full


def test_params_come_in_order_of_appearance() -> None:
    query = compile_channel_query(
        {"name": "x", "joined": True}, [{"field": "pinned_at", "direction": -1}], own_user_id="u1"
    )
    assert query.params == ["x", "u1", 1, "u1", "u1"]
    assert query.where.count("?") + query.order_by.count("?") == len(query.params)


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"name": {"$regex": "a.*"}}, r"unsupported operator '\$regex' on field 'name'"),
        ({"$where": "1"}, r"unsupported operator '\$where'"),
        ({"name": {"$contains": "a"}}, r"unsupported operator '\$contains' on field 'name'"),
        ({"members": {"$regex": "a"}}, r"unsupported operator '\$regex' on field 'members'"),
        ({"name": {"eq": "a"}}, r"field 'name': expected operators such as '\$eq', got key 'eq'"),
        ({"name": {}}, r"empty condition on field 'name'"),
        ({"name": ["a", "b"]}, r"a list value needs an operator such as '\$in'"),
        ({"name": {"$in": "a"}}, r"'\$in' on field 'name' expects a list, got a string"),
        ({"name": {"$nin": {"a": 1}}}, r"'\$nin' on field 'name' expects a list, got an object"),
        ({"name": 5}, r"'\$eq' on field 'name' expects a string, got a number"),
        ({"name": {"$in": ["a", 5]}}, r"'\$in' on field 'name' expects a string, got a number"),
        ({"member_count": "3"}, r"'\$eq' on field 'member_count' expects a number, got a string"),
        ({"member_count": True}, r"expects a number, got a boolean"),
        ({"member_count": 1 << 70}, r"out of the 64-bit range"),
        ({"member_count": math.inf}, r"not a finite number"),
        ({"member_count": {"$gt": math.nan}}, r"not a finite number"),
        ({"frozen": 1}, r"'\$eq' on field 'frozen' expects true or false, got a number"),
        ({"frozen": {"$gt": True}}, r"'\$gt' is not supported on boolean field 'frozen'"),
        ({"created_at": {"$gt": "yesterday"}},
         r"'created_at': not a valid RFC 3339 time: 'yesterday'"),
        ({"created_at": {"$gt": "2026-02-30T00:00:00Z"}}, r"not a valid RFC 3339 time"),
        ({"created_at": {"$gt": ""}}, r"not a valid RFC 3339 time"),
        ({"created_at": 1767225600}, r"expects an RFC 3339 time string, got a number"),
        ({"member_count": {"$gt": None}},
         r"'\$gt' on field 'member_count' needs a value, got null"),
        ({"priority": {"$gt": True}}, r"cannot order booleans"),
        ({"priority": [1]}, r"a list value needs an operator"),
        ({"priority": {"$eq": {"a": 1}}}, r"expects a string, number or boolean, got an object"),
        ({"priority": {"$in": [[1]]}}, r"expects a string, number or boolean, got a list"),
        ({"name": {"$exists": 1}}, r"'\$exists' on field 'name' expects true or false"),
        ({"members": {"$exists": True}}, r"'\$exists' is not supported on field 'members'"),
        ({"joined": {"$exists": True}}, r"'\$exists' is not supported on field 'joined'"),
        ({"unread_count": {"$exists": True}},
         r"'\$exists' is not supported on field 'unread_count'"),
        ({"members": {"$gt": "a"}}, r"'\$gt' is not supported on field 'members'"),
        ({"members": {"$in": "alice"}}, r"expects a list of user ids, got a string"),
        ({"members": {"$in": ["alice", 7]}}, r"expects user id strings, got a number"),
        ({"members": 7}, r"expects a user id or a list of them, got a number"),
        ({"joined": "yes"}, r"'\$eq' on field 'joined' expects true or false, got a string"),
        ({"cid": {"$autocomplete": "mess"}}, r"'\$autocomplete' is not supported on field 'cid'"),
        ({"name": {"$autocomplete": 5}}, r"'\$autocomplete' on field 'name' expects a string"),
        ({"name": {"$autocomplete": "a" * 1001}}, r"longer than 1000 characters"),
        ({"name": "\ud800"}, r"not valid Unicode"),
        ({"$and": []}, r"'\$and' needs a non-empty list of filters"),
        ({"$or": {"a": 1}}, r"'\$or' needs a non-empty list of filters"),
        ({"$nor": "x"}, r"'\$nor' needs a non-empty list of filters"),
        ({"$and": ["x"]}, r"a filter must be an object, got a string"),
        ("name", r"a filter must be an object, got a string"),
        ([{"name": "a"}], r"a filter must be an object, got a list"),
        ({"config": {"$exists": True}}, r"field 'config' is not kept offline"),
        ({"own_capabilities": "x"}, r"field 'own_capabilities' is not kept offline"),
        ({"address.city": "Oslo"}, r"invalid field name 'address.city'"),
        ({"": 1}, r"invalid field name ''"),
        ({"x" * 129: 1}, r"invalid field name"),
        ({"-x": 1}, r"invalid field name '-x'"),
        ({1: "a"}, r"field names must be strings, got 1"),
    ],
)  # fmt: skip
def test_refusals_name_what_is_wrong(filter: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_channel_query(filter, None, own_user_id=ME)


@pytest.mark.parametrize(
    ("sort", "message"),
    [
        ("last_updated", r"sort must be a list"),
        ({"field": "name", "direction": 1}, r"sort must be a list"),
        (["name"], r"each sort key must be"),
        ([{"field": "name"}], r"each sort key must be"),
        ([{"field": "name", "direction": 0}],
         r"sort direction for field 'name' must be 1 or -1, got 0"),
        ([{"field": "name", "direction": True}], r"must be 1 or -1, got True"),
        ([{"field": "name", "direction": "desc"}], r"must be 1 or -1, got 'desc'"),
        ([{"field": "name", "direction": 1.0}], r"must be 1 or -1, got 1.0"),
        ([{"field": "name", "direction": 1, "type": "x"}], r"unknown keys in sort key: \['type'\]"),
        ([{"field": "members", "direction": 1}], r"cannot sort on field 'members'"),
        ([{"field": "config", "direction": 1}], r"field 'config' is not kept offline"),
        ([{"field": 3, "direction": 1}], r"field names must be strings"),
        ([{"field": "a.b", "direction": 1}], r"invalid field name 'a.b'"),
        ([{"field": "name", "direction": 1}] * 33, r"sort has more than 32 keys"),
    ],
)  # fmt: skip
def test_sort_refusals(sort: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_channel_query(None, sort, own_user_id=ME)


def test_absurd_values_are_refused_with_short_messages() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(FilterError, match=r"'\$or' needs a non-empty list") as info:
        compile_channel_query({"$or": deep}, None, own_user_id=ME)
    assert len(str(info.value)) < 200
    with pytest.raises(FilterError, match="out of the 64-bit range"):
        compile_channel_query({"member_count": 1 << 20_000}, None, own_user_id=ME)
    with pytest.raises(FilterError, match="must be 1 or -1, got <a number>"):
        compile_channel_query(None, [{"field": "name", "direction": 1 << 20_000}], own_user_id=ME)
    with pytest.raises(FilterError, match=r"invalid field name 'x+\.\.\.x+'") as info:
        compile_channel_query({"x" * 1_000_000: 1}, None, own_user_id=ME)
    assert len(str(info.value)) < 300


def test_own_user_id_must_be_text() -> None:
    with pytest.raises(FilterError, match="own_user_id must be a string"):
        compile_channel_query(None, None, own_user_id=None)  # type: ignore[arg-type]


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)


# --------------------------------------------------------------------------------------------
# Injection: values are data, names are refused


INJECTIONS = [
    "x' OR 1=1 --",
    "x\" OR 1=1 --",
    "'); DROP TABLE channels; --",
    "a); DROP TABLE channels; --",
    "%' OR '1'='1",
    "\\",
    "?",
    "$.\"x\"') OR 1=1 --",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_through_values_is_plain_data(evil: str) -> None:
    db = make_db()
    before = tables(db)
    assert q({"name": evil}, db=db) == []
    assert q({"name": {"$in": [evil, "zeta"]}}, BY_CID, db=db) == [ZETA]
    assert q({"name": {"$in": [evil] * 40 + ["zeta"]}}, BY_CID, db=db) == [ZETA]  # json_each
    assert q({"name": {"$autocomplete": evil}}, db=db) == []
    assert q({"topic": evil}, db=db) == []
    assert q({"members": evil}, db=db) == []
    assert q({"members": {"$in": [evil]}}, db=db) == []
    assert q({"created_by": {"$ne": evil}}, BY_CID, db=db) == ALL
    assert q({"joined": True}, db=db, own=evil) == []
    assert tables(db) == before
    assert len(q(db=db)) == len(ALL)


REFUSED_NAME = r"invalid field name|unsupported operator '\$\.x'"


@pytest.mark.parametrize(
    "evil",
    [
        'name" OR 1=1 --',
        "a); DROP TABLE channels; --",
        "name'); DROP TABLE channels; --",
        'x"',
        "x'",
        "x\\",
        "a b",
        "$.x",
        "x]",
        "é",
        "x\x00",
        "name\n",
    ],
)
def test_injection_through_field_names_is_refused(evil: str) -> None:
    db = make_db()
    before = tables(db)
    # ("$.x" in a filter reads as an operator, refused as such)
    with pytest.raises(FilterError, match=REFUSED_NAME):
        compile_channel_query({evil: "x"}, None, own_user_id=ME)
    with pytest.raises(FilterError, match=REFUSED_NAME):
        compile_channel_query({"$or": [{evil: {"$exists": True}}]}, None, own_user_id=ME)
    with pytest.raises(FilterError, match="invalid field name"):
        compile_channel_query(None, [{"field": evil, "direction": 1}], own_user_id=ME)
    assert tables(db) == before


def test_custom_field_names_allowed() -> None:
    for name in ("priority", "x", "snake_case", "kebab-case", "CamelCase9", "_private", "9lives",
                 "a" * 128):  # fmt: skip
        query = compile_channel_query({name: 1}, [{"field": name, "direction": 1}], own_user_id=ME)
        run(query)
        assert f'\'$."{name}"\'' in query.where


# --------------------------------------------------------------------------------------------
# Size limits


def test_huge_in_list_is_one_parameter() -> None:
    cids = [f"messaging:c{i}" for i in range(20_000)] + [GENERAL, ZETA, OBRIEN]
    query = compile_channel_query({"cid": {"$in": cids}}, BY_CID, own_user_id=ME)
    assert len(query.params) == 1
    assert run(query) == [GENERAL, OBRIEN, ZETA]
    assert matches({"cid": {"$nin": cids}}) == but(GENERAL, ZETA, OBRIEN)
    users = [f"user{i}" for i in range(20_000)] + ["eve"]
    assert matches({"members": {"$in": users}}) == [OBRIEN]
    assert matches({"members": {"$nin": users}}) == but(OBRIEN)
    assert matches({"members": users[:-1] + ["eve", "alice"]}) == []
    assert matches({"members": ["alice", "eve"] + [f"x{i}" for i in range(30)]}) == []
    assert matches({"members": ["alice", "eve"]}) == [OBRIEN]


def test_long_lists_match_like_short_ones() -> None:
    padding = [f"pad{i}" for i in range(40)]
    assert matches({"team": {"$in": padding + ["blue", None]}}) == matches(
        {"team": {"$in": ["blue", None]}}
    )
    assert matches({"priority": {"$in": padding + [1, "high", True]}}) == [DEV, RANDOM]
    assert matches({"vip": {"$in": padding + [True]}}) == [GENERAL]  # json_each gives true as 1
    assert matches({"created_at": {"$in": [ht(n) for n in range(100, 140)] + [ht(4)]}}) == [LAUNCH]
    assert matches({"members": padding + [ME, "bob"]}) == []


def test_many_conditions_fit_sqlite_limits() -> None:
    # 10,000 conditions in one flat $or: SQLite's expression depth limit (1,000) must not bite.
    ors = [{"member_count": {"$gt": 1_000 + i}} for i in range(MAX_CONDITIONS - 1)]
    assert matches({"$or": [*ors, {"cid": GENERAL}]}) == [GENERAL]
    # Thousands of small lists: inline they would need ~50,000 parameters (SQLite allows 32,766).
    many = [{"team": {"$in": [f"t{i}", f"u{i}", f"v{i}", f"w{i}", "red"]}} for i in range(9_999)]
    query = compile_channel_query({"$and": many}, None, own_user_id=ME)
    assert len(query.params) < 32_000
    assert sorted(run(query)) == [LAUNCH, GENERAL, OBRIEN]


def test_equalities_in_an_or_are_merged_into_one_list() -> None:
    users = [f"user{i}" for i in range(MAX_CONDITIONS - 2)]
    query = compile_channel_query(
        {"$or": [{"members": u} for u in users] + [{"members": {"$eq": "eve"}}, {"joined": False}]},
        BY_CID,
        own_user_id=ME,
    )
    assert query.where.count("members m") == 2  # the merged $in, and joined
    assert run(query) == [DEV, OBRIEN, OPS]
    assert matches({"$nor": [{"members": u} for u in ["eve", "carol", "x"]]}) == [
        ORDER, DM, GENERAL, HIDDEN, RANDOM, OPS,
    ]  # fmt: skip
    assert matches({"$and": [{"members": {"$ne": u}} for u in ["eve", "carol"]]}) == matches(
        {"members": {"$nin": ["eve", "carol"]}}
    )
    assert matches({"$or": [{"unread_count": n} for n in range(1, MAX_CONDITIONS)]}) == [
        LAUNCH, DM, GENERAL,
    ]  # fmt: skip
    assert matches({"$or": [{"team": "blue"}, {"cid": OPS}, {"team": {"$in": [None]}}]}) == [
        ORDER, DEV, DM, HIDDEN, RANDOM, ZETA, OPS,
    ]  # fmt: skip
    assert matches({"$and": [{"team": {"$ne": "red"}}, {"team": {"$nin": [None, "blue"]}}]}) == []
    # Each merged item still counts as a condition.
    with pytest.raises(FilterError, match="more than 10,000 conditions"):
        compile_channel_query(
            {"$or": [{"members": "u"}] * (MAX_CONDITIONS + 1)}, None, own_user_id=ME
        )
    # A bad item keeps its own error message.
    with pytest.raises(FilterError, match=r"'\$eq' on field 'members' expects a user id"):
        compile_channel_query({"$or": [{"members": "a"}, {"members": 5}]}, None, own_user_id=ME)
    with pytest.raises(FilterError, match=r"'\$eq' on field 'team' expects a string"):
        compile_channel_query({"$or": [{"team": "a"}, {"team": 5}]}, None, own_user_id=ME)


def test_subquery_conditions_are_limited() -> None:
    ands = [{"unread_count": {"$gt": -1 - i}} for i in range(MAX_SUBQUERIES)]
    assert matches({"$and": ands}) == ALL
    with pytest.raises(FilterError, match="more than 100 conditions on members or on the own"):
        compile_channel_query({"$and": [*ands, {"joined": True}]}, None, own_user_id=ME)
    with pytest.raises(FilterError, match="more than 100 conditions on members"):
        compile_channel_query(
            {"$and": [{"members": {"$in": [f"u{i}"]}} for i in range(MAX_SUBQUERIES + 1)]},
            None,
            own_user_id=ME,
        )


def test_repeated_sort_keys_are_dropped() -> None:
    sort = [{"field": "pinned_at", "direction": -1}] * 32
    query = compile_channel_query(None, sort, own_user_id=ME)
    assert query.order_by.count("SELECT") == 2 and query.params == [ME, ME]
    assert run(query) == q(None, sort[:1])


def test_too_many_conditions_are_refused() -> None:
    with pytest.raises(FilterError, match="more than 10,000 conditions"):
        compile_channel_query({"$or": [{"cid": "x"}] * (MAX_CONDITIONS + 1)}, None, own_user_id=ME)
    with pytest.raises(FilterError, match="more than 10,000 conditions"):
        compile_channel_query(
            {"$or": [{"member_count": {"$gt": 1, "$lt": 5}}] * 5_001}, None, own_user_id=ME
        )


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"cid": GENERAL}
    for _ in range(depth - 1):
        node = {"$and": [node]}
    return node


def test_nesting_limit() -> None:
    assert matches(nested(MAX_DEPTH)) == [GENERAL]
    with pytest.raises(FilterError, match="nested deeper than 16 levels"):
        compile_channel_query(nested(MAX_DEPTH + 1), None, own_user_id=ME)
    with pytest.raises(FilterError, match="nested deeper"):
        compile_channel_query(nested(5_000), None, own_user_id=ME)


# --------------------------------------------------------------------------------------------
# Cache keys


def test_canonical_query_key_ignores_key_order() -> None:
    a = canonical_query_key(
        {"type": "messaging", "members": {"$in": ["a", "b"]}, "$or": [{"x": 1, "y": 2}]},
        [{"field": "last_message_at", "direction": -1}],
    )
    b = canonical_query_key(
        {"$or": [{"y": 2, "x": 1}], "members": {"$in": ["a", "b"]}, "type": "messaging"},
        [{"direction": -1, "field": "last_message_at"}],
    )
    assert a == b
    assert a == (
        '{"filter":{"$or":[{"x":1,"y":2}],"members":{"$in":["a","b"]},"type":"messaging"},'
        '"sort":[{"direction":-1,"field":"last_message_at"}]}'
    )
    assert json.loads(a)["filter"]["type"] == "messaging"


def test_canonical_query_key_distinguishes_queries() -> None:
    empty = '{"filter":{},"sort":[]}'
    assert canonical_query_key(None, None) == canonical_query_key({}, []) == empty
    base = canonical_query_key({"members": {"$in": ["a", "b"]}}, None)
    assert base != canonical_query_key({"members": {"$in": ["b", "a"]}}, None)  # list order kept
    assert base != canonical_query_key({"members": {"$in": ["a", "b"]}}, BY_CID)
    unicode = canonical_query_key({"name": "é\u2603"}, None)
    assert unicode == '{"filter":{"name":"\\u00e9\\u2603"},"sort":[]}'
    # Filters the store cannot evaluate offline still get a key (the backend answered them).
    assert canonical_query_key({"filter_tags": {"$in": ["x"]}}, None)


@pytest.mark.parametrize("bad", [{"a": math.nan}, {"a": {1, 2}}, {"a": object()}, {"a": b"x"}])
def test_canonical_query_key_refuses_non_json(bad: Any) -> None:
    with pytest.raises(FilterError, match="not JSON data"):
        canonical_query_key(bad, None)


def test_canonical_query_key_refuses_absurd_nesting() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(FilterError):
        canonical_query_key({"a": deep}, None)


# --------------------------------------------------------------------------------------------
# Property: a Python reference evaluator agrees with the SQL, on random filters and sorts.

ROWS = {row[0]: row for row in CHANNELS}
_COL = {"cid": 0, "name": 1, "created_by": 2, "created_by_id": 2, "created_at": 3,
        "updated_at": 4, "last_message_at": 5, "member_count": 6, "frozen": 7, "disabled": 8,
        "hidden": 9, "team": 10}  # fmt: skip
UNSET_US = -62_135_596_800_000_000


def ref_value(cid: str, field: str) -> Any:
    row = ROWS[cid]
    if field == "type":
        return cid.split(":", 1)[0]
    if field == "id":
        return cid.split(":", 1)[1]
    if field == "last_updated":
        times = [t for t in (row[4], row[5]) if t is not None]
        return max(times) if times else None
    if field in _COL:
        return row[_COL[field]]
    if field == "joined":
        return int(ME in MEMBERS[cid])
    if field == "pinned":
        return int(cid in PINNED)
    if field == "archived":
        return int(cid in ARCHIVED)
    if field == "pinned_at":
        return PINNED.get(cid)
    if field == "unread_count":
        return READS.get((cid, ME), 0)
    if field == "has_unread":
        return int(READS.get((cid, ME), 0) > 0)
    value = (row[11] or {}).get(field)
    return int(value) if isinstance(value, bool) else value


TIME_FIELDS = {"created_at", "updated_at", "last_message_at", "last_updated", "pinned_at"}


def ref_scalar(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in TIME_FIELDS:
        return parse_time(value)
    return int(value) if isinstance(value, bool) else value


def same_class(a: Any, b: Any) -> bool:
    return isinstance(a, str) == isinstance(b, str)


def ref_eq(x: Any, v: Any) -> bool:
    return x is None if v is None else x is not None and same_class(x, v) and x == v


def ref_op(cid: str, field: str, op: str, arg: Any) -> bool:
    if field == "members":
        members = set(MEMBERS[cid])
        if op in ("$eq", "$ne"):
            hit = arg in members if isinstance(arg, str) else members == set(arg)
            return hit if op == "$eq" else not hit
        hit = bool(members & set(arg))
        return hit if op == "$in" else not hit
    x = ref_value(cid, field)
    if op in ("$eq", "$ne"):
        hit = ref_eq(x, ref_scalar(field, arg))
        return hit if op == "$eq" else not hit
    if op in ("$in", "$nin"):
        hit = any(ref_eq(x, ref_scalar(field, a)) for a in arg)
        return hit if op == "$in" else not hit
    if op == "$exists":
        return (x is not None) == arg
    if op == "$autocomplete":
        return isinstance(x, str) and f" {arg.lower()}" in f" {x.lower()}"
    v = ref_scalar(field, arg)
    v = UNSET_US if v is None else v
    if x is None or not same_class(x, v):
        return False
    return {"$gt": x > v, "$gte": x >= v, "$lt": x < v, "$lte": x <= v}[op]


def ref_match(cid: str, node: dict[str, Any]) -> bool:
    for key, value in node.items():
        if key == "$and":
            ok = all(ref_match(cid, sub) for sub in value)
        elif key == "$or":
            ok = any(ref_match(cid, sub) for sub in value)
        elif key == "$nor":
            ok = not any(ref_match(cid, sub) for sub in value)
        elif isinstance(value, dict):
            ok = all(ref_op(cid, key, op, arg) for op, arg in value.items())
        else:
            ok = ref_op(cid, key, "$eq", value)
        if not ok:
            return False
    return True


def sqlite_cmp(a: Any, b: Any) -> int:
    """SQLite's order of values without collation: numbers before text."""
    ka, kb = (isinstance(a, str), a), (isinstance(b, str), b)
    return (ka > kb) - (ka < kb)


def ref_sort(cids: list[str], sort: list[dict[str, Any]]) -> list[str]:
    def compare(a: str, b: str) -> int:
        for key in sort:
            x, y = ref_value(a, key["field"]), ref_value(b, key["field"])
            if x is None or y is None:
                if (x is None) != (y is None):
                    return 1 if x is None else -1  # no value: last
                continue
            if order := sqlite_cmp(x, y) * key["direction"]:
                return order
        return sqlite_cmp(a, b)

    return sorted(cids, key=functools.cmp_to_key(compare))


NAMES = [r[1] for r in CHANNELS if r[1]] + ["zzz", "General"]
TIMES = st.sampled_from([ht(n) for n in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 20, 30, 40, 50)]
                        + ["0001-01-01T00:00:00Z", "2026-01-01T12:30:00+02:00"])  # fmt: skip
USERS = st.sampled_from(["alice", "bob", "carol", "dave", "eve", ME, "nobody"])
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "cid": st.sampled_from(ALL + ["x:y"]),
    "type": st.sampled_from(["messaging", "team", "livestream", "commerce", "other"]),
    "id": st.sampled_from(["general", "ops", "o'brien", "nope"]),
    "name": st.sampled_from(NAMES),
    "team": st.sampled_from(["red", "blue", "green"]),
    "created_by": st.sampled_from(["alice", "bob", ME, "carol", "eve", "dave"]),
    "member_count": st.sampled_from([1, 2, 3, 4, 100, 2.5, -1]),
    "created_at": TIMES,
    "updated_at": TIMES,
    "last_message_at": TIMES,
    "last_updated": TIMES,
    "pinned_at": TIMES,
    "frozen": st.booleans(),
    "hidden": st.booleans(),
    "joined": st.booleans(),
    "pinned": st.booleans(),
    "archived": st.booleans(),
    "has_unread": st.booleans(),
    "unread_count": st.integers(0, 8),
    "priority": st.sampled_from([1, 3, 5, 5.0, "high", "low", True, False, 2.5]),
    "topic": st.sampled_from(["misc", "Weekly Planning", "launch day", 5, "a"]),
    "vip": st.sampled_from([True, False, 0, 1, "yes"]),
    "score": st.sampled_from([2.5, 7, 3, "x"]),
    "nothing": st.sampled_from(["a", 1]),
}
PREDICATES = {"joined", "pinned", "archived", "has_unread", "unread_count"}  # no $exists
BOOLS = {"frozen", "hidden", "joined", "pinned", "archived", "has_unread"}  # no $gt
TEXTS = {"name", "topic", "priority", "vip", "score", "nothing"}  # $autocomplete
WORDS = st.sampled_from(["", "g", "cha", "PLAN", "ro", "o'", "100%", "_", "laun", "x", "day", "h"])


def conditions(field: str) -> st.SearchStrategy[Any]:
    value = VALUES[field]
    nullable = value | st.none()
    options = [
        nullable,
        st.builds(lambda v: {"$eq": v}, nullable),
        st.builds(lambda v: {"$ne": v}, nullable),
        st.builds(lambda v: {"$in": v}, st.lists(nullable, max_size=4)),
        st.builds(lambda v: {"$nin": v}, st.lists(nullable, max_size=4)),
        st.builds(lambda v: {"$in": v}, st.lists(nullable, min_size=17, max_size=20)),  # json_each
    ]
    if field not in BOOLS:
        orderable = value.filter(lambda v: not isinstance(v, bool))
        options.append(st.dictionaries(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), orderable,
                                       min_size=1, max_size=2))  # fmt: skip
    if field not in PREDICATES:
        options.append(st.builds(lambda v: {"$exists": v}, st.booleans()))
    if field in TEXTS:
        options.append(st.builds(lambda v: {"$autocomplete": v}, WORDS))
    return st.one_of(options)


MEMBER_CONDITIONS = st.one_of(
    USERS,
    st.lists(USERS, max_size=4),
    st.builds(lambda v: {"$eq": v}, USERS | st.lists(USERS, max_size=4)),
    st.builds(lambda v: {"$ne": v}, USERS | st.lists(USERS, max_size=4)),
    st.builds(lambda v: {"$in": v}, st.lists(USERS, max_size=4)),
    st.builds(lambda v: {"$nin": v}, st.lists(USERS, max_size=4)),
)
# Built once per field (a flatmap would rebuild them on every draw, and dominate the run time).
LEAF = st.one_of(
    [conditions(f).map(lambda c, f=f: {f: c}) for f in VALUES]
    + [MEMBER_CONDITIONS.map(lambda c: {"members": c})]
)


def combine(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    logical = st.builds(
        lambda op, subs: {op: subs},
        st.sampled_from(["$and", "$or", "$nor"]),
        st.lists(children, min_size=1, max_size=3),
    )
    both = st.builds(lambda a, b: {**a, **b}, children, children)  # implicit AND of fields
    return logical | both


FILTERS = st.recursive(LEAF, combine, max_leaves=8)
SORT_FIELDS = ["last_message_at", "last_updated", "created_at", "updated_at", "member_count",
               "pinned_at", "unread_count", "has_unread", "cid", "name", "priority", "topic",
               "score", "vip", "team"]  # fmt: skip
SORTS = st.lists(
    st.builds(lambda f, d: {"field": f, "direction": d}, st.sampled_from(SORT_FIELDS),
              st.sampled_from([1, -1])),
    max_size=3,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILTERS, SORTS)
def test_sql_agrees_with_reference(filter: dict[str, Any], sort: list[dict[str, Any]]) -> None:
    got = q(filter, sort)
    expected = [cid for cid in ALL if ref_match(cid, filter)]
    effective = sort or [{"field": "last_updated", "direction": -1}]
    assert got == ref_sort(expected, effective)


# --------------------------------------------------------------------------------------------
# Property: arbitrary input gives FilterError or SQL that SQLite runs, nothing else.

KEYS = st.sampled_from(
    [*VALUES, "members", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
     "$and", "$or", "$nor", "$autocomplete", "$regex", "$", "", "a.b", 'name" OR 1=1 --',
     "config", "created_by_id", "field", "direction"]
) | st.text(max_size=8)  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=12) | TIMES | st.sampled_from(["x' OR 1=1 --", "%", "_"])
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(KEYS, ch, max_size=4),
    max_leaves=25,
)
ANY_SORT = st.none() | st.lists(
    st.fixed_dictionaries({"field": KEYS | SCALARS, "direction": SCALARS}) | TREES, max_size=4
) | TREES  # fmt: skip


OPERATORS = st.sampled_from(["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
                             "$autocomplete", "$regex", "$and", "eq"])  # fmt: skip
# The grammar's shapes with any field, operator and value: mostly well-formed, often wrong.
GRAMMAR_LEAF = st.builds(
    lambda field, ops: {field: ops},
    KEYS,
    SCALARS | st.lists(SCALARS, max_size=5)
    | st.dictionaries(OPERATORS, SCALARS | st.lists(SCALARS, max_size=20), min_size=1, max_size=3),
)  # fmt: skip
GRAMMAR = st.recursive(
    GRAMMAR_LEAF | LEAF,
    lambda children: combine(children)
    | st.builds(lambda op, v: {op: v}, st.sampled_from(["$and", "$or", "$nor"]), TREES),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GRAMMAR | st.dictionaries(KEYS, TREES, max_size=5) | TREES, ANY_SORT | SORTS)
def test_arbitrary_input_gives_filter_error_or_runnable_sql(filter: Any, sort: Any) -> None:
    try:
        query = compile_channel_query(filter, sort, own_user_id=ME)
    except FilterError:
        pass
    else:
        assert query.where.count("?") + query.order_by.count("?") == len(query.params)
        assert set(run(query, limit=20)) <= set(ALL)
    try:
        key = canonical_query_key(filter, sort)
    except FilterError:
        pass
    else:
        assert isinstance(key, str) and key.isascii()


def test_autocomplete_folds_case_beyond_ascii(tmp_path) -> None:
    from fixtures import event

    from chatledger import ChatStore

    with ChatStore.open(tmp_path, "alice") as store:
        for cid, name in [("messaging:u", "Über Team"), ("messaging:s", "Straße"),
                          ("messaging:g", "ΣΟΦΙΑ")]:
            kind, cid_id = cid.split(":")
            store.ingest(event("channel.updated", cid=cid,
                               channel={"cid": cid, "type": kind, "id": cid_id, "name": name}))

        def found(text: str) -> set[str]:
            return {c.cid for c in store.channels({"name": {"$autocomplete": text}})}

        assert found("über") == found("ÜBER") == found("team") == {"messaging:u"}
        assert found("STRASSE") == found("straße") == {"messaging:s"}
        assert found("σοφ") == {"messaging:g"}
        with store.as_of(position=3) as past:  # the same function in a scratch database
            assert {c.cid for c in past.channels({"name": {"$autocomplete": "über"}})} == {
                "messaging:u"}
