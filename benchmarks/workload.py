"""A seeded generator of a realistic Stream Chat workload, shaped after docs/wire.md.

Everything here is generated from a `random.Random(seed)`: the same arguments give the same bytes on
every run and machine (same Python minor version). Nothing is copied from Stream's SDKs or fixtures.

- `generate_events(n, seed, channels, users)` yields WebSocket events as compact JSON bytes, in the
  proportions of `MIX`, with Zipf-skewed channel traffic, random UUID message ids and strictly
  increasing `created_at` (RFC 3339, 6 fractional digits, `Z`). Updates, deletions, reactions and
  reads refer to messages created earlier in the same channel. The mean size is about 1.46 KB:
  each message.new carries its author twice (top-level `user` and `message.user`), as the server
  sends it, which is more than the 1,146 bytes of the PERF-NOTES workload.
- `generate_query_channels_response(channels, messages_per_channel, seed)` gives one query-channels
  answer (`{"channels": [channel state, ...], "duration": ...}`).
- `generate_sync_response(n_events, seed)` gives one `/sync` answer (`{"events": [...], ...}`).

Speed: the user objects, channel configs and other constant parts are encoded once and spliced in as
`msgspec.Raw`; per-message state is kept in small objects and the event dicts are encoded with
msgspec. 1,000,000 events take about 22 s of CPU on the 2-core benchmark machine (45,000/s).
"""

from __future__ import annotations

import time
import unicodedata
from bisect import bisect
from itertools import accumulate
from collections.abc import Iterator
from random import Random

import msgspec

__all__ = [
    "MIX",
    "generate_events",
    "generate_query_channels_response",
    "generate_sync_response",
]

# Intended share of each event type (sums to 1.0). Groups: message.new 70 %, message.updated 10 %,
# message.deleted 3 %, reaction.new 10 %, reaction.deleted 2 %, reads 3 %, channel.updated 1 %,
# member and user events 1 %.
MIX: dict[str, float] = {
    "message.new": 0.70,
    "message.updated": 0.10,
    "message.deleted": 0.03,
    "reaction.new": 0.10,
    "reaction.deleted": 0.02,
    "message.read": 0.02,
    "notification.mark_read": 0.01,
    "channel.updated": 0.01,
    "member.added": 0.002,
    "member.updated": 0.001,
    "member.removed": 0.002,
    "user.updated": 0.002,
    "user.presence.changed": 0.003,
}

_encode = msgspec.json.Encoder().encode
_Raw = msgspec.Raw

# 2024-03-01T00:00:00Z: the first event of a generated stream happens shortly after.
_START_S = 1_709_251_200
_GAP_BITS = 19  # gaps between events up to 0.52 s, 0.26 s on average (1M events: about 3 days)
_RECENT_PER_CHANNEL = 400  # messages per channel that later events may refer to
_REACTED_PER_CHANNEL = 200  # messages with reactions per channel that reaction.deleted may pick
_LATEST_REACTIONS = 10  # like the server: latest_reactions holds the 10 newest
_ZIPF_S = 1.1

_FIRST_NAMES = (
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil "
    "Trent Victor Walter Yusuf Zoë José Åsa Chloé Björn Søren Małgorzata Łukasz Núria François "
    "Mia Noah Emma Liam Ava Lucas Sofia Mateo Aria Leo Hana Kenji Aiko Ravi Priya Arjun Fatima Omar "
    "Layla Chen Wei Mei Jun Thabo Amara Kwame Zanele Ingrid Sven Oksana Dmitri Ana Tomás"
).split()
_LAST_NAMES = (
    "Smith Johnson Garcia Müller Schmidt Rossi Dubois Novak Kowalski Ivanova Tanaka Suzuki Kim Park "
    "Nguyen Singh Patel Khan Haddad Okafor Mensah Silva Santos Pérez López Jensen Andersson Virtanen "
    "O'Brien Murphy Costa Ferreira Yılmaz Çelik Papadopoulos Horváth 李 王 김 Сидоров"
).split()
_TITLES = ("Engineer", "Designer", "Product Manager", "Support", "Sales", "CEO", "Intern", "QA", "Ops")
_TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Sao_Paulo",
              "Asia/Kolkata", "Africa/Lagos", "Australia/Sydney", "UTC")
_LANGUAGES = ("en", "en", "en", "de", "fr", "es", "ja", "pt", "nl")

_WORDS = (
    "the be to of and a in that have I it for not on with he as you do at this but his by from they "
    "we say her she or an will my one all would there their what so up out if about who get which go "
    "me when make can like time no just him know take people into year your good some could them see "
    "other than then now look only come its over think also back after use two how our work first "
    "well way even new want because any these give day most us is are was were been has had did "
    "meeting release deploy build tests review merge branch ticket sprint standup lunch coffee today "
    "tomorrow tonight weekend yesterday ok okay sure thanks thank great nice cool awesome yes yeah "
    "nope maybe later soon asap please check link doc docs design mockup demo call zoom slides "
    "customer bug fix issue crash login server client api database cache latency offline sync "
    "message channel thread reply reaction upload photo video file screenshot version update "
    "lol haha hmm wow omg btw imo fyi brb "
    "café naïve über señor façade jalapeño déjà-vu Grüße "
    "日本 こんにちは ありがとう 你好 谢谢 привет спасибо שלום مرحبا नमस्ते 안녕하세요 "
    "😀 😂 👍 🎉 ❤️ 🔥 🙏 🚀 👀 ✅ "
    '"quoted" it\'s don\'t can\'t won\'t C:\\temp'
).split()
# (low, high) words, weight: many short chat lines, some paragraphs, a few long posts.
_TEXT_LENGTHS = ((1, 4, 0.50), (4, 12, 0.33), (12, 35, 0.14), (35, 110, 0.03))
_REACTION_TYPES = ("like", "love", "haha", "wow", "sad", "angry", "fire", "thumbsup")
_REACTION_WEIGHTS = (40, 20, 12, 6, 3, 2, 8, 9)
_REACTION_CUM = list(accumulate(_REACTION_WEIGHTS))
_REACTION_TOTAL = _REACTION_CUM[-1]
_FILE_KINDS = (
    ("application/pdf", "pdf", "Quarterly report"),
    ("image/png", "png", "diagram"),
    ("text/plain", "txt", "notes"),
    ("application/zip", "zip", "logs"),
    ("video/mp4", "mp4", "screen recording"),
)

_CHANNEL_CONFIG = _Raw(_encode({
    "created_at": "2023-01-10T09:15:22.412301Z",
    "updated_at": "2023-11-02T17:40:03.998127Z",
    "name": "messaging",
    "typing_events": True, "read_events": True, "connect_events": True, "search": True,
    "reactions": True, "replies": True, "quotes": True, "mutes": True, "uploads": True,
    "url_enrichment": True, "custom_events": True, "push_notifications": True, "reminders": False,
    "mark_messages_pending": False, "polls": False, "message_retention": "infinite",
    "max_message_length": 5000, "automod": "disabled", "automod_behavior": "flag",
    "blocklist_behavior": "flag",
    "commands": [{"name": "giphy", "description": "Post a random gif to the channel",
                  "args": "[text]", "set": "fun_set"}],
}))
_OWN_CAPABILITIES = _Raw(_encode([
    "ban-channel-members", "connect-events", "delete-own-message", "flag-message", "mute-channel",
    "pin-message", "quote-message", "read-events", "search-messages", "send-links", "send-message",
    "send-reaction", "send-reply", "send-typing-events", "typing-events", "update-own-message",
    "upload-file",
]))
_EMPTY_LIST = _Raw(b"[]")


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid4(rnd: Random) -> str:
    """A version-4 UUID string drawn from `rnd` (deterministic, unlike uuid.uuid4)."""
    h = "%032x" % rnd.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _rfc3339(us: int, digits: int = 6) -> str:
    """RFC 3339 in UTC with `digits` fractional digits (0 to 9), as the server writes them."""
    s, frac = divmod(us, 1_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    if digits == 0:
        return head + "Z"
    return head + "." + f"{frac:06d}{frac % 997:03d}"[:digits] + "Z"


class _Msg:
    """What later events need to know about a message. Rare attributes default at class level
    (cheaper to create than setting all of them per message)."""

    text_updated_at: str | None = None
    parent: _Msg | None = None
    show_in_channel = False
    attachments: list[dict] | None = None
    mentions: tuple[int, ...] = ()
    reactions: list[tuple[int, str, int, str]] | None = None  # (user, type, score, at)
    reply_count = 0
    type = "regular"
    quoted: _Msg | None = None
    deleted_at: str | None = None
    null_counts = False
    html = False  # sent by a client that asked for rendered markdown

    def __init__(self, id: str, uidx: int, text: str, created_at: str) -> None:
        self.id = id
        self.uidx = uidx
        self.text = text
        self.created_at = self.updated_at = created_at


class _Channel:
    __slots__ = (
        "id", "cid", "name", "created_at", "updated_at", "created_by", "members", "joined", "roles",
        "recent", "reacted", "message_count", "last_message_at", "custom_raw", "watchers", "frozen",
    )


class _World:
    """Users, channels and recent messages; emits one event dict at a time."""

    def __init__(self, seed: int, channels: int, users: int) -> None:
        if channels < 1:
            raise ValueError("channels must be at least 1")
        if users < 2:
            raise ValueError("users must be at least 2")
        rnd = self.rnd = Random(seed)
        self.now_us = _START_S * 1_000_000 + rnd.randrange(3_600_000_000)
        self._ts_sec = -1
        self._ts_prefix = ""

        # Event types: cumulative weights for bisect.
        self.types = list(MIX)
        acc, cum = 0.0, []
        for t in self.types:
            acc += MIX[t]
            cum.append(acc)
        self.type_cum = cum
        self.type_total = acc

        # Text: word counts drawn from a 1,024-entry table, words from a 256-entry table (common
        # words several times), so one draw of random bytes picks all the words of a message.
        len_cum = list(accumulate(w for _, _, w in _TEXT_LENGTHS))
        self.len_table = []
        for _ in range(1024):
            lo, hi, _w = _TEXT_LENGTHS[bisect(len_cum, rnd.random() * len_cum[-1])]
            self.len_table.append(rnd.randint(lo, hi))
        self.words = _WORDS
        self.word256 = (_WORDS * 2)[:256]

        # Users: objects are built and encoded once; updates re-encode one user.
        self.n_users = users
        self.user_ids: list[str] = []
        self.users: list[dict] = []
        self.user_raw: list[msgspec.Raw] = []
        start = self.now_us
        seen_ids: set[str] = set()
        for i in range(users):
            first = rnd.choice(_FIRST_NAMES)
            last = rnd.choice(_LAST_NAMES)
            # User ids allow only ASCII letters, digits, `@`, `_` and `-`.
            slug = unicodedata.normalize("NFKD", first).encode("ascii", "ignore").decode().lower() or "user"
            uid = f"{slug}-{rnd.getrandbits(24):06x}" if rnd.random() < 0.9 else _uuid4(rnd)
            while uid in seen_ids:
                uid = _uuid4(rnd)
            seen_ids.add(uid)
            created = start - rnd.randrange(30, 900) * 86_400_000_000 - rnd.randrange(86_400_000_000)
            updated = created + rnd.randrange(0, 20) * 86_400_000_000
            active = start - rnd.randrange(0, 7 * 86_400_000_000)
            # Users made by different clients over the years: 0 to 9 fractional digits.
            digits = rnd.choice((6, 6, 6, 9, 3, 0))
            user = {
                "id": uid,
                "name": f"{first} {last}",
                "role": "admin" if i == 0 else ("moderator" if rnd.random() < 0.01 else "user"),
                "created_at": _rfc3339(created, digits),
                "updated_at": _rfc3339(updated, digits),
                "last_active": _rfc3339(active, digits),
                "online": rnd.random() < 0.2,
                "banned": False,
            }
            if rnd.random() < 0.4:  # most users never set an avatar
                user["image"] = f"https://cdn.chat.example/u/{uid}.jpg"
            # Custom keys live at the top level of a user object.
            r = rnd.random()
            if r < 0.35:
                user["title"] = rnd.choice(_TITLES)
            elif r < 0.5:
                user["timezone"] = rnd.choice(_TIMEZONES)
            elif r < 0.55:
                user["language"] = rnd.choice(_LANGUAGES)
                user["status_emoji"] = rnd.choice(("🌴", "🤒", "🏠", "📅"))
            self.user_ids.append(uid)
            self.users.append(user)
            self.user_raw.append(_Raw(_encode(user)))

        # Channels, ranked by traffic: rank 1 gets the most (Zipf), and has the most members.
        self.channels: list[_Channel] = []
        acc, self.ch_cum = 0.0, []
        for rank in range(1, channels + 1):
            ch = _Channel()
            size = 2 if rank > 3 and rnd.random() < 0.25 else max(3, int(300 / rank ** 0.7))
            size = min(size, users)
            if size == 2:  # a direct conversation: the server derives the id from the members
                ch.id = "!members-" + rnd.randbytes(15).hex()
            elif rank <= 5 and rnd.random() < 0.5:
                ch.id = rnd.choice(("general", "random", "support", "engineering", "announcements"))
                ch.id += f"-{rank}"
            else:
                ch.id = f"{rnd.getrandbits(48):012x}"
            while ch.id in seen_ids:
                ch.id = f"{rnd.getrandbits(64):016x}"
            seen_ids.add(ch.id)
            ch.cid = f"messaging:{ch.id}"
            members = rnd.sample(range(users), size)
            ch.members = members
            ch.created_by = members[0]
            ch.created_at = _rfc3339(start - rnd.randrange(1, 400) * 86_400_000_000)
            ch.updated_at = ch.created_at
            ch.joined = {u: ch.created_at for u in members}
            ch.roles = {members[0]: "channel_moderator"}
            named = size > 2 and rnd.random() < 0.4
            ch.name = " ".join(rnd.choices(_WORDS[:200], k=rnd.randint(1, 3))).title() if named else None
            ch.recent = []
            ch.reacted = []
            ch.message_count = rnd.randrange(0, 5000 // rank + 10)
            ch.last_message_at = None
            ch.frozen = False
            ch.watchers = max(1, size // 10)
            ch.custom_raw = self._channel_custom(ch)
            self.channels.append(ch)
            acc += 1.0 / rank ** _ZIPF_S
            self.ch_cum.append(acc)
        self.ch_total = acc

    # --- small helpers -------------------------------------------------------------------------

    def tick(self) -> str:
        """Advance the clock (at least 1 us) and return the new time as RFC 3339 with 6 digits."""
        # Gaps: uniform in [1 us, 2 * mean), cheaper to draw than exponential ones.
        self.now_us = now = self.now_us + self.rnd.getrandbits(_GAP_BITS) + 1
        s, frac = divmod(now, 1_000_000)
        if s != self._ts_sec:
            self._ts_sec = s
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        return f"{self._ts_prefix}.{frac:06d}Z"

    def _channel_custom(self, ch: _Channel) -> msgspec.Raw | None:
        return _Raw(_encode({"name": ch.name})) if ch.name else None

    def pick_channel(self) -> _Channel:
        return self.channels[bisect(self.ch_cum, self.rnd.random() * self.ch_total)]

    def pick_member(self, ch: _Channel) -> int:
        # Earlier members talk more.
        m = ch.members
        return m[int(len(m) * self.rnd.random() ** 2)]

    def pick_recent(self, ch: _Channel) -> _Msg | None:
        rec = ch.recent
        if not rec:
            return None
        # Skewed towards the newest messages.
        return rec[-1 - int(len(rec) * self.rnd.random() ** 2)]

    def text(self) -> str:
        rnd = self.rnd
        k = self.len_table[rnd.getrandbits(10)]
        text = " ".join(map(self.word256.__getitem__, rnd.getrandbits(k << 3).to_bytes(k, "little")))
        r = rnd.getrandbits(5)
        if k > 40 and r & 1:
            cut = len(text) // 2
            text = text[:cut] + "\n\n" + text[cut:]
        if r < 8:
            text += "?"
        elif r < 13:
            text += "!"
        elif r < 19:
            text += "."
        return text[:1].upper() + text[1:]

    def attachment(self, rnd: Random) -> dict:
        r = rnd.random()
        key = f"{rnd.getrandbits(48):012x}"
        if r < 0.6:
            w, h = rnd.choice(((1920, 1080), (1080, 1350), (640, 480), (3024, 4032)))
            url = f"https://cdn.chat.example/f/{key}/IMG_{rnd.randrange(10000):04d}.jpg"
            return {"type": "image", "image_url": url, "thumb_url": url + "?w=300",
                    "fallback": f"IMG_{key[:4]}.jpg", "original_width": w, "original_height": h}
        if r < 0.8:
            mime, ext, title = rnd.choice(_FILE_KINDS)
            return {"type": "file", "asset_url": f"https://cdn.chat.example/f/{key}/f.{ext}",
                    "title": f"{title}.{ext}", "mime_type": mime,
                    "file_size": rnd.randrange(2_000, 25_000_000)}
        site = rnd.choice(("github.com", "en.wikipedia.org", "news.ycombinator.com", "youtube.com"))
        return {"type": "image", "og_scrape_url": f"https://{site}/{key}", "title_link": f"https://{site}/{key}",
                "title": " ".join(rnd.choices(self.words[:200], k=5)).title(),
                "text": " ".join(rnd.choices(self.words[:200], k=18)),
                "image_url": f"https://{site}/og/{key}.png", "author_name": site}

    # --- state changes ---------------------------------------------------------------------------

    def new_message(self, ch: _Channel, now: str) -> _Msg:
        rnd = self.rnd
        uidx = self.pick_member(ch)
        text = self.text()
        msg = _Msg(_uuid4(rnd), uidx, text, now)
        r = rnd.random()
        if r < 0.12:  # 6 % mention someone, 6 % carry attachments
            if r < 0.06:
                if len(ch.members) > 2:
                    mentioned = tuple({self.pick_member(ch) for _ in range(rnd.randint(1, 2))})
                    msg.mentions = mentioned
                    msg.text = " ".join("@" + self.users[u]["name"] for u in mentioned) + " " + text
            else:
                count = 1 if rnd.random() < 0.8 else rnd.randint(2, 4)
                msg.attachments = [self.attachment(rnd) for _ in range(count)]
        if ch.recent:
            r = rnd.random()
            if r < 0.10:
                parent = self.pick_recent(ch)
                while parent is not None and parent.parent is not None:
                    parent = parent.parent
                if parent is not None and parent.deleted_at is None:
                    msg.parent = parent
                    msg.type = "reply"
                    msg.show_in_channel = rnd.random() < 0.05
                    parent.reply_count += 1
            elif r < 0.12:
                msg.quoted = self.pick_recent(ch)
            elif r > 0.9:  # some messages come with null counters instead of {}
                msg.null_counts = True
            elif r > 0.7:
                msg.html = True
        rec = ch.recent
        rec.append(msg)
        if len(rec) > _RECENT_PER_CHANNEL:
            del rec[: len(rec) - _RECENT_PER_CHANNEL // 2]
        ch.message_count += 1
        ch.last_message_at = now
        return msg

    # --- JSON shapes -----------------------------------------------------------------------------

    def reaction_dict(self, msg: _Msg, r: tuple[int, str, int, str]) -> dict:
        uidx, kind, score, at = r
        return {"message_id": msg.id, "user_id": self.user_ids[uidx], "user": self.user_raw[uidx],
                "type": kind, "score": score, "created_at": at, "updated_at": at}

    def message_dict(self, msg: _Msg, ch: _Channel, nested: bool = True) -> dict:
        user_raw = self.user_raw
        rs = msg.reactions
        if rs:
            counts: dict | None = {}
            scores: dict | None = {}
            groups: dict | None = {}
            for _, kind, score, at in rs:
                counts[kind] = counts.get(kind, 0) + 1
                scores[kind] = scores.get(kind, 0) + score
                g = groups.get(kind)
                if g is None:
                    groups[kind] = {"count": 1, "sum_scores": score, "first_reaction_at": at,
                                    "last_reaction_at": at}
                else:
                    g["count"] += 1
                    g["sum_scores"] += score
                    g["last_reaction_at"] = at
            latest = [self.reaction_dict(msg, r) for r in reversed(rs[-_LATEST_REACTIONS:])]
        else:
            counts = scores = None if msg.null_counts else {}
            groups = None
            latest = []
        text = msg.text
        d = {
            "id": msg.id,
            "text": text,
            "type": msg.type,
            "user": user_raw[msg.uidx],
            "attachments": msg.attachments or _EMPTY_LIST,
            "latest_reactions": latest,
            "own_reactions": _EMPTY_LIST,
            "reaction_counts": counts,
            "reaction_scores": scores,
            "reaction_groups": groups,
            "reply_count": msg.reply_count,
            "cid": ch.cid,
            "created_at": msg.created_at,
            "updated_at": msg.updated_at,
            "mentioned_users": [user_raw[u] for u in msg.mentions],
            "pinned": False,
            "pinned_at": None,
            "pinned_by": None,
            "pin_expires": None,
        }
        if msg.html:
            d["html"] = f"<p>{text}</p>\n" if text else ""
        if msg.parent is not None:
            d["parent_id"] = msg.parent.id
            d["show_in_channel"] = msg.show_in_channel
        if msg.quoted is not None:
            d["quoted_message_id"] = msg.quoted.id
            if nested:
                d["quoted_message"] = self.message_dict(msg.quoted, ch, nested=False)
        if msg.text_updated_at is not None:
            d["message_text_updated_at"] = msg.text_updated_at
        if msg.deleted_at is not None:
            d["deleted_at"] = msg.deleted_at
        return d

    def channel_dict(self, ch: _Channel, own: bool = False) -> dict:
        d = {
            "id": ch.id,
            "type": "messaging",
            "cid": ch.cid,
            "last_message_at": ch.last_message_at,
            "created_at": ch.created_at,
            "updated_at": ch.updated_at,
            "created_by": self.user_raw[ch.created_by],
            "frozen": ch.frozen,
            "disabled": False,
            "member_count": len(ch.members),
            "config": _CHANNEL_CONFIG,
        }
        if own:
            d["own_capabilities"] = _OWN_CAPABILITIES
            d["hidden"] = False
        if ch.name:
            d["name"] = ch.name
        if len(ch.members) > 2:
            d["image"] = f"https://cdn.chat.example/c/{ch.id}.png"
        return d

    def member_dict(self, ch: _Channel, uidx: int) -> dict:
        joined = ch.joined.get(uidx, ch.created_at)
        role = ch.roles.get(uidx, "channel_member")
        return {
            "user_id": self.user_ids[uidx],
            "user": self.user_raw[uidx],
            "status": "member",
            "created_at": joined,
            "updated_at": joined,
            "banned": False,
            "shadow_banned": False,
            "role": "owner" if uidx == ch.created_by else ("moderator" if role == "channel_moderator" else "member"),
            "channel_role": role,
            "notifications_muted": False,
        }

    def head(self, kind: str, ch: _Channel, now: str) -> dict:
        return {
            "type": kind,
            "cid": ch.cid,
            "channel_id": ch.id,
            "channel_type": "messaging",
            "created_at": now,
            "channel_member_count": len(ch.members),
            "channel_message_count": ch.message_count,
        }

    # --- events ----------------------------------------------------------------------------------

    def next_event(self) -> dict:
        rnd = self.rnd
        kind = self.types[bisect(self.type_cum, rnd.random() * self.type_total)]
        now = self.tick()
        if kind == "message.new":
            return self.ev_message_new(self.pick_channel(), now)
        if kind.startswith("user."):
            return self.ev_user(kind, now)
        if kind == "notification.mark_read" and rnd.random() < 0.3:
            uidx = rnd.randrange(self.n_users)
            return {"type": kind, "created_at": now, "user": self.user_raw[uidx],
                    "total_unread_count": 0, "unread_channels": 0, "unread_count": 0}
        ch = self.pick_channel()
        if kind in ("channel.updated", "member.added", "member.updated", "member.removed"):
            return self.ev_channel(kind, ch, now)
        # The rest refers to an earlier message of the channel: try a few channels before falling
        # back to a new message (only happens before quiet channels have any).
        for _ in range(4):
            if ch.recent:
                break
            ch = self.pick_channel()
        else:
            return self.ev_message_new(ch, now)
        if kind == "message.updated":
            return self.ev_message_updated(ch, now)
        if kind == "message.deleted":
            return self.ev_message_deleted(ch, now)
        if kind == "reaction.new":
            return self.ev_reaction_new(ch, now)
        if kind == "reaction.deleted":
            return self.ev_reaction_deleted(ch, now)
        return self.ev_read(kind, ch, now)

    def ev_message_new(self, ch: _Channel, now: str) -> dict:
        msg = self.new_message(ch, now)
        ev = self.head("message.new", ch, now)
        ev["message_id"] = msg.id
        ev["message"] = self.message_dict(msg, ch)
        ev["user"] = self.user_raw[msg.uidx]
        if ch.custom_raw is not None:
            ev["channel_custom"] = ch.custom_raw
        return ev

    def ev_message_updated(self, ch: _Channel, now: str) -> dict:
        msg = self.pick_recent(ch)
        rnd = self.rnd
        if rnd.random() < 0.5:
            msg.text = self.text()
        else:
            msg.text = msg.text + " " + " ".join(rnd.choices(self.words, k=rnd.randint(1, 6)))
        msg.updated_at = msg.text_updated_at = now
        ev = self.head("message.updated", ch, now)
        ev["message_id"] = msg.id
        ev["message"] = self.message_dict(msg, ch)
        ev["user"] = self.user_raw[msg.uidx]
        return ev

    def ev_message_deleted(self, ch: _Channel, now: str) -> dict:
        rnd = self.rnd
        rec = ch.recent
        i = len(rec) - 1 - int(len(rec) * rnd.random() ** 3)
        msg = rec.pop(i)
        hard = rnd.random() < 0.1
        by_moderator = rnd.random() < 0.1
        actor = ch.created_by if by_moderator else msg.uidx
        msg.type = "deleted"
        msg.deleted_at = msg.updated_at = now
        msg.text = ""
        msg.attachments = None
        msg.mentions = ()
        ev = self.head("message.deleted", ch, now)
        ev["message_id"] = msg.id
        ev["message"] = self.message_dict(msg, ch, nested=False)
        ev["user"] = self.user_raw[actor]
        ev["hard_delete"] = hard
        if hard:
            msg.reactions = None
        return ev

    def ev_reaction_new(self, ch: _Channel, now: str) -> dict:
        rnd = self.rnd
        msg = self.pick_recent(ch)
        uidx = self.pick_member(ch)
        kind = _REACTION_TYPES[bisect(_REACTION_CUM, rnd.random() * _REACTION_TOTAL)]
        reaction = (uidx, kind, 1, now)
        rs = msg.reactions
        if rs is None:
            rs = msg.reactions = []
            reacted = ch.reacted
            reacted.append(msg)
            if len(reacted) > _REACTED_PER_CHANNEL:
                del reacted[: len(reacted) - _REACTED_PER_CHANNEL // 2]
        else:
            # One reaction per (message, user, type): a repeat replaces the earlier one.
            for i, r in enumerate(rs):
                if r[0] == uidx and r[1] == kind:
                    del rs[i]
                    break
        rs.append(reaction)
        msg.updated_at = now
        ev = self.head("reaction.new", ch, now)
        ev["message"] = self.message_dict(msg, ch, nested=False)
        ev["reaction"] = self.reaction_dict(msg, reaction)
        ev["user"] = self.user_raw[uidx]
        return ev

    def ev_reaction_deleted(self, ch: _Channel, now: str) -> dict:
        rnd = self.rnd
        msg = None
        for candidate_ch in (ch, self.pick_channel(), self.pick_channel(), self.channels[0]):
            reacted = candidate_ch.reacted
            while reacted:
                i = len(reacted) - 1 - int(len(reacted) * rnd.random() ** 2)
                m = reacted[i]
                if m.reactions and m.deleted_at is None:
                    msg, ch = m, candidate_ch
                    break
                del reacted[i]
            if msg is not None:
                break
        if msg is None:
            return self.ev_reaction_new(ch, now)
        rs = msg.reactions
        reaction = rs.pop(int(len(rs) * rnd.random()))
        msg.updated_at = now
        ev = self.head("reaction.deleted", ch, now)
        ev["message"] = self.message_dict(msg, ch, nested=False)
        ev["reaction"] = self.reaction_dict(msg, reaction)
        ev["user"] = self.user_raw[reaction[0]]
        return ev

    def ev_read(self, kind: str, ch: _Channel, now: str) -> dict:
        rnd = self.rnd
        uidx = self.pick_member(ch)
        ev = self.head(kind, ch, now)
        ev["user"] = self.user_raw[uidx]
        ev["last_read_message_id"] = ch.recent[-1].id
        if ch.last_message_at is not None:
            ev["channel_last_message_at"] = ch.last_message_at
        if kind == "notification.mark_read":
            ev["unread_count"] = 0
            ev["total_unread_count"] = rnd.randrange(0, 40)
            ev["unread_channels"] = rnd.randrange(0, 6)
            ev["team"] = ""
        return ev

    def ev_channel(self, kind: str, ch: _Channel, now: str) -> dict:
        rnd = self.rnd
        if kind == "member.removed" and len(ch.members) <= 2:
            kind = "member.added"
        if kind == "member.added" and len(ch.members) >= self.n_users:
            kind = "member.updated"
        ch.updated_at = now
        if kind == "channel.updated":
            if rnd.random() < 0.5:
                ch.name = " ".join(rnd.choices(self.words[:200], k=rnd.randint(1, 3))).title()
                ch.custom_raw = self._channel_custom(ch)
            else:
                ch.frozen = rnd.random() < 0.05
            ev = self.head(kind, ch, now)
            ev["channel"] = self.channel_dict(ch)
            ev["user"] = self.user_raw[ch.created_by]
            return ev
        if kind == "member.added":
            members = set(ch.members)
            uidx = rnd.randrange(self.n_users)
            while uidx in members:
                uidx = rnd.randrange(self.n_users)
            ch.members.append(uidx)
            ch.joined[uidx] = now
        elif kind == "member.removed":
            uidx = ch.members.pop(rnd.randrange(1, len(ch.members)))
        else:
            uidx = self.pick_member(ch)
            if uidx != ch.created_by:
                ch.roles[uidx] = "channel_moderator" if ch.roles.get(uidx) != "channel_moderator" else "channel_member"
        member = self.member_dict(ch, uidx)
        member["updated_at"] = now
        if kind == "member.removed":
            ch.joined.pop(uidx, None)
            ch.roles.pop(uidx, None)
        ev = self.head(kind, ch, now)
        ev["member"] = member
        ev["user"] = self.user_raw[uidx]
        return ev

    def ev_user(self, kind: str, now: str) -> dict:
        rnd = self.rnd
        uidx = rnd.randrange(self.n_users)
        user = self.users[uidx]
        if kind == "user.updated":
            r = rnd.random()
            if r < 0.4:
                user["title"] = rnd.choice(_TITLES)
            elif r < 0.7:
                user["image"] = f"https://cdn.chat.example/u/{user['id']}-{rnd.getrandbits(24):06x}.jpg"
            else:
                user["timezone"] = rnd.choice(_TIMEZONES)
            user["updated_at"] = now
        else:
            user["online"] = not user["online"]
            user["last_active"] = now
        self.user_raw[uidx] = raw = _Raw(_encode(user))
        return {"type": kind, "created_at": now, "user": raw}



def generate_events(n: int, seed: int = 1, channels: int = 200, users: int = 2000) -> Iterator[bytes]:
    """Yield `n` Stream-shaped WebSocket events as compact JSON bytes, deterministic for `seed`."""
    world = _World(seed, channels, users)
    nxt = world.next_event
    enc = _encode
    for _ in range(n):
        yield enc(nxt())


def generate_query_channels_response(
    channels: int, messages_per_channel: int, seed: int = 1, users: int = 2000, member_limit: int = 100
) -> bytes:
    """One query-channels answer: `{"channels": [channel state, ...], "duration": "..."}`.

    Each channel state carries `channel` (with `own_capabilities`), up to `messages_per_channel`
    messages (oldest first, some thread replies and reactions), `pinned_messages`, up to
    `member_limit` members and reads, `membership` of the querying user, `watcher_count` and
    `watchers`. Channels are sorted by `last_message_at`, newest first, as the default sort is.
    """
    world = _World(seed, channels, users)
    rnd = world.rnd
    me = world.channels[0].members[0]
    states = []
    for ch in world.channels:
        if me not in ch.members:
            ch.members.append(me)
            ch.joined[me] = ch.created_at
        msgs = []
        for _ in range(messages_per_channel):
            msgs.append(world.new_message(ch, world.tick()))
            if rnd.random() < 0.15:
                target = world.pick_recent(ch)
                kind = _REACTION_TYPES[bisect(_REACTION_CUM, rnd.random() * _REACTION_TOTAL)]
                if target.reactions is None:
                    target.reactions = []
                target.reactions.append((world.pick_member(ch), kind, 1, world.tick()))
        states.append((ch, msgs))
    states.sort(key=lambda s: s[0].last_message_at or "", reverse=True)
    out = []
    for ch, msgs in states:
        members = [world.member_dict(ch, u) for u in ch.members[:member_limit]]
        reads = []
        for u in ch.members[:member_limit]:
            k = rnd.randrange(0, min(len(msgs), 5) + 1) if msgs else 0
            reads.append({
                "user": world.user_raw[u],
                "last_read": msgs[-1 - k].created_at if msgs and k < len(msgs) else ch.created_at,
                "unread_messages": k,
                **({"last_read_message_id": msgs[-1 - k].id} if msgs and k < len(msgs) else {}),
            })
        out.append({
            "channel": world.channel_dict(ch, own=True),
            "messages": [world.message_dict(m, ch) for m in msgs],
            "pinned_messages": [],
            "members": members,
            "membership": world.member_dict(ch, me),
            "read": reads,
            "watcher_count": ch.watchers,
            "watchers": [],
        })
    duration = f"{rnd.uniform(5, 80):.2f}ms"
    return _encode({"channels": out, "duration": duration})


def generate_sync_response(n_events: int, seed: int = 1, channels: int = 200, users: int = 2000) -> bytes:
    """One `/sync` answer: `{"events": [...], "inaccessible_cids": [], "duration": "12ms"}`.

    Holds `n_events` channel events (those with a `cid`) from the same kind of stream as
    `generate_events`; events without a channel are not returned by `/sync` and are skipped.
    """
    world = _World(seed, channels, users)
    events = []
    while len(events) < n_events:
        ev = world.next_event()
        if "cid" in ev:
            events.append(_Raw(_encode(ev)))
    return _encode({"events": events, "inaccessible_cids": [], "duration": "12ms"})
