"""Secrets never reach a record.

Three nets:

- by name: a dict key, a header name or the name in `name=value` text that names a
  credential (api_key, Authorization, AZURE_OPENAI_API_KEY, github_access_token,
  x-api-key, clientSecret, ...). A name is judged by its last word and the word before
  it, so `page_token`, `eos_token`, `sort_key` and `password_min_length` are not
  credentials while `aws_session_token` and `POSTGRES_DB_PASSWORD` are;
- by value shape: tokens whose form says what they are (`sk-...`, `AKIA...`, JWTs,
  `ghp_...`, `xoxb-...`, PEM private keys, `scheme://user:password@host`, ...);
- under a credential's name, a value is replaced whole, unless it is a JSON schema (a tool
  whose parameters include `password` keeps that property's definition).

Params, headers and metadata are cleaned while the call is captured; prompts and
outputs, which can be large, are scanned when the record is sealed (before any
backend, `recent()` or the ring hands it out), behind `might_hold_secret`, which
costs a few character searches on text without a secret.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

REDACTED = "[REDACTED]"

# -- names ------------------------------------------------------------------------------------

# A name's words: `AZURE_OPENAI_API_KEY`, `x-api-key`, `clientSecret` -> azure openai api key, ...
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Last words that make a name a credential's whatever came before them.
_SECRET_LAST = frozenset({
    "password", "passwords", "passwd", "pwd", "passphrase", "passcode", "secret", "secrets", "credential",
    "credentials", "apikey", "apikeys", "cookie", "cookies", "authorization", "auth", "bearer", "privatekey",
    "secretkey", "accesskey", "accesstoken", "authtoken", "refreshtoken", "sessiontoken", "clientsecret",
    "connectionstring", "dsn",
})
# Words that, anywhere in a name, make it a credential's (unless its last word describes it).
_SECRET_ANY = frozenset({"password", "passwd", "passphrase", "secret", "credential", "credentials", "apikey",
                         "privatekey", "secretkey", "clientsecret"})
# Last words that describe a credential rather than hold it: password_min_length, api_key_env.
_ABOUT = frozenset({
    "length", "len", "min", "max", "policy", "hint", "hints", "required", "enabled", "type", "types", "field",
    "fields", "name", "names", "label", "prompt", "format", "pattern", "rule", "rules", "regex", "strength",
    "expiry", "expires", "expiration", "expired", "changed", "at", "url", "uri", "path", "file", "env", "var",
    "count", "version", "ttl", "rotation", "algorithm", "algo", "help", "placeholder", "description", "mode",
    "provider", "reset", "exists", "present", "configured", "valid", "validation", "error", "errors", "id", "ids",
    "kind", "source", "location", "ref", "arn", "age", "days", "set", "is", "has", "use", "used", "allowed",
    "budget", "limit", "usage", "estimate", "spent", "hash_algorithm", "scheme", "schema", "manager", "store",
})
# `..._token` is a credential unless the word before says it is a text token or a page marker.
_NOT_CREDENTIAL_TOKEN = frozenset({
    "eos", "bos", "pad", "unk", "sep", "cls", "mask", "start", "end", "stop", "page", "next", "prev", "previous",
    "continuation", "cursor", "max", "min", "num", "total", "special", "input", "output", "prompt", "completion",
    "reasoning", "cached", "cache", "last", "first", "new", "count", "eot", "eom", "image", "audio", "text",
    "vision", "bad", "default", "sync", "cancellation", "cancel", "split", "sentence", "word", "sub", "subword",
    "byte", "char", "vocab", "unknown", "padding", "begin", "thinking", "tool", "system", "user", "assistant",
    "chat", "decoder", "encoder", "continue", "resume", "pagination", "offset", "delta", "stream", "think",
    "im", "fim", "eog", "pause", "resumption",
})
# `..._key` is a credential unless the word before says it is a lookup or sort key.
_NOT_CREDENTIAL_KEY = frozenset({
    "sort", "primary", "partition", "foreign", "cache", "idempotency", "dedup", "dedupe", "deduplication", "group",
    "hash", "range", "row", "lookup", "index", "unique", "composite", "shard", "sharding", "routing", "order",
    "cursor", "object", "s3", "file", "bucket", "public", "message", "translation", "i18n", "label", "field",
    "column", "table", "config", "state", "item", "node", "entry", "record", "event", "job", "task", "search",
    "query", "filter", "map", "dict", "hot", "short", "natural", "surrogate", "react", "list", "element", "data",
    "name", "prefix", "lock", "tracking", "correlation", "request", "trace", "span", "metric", "feature", "flag",
    "experiment", "variant", "version", "language", "locale", "model", "prompt", "template", "output", "input",
    "result", "response", "join", "match", "dimension", "attribute", "property", "prop", "schema", "type",
    "content", "value", "source", "target", "parent", "child", "cluster", "topic", "queue", "path", "route",
    "music", "shortcut", "hotkey", "keyboard", "press", "escape", "enter", "tab", "space", "return", "modifier",
    "sorting", "grouping", "ordering", "json", "yaml", "settings", "session",
})


def is_secret_name(name: str) -> bool:
    """Does `name` (a dict key, a header, the name of `name=value`) name a credential?"""
    words = [w for w in _NON_WORD.split(_CAMEL.sub("_", name).lower()) if w]
    if not words:
        return False
    last = words[-1]
    if last in _ABOUT:
        return False
    before = words[-2] if len(words) > 1 else ""
    if last == "token":
        return before not in _NOT_CREDENTIAL_TOKEN
    if last == "key":
        return before not in _NOT_CREDENTIAL_KEY
    if last in _SECRET_LAST or (last == "pass" and before != ""):
        return True
    for w in words:
        if w in _SECRET_ANY:
            return True
    for a, b in pairwise(words):
        if b in ("key", "token") and a in ("api", "access", "private", "secret", "auth", "refresh", "session"):
            return True
        if a == "connection" and b == "string":
            return True
    return False


class _KeyCache(dict[str, bool]):
    """key -> is it a credential's name? Filled on a miss; keys repeat from call to call,
    so the hot path pays one dict lookup. Bounded: past 4096 keys, misses are not kept."""

    def __missing__(self, key: str) -> bool:
        hit = is_secret_name(key)
        if len(self) < 4096:
            self[key] = hit
        return hit


KEY_CACHE = _KeyCache()


def is_secret_key(key: str) -> bool:
    """Does a dict key name a credential?"""
    return KEY_CACHE[key]


# JSON-schema keywords whose values are descriptions of a property, not the property's value.
_SCHEMA_WORDS = frozenset({"type", "description", "properties", "items", "enum", "format", "title", "$ref",
                           "anyOf", "oneOf", "allOf", "required", "minLength", "maxLength", "pattern",
                           "additionalProperties", "nullable", "writeOnly", "readOnly"})
_SCHEMA_VALUES = frozenset({"default", "example", "examples", "const"})


def mask_secret_value(value: Any) -> Any:
    """What is kept of `value`, given under a credential's name (already a plain copy).

    Text and numbers go; a dict or list keeps its shape with every leaf replaced, except a
    JSON schema (a tool's `password` parameter), which keeps its definition: only example
    and default values are replaced."""
    t = type(value)
    if value is None or t is bool:
        return value
    if t is dict:
        if _SCHEMA_WORDS.intersection(value) and ("type" in value or "properties" in value or "$ref" in value):
            return {k: (mask_secret_value(v) if k in _SCHEMA_VALUES else v) for k, v in value.items()}
        return {k: mask_secret_value(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [mask_secret_value(v) for v in value]
    return REDACTED


# -- shapes -----------------------------------------------------------------------------------

class _Shape:
    """A secret's form: `pattern`, behind two cheap checks that every text it matches passes.

    `rare` is a character such text contains and prose seldom does: looking for one character
    is a memchr, far cheaper than anything else, so text without it skips the shape at almost
    no cost. `probe` is a regex that starts with a literal (the regex engine then jumps from one
    occurrence of that literal to the next; a regex starting with a class or an alternation
    would be tried at every character), or None when `pattern` itself starts with a literal.
    A `prefix` shape is a token with a fixed prefix (sk-, AKIA, ghp_): glued to a word on its
    left it counts only if the text there is an escape (`\n` in JSON or repr'd text) or the
    token looks random, so "task-management" stays. A `keep` group is text around the secret
    that stays (`AccountKey=`, `user:`)."""

    __slots__ = ("name", "rare", "pattern", "probe", "prefix", "mask")

    def __init__(self, name: str, rare: str, pattern: str, prefix: bool, probe: str | None = None) -> None:
        self.name, self.rare, self.prefix = name, rare, prefix
        self.pattern = re.compile(pattern)
        self.probe = self.pattern if probe is None else re.compile(probe)
        self.mask = _mask_prefixed if prefix else _mask


def _mask(m: re.Match[str]) -> str:
    keep = m.groupdict()
    return f"{keep.get('keep') or ''}{keep.get('user') or ''}{REDACTED}"


def _mask_prefixed(m: re.Match[str]) -> str:
    text = m.group(0)
    if _glued_word(m.string, m.start()) and not _looks_random(text):
        return text
    return REDACTED


_SHAPES: tuple[_Shape, ...] = (
    # OpenAI, Anthropic (sk-ant-), DeepSeek, OpenRouter (sk-or-), ...
    _Shape("openai-style", "-", r"sk-[A-Za-z0-9_\-]{16,}", True),
    _Shape("stripe", "_", r"[spr]k_(?:live|test|prod)_[A-Za-z0-9]{10,}", True, probe=r"k_(?:live|test|prod)_"),
    _Shape("stripe-webhook", "_", r"whsec_[A-Za-z0-9+/=]{16,}", True),
    _Shape("aws-key-id", "A", r"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}", True),
    _Shape("github", "_", r"gh[pousr]_[A-Za-z0-9]{20,}", True),
    _Shape("github-fine-grained", "_", r"github_pat_[A-Za-z0-9_]{20,}", True),
    _Shape("gitlab", "-", r"glpat-[A-Za-z0-9_\-]{20,}", True),
    _Shape("slack", "-", r"xox(?:[abeoprs]|e\.xox[bp])-[A-Za-z0-9\-]{10,}", True),
    _Shape("slack-app", "-", r"xapp-[0-9]+-[A-Za-z0-9\-]{10,}", True),
    _Shape("slack-webhook", "/", r"(?P<keep>hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{16,}",
           False),
    _Shape("google", "z", r"AIza[0-9A-Za-z_\-]{30,}", True),
    _Shape("huggingface", "_", r"hf_[A-Za-z0-9]{20,}", True),
    _Shape("npm", "_", r"npm_[A-Za-z0-9]{30,}", True),
    _Shape("groq", "_", r"gsk_[A-Za-z0-9]{20,}", True),
    _Shape("replicate", "_", r"r8_[A-Za-z0-9]{20,}", True),
    _Shape("pypi", "-", r"pypi-AgE[A-Za-z0-9_\-]{40,}", True),
    _Shape("jwt", "J", r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*", True),
    # Authorization: Bearer (a credential has a digit: "bearer of news" is prose).
    _Shape("bearer", "r", r"(?P<keep>earer(?<=[Bb]earer)\s+)(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{12,}",
           False),
    # Authorization: Basic. The credential (base64 of user:password) has a digit, + or /, or a
    # capital past its first character: "a basic understanding" is prose, not a credential.
    # (Both patterns start with a literal and look behind it for the capital: see _Shape.)
    _Shape("basic", "c", r"(?P<keep>asic(?<=[Bb]asic)\s+)(?=[A-Za-z0-9+/]*[0-9+/]|[A-Za-z0-9+/][a-z]*[A-Z])"
           r"[A-Za-z0-9+/]{12,}={0,2}", False),
    # scheme://user:password@host, scheme://:password@host (redis), scheme://TOKEN@host (a long user
    # name with a digit is a token; git@ or user@ is a name).
    _Shape("url-credentials", "@", r"(?P<keep>://)(?:(?P<user>[^\s/:@'\"<>]*:)[^\s/@'\"<>]+(?=@)"
           r"|(?=[A-Za-z0-9_\-.~%]*\d)[A-Za-z0-9_\-.~%]{12,}(?=@))", False),
    # Azure storage and Service Bus connection strings, SAS tokens.
    _Shape("azure-key", "=", r"(?P<keep>Key=(?<=ccountKey=|AccessKey=))[A-Za-z0-9+/=]{16,}", False),
    _Shape("azure-sas", "=", r"(?P<keep>sig=(?<![A-Za-z0-9_]sig=))[A-Za-z0-9%+/=_\-]{16,}", False),
    # PEM and OpenSSH private keys (RSA, EC, DSA, PGP ... PRIVATE KEY BLOCK), whole or cut short.
    _Shape("private-key", "V", r"-----BEGIN[ A-Z0-9_\-]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END"
           r"[ A-Z0-9_\-]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:\-]*)", False),
)
FAMILIES = tuple(shape.name for shape in _SHAPES)

# One scan for every shape that holds the same rare character: a regex that starts with that one
# character (the engine jumps from one occurrence to the next) and looks behind it for each
# shape's prefix. Only text where one of them is found is scanned shape by shape. (Each scan of
# a 4 KB text costs about as much as lower-casing it; one per shape would cost twenty.)
_GROUP_PROBES = {
    # (sk- glued to a word, "task-management", counts only as an escape or a random token, which has a digit)
    "-": r"-(?:(?<![A-Za-z0-9]sk-)(?<=sk-)|(?<=\\[a-z]sk-)|(?<=sk-)(?=[A-Za-z0-9_\-]*\d)|(?<=glpat-)"
         r"|(?<=xox[abeoprs]-)|(?<=xapp-)|(?<=pypi-))(?=[A-Za-z0-9_\-]{10})",
    "_": r"_(?:(?<=[spr]k_live_)|(?<=[spr]k_test_)|(?<=[spr]k_prod_)|(?<=whsec_)|(?<=gh[pousr]_)|(?<=_pat_)"
         r"|(?<=hf_)|(?<=npm_)|(?<=gsk_)|(?<=r8_))(?=[A-Za-z0-9+/=_]{10})",
    "=": r"=(?:(?<=ccountKey=)|(?<=AccessKey=)|(?<=sig=))",
}
_GROUPS: tuple[tuple[str, re.Pattern[str] | None, tuple[_Shape, ...]], ...] = tuple(
    [(rare, re.compile(probe), tuple(sh for sh in _SHAPES if sh.rare == rare))
     for rare, probe in _GROUP_PROBES.items()]
    + [(sh.rare, None, (sh,)) for sh in _SHAPES if sh.rare not in _GROUP_PROBES])

_ESCAPE_BEFORE = re.compile(r"\\(?:[abfnrtv0]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})\Z")


def _looks_random(token: str) -> bool:
    """Is `token` machine-made rather than words? Random text switches often between lower case,
    upper case and digits; words and hyphenated names rarely do."""
    switches, prev = 0, 0
    has_digit = has_lower = False
    for c in token:
        if c.isdigit():
            kind, has_digit = 1, True
        elif c.islower():
            kind, has_lower = 2, True
        elif c.isupper():
            kind = 3
        else:
            continue
        if prev and kind != prev:
            switches += 1
        prev = kind
    return has_digit and (switches >= 4 or not has_lower)


def _glued_word(text: str, start: int) -> bool:
    """Is the match at `start` the tail of a longer word ("task-...", "risk-...")?"""
    if not start or not text[start - 1].isalnum():
        return False
    return _ESCAPE_BEFORE.search(text, max(0, start - 10), start) is None


def _redact_shapes(s: str) -> str:
    for rare, probe, shapes in _GROUPS:
        if rare in s and (probe is None or probe.search(s) is not None):
            for shape in shapes:
                if shape.probe is shape.pattern or shape.probe.search(s) is not None:
                    s = shape.pattern.sub(shape.mask, s)  # the same str when nothing matched
    return s


def _shape_candidates(text: str) -> bool:
    """Does `text` pass the cheap checks of any shape (so that redaction must look closer)?"""
    for rare, probe, shapes in _GROUPS:
        if rare in text:
            if probe is not None:
                if probe.search(text) is not None:
                    return True
            elif shapes[0].probe.search(text) is not None:
                return True
    return False


def has_secret_anchor(text: str) -> bool:
    """Could `text` hold a secret? (False: redaction would change none of the strings it was made
    of.) Used on JSON text of containers: a string inside one (a tool call's arguments) may hold
    a `NAME=value` pair as well as a shape."""
    return _shape_candidates(text) or _might_hold_pair(text)


# -- name=value in text -----------------------------------------------------------------------

# Where a credential's name can end: these stems, then letters to the end of its last word
# ("passwords", "authorization"); the whole name is then judged by is_secret_name. Finding each
# stem with str.find is cheaper than any regex tried at every separator.
_PAIR_STEMS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "cookie", "dsn", "bearer")
_WORD_REST = re.compile(r"[a-z0-9]*")
_SEPARATOR = re.compile(r"""(?:\\{1,7})?["']?[ \t]{0,3}(?P<sep>=|:)""")
_NAME_TAIL = re.compile(r"(?:.*[^A-Za-z0-9_.\-])?(?P<name>[A-Za-z0-9_.\-]{1,64})\Z", re.S)
_VALUE = re.compile(r"""[ \t]*(?P<quote>(?:\\{1,7})?["'])?(?P<value>(?i:(?:bearer|basic|token|bot|digest)[ \t]+)?"""
                    r"""[^\s"'\\&,;{}\[\]()<>]{3,})""")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


_CREDENTIAL_CHARS = re.compile(r"[0-9+/=_~]|.[A-Z]")


def _credential_like(value: str) -> bool:
    """A value after `name:` in prose: "Invalid token: expected" is a sentence, "token: a1b2c3" is not
    (a digit, a symbol, a capital past the first letter, or length)."""
    return len(value) >= 24 or _CREDENTIAL_CHARS.search(value) is not None


def _pair_name(name: str) -> bool:
    """Does `name`, before `=` or `:` in text, name a credential? As a dict key would, except a
    bare `key`, which in text is mostly code (`sorted(rows, key=len)`) or prose ("Key: ...")."""
    return name.lower() != "key" and is_secret_key(name)


# A quote after the name may be escaped once per JSON level it went through (tool-call arguments are
# JSON in JSON, and the SQL writer checks them JSON-encoded once more): up to seven backslashes.
_BEFORE_SEPARATOR = re.compile(r"(?:.*[^A-Za-z0-9_.\-])?(?P<name>[A-Za-z0-9_.\-]{1,64})(?:\\{1,7})?[\"']?[ \t]{0,3}\Z",
                               re.S)


def _pair_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every credential value written as `name=value` / `name: value` in `text`."""
    spans: list[tuple[int, int]] = []
    if text.count("=") + text.count(":") <= 24:
        # Few separators (prose): look at the name before each.
        for sep in "=:":
            j = text.find(sep)
            while j >= 0:
                name = _BEFORE_SEPARATOR.match(text[max(0, j - 70):j])
                if name is not None and _pair_name(name.group("name")):
                    _add_value(text, j + 1, sep, spans)
                j = text.find(sep, j + 1)
        return spans
    # Many (code, JSON): look for the words a credential's name ends with instead.
    low = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)  # same length either way
    for stem in _PAIR_STEMS:
        i = low.find(stem)
        while i >= 0:
            rest = _WORD_REST.match(low, i + len(stem))
            end = rest.end() if rest is not None else i + len(stem)
            sep_m = _SEPARATOR.match(text, end)
            if sep_m is not None:
                name = _NAME_TAIL.match(text[max(0, end - 65):end])
                if name is not None and _pair_name(name.group("name")):
                    _add_value(text, sep_m.end(), sep_m.group("sep"), spans)
            i = low.find(stem, end)
    return spans


def _add_value(text: str, at: int, sep: str, spans: list[tuple[int, int]]) -> None:
    value = _VALUE.match(text, at)
    if value is None or value.group("value").startswith(REDACTED):
        return
    end = value.end("value")
    if end < len(text) and text[end] in "(.[":
        return  # code: `password = getpass()`, `token=self.token`
    # `NAME=value` (an environment, a query string) and a quoted value are credentials as written;
    # after `name:` or `name = ` (prose, code) the value must look like one.
    if (sep == "=" and value.start("value") == at) or value.group("quote") or _credential_like(value.group("value")):
        spans.append(value.span("value"))


def _might_hold_pair(text: str) -> bool:
    return ("=" in text or ":" in text) and bool(_pair_spans(text))


def redact_pairs(s: str) -> str:
    """Replace the value of `password=...`, `api_key: a1b2...`, `"token": "..."` in free text."""
    if len(s) < 8 or ("=" not in s and ":" not in s):
        return s
    spans = _pair_spans(s)
    if not spans:
        return s
    out: list[str] = []
    pos = 0
    for start, end in sorted(set(spans)):
        if start < pos:
            continue
        out.append(s[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(s[pos:])
    return "".join(out)


# -- the public checks ------------------------------------------------------------------------

def redact_text(s: str) -> str:
    """Replace secret-shaped substrings and `name=value` credentials; returns `s` itself when
    there are none."""
    if len(s) < 8:
        return s
    return redact_pairs(_redact_shapes(s))


def might_hold_secret(text: str) -> bool:
    """Would `redact_text` change `text`? False means it would return it unchanged.

    Cheap on long text that holds none, which is most text: a rare character first, then the
    shape's regex (each starts with a literal); `name=value` pairs only where a separator and a credential word are."""
    if _shape_candidates(text) and _redact_shapes(text) != text:  # a match may be a word ("task-...")
        return True
    return _might_hold_pair(text)
