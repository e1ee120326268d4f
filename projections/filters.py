"""Stream query-channels filters and sorts -> SQL over the `channels` read table (alias `c`).

The caller runs

    SELECT c.cid FROM channels c WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?

with `params + [limit, offset]`. Filters arrive from applications (and, through them, from
users), so nothing from a filter is ever spliced into SQL: values are bound parameters, and field
names either map to a fixed expression below or are checked against a strict pattern before they
become a quoted JSON path.

Semantics, where Stream's documentation leaves room:

- A condition on a missing value is false, and `$ne`, `$nin` and `$nor` are exact complements:
  `{"team": {"$ne": "red"}}` also matches channels without a team, as in Stream's Mongo-like
  filters. `$eq: null` / `$exists: false` match a missing value, `$exists: true` a present one.
- Time fields take RFC 3339 text. Go's zero time ("0001-01-01T00:00:00Z") means "unset": equal to
  null for `$eq`/`$in`, and the earliest possible time for `$gt`/`$lt` (`$gt` it = "has a time").
- Custom fields live in the `custom` JSON object: `json_extract(c.custom, '$."<name>"')`. Their
  names are 1-128 ASCII letters, digits, `_` or `-` (first character not `-`). A dot is refused:
  in Mongo-style filters `a.b` means a nested path, which the store does not support, and treating
  it as a flat key would silently match nothing. JSON true/false compare as 1/0 (what json_extract
  returns), so `true` also equals a stored 1 (and is > 0). Ordering comparisons on custom fields
  only match values of the same kind (numbers and booleans together, strings together).
- Sorts put channels without a value last in both directions (what the backend does).
- `members`: `$in` = has any of these members, `$nin` = has none of them, a list (or `$eq` list) =
  exactly this member set, a string (or `$eq` string) = has this member; `$ne` negates `$eq`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import reprlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import apsw

from chatledger.errors import FilterError
from chatledger.eventstore.wire import CHANNEL_FIELDS, WireError, parse_time

__all__ = [
    "FilterError",
    "ChannelQuery",
    "compile_channel_query",
    "canonical_query_key",
    "MAX_DEPTH",
    "MAX_CONDITIONS",
    "MAX_SORT_KEYS",
    "MAX_SUBQUERIES",
]


MAX_DEPTH = 16  # nesting of $and/$or/$nor, the top-level object being level 1
MAX_CONDITIONS = 10_000  # leaf conditions (one per field operator, and per empty object)
# Conditions on members, joined, pinned, archived, pinned_at, unread_count, has_unread (each a
# correlated subquery); equality conditions on one field in an $or are merged first (_merge).
MAX_SUBQUERIES = 100
MAX_SORT_KEYS = 32  # SQLite refuses more than 2,000 ORDER BY terms; no real sort needs 32
MAX_AUTOCOMPLETE_CHARS = 1_000  # SQLite refuses LIKE patterns over 50,000 bytes

# `$autocomplete` folds case with Python's Unicode rules, as an SQL function every APSW
# connection of this process gets when it is opened (the read pool's, `as-of`'s scratch ones).
FOLD_FUNCTION = "chatledger_casefold"


def _casefold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _register_casefold(connection: apsw.Connection) -> None:
    # One argument, as registered (apsw types a scalar function as taking any number).
    casefold = cast("apsw.ScalarProtocol", _casefold)
    connection.create_scalar_function(FOLD_FUNCTION, casefold, 1, deterministic=True)


apsw.connection_hooks.append(_register_casefold)
# Lists up to this size become `IN (?, ?, ...)`; longer ones one JSON parameter read by json_each,
# so a 20,000-cid `$in` costs one parameter, not 20,000 (SQLite allows at most 32,766).
INLINE_LIST_MAX = 16
# Parameters a query may use: SQLite's 32,766 less room for the caller's LIMIT and OFFSET.
PARAM_BUDGET = 32_000

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Go's zero time in epoch µs: what "unset" compares as in $gt/$lt (parse_time maps it to None).
_UNSET_US = (
    datetime(1, 1, 1, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
) // timedelta(microseconds=1)
_CUSTOM_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}", re.ASCII)


@dataclass(frozen=True)
class ChannelQuery:
    where: str  # SQL boolean expression over alias c (and subqueries), "1" when empty
    order_by: str  # ORDER BY body, ending with the unique tiebreak c.cid
    params: list[Any]  # bound parameters in order of appearance: where first, then order_by


# --------------------------------------------------------------------------------------------
# SQL fragments: text plus the parameters its placeholders take, in order.


@dataclass(frozen=True)
class _Sql:
    sql: str
    params: tuple[Any, ...] = ()
    # May evaluate to NULL (a comparison with a missing value). AND/OR treat such a NULL exactly
    # like false as far as WHERE's final answer goes; only NOT needs it made 0 first (see _not).
    # Plain `x = ?` rather than null-proof forms lets SQLite use indexes and turn ORs into IN.
    nullable: bool = False


_TRUE = _Sql("1")
_FALSE = _Sql("0")
_JOIN_FLAT = 8  # terms joined flat; longer lists are split in halves (see _join)


def _join(parts: list[_Sql], op: str) -> _Sql:
    """AND/OR the parts. Long lists nest in halves: SQLite parses `a AND b AND c ...` into a
    left-deep tree and refuses trees deeper than 1,000, which a flat 10,000-term $or would be."""
    if not parts:
        return _TRUE if op == "AND" else _FALSE
    parts = list(dict.fromkeys(parts))  # x AND x = x OR x = x; repeated subqueries cost time
    if len(parts) == 1:
        return parts[0]
    if len(parts) > _JOIN_FLAT:
        mid = len(parts) // 2
        parts = [_join(parts[:mid], op), _join(parts[mid:], op)]
    sql = f" {op} ".join(p.sql for p in parts)
    params = tuple(v for p in parts for v in p.params)
    return _Sql(f"({sql})", params, any(p.nullable for p in parts))


def _not(part: _Sql) -> _Sql:
    """The exact complement: NULL (some missing value made the condition false) becomes 0 first.
    Under AND/OR a NULL can only stand where false would give the same final answer (the
    operators are monotone), so making it 0 here, at each NOT, is all two-valued logic needs."""
    if part.nullable:
        return _Sql(f"NOT coalesce({part.sql}, 0)", part.params)
    return _Sql(f"NOT ({part.sql})", part.params)


# --------------------------------------------------------------------------------------------
# Fields: each name maps to an expression over `c` of a known kind.

_TEXT, _NUMBER, _TIME, _BOOL = "text", "number", "time", "bool"
_CUSTOM, _MEMBERS = "custom", "members"


@dataclass(frozen=True)
class _Field:
    name: str
    expr: str  # SQL expression; may hold placeholders (own user id) taking `params`
    kind: str
    nullable: bool
    params: tuple[Any, ...] = ()
    exists_ok: bool = True  # $exists is meaningless on computed yes/no fields
    autocomplete: bool = False
    json_path: str | None = None  # custom fields: the quoted path literal, for type checks

    def use(self, template: str, *values: Any, nullable: bool | None = None) -> _Sql:
        """`template` with {x} = the expression (possibly several times), then `values`. The
        result may be NULL when the field may be (unless told otherwise)."""
        count = template.count("{x}")
        maybe_null = self.nullable if nullable is None else nullable
        return _Sql(template.format(x=self.expr), self.params * count + values, maybe_null)


# (expression, kind, nullable), straight from the `channels` columns.
_LAST_UPDATED = (
    "max(coalesce(c.updated_at, c.last_message_at), coalesce(c.last_message_at, c.updated_at))"
)
_COLUMNS: dict[str, tuple[str, str, bool]] = {
    "cid": ("c.cid", _TEXT, False),
    "id": ("c.id", _TEXT, False),
    "type": ("c.type", _TEXT, False),
    "name": ("c.name", _TEXT, True),
    "created_by": ("c.created_by", _TEXT, True),
    "created_by_id": ("c.created_by", _TEXT, True),
    "team": ("c.team", _TEXT, True),
    "created_at": ("c.created_at", _TIME, True),
    "updated_at": ("c.updated_at", _TIME, True),
    "last_message_at": ("c.last_message_at", _TIME, True),
    "deleted_at": ("c.deleted_at", _TIME, True),
    "truncated_at": ("c.truncated_at", _TIME, True),
    "last_updated": (_LAST_UPDATED, _TIME, True),
    "member_count": ("c.member_count", _NUMBER, True),
    "message_count": ("c.message_count", _NUMBER, True),
    "frozen": ("c.frozen", _BOOL, False),
    "disabled": ("c.disabled", _BOOL, False),
    "hidden": ("c.hidden", _BOOL, False),
}
_OWN_MEMBER = "SELECT 1 FROM members m WHERE m.cid = c.cid AND m.user_id = ?"
_OWN_READ = "FROM reads r WHERE r.cid = c.cid AND r.user_id = ?"
# Fields about the own user's membership and read state: (expression, kind, nullable, exists_ok).
_OWN_FIELDS: dict[str, tuple[str, str, bool, bool]] = {
    "joined": (f"(EXISTS ({_OWN_MEMBER}))", _BOOL, False, False),
    "pinned": (f"(EXISTS ({_OWN_MEMBER} AND m.pinned_at IS NOT NULL))", _BOOL, False, False),
    "archived": (f"(EXISTS ({_OWN_MEMBER} AND m.archived_at IS NOT NULL))", _BOOL, False, False),
    "pinned_at": (
        "(SELECT m.pinned_at FROM members m WHERE m.cid = c.cid AND m.user_id = ?)",
        _TIME, True, True,
    ),
    # No read row means nothing unread.
    "unread_count": (f"coalesce((SELECT r.unread_messages {_OWN_READ}), 0)", _NUMBER, False, False),
    "has_unread": (f"coalesce((SELECT r.unread_messages > 0 {_OWN_READ}), 0)", _BOOL, False, False),
}  # fmt: skip
# Channel keys the backend sets but the read tables do not keep: they are not in `custom` either
# (custom_fields leaves them out), so treating them as custom would silently match nothing.
# `muted`: the own user has muted the channel, and the mute has not expired by the time the
# query is evaluated (its parameter).
_MUTED = ("(EXISTS (SELECT 1 FROM channel_mutes mu WHERE mu.cid = c.cid "
          "AND (mu.expires IS NULL OR mu.expires > ?)))")
_NOT_STORED = (frozenset(CHANNEL_FIELDS) - set(_COLUMNS) - set(_OWN_FIELDS)
               - {"members", "muted"})


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60


def _show(value: Any) -> str:
    """A value for an error message: a short repr (hostile input can be megabytes, or nested
    100,000 deep, or an integer too long for str())."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):
        return f"<{_json_type_name(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _resolve(name: Any, own_user_id: str, now_us: int) -> _Field:
    if not isinstance(name, str):
        raise FilterError(f"field names must be strings, got {_show(name)}")
    if name in _COLUMNS:
        expr, kind, nullable = _COLUMNS[name]
        return _Field(name, expr, kind, nullable, autocomplete=name == "name")
    if name in _OWN_FIELDS:
        expr, kind, nullable, exists_ok = _OWN_FIELDS[name]
        return _Field(name, expr, kind, nullable, (own_user_id,), exists_ok=exists_ok)
    if name == "muted":
        return _Field(name, _MUTED, _BOOL, False, (now_us,), exists_ok=False)
    if name == "members":
        return _Field(name, "", _MEMBERS, False, exists_ok=False)
    if name in _NOT_STORED:
        raise FilterError(
            f"field {_show(name)} is not kept offline: it cannot be filtered or sorted on"
        )
    if not _CUSTOM_NAME_RE.fullmatch(name):
        raise FilterError(
            f"invalid field name {_show(name)}: custom field names are 1 to 128 ASCII letters, "
            "digits, '_' or '-' (not starting with '-')"
        )
    # Safe as a literal: the pattern above admits no quote, backslash or dot. A literal (not a
    # parameter) path also lets an expression index on json_extract(custom, path) serve it.
    path = f"'$.\"{name}\"'"
    return _Field(
        name, f"json_extract(c.custom, {path})", _CUSTOM, True, autocomplete=True, json_path=path
    )


# --------------------------------------------------------------------------------------------
# Values: checked against the field's kind before they are bound.


def _text(value: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"{where}: text is not valid Unicode (lone surrogate)") from None
    return value


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FilterError(f"{where} expects a number, got {_json_type_name(value)}")
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise FilterError(f"{where}: integer {_show(value)} is out of the 64-bit range")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{where}: {value} is not a finite number")
    return value


def _time(value: Any, where: str) -> int | None:
    if not isinstance(value, str):
        raise FilterError(f"{where} expects an RFC 3339 time string, got {_json_type_name(value)}")
    try:
        return parse_time(value)
    except (WireError, ValueError, IndexError, OverflowError):
        raise FilterError(f"{where}: not a valid RFC 3339 time: {_show(value)}") from None


class _Compiler:
    """One compilation: the own user, how lists are bound, and the condition budget."""

    def __init__(self, own_user_id: str, inline_max: int, now_us: int) -> None:
        self.own_user_id = own_user_id
        self.now_us = now_us
        self.inline_max = inline_max
        self.conditions = 0
        self.subqueries = 0

    def _count(self) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(f"filter has more than {MAX_CONDITIONS:,} conditions")

    # ---- filter structure

    def filter(self, node: Any, depth: int) -> _Sql:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise FilterError(f"a filter must be an object, got {_json_type_name(node)}")
        if not node:  # {} matches every channel, as at the top level
            self._count()
            return _TRUE
        parts = []
        for key, value in node.items():
            if key in ("$and", "$or", "$nor"):
                parts.append(self._logical(key, value, depth))
            elif isinstance(key, str) and key.startswith("$"):
                raise FilterError(f"unsupported operator {_show(key)} at the top of a filter")
            else:
                parts.append(self._field_condition(key, value))
        return _join(parts, "AND")

    def _logical(self, op: str, value: Any, depth: int) -> _Sql:
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"{op!r} needs a non-empty list of filters, got {_show(value)}")
        # Merge first: an $or of 10,000 `{"members": id}` would otherwise be 10,000 subqueries.
        subs = [self.filter(item, depth + 1) for item in self._merge(value, op)]
        if op == "$and":
            return _join(subs, "AND")
        if op == "$or":
            return _join(subs, "OR")
        return _not(_join(subs, "OR"))  # $nor

    def _merge(self, items: list[Any] | tuple[Any, ...], op: str) -> list[Any]:
        """The items of an $or/$nor with equality conditions on one field gathered into one `$in`
        (of an $and: `$ne`/`$nin` into one `$nin`): same meaning, one list, one subquery, and
        SQLite plans a long list far faster than as many ORs. Each gathered item still counts
        as a condition."""
        wanted = ("$eq", "$in") if op in ("$or", "$nor") else ("$ne", "$nin")
        groups: dict[str, list[int]] = {}
        values: dict[str, list[Any]] = {}
        for index, item in enumerate(items):
            found = self._mergeable(item, wanted)
            if found is not None:
                groups.setdefault(found[0], []).append(index)
                values.setdefault(found[0], []).extend(found[1])
        merged: dict[int, Any] = {}  # index of a group's first item -> the merged condition
        dropped: set[int] = set()
        for name, indexes in groups.items():
            if len(indexes) > 1:
                merged[indexes[0]] = {name: {wanted[1]: values[name]}}
                dropped.update(indexes[1:])
                for _ in indexes[1:]:
                    self._count()
        if not merged:
            return list(items)
        return [merged.get(i, item) for i, item in enumerate(items) if i not in dropped]

    def _mergeable(self, item: Any, wanted: tuple[str, str]) -> tuple[str, list[Any]] | None:
        """(field, values) when `item` is one such condition on one field with valid values;
        None otherwise (left to compile on its own, errors included, with their own words)."""
        if not isinstance(item, dict) or len(item) != 1:
            return None
        [(name, spec)] = item.items()
        if not isinstance(name, str) or name.startswith("$"):
            return None
        if isinstance(spec, dict):
            if len(spec) != 1:
                return None
            [(op, value)] = spec.items()
        else:
            op, value = "$eq", spec
        if op == wanted[0] and not isinstance(value, (dict, list, tuple)):
            candidates = [value]
        elif op == wanted[1] and isinstance(value, (list, tuple)):
            candidates = list(value)
        else:
            return None
        try:
            field = _resolve(name, self.own_user_id, self.now_us)
            for candidate in candidates:
                if field.kind == _MEMBERS:
                    if not isinstance(candidate, str):
                        return None
                    _text(candidate, "")
                elif candidate is not None:
                    self._value(field, op, candidate)
        except FilterError:
            return None
        return name, candidates

    def _field_condition(self, name: Any, spec: Any) -> _Sql:
        field = _resolve(name, self.own_user_id, self.now_us)
        if isinstance(spec, dict):
            if not spec:
                raise FilterError(f"empty condition on field {_show(name)}")
            return _join([self._operator(field, op, value) for op, value in spec.items()], "AND")
        if isinstance(spec, (list, tuple)) and field.kind != _MEMBERS:
            raise FilterError(f"field {_show(name)}: a list value needs an operator such as '$in'")
        return self._operator(field, "$eq", spec)

    def _operator(self, field: _Field, op: Any, value: Any) -> _Sql:
        self._count()
        if field.kind == _MEMBERS or field.params:
            # Correlated subqueries run once per channel, and SQLite slows down more than
            # linearly with their number (about 0.2 s for 64 over 5,000 channels, 19 s for 512).
            self.subqueries += 1
            if self.subqueries > MAX_SUBQUERIES:
                raise FilterError(
                    f"filter has more than {MAX_SUBQUERIES} conditions on members or on the own "
                    "user's membership and read state"
                )
        if not isinstance(op, str) or not op.startswith("$"):
            # Mongo would read this as equality with a nested object; Stream has no such filter.
            raise FilterError(
                f"field {_show(field.name)}: expected operators such as '$eq', got key {_show(op)}"
            )
        if field.kind == _MEMBERS:
            return self._members(op, value)
        if op == "$eq":
            return self._eq(field, op, value)
        if op == "$ne":
            return _not(self._eq(field, op, value))
        if op == "$in":
            return self._in(field, op, value)
        if op == "$nin":
            return _not(self._in(field, op, value))
        if op in _COMPARISONS:
            return self._compare(field, op, value)
        if op == "$exists":
            return self._exists(field, value)
        if op == "$autocomplete":
            return self._autocomplete(field, value)
        raise FilterError(f"unsupported operator {_show(op)} on field {_show(field.name)}")

    # ---- operators on plain fields

    def _value(self, field: _Field, op: str, value: Any) -> Any:
        """A non-null filter value as the parameter to bind (None: Go's zero time, i.e. unset)."""
        where = f"operator {op!r} on field {field.name!r}"
        match field.kind:
            case "text":
                if not isinstance(value, str):
                    raise FilterError(f"{where} expects a string, got {_json_type_name(value)}")
                return _text(value, where)
            case "number":
                return _number(value, where)
            case "time":
                return _time(value, where)
            case "bool":
                if not isinstance(value, bool):
                    got = _json_type_name(value)
                    raise FilterError(f"{where} expects true or false, got {got}")
                return int(value)
            case _:  # custom: any JSON scalar; true/false are 1/0 to json_extract
                if isinstance(value, bool):
                    return int(value)
                if isinstance(value, str):
                    return _text(value, where)
                if isinstance(value, (int, float)):
                    return _number(value, where)
                raise FilterError(
                    f"{where} expects a string, number or boolean, got {_json_type_name(value)}"
                )

    def _eq(self, field: _Field, op: str, value: Any) -> _Sql:
        bound = None if value is None else self._value(field, op, value)
        if bound is None:
            return field.use("{x} IS NULL", nullable=False)
        return field.use("{x} = ?", bound)

    def _in(self, field: _Field, op: str, value: Any) -> _Sql:
        if not isinstance(value, (list, tuple)):
            got = _json_type_name(value)
            raise FilterError(f"operator {op!r} on field {field.name!r} expects a list, got {got}")
        bound, null = [], False
        for item in value:
            converted = None if item is None else self._value(field, op, item)
            if converted is None:
                null = True
            else:
                bound.append(converted)
        parts = []
        if bound:
            listed = self._list(list(dict.fromkeys(bound)))
            # listed.sql is ours ("(?, ?)" or the json_each form): no braces for format() to see.
            part = field.use("{x} IN " + listed.sql)
            parts.append(_Sql(part.sql, part.params + listed.params, part.nullable))
        if null:
            parts.append(field.use("{x} IS NULL", nullable=False))
        return _join(parts, "OR") if parts else _FALSE

    def _list(self, values: list[Any]) -> _Sql:
        """`(?, ?, ...)` for short lists, one JSON parameter expanded by json_each for long ones."""
        if len(values) <= self.inline_max:
            return _Sql("(" + ", ".join("?" * len(values)) + ")", tuple(values))
        return _Sql("(SELECT value FROM json_each(?))", (json.dumps(values),))

    def _compare(self, field: _Field, op: str, value: Any) -> _Sql:
        if field.kind == _BOOL:
            raise FilterError(f"operator {op!r} is not supported on boolean field {field.name!r}")
        if value is None:
            raise FilterError(f"operator {op!r} on field {field.name!r} needs a value, got null")
        if field.kind == _CUSTOM and isinstance(value, bool):
            raise FilterError(f"operator {op!r} on field {field.name!r} cannot order booleans")
        bound = self._value(field, op, value)
        if bound is None:  # Go's zero time: earlier than any real time
            bound = _UNSET_US
        symbol = _COMPARISONS[op]
        if field.kind == _CUSTOM:
            # Compare like with like: SQLite orders every number before every string, so without
            # this `{"$gt": 5}` would match all string values. true/false are the numbers 1/0.
            numbers = "('integer', 'real', 'true', 'false')"
            types = "('text')" if isinstance(bound, str) else numbers
            guard = f"json_type(c.custom, {field.json_path}) IN {types}"
            return field.use(f"({guard} AND {{x}} {symbol} ?)", bound)
        return field.use(f"{{x}} {symbol} ?", bound)

    def _exists(self, field: _Field, value: Any) -> _Sql:
        if not field.exists_ok:
            raise FilterError(f"operator '$exists' is not supported on field {field.name!r}")
        if not isinstance(value, bool):
            raise FilterError(
                f"operator '$exists' on field {field.name!r} expects true or false, "
                f"got {_json_type_name(value)}"
            )
        return field.use("{x} IS NOT NULL" if value else "{x} IS NULL", nullable=False)

    def _autocomplete(self, field: _Field, value: Any) -> _Sql:
        if not field.autocomplete:
            raise FilterError(f"operator '$autocomplete' is not supported on field {field.name!r}")
        where = f"operator '$autocomplete' on field {field.name!r}"
        if not isinstance(value, str):
            raise FilterError(f"{where} expects a string, got {_json_type_name(value)}")
        if len(value) > MAX_AUTOCOMPLETE_CHARS:
            raise FilterError(f"{where}: text longer than {MAX_AUTOCOMPLETE_CHARS} characters")
        escaped = (_text(value, where).casefold()
                   .replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
        # Any word starts with the text: prepend a space so the first word counts as one.
        # Unicode case folding on both sides ("Über" finds "über", "STRASSE" finds "Straße"),
        # whatever PRAGMA case_sensitive_like says; SQLite's own lower() folds ASCII only.
        like = f"(' ' || {FOLD_FUNCTION}({{x}})) LIKE ? ESCAPE '\\'"
        if field.kind == _CUSTOM:  # text only: json_extract gives arrays and objects as text too
            like = f"(json_type(c.custom, {field.json_path}) = 'text' AND {like})"
        return field.use(like, f"% {escaped}%")

    # ---- members

    def _members(self, op: str, value: Any) -> _Sql:
        where = f"operator {op!r} on field 'members'"
        if op in ("$eq", "$ne"):
            if isinstance(value, str):
                frag = _Sql(
                    "(EXISTS (SELECT 1 FROM members m WHERE m.cid = c.cid AND m.user_id = ?))",
                    (_text(value, where),),
                )
            elif isinstance(value, (list, tuple)):
                frag = self._member_set(self._user_ids(value, where))
            else:
                raise FilterError(
                    f"{where} expects a user id or a list of them, got {_json_type_name(value)}"
                )
            return frag if op == "$eq" else _not(frag)
        if op in ("$in", "$nin"):
            if not isinstance(value, (list, tuple)):
                got = _json_type_name(value)
                raise FilterError(f"{where} expects a list of user ids, got {got}")
            ids = self._user_ids(value, where)
            if not ids:
                return _FALSE if op == "$in" else _TRUE
            listed = self._list(ids)
            frag = _Sql(
                "(EXISTS (SELECT 1 FROM members m WHERE m.cid = c.cid AND m.user_id IN "
                f"{listed.sql}))",
                listed.params,
            )
            return frag if op == "$in" else _not(frag)
        if op in _KNOWN_OPERATORS:
            raise FilterError(f"operator {op!r} is not supported on field 'members'")
        raise FilterError(f"unsupported operator {_show(op)} on field 'members'")

    @staticmethod
    def _user_ids(values: list[Any] | tuple[Any, ...], where: str) -> list[str]:
        ids = []
        for item in values:
            if not isinstance(item, str):
                raise FilterError(f"{where} expects user id strings, got {_json_type_name(item)}")
            ids.append(_text(item, where))
        return list(dict.fromkeys(ids))

    def _member_set(self, ids: list[str]) -> _Sql:
        """Exactly these members: as many rows as ids ((cid, user_id) is the key), none outside."""
        if not ids:
            return _Sql("(NOT EXISTS (SELECT 1 FROM members m WHERE m.cid = c.cid))")
        listed = self._list(ids)
        return _Sql(
            "((SELECT count(*) FROM members m WHERE m.cid = c.cid) = ? AND NOT EXISTS "
            f"(SELECT 1 FROM members m WHERE m.cid = c.cid AND m.user_id NOT IN {listed.sql}))",
            (len(ids), *listed.params),
        )

    # ---- sort

    def order_by(self, sort: Any) -> _Sql:
        sort = normalize_sort(sort)
        if sort is None or (isinstance(sort, (list, tuple)) and not sort):
            sort = [{"field": "last_updated", "direction": -1}]  # the backend's default
        if not isinstance(sort, (list, tuple)):
            raise FilterError(
                f"sort must be a list of {{'field', 'direction'}} objects, got {_show(sort)}"
            )
        if len(sort) > MAX_SORT_KEYS:
            raise FilterError(f"sort has more than {MAX_SORT_KEYS} keys")
        terms: list[_Sql] = []
        seen: set[str] = set()
        for item in sort:
            field, direction = self._sort_key(item)
            if field.expr in seen:  # ties on it were already broken the first time
                continue
            seen.add(field.expr)
            order = "ASC" if direction == 1 else "DESC"
            if field.nullable:  # no value: last, whichever the direction
                terms.append(field.use("{x} IS NULL", nullable=False))
            terms.append(field.use(f"{{x}} {order}"))
            if field.expr == "c.cid":  # unique: later keys could never matter
                break
        else:
            terms.append(_Sql("c.cid"))  # a total order, so pages never overlap or skip
        return _Sql(", ".join(t.sql for t in terms), tuple(v for t in terms for v in t.params))

    def _sort_key(self, item: Any) -> tuple[_Field, int]:
        if not isinstance(item, dict) or "field" not in item or "direction" not in item:
            raise FilterError(
                f"each sort key must be {{'field': ..., 'direction': 1|-1}}, got {_show(item)}"
            )
        extra = set(item) - {"field", "direction"}
        if extra:
            raise FilterError(f"unknown keys in sort key: {_show(sorted(map(str, extra)))}")
        name, direction = item["field"], item["direction"]
        field = _resolve(name, self.own_user_id, self.now_us)
        if field.kind == _MEMBERS:
            raise FilterError("cannot sort on field 'members'")
        if type(direction) is not int or direction not in (1, -1):  # noqa: E721 (bool is an int)
            raise FilterError(
                f"sort direction for field {name!r} must be 1 or -1, got {_show(direction)}"
            )
        return field, direction


_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_KNOWN_OPERATORS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$exists", "$autocomplete", *_COMPARISONS}
)


# --------------------------------------------------------------------------------------------
# Public API


def compile_channel_query(
    filter: dict[str, Any] | None,  # noqa: A002 (Stream's name for it)
    sort: list[dict[str, Any]] | None,
    *,
    own_user_id: str,
    now_us: int | None = None,
) -> ChannelQuery:
    """The WHERE and ORDER BY of a query-channels request, over `channels c`.

    `own_user_id` is the user the store belongs to (joined, pinned, archived, unread fields).
    `now_us` is the present (epoch µs; default: the clock) for conditions relative to it: `muted`
    counts only mutes that have not expired by then. Raises FilterError, and only FilterError,
    for anything it cannot evaluate.
    """
    if now_us is None:
        now_us = time.time_ns() // 1000
    if not isinstance(own_user_id, str):
        raise FilterError(f"own_user_id must be a string, got {_show(own_user_id)}")
    # First with short lists inline (readable, planner-friendly); if that needs too many
    # parameters (thousands of small lists), again with every list as one JSON parameter: at most
    # two parameters per condition then, so any filter under MAX_CONDITIONS fits.
    for inline_max in (INLINE_LIST_MAX, 0):
        compiler = _Compiler(own_user_id, inline_max, now_us)
        where = _TRUE if filter is None or filter == {} else compiler.filter(filter, 1)
        order = compiler.order_by(sort)
        params = [*where.params, *order.params]
        if len(params) <= PARAM_BUDGET:
            return ChannelQuery(where.sql, order.sql, params)
    raise FilterError(f"filter needs more than {PARAM_BUDGET:,} SQL parameters")


def normalize_sort(sort: Any) -> Any:
    """The sort forms the backend's SDKs send, as the list form: `{"last_message_at": -1}`
    (one object, keys in order) and `[{"last_message_at": -1}]` (a list of one-key objects)
    become `[{"field": "last_message_at", "direction": -1}]`. Anything else is returned as it
    is (and checked where it is used)."""
    if isinstance(sort, dict) and "field" not in sort:
        return [{"field": name, "direction": direction} for name, direction in sort.items()]
    if isinstance(sort, (list, tuple)):
        return [{"field": next(iter(item)), "direction": next(iter(item.values()))}
                if isinstance(item, dict) and len(item) == 1 and "field" not in item else item
                for item in sort]
    return sort


_BUILT_IN_FIELDS = frozenset({*_COLUMNS, *_OWN_FIELDS, "muted", "members"})


def filter_field_names(filter: Any, depth: int = 0) -> list[str]:
    """The field names a filter uses (inside `$and`, `$or`, `$nor` too), in order, once each."""
    names: list[str] = []
    if depth > MAX_DEPTH or not isinstance(filter, dict):
        return names
    for key, value in filter.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, (list, tuple)):
            for item in value:
                names.extend(filter_field_names(item, depth + 1))
        elif isinstance(key, str) and not key.startswith("$"):
            names.append(key)
    return list(dict.fromkeys(names))


def unknown_fields(filter: Any, sort: Any, custom_fields: Iterable[str]) -> list[str]:
    """The fields a filter or sort names that are neither the backend's nor a custom field
    any stored channel has: most often a typo (`nmae`), which would match nothing."""
    known = _BUILT_IN_FIELDS | set(custom_fields)
    keys = normalize_sort(sort)
    sorted_on = [item.get("field") for item in keys if isinstance(item, dict)] \
        if isinstance(keys, list) else []
    names = filter_field_names(filter) + [name for name in sorted_on if isinstance(name, str)]
    return [name for name in dict.fromkeys(names) if name not in known]


def close_field_names(name: str, custom_fields: Iterable[str]) -> list[str]:
    """Known field names a misspelt one is close to."""
    return difflib.get_close_matches(name, sorted(_BUILT_IN_FIELDS | set(custom_fields)), n=3)


def canonical_query_key(filter: Any, sort: Any) -> str:  # noqa: A002
    """Canonical JSON of {"filter", "sort"} (sorted keys, compact, ASCII): the same query sent
    with its keys in another order gets the same key. Not validated: the backend may answer
    filters the store cannot evaluate offline, and their results are still worth caching."""
    sort = normalize_sort(sort)  # the SDKs' {"field": direction} is the same query
    body = {"filter": {} if filter is None else filter, "sort": [] if sort is None else sort}
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FilterError(f"query is not JSON data: {_show(str(exc))}") from None
