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

_SECRET_VALUE = re.compile(
    r"""(?x)
    (?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{16,}            # OpenAI, Anthropic (sk-ant-...), DeepSeek...
    | (?<![A-Za-z0-9])(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}   # Stripe
    | (?<![A-Za-z0-9])AKIA[0-9A-Z]{16}                # AWS access key id
    | (?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})
    | (?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9\-]{10,}   # Slack
    | (?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{30,}         # Google API key
    | (?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}             # Hugging Face
    | eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*   # JWT
    | (?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=\-]{8,}
    """
)
_AUTH_SCHEME = re.compile(r"(?i)^(bearer|basic|token)\s+")

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


def _mask(m: re.Match[str]) -> str:
    scheme = _AUTH_SCHEME.match(m.group(0))
    return f"{scheme.group(1)} {REDACTED}" if scheme else REDACTED


def redact_text(s: str) -> str:
    """Replace secret-shaped substrings; returns `s` itself when there are none."""
    if len(s) < 10:
        return s
    return _SECRET_VALUE.sub(_mask, s)
