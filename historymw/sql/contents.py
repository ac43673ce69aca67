"""Content-addressed messages: each distinct message stored once, in `historymw_contents`.

An optimizer sends the same system prompt and few-shot demos thousands of times, then one question
of its own. A call row's `message_refs` packs its messages as items (schema 6):
- the shared prefix (every message but the last) as one ref: to a *list* content (its body: the
  16-byte digests of its messages, each a content of its own) or, for one message, to that message;
- the last message (the question, the new turn) inline: it is unique to the call, and a content row
  of its own would cost a digest, a row and two index entries more than the message itself. A long
  one is compressed against the messages before it (they are its zstd or zlib dictionary: a question
  shares its words and fields with its prompt and demos). A very long one (past `INLINE_MAX`) is a
  content ref instead (a document sent again and again is then stored once).
Items: tag 1 + digest (a message content), tag 2 + digest (a list content), tag 3 + length (one
byte, or two when past 127: LEB128) + an inline body (a short {"role", "content"} message as its text
alone, the codec byte naming its role: `TEXT`). A packed value's length is never a multiple of
16 (a 0 byte ends it when it would be): a value of schema 5, the digests of every message in order,
always is, and is read as before.

A message content is its JSON (the digest: the first 16 bytes of the SHA-256 of that JSON, as UTF-8).
A stored body starts with one byte that names its codec, so any reader decodes what any writer wrote:
raw JSON, zlib, or zstd (written when `zstandard` is installed, the `zstd` extra; reading a zstd body
without it is a clear error naming the extra); inline bodies also zlib or zstd with a dictionary (the
preceding messages). Bodies shorter than `COMPRESS_MIN` bytes are kept raw: compressing them saves
little, and a raw one is what the viewer's text search can read.

Each content row also holds `last_used`, the latest `started_at` of the calls that refer to it (kept
by the writer's upsert, which is idempotent: a retried batch changes nothing; a list's messages get
the list's). Retention deletes calls oldest first, so a content whose `last_used` is older than the
oldest call left is referred to by no call: that is how `prune` finds orphans without reading any
call's refs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DIGEST_BYTES = 16
COMPRESS_MIN = 256
RAW, ZLIB, ZSTD = 0, 1, 2
# Inline bodies only: compressed with the call's preceding messages as the dictionary.
DICT_ZLIB, DICT_ZSTD = 3, 4
# A list's body: its digests, as they are (not text: a search of raw bodies must not read them).
BINARY = 5
# Inline bodies only: a message {"role": one of TEXT_ROLES, "content": a str} as its content's UTF-8,
# the codec naming the role (TEXT + its index): 28 bytes of JSON less a call, and nothing to escape.
TEXT = 6
TEXT_ROLES = ("system", "user", "assistant", "tool", "developer")
_ROLE_CODEC = {role: TEXT + i for i, role in enumerate(TEXT_ROLES)}
# Items of a packed `message_refs` (see the module's doc).
END, MESSAGE, LIST, INLINE = 0, 1, 2, 3
INLINE_MAX = 8192  # a last message longer than this (its JSON, bytes) is a content of its own
DICT_MAX = 16384  # the dictionary of an inline body: the last bytes of the preceding messages' JSON
_LIST_SALT = b"historymw list\n"  # a list's digest is of this + its body: never a message's digest
_ZLIB_LEVEL = 6
_ZSTD_LEVEL = 3

_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False,
                                allow_nan=True, default=str).encode
_sha256 = hashlib.sha256
_string = json.encoder.encode_basestring  # what the encoder above writes for a str


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


_zstandard = _zstd()
# The codec new bodies are written with: zstd when it is installed (tests switch it to check both).
WRITE_CODEC = ZSTD if _zstandard is not None else ZLIB
_zstd_compress = _zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress if _zstandard is not None else None


def message_json(message: Any) -> str:
    """The JSON a message is stored as (and hashed from): compact, UTF-8, keys as given."""
    return _encode_json(message)


def digest(data: bytes) -> bytes:
    return _sha256(data).digest()[:DIGEST_BYTES]


def encode_body(data: bytes, codec: int | None = None) -> bytes:
    """`data` as stored: a codec byte, then the bytes (compressed when that makes them smaller)."""
    if len(data) < COMPRESS_MIN:
        return b"\x00" + data
    codec = WRITE_CODEC if codec is None else codec
    if codec == ZSTD and _zstd_compress is not None:
        packed = _zstd_compress(data)
    elif codec == ZLIB or codec == ZSTD:  # ZSTD asked for without zstandard: zlib, which any reader has
        codec = ZLIB
        packed = zlib.compress(data, _ZLIB_LEVEL)
    else:
        return b"\x00" + data
    if len(packed) >= len(data):
        return b"\x00" + data
    return bytes((codec,)) + bytes(packed)


_local = threading.local()


def _zstd_decompressor() -> Any:
    """One per thread (a decompressor is not safe to share, and costly to make for each body)."""
    d = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = _zstandard.ZstdDecompressor()
    return d


class _Decoded:
    """digest -> the decoded bytes of a content, for readers: the few prompts every call refers to
    are fetched and decompressed once. A digest names its bytes for good, so nothing goes stale;
    bounded by bytes, least recently used first out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, dg: bytes) -> bytes | None:
        with self._lock:
            data = self._items.get(dg)
            if data is not None:
                self._items.move_to_end(dg)
            return data

    def put(self, dg: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes // 8:
            return
        with self._lock:
            if dg in self._items:
                return
            self._items[dg] = data
            self._held += len(data)
            while self._held > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._held -= len(old)


_decoded = _Decoded(8 * 2**20)


def decode_body(stored: bytes | memoryview) -> bytes:
    """The bytes `encode_body` was given."""
    stored = bytes(stored)
    codec, data = stored[0], stored[1:]
    if codec == RAW or codec == BINARY:
        return data
    if codec == ZLIB:
        return zlib.decompress(data)
    if codec == ZSTD:
        if _zstandard is None:
            from . import StoreError

            raise StoreError("this history store holds zstd-compressed messages: "
                             "install zstandard (pip install 'historymw[zstd]') to read them")
        return bytes(_zstd_decompressor().decompress(data))
    from . import StoreError

    raise StoreError(f"unknown content codec {codec} in the history store: upgrade historymw")


class _Prefix:
    """A call's messages but the last, as stored: the item that refers to them, and their JSON."""

    __slots__ = ("item", "texts", "digest")

    def __init__(self, item: bytes, texts: Sequence[str], dg: bytes | None) -> None:
        self.item = item
        self.texts = texts
        self.digest = dg  # what `item` refers to (None: no prefix)


_NO_PREFIX = _Prefix(b"", (), None)


class _Codecs(threading.local):
    """Per thread (compressors are not safe to share): a dictionary compressor per prefix, made the
    second time a prefix is met (a chat's every turn has a new prefix: making one for each would cost
    more than it saves), a few hundred at most."""

    def __init__(self) -> None:
        self.compressors: OrderedDict[bytes, Any] = OrderedDict()
        self.decompressors: OrderedDict[bytes, Any] = OrderedDict()
        self.seen: set[bytes] = set()


_codecs = _Codecs()
_CODECS_MAX = 256


def _dictionary(texts: Iterable[bytes]) -> bytes:
    return b"\n".join(texts)[-DICT_MAX:]


def _compressor(key: bytes, texts: Sequence[str]) -> Any:
    """The dictionary compressor of this prefix (key: its item), or None not to make one yet."""
    local = _codecs
    made = local.compressors.get(key)
    if made is not None:
        return made
    if key not in local.seen:
        if len(local.seen) > 4 * _CODECS_MAX:
            local.seen.clear()
        local.seen.add(key)
        return None
    data = _dictionary(t.encode("utf-8", "surrogatepass") for t in texts)
    if WRITE_CODEC == ZSTD and _zstandard is not None:
        zd = _zstandard.ZstdCompressionDict(data, dict_type=_zstandard.DICT_TYPE_RAWCONTENT)
        made = (DICT_ZSTD, _zstandard.ZstdCompressor(level=_ZSTD_LEVEL, dict_data=zd, write_checksum=False,
                                                     write_dict_id=False).compress)
    else:
        primed = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15, zdict=data)

        def deflate(raw: bytes) -> bytes:
            c = primed.copy()
            return c.compress(raw) + c.flush()

        made = (DICT_ZLIB, deflate)
    local.compressors[key] = made
    if len(local.compressors) > _CODECS_MAX:
        local.compressors.popitem(last=False)
    return made


def _inline_body(data: bytes, prefix: _Prefix) -> bytes:
    """`data` (a last message's JSON) as an inline body: raw when short, else compressed, with the
    prefix as dictionary when there is one (and it has been met before)."""
    if len(data) < COMPRESS_MIN:
        return b"\x00" + data
    if prefix.digest is not None:
        made = _compressor(prefix.item, prefix.texts)
        if made is not None:
            codec, compress = made
            packed: bytes = compress(data)
            if len(packed) < len(data):
                return bytes((codec,)) + packed
            return b"\x00" + data
    return encode_body(data)


def _inline_item(body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((INLINE, n)) + body
    return bytes((INLINE, 0x80 | (n & 0x7F), n >> 7)) + body


def _ended(packed: bytes) -> bytes:
    return packed + b"\x00" if len(packed) % DIGEST_BYTES == 0 else packed


class Pending:
    """The contents one batch writes: digest -> (stored body, latest started_at of its calls).

    `ref(text, started)` is the digest of one message's JSON; `refs(messages, started)` the
    `message_refs` of a call (None for no messages), `pair_refs` the same from the hot path's
    flat (role, content, ...) pairs."""

    __slots__ = ("bodies", "last_used", "_digests", "_pairs", "_lists", "_prefixes")

    def __init__(self) -> None:
        self.bodies: dict[bytes, bytes] = {}
        self.last_used: dict[bytes, float] = {}
        self._digests: dict[str, bytes] = {}  # message JSON -> digest, for this batch
        self._pairs: dict[tuple[str, ...], _Prefix] = {}  # the pairs of a prefix -> it
        self._prefixes: dict[tuple[str, ...], _Prefix] = {}  # the JSON of a prefix's messages -> it
        self._lists: dict[bytes, list[bytes]] = {}  # list digest -> its messages' digests

    def pair_refs(self, pairs: Sequence[str], started: float) -> bytes | None:
        """`refs` of the messages {"role": pairs[0], "content": pairs[1]}, ... (all str)."""
        n = len(pairs)
        if not n:
            return None
        if n == 2:
            prefix = _NO_PREFIX
        else:
            key = tuple(pairs[:-2])
            prefix = self._pairs.get(key)  # type: ignore[assignment]
            if prefix is None:
                prefix = self._pairs[key] = self._prefix(
                    [f'{{"role":{_string(key[i])},"content":{_string(key[i + 1])}}}' for i in range(0, n - 2, 2)],
                    started)
            else:
                dg = prefix.digest
                if self.last_used[dg] < started:  # type: ignore[index]
                    self.last_used[dg] = started  # type: ignore[index]
        role, content = pairs[-2], pairs[-1]
        codec = _ROLE_CODEC.get(role)
        if codec is not None:
            data = content.encode("utf-8", "surrogatepass")
            size = len(data) + 1
            if size <= COMPRESS_MIN:
                # The usual last message: short, inline, its text (as _pack would, without its calls).
                out = prefix.item + (bytes((INLINE, size, codec)) if size < 0x80 else
                                     bytes((INLINE, 0x80 | (size & 0x7F), size >> 7, codec))) + data
                return out + b"\x00" if len(out) % DIGEST_BYTES == 0 else out
        return self._pack(prefix, f'{{"role":{_string(role)},"content":{_string(content)}}}'.encode(
            "utf-8", "surrogatepass"), started)

    def refs(self, messages: Any, started: float) -> bytes | None:
        if not messages:
            return None
        prefix = _NO_PREFIX
        if len(messages) > 1:
            key = tuple([message_json(m) for m in messages[:-1]])
            prefix = self._prefixes.get(key)  # type: ignore[assignment]
            if prefix is None:
                prefix = self._prefix(key, started)
            elif self.last_used[prefix.digest] < started:  # type: ignore[index]
                self.last_used[prefix.digest] = started  # type: ignore[index]
        last = messages[-1]
        if type(last) is dict and len(last) == 2 and next(iter(last)) == "role":  # as the hot path's pairs
            role, content = last["role"], last.get("content")
            if type(role) is str and type(content) is str and role in _ROLE_CODEC:
                data = content.encode("utf-8", "surrogatepass")
                if len(data) < COMPRESS_MIN:
                    return _ended(prefix.item + _inline_item(bytes((_ROLE_CODEC[role],)) + data))
        return self._pack(prefix, message_json(last).encode("utf-8", "surrogatepass"), started)

    def _prefix(self, texts: Sequence[str], started: float) -> _Prefix:
        """The stored form of these messages (the JSON of each), made once a batch."""
        key = tuple(texts)
        known = self._prefixes.get(key)
        if known is not None:
            if self.last_used[known.digest] < started:  # type: ignore[index]
                self.last_used[known.digest] = started  # type: ignore[index]
            return known
        digests = [self.ref(t, started) for t in texts]
        if len(digests) == 1:
            made = _Prefix(bytes((MESSAGE,)) + digests[0], key, digests[0])
        else:
            body = b"".join(digests)
            dg = digest(_LIST_SALT + body)
            self._lists[dg] = digests
            self.bodies[dg] = bytes((BINARY,)) + body
            self.last_used[dg] = started
            made = _Prefix(bytes((LIST,)) + dg, key, dg)
        self._prefixes[key] = made
        return made

    def _pack(self, prefix: _Prefix, data: bytes, started: float) -> bytes:
        """The packed refs of a call: `prefix`, then its last message (`data`, its JSON)."""
        if len(data) > INLINE_MAX:
            return _ended(prefix.item + bytes((MESSAGE,)) + self.ref(data.decode("utf-8", "surrogatepass"), started))
        return _ended(prefix.item + _inline_item(_inline_body(data, prefix)))

    def ref(self, text: str, started: float) -> bytes:
        dg = self._digests.get(text)
        if dg is None:
            data = text.encode("utf-8", "surrogatepass")
            dg = digest(data)
            self._digests[text] = dg
            if dg not in self.bodies:
                self.bodies[dg] = encode_body(data)
                self.last_used[dg] = started
                return dg
        if self.last_used[dg] < started:
            self.last_used[dg] = started
        return dg

    def rows(self, keep: Iterable[bytes] | None = None) -> list[tuple[bytes, bytes, float]]:
        """(digest, body, last_used) to upsert, sorted by digest: writers that lock content rows in one
        order cannot deadlock each other (PostgreSQL). `keep`: only these digests (and the messages
        of the lists among them)."""
        last_used = self.last_used
        for dg, members in self._lists.items():  # a list's messages are used when it is
            when = last_used[dg]
            for m in members:
                if last_used[m] < when:
                    last_used[m] = when
        if keep is None:
            wanted: Iterable[bytes] = self.bodies.keys()
        else:
            chosen = set(keep) & self.bodies.keys()
            for dg in list(chosen):
                chosen.update(self._lists.get(dg, ()))
            wanted = chosen
        return [(dg, self.bodies[dg], last_used[dg]) for dg in sorted(wanted)]

    def __len__(self) -> int:
        return len(self.bodies)


def items(refs: bytes | memoryview | None) -> list[tuple[int, bytes]]:
    """The items of a call's `message_refs`: (MESSAGE or LIST, digest) or (INLINE, body)."""
    if not refs:
        return []
    refs = bytes(refs)
    n = len(refs)
    if n % DIGEST_BYTES == 0:  # schema 5: a message digest each
        return [(MESSAGE, refs[i:i + DIGEST_BYTES]) for i in range(0, n, DIGEST_BYTES)]
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < n:
        tag = refs[i]
        if tag == MESSAGE or tag == LIST:
            out.append((tag, refs[i + 1:i + 1 + DIGEST_BYTES]))
            i += 1 + DIGEST_BYTES
        elif tag == INLINE:
            size, i = refs[i + 1], i + 2
            if size & 0x80:
                size, i = (size & 0x7F) | refs[i] << 7, i + 1
            out.append((INLINE, refs[i:i + size]))
            i += size
        elif tag == END:
            break
        else:
            from . import StoreError

            raise StoreError(f"unknown message item {tag} in the history store: upgrade historymw")
    return out


def split_refs(refs: bytes | memoryview | None) -> list[bytes]:
    """The digests a call's `message_refs` refers to directly (its messages and lists)."""
    return [payload for tag, payload in items(refs) if tag != INLINE]


def referenced(rows: Iterable[Sequence[Any]], position: int) -> set[bytes]:
    """The digests the `message_refs` at `position` of these rows refer to directly."""
    out: set[bytes] = set()
    for row in rows:
        out.update(split_refs(row[position]))
    return out


def row_contents(refs: bytes | memoryview | None, by_digest: Mapping[bytes, Sequence[Any]]) -> list[Any]:
    """The content rows (digest, body, last_used), among `by_digest`, that a call's refs need."""
    out = []
    for tag, dg in items(refs):
        row = by_digest.get(dg) if tag != INLINE else None
        if row is None:
            continue
        out.append(row)
        if tag == LIST:
            out.extend(by_digest[m] for m in split_refs(decode_body(row[1])) if m in by_digest)
    return out


def _decompress_inline(codec: int, data: bytes, key: bytes, preceding: Sequence[bytes]) -> bytes:
    local = _codecs
    made = local.decompressors.get(key)
    if made is None:
        dictionary = _dictionary(preceding)
        if codec == DICT_ZSTD:
            if _zstandard is None:
                decode_body(bytes((ZSTD,)))  # the clear error
            zd = _zstandard.ZstdCompressionDict(dictionary, dict_type=_zstandard.DICT_TYPE_RAWCONTENT)
            made = _zstandard.ZstdDecompressor(dict_data=zd).decompress
        else:
            def made(raw: bytes) -> bytes:
                d = zlib.decompressobj(-15, zdict=dictionary)
                return d.decompress(raw) + d.flush()
        local.decompressors[key] = made
        if len(local.decompressors) > _CODECS_MAX:
            local.decompressors.popitem(last=False)
    return bytes(made(data))


def message_bytes(refs: bytes | memoryview | None, raw: Mapping[bytes, bytes]) -> list[bytes | None]:
    """The JSON of each of a call's messages, from the decoded bodies (digest -> bytes) of the
    contents it refers to, their lists' messages included; None for one missing from `raw`."""
    if not refs:
        return []
    refs = bytes(refs)
    out: list[bytes | None] = []
    prefix_end = 0  # where in `refs` the items before an inline one end: its dictionary's key
    for tag, payload in items(refs):
        if tag == MESSAGE:
            out.append(raw.get(payload))
            prefix_end += 1 + DIGEST_BYTES
        elif tag == LIST:
            body = raw.get(payload)
            out.extend([None] if body is None else [raw.get(m) for m in split_refs(body)])
            prefix_end += 1 + DIGEST_BYTES
        else:
            codec = payload[0]
            if codec == DICT_ZSTD or codec == DICT_ZLIB:
                if None in out:  # its dictionary is incomplete: it cannot be read either
                    out.append(None)
                    continue
                out.append(_decompress_inline(codec, payload[1:], bytes((codec,)) + refs[:prefix_end],
                                              out))  # type: ignore[arg-type]
            elif TEXT <= codec < TEXT + len(TEXT_ROLES):
                text = _string(payload[1:].decode("utf-8", "surrogatepass"))
                out.append(f'{{"role":"{TEXT_ROLES[codec - TEXT]}","content":{text}}}'.encode("utf-8", "surrogatepass"))
            else:
                out.append(decode_body(payload))
            prefix_end = -1  # (never the key of another: a call has one inline message, the last)
    return out


def _missing(at: int) -> dict[str, str]:
    # Never expected (retention keeps what calls refer to): say so in the message's place rather than
    # fail the whole read.
    return {"role": "unknown", "content": f"[historymw: message {at} missing from the store]"}


def messages_from(refs: bytes | memoryview | None, raw: Mapping[bytes, bytes]) -> list[Any]:
    """A call's messages from its refs and the decoded bodies (digest -> bytes) of its contents."""
    return [_missing(i) if b is None else json.loads(b.decode("utf-8", "surrogatepass"))
            for i, b in enumerate(message_bytes(refs, raw))]


def stored_messages(refs: bytes | memoryview | None, bodies: Mapping[bytes, Any]) -> list[Any]:
    """A call's messages from its refs and the stored bodies (digest -> body as stored) of the contents
    table: for tests and tools that read the tables with plain SQL."""
    return messages_from(refs, {bytes(k): decode_body(v) for k, v in bodies.items()})


_LOAD_CHUNK = 500  # digests a statement asks for (bound parameters stay well under any limit)
_load_stmt: Any = None


def load_bytes(conn: Any, digests: Iterable[bytes]) -> dict[bytes, bytes]:
    """digest -> decoded bytes, for the digests the store holds."""
    import sqlalchemy as sa

    from .schema import contents

    global _load_stmt
    if _load_stmt is None:  # built once: its cache key is computed once too
        _load_stmt = sa.select(contents.c.hash, contents.c.body).where(
            contents.c.hash.in_(sa.bindparam("hashes", expanding=True)))
    out: dict[bytes, bytes] = {}
    wanted = []
    for dg in sorted(set(digests)):
        data = _decoded.get(dg)
        if data is None:
            wanted.append(dg)
        else:
            out[dg] = data
    for i in range(0, len(wanted), _LOAD_CHUNK):
        for dg, body in conn.execute(_load_stmt, {"hashes": wanted[i:i + _LOAD_CHUNK]}):
            dg = bytes(dg)
            data = decode_body(body)
            _decoded.put(dg, data)
            out[dg] = data
    return out


def prefix_contents(refs: Any) -> Any:
    """PostgreSQL: a column of the contents a call's shared prefix needs, for the select of the call,
    so that reading one call back is one round trip: its first item's content (a message, or a list)
    and, for a list, its messages, each as digest + stored body (`remember` takes them). Only the
    first item: the usual row (a schema 6 prefix ref, its last message inline); what else a row
    refers to (a long last message, schema 5's digests) `resolve` loads as before. NULL when that
    item is among the bound `hm_known` (`known_prefixes()`): this reader holds it already, and the
    prompt a thousand calls share is not sent a thousand times."""
    import sqlalchemy as sa

    def const(n: int) -> Any:  # inline: bound values would be bound anew at each call
        return sa.literal_column(str(n), sa.Integer)

    first = sa.func.substring(refs, const(2), const(DIGEST_BYTES))
    # The digests held, joined: a parameter of one bytea binds in a few microseconds, an array of
    # them in a hundred. (A match across two of them only costs a content sent in vain.)
    known = sa.bindparam("hm_known", type_=sa.LargeBinary)
    wanted = sa.and_(sa.func.length(refs) % const(DIGEST_BYTES) != const(0),
                     sa.func.get_byte(refs, const(0)).between(const(MESSAGE), const(LIST)),
                     sa.func.position(first.op("IN")(known)) == const(0))
    k = _contents_table().alias("hm_k")
    lst = _contents_table().alias("hm_l")
    n = sa.func.length(lst.c.body).op("/")(const(DIGEST_BYTES))  # (integer division)
    i = sa.func.generate_series(const(0), n - const(1)).table_valued("i").render_derived(name="hm_i")
    members = (sa.select(sa.func.substring(lst.c.body, const(2) + const(DIGEST_BYTES) * i.c.i, const(DIGEST_BYTES)))
               .select_from(lst).join(i, sa.true())
               .where(lst.c.hash == first, sa.func.get_byte(lst.c.body, const(0)) == const(BINARY))
               .correlate(refs.table))
    m = _contents_table().alias("hm_m")
    both = sa.union_all(sa.select(k.c.hash.op("||")(k.c.body).label("c")).where(k.c.hash == first),
                        sa.select(m.c.hash.op("||")(m.c.body).label("c")).where(m.c.hash.in_(members.scalar_subquery())))
    return sa.case((wanted, sa.func.array(both.scalar_subquery())), else_=sa.null()).label("hm_contents")


def _contents_table() -> Any:
    from .schema import contents

    return contents


# Prefix items (a list's or a message's digest) whose contents this process has read whole, most
# recent last: what `prefix_contents` need not send again (a few dozen: the prompts in use).
_known: OrderedDict[bytes, None] = OrderedDict()
_KNOWN_MAX = 64


def known_prefixes() -> bytes:
    """The prefix items this reader holds decoded (evicted ones are dropped here), joined."""
    with _decoded._lock:
        held = _decoded._items
        gone = [dg for dg in _known if dg not in held]
        for dg in gone:
            del _known[dg]
        return b"".join(_known)


def _met_prefix(dg: bytes) -> None:
    with _decoded._lock:
        _known[dg] = None
        _known.move_to_end(dg)
        if len(_known) > _KNOWN_MAX:
            _known.popitem(last=False)


def remember(blobs: Iterable[bytes] | None) -> None:
    """Keep contents fetched with a call's row (`prefix_contents`: digest + stored body) for `resolve`."""
    for blob in blobs or ():
        blob = bytes(blob)
        dg = blob[:DIGEST_BYTES]
        if _decoded.get(dg) is None:
            _decoded.put(dg, decode_body(blob[DIGEST_BYTES:]))


def load(conn: Any, digests: Iterable[bytes]) -> dict[bytes, Any]:
    """digest -> message (decoded), for the digests of message contents the store holds."""
    # Parsed anew for each call: the caller owns (and may change) its messages.
    return {dg: json.loads(data.decode("utf-8", "surrogatepass")) for dg, data in load_bytes(conn, digests).items()}


def resolve(conn: Any, rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The rows as dicts, `message_refs` replaced by the `messages` they refer to (rows of a
    database before version 4, or messages stored as JSON, keep their `messages`)."""
    out = [dict(r) for r in rows]
    digests: set[bytes] = set()
    lists: set[bytes] = set()
    for r in out:
        refs = r.get("message_refs")
        if refs:
            for tag, payload in items(refs):
                if tag == MESSAGE:
                    digests.add(payload)
                elif tag == LIST:
                    lists.add(payload)
    raw = load_bytes(conn, digests | lists) if digests or lists else {}
    members = {m for dg in lists if dg in raw for m in split_refs(raw[dg])} - raw.keys()
    if members:
        raw.update(load_bytes(conn, members))
    for dg in lists:
        if dg in raw and all(m in raw for m in split_refs(raw[dg])):
            _met_prefix(dg)
    for dg in digests:
        if dg in raw:
            _met_prefix(dg)
    for r in out:
        refs = r.pop("message_refs", None)
        if refs:
            r["messages"] = messages_from(refs, raw)
    return out


def migrate_messages(conn: Any, chunk: int = 2000) -> int:
    """Move the `messages` of rows written before version 4 into contents (in chunks of `chunk` rows:
    constant memory, whatever the size of the store); returns the rows moved."""
    import sqlalchemy as sa

    from .schema import calls
    from .write import upsert_contents

    c = calls.c
    update = (calls.update().where(c.id == sa.bindparam("b_id"))
              .values(message_refs=sa.bindparam("b_refs"), messages=sa.null()))
    moved, last = 0, ""
    while True:
        rows = conn.execute(sa.select(c.id, c.started_at, c.messages).where(c.id > last)
                            .order_by(c.id).limit(chunk)).all()
        if not rows:
            return moved
        pending = Pending()
        updates = []
        for rid, started, messages in rows:
            if type(messages) is list and messages:
                when = started.timestamp() if hasattr(started, "timestamp") else float(started)
                updates.append({"b_id": rid, "b_refs": pending.refs(messages, when)})
        upsert_contents(conn, pending.rows())
        if updates:
            conn.execute(update, updates)
        moved += len(updates)
        last = rows[-1][0]


def messages_like(dialect: str, pattern: str, refs: Any) -> Any:
    """A clause: `refs` (a call's `message_refs` column) refers to a content, or holds an inline
    message, whose JSON matches the LIKE `pattern` (escape `\\`; ILIKE on PostgreSQL). Only what is
    stored raw (shorter than `COMPRESS_MIN`: the questions, answers and turns people search for) is
    searched; a compressed one (a long system prompt) cannot be read by the database. The matching
    contents are found once, then each call row is tested against them. Inline messages are searched
    for the pattern's text (in their JSON, or their text for the TEXT codecs) when it has no wildcard but
    at its ends (what the viewer asks), ignoring the case of ASCII letters."""
    import sqlalchemy as sa

    from .schema import contents

    k = contents.c
    needle = _like_text(pattern)
    inline: list[Any] = []
    as_json = _string(needle)[1:-1] if needle else ""
    if dialect == "postgresql":
        text: Any = sa.case((sa.func.get_byte(k.body, 0) == RAW,
                        sa.func.convert_from(sa.func.substring(k.body, 2), "UTF8")))
        direct = sa.select(k.hash).where(text.ilike(pattern, escape="\\")).cte("hm_matching")

        def holds(blob: Any, dg: Any) -> Any:
            return sa.func.strpos(sa.func.encode(blob, "hex"), sa.func.encode(dg, "hex")) > 0

        binary = sa.func.get_byte(k.body, 0) == BINARY
        if needle:  # bytea as text: bytes 0 and >= 0x80 as \ooo, a backslash doubled
            byte = sa.func.get_byte
            at = sa.case((byte(refs, 0).in_([MESSAGE, LIST]), 1 + DIGEST_BYTES), else_=0)  # the inline item
            body = at + sa.case((byte(refs, at + 1) >= 0x80, 3), else_=2)  # its codec byte
            inside = sa.func.lower(sa.func.encode(sa.func.substring(refs, body + 2), "escape"))
            # (CASE: each byte is read only once the ones before it say it is there)
            inline.append(sa.case((sa.func.length(refs) % DIGEST_BYTES == 0, False),
                                  (sa.func.length(refs) < 1 + DIGEST_BYTES + 3, False),
                                  (byte(refs, at) != INLINE, False),
                                  (byte(refs, body) == RAW,
                                   sa.func.strpos(inside, sa.literal(_pg_escape(as_json.lower()))) > 0),
                                  (byte(refs, body).between(TEXT, TEXT + len(TEXT_ROLES) - 1),
                                   sa.func.strpos(inside, sa.literal(_pg_escape(needle.lower()))) > 0),
                                  else_=False))
    else:
        text = sa.cast(sa.func.substr(k.body, 2), sa.Text)  # (SQLite: the bytes, as text)
        direct = (sa.select(k.hash).where(sa.func.substr(k.body, 1, 1) == bytes((RAW,)),
                                          text.like(pattern, escape="\\")).cte("hm_matching"))

        def holds(blob: Any, dg: Any) -> Any:
            return sa.func.instr(blob, dg) > 0

        binary = sa.func.substr(k.body, 1, 1) == bytes((BINARY,))
        if needle:  # (lower() of a blob keeps its bytes past a NUL: instr() sees them all)
            def blob_byte(i: Any) -> Any:  # the byte at 0-based `i`, as a blob of one
                return sa.func.substr(refs, i + 1, 1)

            at = sa.case((blob_byte(0).in_([bytes((MESSAGE,)), bytes((LIST,))]), 1 + DIGEST_BYTES), else_=0)
            body = at + sa.case((blob_byte(at + 1) >= b"\x80", 3), else_=2)
            inside = sa.func.lower(sa.func.substr(refs, body + 2))
            codec = blob_byte(body)
            inline.append(sa.and_(sa.func.length(refs) % DIGEST_BYTES != 0, blob_byte(at) == bytes((INLINE,)), sa.or_(
                sa.and_(codec == bytes((RAW,)), sa.func.instr(inside, sa.literal(as_json.lower())) > 0),
                sa.and_(codec >= bytes((TEXT,)), codec < bytes((TEXT + len(TEXT_ROLES),)),
                        sa.func.instr(inside, sa.literal(needle.lower())) > 0))))
    # The matching messages, and the lists that hold one of them.
    lists = sa.select(k.hash).where(binary, sa.exists(sa.select(sa.literal(1)).select_from(direct)
                                                      .where(holds(k.body, direct.c.hash))))
    matching = sa.union_all(sa.select(direct.c.hash), lists).cte("hm_matching_all")
    return sa.or_(sa.exists(sa.select(sa.literal(1)).select_from(matching).where(holds(refs, matching.c.hash))),
                  *inline)


def _like_text(pattern: str) -> str | None:
    """The text of a LIKE pattern `%text%` (escape `\\`); None for another pattern."""
    if len(pattern) < 3 or pattern[0] != "%" or pattern[-1] != "%" or pattern.endswith("\\%"):
        return None
    out: list[str] = []
    it = iter(pattern[1:-1])
    for ch in it:
        if ch == "\\":
            ch = next(it, "")
        elif ch in "%_":
            return None
        out.append(ch)
    return "".join(out) or None


def _pg_escape(text: str) -> str:
    """`text`'s UTF-8 as PostgreSQL's encode(..., 'escape') writes bytes."""
    return "".join("\\\\" if b == 0x5C else f"\\{b:03o}" if b == 0 or b >= 0x80 else chr(b)
                   for b in text.encode("utf-8", "surrogatepass"))
