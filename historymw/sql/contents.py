"""Content-addressed messages: each distinct message stored once, in `historymw_contents`.

An optimizer sends the same system prompt and few-shot demos thousands of times; a call row
holds `message_refs`, the digests of its messages in order (16 bytes each), and each message's
JSON is stored once under its digest (the first 16 bytes of the SHA-256 of that JSON, as
UTF-8). A stored body starts with one byte that names its codec, so any reader decodes what any
writer wrote: raw JSON, zlib, or zstd (written when `zstandard` is installed, the `zstd` extra;
reading a zstd body without it is a clear error naming the extra). Bodies shorter than
`COMPRESS_MIN` bytes are kept raw: compressing them saves little and costs every write.

Each content row also holds `last_used`, the latest `started_at` of the calls that refer to it
(kept by the writer's upsert, which is idempotent: a retried batch changes nothing). Retention
deletes calls oldest first, so a content whose `last_used` is older than the oldest call left is
referred to by no call: that is how `prune` finds orphans without reading any call's refs.
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
    if codec == RAW:
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


class Pending:
    """The contents one batch writes: digest -> (stored body, latest started_at of its calls).

    `ref(text, started)` is the digest of one message's JSON; `refs(messages, started)` the
    `message_refs` of a call (None for no messages)."""

    __slots__ = ("bodies", "last_used", "_digests", "_pairs")

    def __init__(self) -> None:
        self.bodies: dict[bytes, bytes] = {}
        self.last_used: dict[bytes, float] = {}
        self._digests: dict[str, bytes] = {}  # message JSON -> digest, for this batch
        # (role, content) -> digest: the hot path's messages, without building their JSON again
        self._pairs: dict[tuple[str, str], bytes] = {}

    def pair_refs(self, pairs: Sequence[str], started: float) -> bytes | None:
        """`refs` of the messages {"role": pairs[0], "content": pairs[1]}, ... (all str)."""
        if not pairs:
            return None
        known = self._pairs
        last_used = self.last_used
        out = []
        for i in range(0, len(pairs), 2):
            key = (pairs[i], pairs[i + 1])
            dg = known.get(key)
            if dg is None:
                dg = known[key] = self.ref(f'{{"role":{_string(key[0])},"content":{_string(key[1])}}}', started)
            elif last_used[dg] < started:
                last_used[dg] = started
            out.append(dg)
        return b"".join(out)

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

    def refs(self, messages: Any, started: float) -> bytes | None:
        if not messages:
            return None
        return b"".join([self.ref(message_json(m), started) for m in messages])

    def rows(self, keep: Iterable[bytes] | None = None) -> list[tuple[bytes, bytes, float]]:
        """(digest, body, last_used) to upsert, sorted by digest: writers that lock content rows in one
        order cannot deadlock each other (PostgreSQL). `keep`: only these digests."""
        wanted = self.bodies.keys() if keep is None else set(keep) & self.bodies.keys()
        return [(dg, self.bodies[dg], self.last_used[dg]) for dg in sorted(wanted)]

    def __len__(self) -> int:
        return len(self.bodies)


def split_refs(refs: bytes | memoryview | None) -> list[bytes]:
    if not refs:
        return []
    refs = bytes(refs)
    return [refs[i:i + DIGEST_BYTES] for i in range(0, len(refs), DIGEST_BYTES)]


def referenced(rows: Iterable[Sequence[Any]], position: int) -> set[bytes]:
    """The digests the `message_refs` at `position` of these rows refer to."""
    out: set[bytes] = set()
    for row in rows:
        out.update(split_refs(row[position]))
    return out


def messages_from(refs: bytes | memoryview | None, bodies: Mapping[bytes, Any]) -> list[Any]:
    """A call's messages from its refs and the decoded bodies (digest -> message)."""
    out = []
    for dg in split_refs(refs):
        try:
            out.append(bodies[dg])
        except KeyError:
            # Never expected (retention keeps what calls refer to): say so in the message's place
            # rather than fail the whole read.
            out.append({"role": "unknown", "content": f"[historymw: message {dg.hex()} missing from the store]"})
    return out


_LOAD_CHUNK = 500  # digests a statement asks for (bound parameters stay well under any limit)
_load_stmt: Any = None


def load(conn: Any, digests: Iterable[bytes]) -> dict[bytes, Any]:
    """digest -> message (decoded), for the digests the store holds."""
    import sqlalchemy as sa

    from .schema import contents

    global _load_stmt
    if _load_stmt is None:  # built once: its cache key is computed once too
        _load_stmt = sa.select(contents.c.hash, contents.c.body).where(
            contents.c.hash.in_(sa.bindparam("hashes", expanding=True)))
    out: dict[bytes, Any] = {}
    wanted = []
    for dg in sorted(set(digests)):
        data = _decoded.get(dg)
        if data is None:
            wanted.append(dg)
        else:  # parsed anew for each call: the caller owns (and may change) its messages
            out[dg] = json.loads(data.decode("utf-8", "surrogatepass"))
    for i in range(0, len(wanted), _LOAD_CHUNK):
        for dg, body in conn.execute(_load_stmt, {"hashes": wanted[i:i + _LOAD_CHUNK]}):
            dg = bytes(dg)
            data = decode_body(body)
            _decoded.put(dg, data)
            out[dg] = json.loads(data.decode("utf-8", "surrogatepass"))
    return out


def resolve(conn: Any, rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The rows as dicts, `message_refs` replaced by the `messages` they refer to (rows of a
    database before version 4, or messages stored as JSON, keep their `messages`)."""
    out = [dict(r) for r in rows]
    digests: set[bytes] = set()
    for r in out:
        refs = r.get("message_refs")
        if refs:
            digests.update(split_refs(refs))
    bodies = load(conn, digests) if digests else {}
    for r in out:
        refs = r.pop("message_refs", None)
        if refs:
            r["messages"] = messages_from(refs, bodies)
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
    """A clause: `refs` (a call's `message_refs` column) refers to a content whose JSON matches the
    LIKE `pattern` (escape `\\`; ILIKE on PostgreSQL). Only contents stored raw (shorter than
    `COMPRESS_MIN`: the questions, answers and turns people search for) are searched; a compressed
    one (a long system prompt) cannot be read by the database. The matching contents are found once,
    then each call row is tested against them."""
    import sqlalchemy as sa

    from .schema import contents

    k = contents.c
    if dialect == "postgresql":
        text: Any = sa.case((sa.func.get_byte(k.body, 0) == RAW,
                        sa.func.convert_from(sa.func.substring(k.body, 2), "UTF8")))
        matching = sa.select(k.hash).where(text.ilike(pattern, escape="\\")).cte("hm_matching")
        contains = sa.func.strpos(sa.func.encode(refs, "hex"), sa.func.encode(matching.c.hash, "hex")) > 0
    else:
        text = sa.cast(sa.func.substr(k.body, 2), sa.Text)  # (SQLite: the bytes, as text)
        matching = (sa.select(k.hash).where(sa.func.substr(k.body, 1, 1) == bytes((RAW,)),
                                            text.like(pattern, escape="\\")).cte("hm_matching"))
        contains = sa.func.instr(refs, matching.c.hash) > 0
    return sa.exists(sa.select(sa.literal(1)).select_from(matching).where(contains))
