"""Scopes: `history(...)` decides, per thread and per asyncio task, what is recorded.

The current scope lives in a ContextVar. Each scope caches what it decides (its
`Effective`) for the current configuration generation, so the hot path reads one
ContextVar and the decision's mode: `configure()` marks every cached decision
stale (policy.STALE), and a stale scope decides again at its next call.

Threads do not inherit ContextVars: `wrap()` and `ContextExecutor` carry the
caller's scope into a thread pool.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from . import counters, runtime
from .draft import labels as draft_labels
from .errors import ConfigError
from .plain import Budget, plain
from .policy import FULL, SKIP, STALE, TAIL, Policy, Sampler, parse_policy, trace_id_bound

# Modes beside policy's SKIP, FULL and TAIL, for which a head decision is needed per call (capture.head):
SAMPLE = 3  # sampled, at random or by trace id; a call not sampled is not recorded
SAMPLE_ERRORS = 4  # sampled, and a call not sampled is kept if it fails (errors+sample)

F = TypeVar("F", bound=Callable[..., Any])


class Effective:
    """What a scope decides under one configuration generation (read on the hot path)."""

    __slots__ = ("gen", "mode", "keep_errors", "rate", "bound", "session", "tags", "labels", "labels_bytes",
                 "content", "max_chars", "record_limit", "draft_limit", "runtime", "commit", "sampler", "sampled_out",
                 "filtered_out", "__weakref__")  # runtime.STATE keeps a weak reference to mark it stale

    def __init__(self, gen: int, mode: int, keep_errors: bool, rate: float, session: str | None,
                 tags: dict[str, Any], content: bool, max_chars: int, record_limit: int,
                 rt: runtime.Runtime | None) -> None:
        self.gen = gen
        self.mode = mode
        self.keep_errors = keep_errors
        self.rate = rate
        self.bound = trace_id_bound(rate)
        self.session = session
        self.tags = tags
        # What start() adds to every draft (None when nothing), bounded, and the bytes it counts for.
        self.labels, self.labels_bytes = draft_labels(session, tags, max_chars)
        self.content = content
        self.max_chars = max_chars
        self.record_limit = record_limit
        self.draft_limit = min(max_chars, record_limit)  # above it, usual_draft checks both
        self.runtime = rt
        # What the hot path calls, one attribute lookup away: a bound method, and the counters'
        # itertools.count objects (`next(eff.sampled_out)` adds one).
        self.commit = rt.commit if rt is not None else _discard
        c = counters.COUNTERS
        self.sampled_out = c.sampled_out.count  # (a trace id's sampling decisions: see capture.head)
        # The Bernoulli trials of a sampling scope (shared by the configuration's scopes of this rate).
        sampling = mode == SAMPLE or mode == SAMPLE_ERRORS
        self.sampler = rt.sampler(rate, not keep_errors) if sampling and rt is not None else _NO_SAMPLER
        self.filtered_out = c.filtered_out.count


def _discard(draft: dict[str, Any]) -> None:
    pass


_NO_SAMPLER = Sampler(1.0, counted=False)  # the sampler of a scope that does not sample (never asked)


_STALE = Effective(0, STALE, False, 1.0, None, {}, True, 0, 0, None)  # a new scope's: decide at its first call


class Frame:
    """One `history(...)` scope's overrides, linked to the scope around it."""

    __slots__ = ("parent", "disable", "policy", "sample_rate", "session", "tags", "eff")

    def __init__(self, parent: Frame | None, disable: bool | None = None, policy: Policy | None = None,
                 sample_rate: float | None = None, session: str | None = None,
                 tags: Mapping[str, Any] | None = None) -> None:
        self.parent = parent
        self.disable = disable
        self.policy = policy
        self.sample_rate = sample_rate
        self.session = session
        self.tags = dict(tags) if tags else None
        self.eff = _STALE

    def chain(self) -> list[Frame]:
        frames: list[Frame] = []
        f: Frame | None = self
        while f is not None:
            frames.append(f)
            f = f.parent
        return frames[::-1]

    def refresh(self) -> Effective:
        """Recompute this scope's decision for the current configuration."""
        gen = runtime.STATE.gen
        rt = runtime.current()
        s = rt.settings
        policy, rate, disabled = s.policy, s.sample_rate, False
        session: str | None = None
        tags: dict[str, Any] = {}
        for f in self.chain():
            if f.policy is not None:
                policy, disabled = f.policy, False
            if f.sample_rate is not None:
                rate = f.sample_rate
            if f.disable is not None:
                disabled = f.disable
            if f.session is not None:
                session = f.session
            if f.tags:
                tags.update(f.tags)
        if disabled or policy.off:
            mode = SKIP
        elif policy.everything or (policy.sample and rate >= 1.0):
            mode = FULL
        elif policy.sample:
            mode = SAMPLE_ERRORS if policy.keep_errors else SAMPLE
        else:
            mode = TAIL
        # A record may take at most 1/16 of the byte budget (and at least 16 KiB),
        # so that one huge call cannot flush the whole ring.
        limit = max(s.max_bytes // 16, 16 * 1024)
        eff = Effective(gen, mode, policy.keep_errors, rate, session, tags, s.capture_content,
                        s.max_field_chars, limit, rt)
        # Cached for the next calls, unless a configure() ran meanwhile (this call still uses it).
        self.eff = eff if runtime.STATE.keep(eff) else _STALE
        return eff


ROOT = Frame(None)
CURRENT: contextvars.ContextVar[Frame] = contextvars.ContextVar("historymw_scope", default=ROOT)


class history:  # noqa: N801 - used like a function: `with hm.history(...)`
    """Scope what is recorded: `with history(disable=True): ...` or `@history(session="u-42")`.

    Nests (inner settings win, tags merge), and is isolated per thread and per
    asyncio task. `disable=True` records nothing inside, unless an inner scope
    names a `policy` or `disable=False`.
    """

    def __init__(self, *, disable: bool | None = None, policy: str | None = None,
                 sample_rate: float | None = None, session: str | None = None,
                 tags: Mapping[str, Any] | None = None) -> None:
        if disable is not None and not isinstance(disable, bool):
            raise ConfigError(f"history(disable={disable!r}) is not valid: expected True or False")
        parsed: Policy | None = None
        if policy is not None:
            try:
                parsed = parse_policy(policy)
            except ValueError as exc:
                raise ConfigError(f"history(policy={policy!r}) is not valid: {exc}") from None
        if sample_rate is not None and (isinstance(sample_rate, bool)
                                        or not isinstance(sample_rate, (int, float))
                                        or not 0.0 <= sample_rate <= 1.0):
            raise ConfigError(f"history(sample_rate={sample_rate!r}) is not valid: expected a number from 0.0 to 1.0")
        if session is not None and not isinstance(session, str):
            raise ConfigError(f"history(session={session!r}) is not valid: expected a string")
        if tags is not None and not isinstance(tags, Mapping):
            raise ConfigError(f"history(tags={tags!r}) is not valid: expected a mapping")
        # Tags are copied once, here, as plain bounded data: every record of the scope shares them.
        plain_tags = plain(dict(tags), Budget(1000, 64 * 1024, scan=True)) if tags else None
        self._args = (disable, parsed, None if sample_rate is None else float(sample_rate), session, plain_tags)
        self._tokens: list[contextvars.Token[Frame]] = []

    def __enter__(self) -> history:
        frame = Frame(CURRENT.get(), *self._args)
        self._tokens.append(CURRENT.set(frame))
        return self

    def __exit__(self, *exc: object) -> None:
        CURRENT.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with history._from_args(self._args):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with history._from_args(self._args):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    @classmethod
    def _from_args(cls, args: tuple[Any, ...]) -> history:
        # A fresh instance per call keeps the decorator re-entrant and thread-safe.
        h = cls.__new__(cls)
        h._args, h._tokens = args, []
        return h


def wrap(fn: F) -> F:
    """Bind `fn` to the caller's current scope, for running it in another thread.

    `executor.submit(hm.wrap(work), ...)` records `work`'s calls under the scope
    that was active when `wrap` was called.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return ctx.copy().run(fn, *args, **kwargs)

    return bound  # type: ignore[return-value]


class ContextExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose tasks run in a copy of the submitter's context,
    so `history(...)` scopes (and every other ContextVar) follow the work."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)
