"""Secrets never reach a record.

Two nets: by key name (anywhere in params, headers, metadata: api_key,
Authorization, password, ..._token, ..._key, ...) and by value shape (`sk-...`,
`Bearer ...`, JWTs, cloud and VCS tokens). Params, headers and metadata are
cleaned while the call is captured; prompts and outputs, which can be large,
are scanned when the record is sealed (before any backend, `recent()` or the
ring hands it out), so that a 4 KB prompt does not cost a regex scan on the
caller's thread.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"""(?ix)
    api[_-]?key | apikey | authorization | password | passwd | passphrase | secret
    | credential | private[_-]?key | access[_-]?key | cookie
    | (^|[_-])auth($|[_-]) | (^|[_-])token$ | (^|[_-])key$ | bearer
    """
)

# Secret shapes, each behind a literal anchor: `anchor in text` is a fast scan, and
# a pattern that starts with a literal lets the regex engine skip ahead too, so a
# 4 KB prompt with no secret costs a few µs per shape instead of a slow regex walk.
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (anchor, re.compile(pattern))
    for anchor, pattern in (
        ("sk-", r"sk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic (sk-ant-...), DeepSeek, ...
        ("k_live_", r"[spr]k_live_[A-Za-z0-9]{10,}"),  # Stripe
        ("k_test_", r"[spr]k_test_[A-Za-z0-9]{10,}"),
        ("AKIA", r"AKIA[0-9A-Z]{16}"),  # AWS access key id
        ("gh", r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"),  # GitHub
        ("xox", r"xox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack
        ("AIza", r"AIza[0-9A-Za-z_\-]{30,}"),  # Google API key
        ("hf_", r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face
        ("eyJ", r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),  # JWT
        ("earer", r"[Bb]earer\s+(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{12,}"),  # Authorization: Bearer
        # Authorization: Basic. The credential (base64 of user:password) has a digit, + or /, or a
        # capital past its first character: "a basic understanding" is prose, not a credential.
        ("asic ", r"[Bb]asic\s+(?=[A-Za-z0-9+/]*[0-9+/]|[A-Za-z0-9+/][a-z]*[A-Z])[A-Za-z0-9+/]{12,}={0,2}"),
        ("://", r"://[^\s/:@]+:[^\s/@]+@"),  # a password inside a URL: scheme://user:password@host
    )
)
# Credentials written as `name=value` or `name: value` in free text (error messages,
# URLs' query strings, headers dumped as text). Applied to the small fields (params,
# metadata, errors) as they are copied; not to prompts, where "token: ..." is too
# often just a word.
_KV_NAMES = ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "api-key", "credential")
_KV = re.compile(
    r"""(?ix)
    (?P<name>\b(?:[a-z]+[_-])?(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?))
    (?P<sep>["']?\s*[=:]\s*["']?)
    (?P<value>[^\s"'&,;}\]]{3,})
    """
)
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9]")


def _mask(m: re.Match[str]) -> str:
    if m.group(0).startswith("://"):
        user = m.group(0)[3:].split(":", 1)[0]
        return f"://{user}:{REDACTED}@"
    start = m.start()
    if start and _TOKEN_CHAR.match(m.string, start - 1) and m.group(0)[:1] not in "Bb":
        return m.group(0)  # inside a longer word ("task-..."): not a key prefix
    text = m.group(0)
    if text[:6].lower() == "bearer":
        return f"Bearer {REDACTED}"
    if text[:5].lower() == "basic":
        return f"Basic {REDACTED}"
    return REDACTED


def has_secret_anchor(text: str) -> bool:
    """Could `text` hold a secret shape? (False means redact_text would return it unchanged.)

    Spelled out rather than looped: this runs once per record on the export worker."""
    return ("sk-" in text or "k_live_" in text or "k_test_" in text or "AKIA" in text or "gh" in text
            or "xox" in text or "AIza" in text or "hf_" in text or "eyJ" in text or "earer" in text
            or "asic " in text or "://" in text)


# For each shape, a character that its anchor holds, or that every match of its regex holds, and
# that prose rarely does: looking for one character is a memchr, ~50 times faster than looking for
# an anchor, so a text without it skips the shape at almost no cost ("" where none is rare enough).
_RARE_CHAR = {"sk-": "-", "k_live_": "_", "k_test_": "_", "AKIA": "K", "gh": "_", "xox": "-", "AIza": "z",
              "hf_": "_", "eyJ": "J", "earer": "", "asic ": "", "://": "@"}
_SCAN = tuple((_RARE_CHAR[anchor], anchor, pattern) for anchor, pattern in _SHAPES)


def might_hold_secret(text: str) -> bool:
    """Would `redact_text` find a secret shape in `text`? False means it would return it unchanged.

    Cheap on long text that holds none, which is most text: a rare character first, then the
    anchor, then the regex. The anchors alone would not do: "gh" is in most English prose
    ("right", "thought"), and a prompt would be rewritten for nothing."""
    for rare, anchor, pattern in _SCAN:
        if rare in text and anchor in text and pattern.search(text) is not None:
            return True
    return False


assert {a for a, _ in _SHAPES} == {"sk-", "k_live_", "k_test_", "AKIA", "gh", "xox", "AIza", "hf_", "eyJ",
                                   "earer", "asic ", "://"}, "has_secret_anchor() must list every anchor of _SHAPES"


def has_credential_pair(text: str) -> bool:
    """Could `text` hold a `name=value` credential? (False: redact_pairs would return it unchanged.)"""
    if "=" not in text and ":" not in text:
        return False
    low = text.lower()
    return any(name in low for name in _KV_NAMES)


def _mask_pair(m: re.Match[str]) -> str:
    if m.group("value").startswith(REDACTED[:1]) and m.group("value").startswith("[REDACTED"):
        return m.group(0)
    return f"{m.group('name')}{m.group('sep')}{REDACTED}"


def redact_pairs(s: str) -> str:
    """Replace the value of `password=...`, `api_key: ...`, `"token": "..."` in free text."""
    if len(s) < 8 or not has_credential_pair(s):
        return s
    return _KV.sub(_mask_pair, s)


def redact_text(s: str) -> str:
    """Replace secret-shaped substrings; returns `s` itself when there are none."""
    if len(s) < 10:
        return s
    for anchor, pattern in _SHAPES:
        if anchor in s:
            s = pattern.sub(_mask, s)
    return s


class _KeyCache(dict[str, bool]):
    """key -> is it a credential's name? Filled on a miss; keys repeat from call to call,
    so the hot path pays one dict lookup. Bounded: past 4096 keys, misses are not kept."""

    def __missing__(self, key: str) -> bool:
        hit = bool(_SECRET_KEY.search(key))
        if len(self) < 4096:
            self[key] = hit
        return hit


KEY_CACHE = _KeyCache()


def is_secret_key(key: str) -> bool:
    """Does a dict key name a credential?"""
    return KEY_CACHE[key]
