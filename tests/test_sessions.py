"""Sessions in memory (issue 18, item 1): hm.sessions(), hm.recent(session=...), a window per
session inside the ring's byte budget, released after an idle time read on a fake clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from reliability.test_byte_bound import traced  # the byte-bound tests' measure: bytes tracemalloc still counts

import historymw as hm
from historymw.errors import ConfigError


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@hm.recorded(provider="openai")
def ask(model: str, messages: Any, **params: Any) -> str:
    return "ok"


@hm.recorded(provider="openai")
def chat(model: str, messages: Any, fail: bool = False, **params: Any) -> dict[str, Any]:
    if fail:
        raise ConnectionError("reset")
    return {"id": "r", "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def say(session: str | None, text: str) -> None:
    if session is None:
        ask("m", [{"role": "user", "content": text}])
        return
    with hm.history(session=session):
        ask("m", [{"role": "user", "content": text}])


def texts(records: list[hm.LMCall]) -> list[str]:
    return [r.messages[0]["content"] for r in records]


@pytest.fixture
def clock() -> FakeClock:
    c = FakeClock()
    hm.ring().clock = c
    return c


def configure(clock: FakeClock, **settings: Any) -> None:
    hm.configure(**settings)
    hm.ring().clock = clock


def test_a_session_is_listed_with_its_activity_calls_errors_tokens_and_cost(clock: FakeClock) -> None:
    with hm.history(session="u-1"):
        chat("m", [{"role": "user", "content": "a"}])
        clock.advance(5)
        with hm.call(provider="p", model="m", messages=[{"role": "user", "content": "b"}]) as c:
            c.output("x", usage={"prompt_tokens": 1, "completion_tokens": 2}, cost=0.25)
        clock.advance(5)
        with pytest.raises(ConnectionError):
            chat("m", [{"role": "user", "content": "c"}], fail=True)
    with hm.history(session="u-2"):
        ask("m", [{"role": "user", "content": "d"}])
    one, two = hm.sessions()  # least recently active first
    assert (one.id, one.calls, one.errors, one.held) == ("u-1", 3, 1, 3)
    assert (one.input_tokens, one.output_tokens, one.total_tokens) == (11, 7, 18)
    assert one.cost == pytest.approx(0.25)
    assert one.first_activity.timestamp() == pytest.approx(clock.now - 10)
    assert one.last_activity.timestamp() == pytest.approx(clock.now)
    assert (two.id, two.calls, two.errors, two.cost) == ("u-2", 1, 0, None)
    assert one._asdict()["id"] == "u-1"  # a NamedTuple: plain data for JSON


def test_each_session_keeps_its_own_newest_records(clock: FakeClock) -> None:
    configure(clock, session_maxlen=4)
    for i in range(10):
        say("a", f"a{i}")
        say("b", f"b{i}")
    assert texts(hm.recent(100, session="a")) == ["a6", "a7", "a8", "a9"]
    assert texts(hm.recent(2, session="b")) == ["b8", "b9"]
    assert len(hm.ring()) == 20  # the ring keeps its own window, of every call
    assert [s.calls for s in hm.sessions()] == [10, 10]


def test_a_session_window_outlives_the_ring_turnover(clock: FakeClock) -> None:
    configure(clock, maxlen=5)
    for i in range(3):
        say("quiet", f"q{i}")
    for i in range(50):
        say(None, f"n{i}")
    assert texts(hm.recent(10, session="quiet")) == ["q0", "q1", "q2"]
    assert "q0" not in texts(list(hm.ring()))


def test_an_idle_session_is_released_after_the_idle_time_and_not_before(clock: FakeClock) -> None:
    configure(clock, maxlen=2, session_idle="10m")
    for i in range(5):
        say("a", f"a{i}")
    say("b", "b0")
    for i in range(5):
        say(None, f"n{i}")  # the ring no longer holds a's records: only the session does
    with_a = hm.stats().bytes_held
    clock.advance(599)
    assert [s.id for s in hm.sessions()] == ["a", "b"]
    say("b", "b1")  # b stays active
    clock.advance(1)
    assert [s.id for s in hm.sessions()] == ["b"]  # released at the first read after 10 minutes
    assert hm.recent(10, session="a") == []
    assert hm.stats().bytes_held < with_a
    assert hm.ring().sessions_released == (1, 0)
    clock.advance(600)
    assert hm.sessions() == []
    # Only the ring's two records remain counted: every session byte was given back.
    assert hm.stats().bytes_held == sum(r.size_bytes for r in hm.ring())


def test_idle_sessions_are_released_by_the_next_session_call_too(clock: FakeClock) -> None:
    configure(clock, session_idle=30)
    say("a", "a0")
    clock.advance(31)
    say("b", "b0")  # no read: the append releases a
    assert hm.ring().sessions_released == (1, 0)
    assert [s.id for s in hm.sessions()] == ["b"]


def test_a_session_that_comes_back_after_release_starts_afresh(clock: FakeClock) -> None:
    configure(clock, session_idle="1m")
    say("a", "old")
    clock.advance(120)
    say("a", "new")
    (a,) = hm.sessions()
    assert a.calls == 1 and texts(hm.recent(10, session="a")) == ["new"]


def test_sessions_stay_within_the_byte_budget_least_recently_active_released_first(clock: FakeClock) -> None:
    max_bytes = 256 * 1024
    configure(clock, maxlen=50, max_bytes=max_bytes)
    say("warm", "x")
    hm.ring().clear()

    def work() -> None:
        for i in range(3000):
            clock.advance(0.01)
            say(f"s{i % 600}", f"turn {i} " + "w" * 200)

    held = traced(work)
    s = hm.stats()
    assert s.bytes_held <= max_bytes
    assert held <= max_bytes + 64 * 1024, f"{held / max_bytes:.2f}x max_bytes"
    released, evicted = hm.ring().sessions_released
    assert evicted > 0 and released == 0
    live = [x.id for x in hm.sessions()]
    assert live[-1] == "s599" and "s0" not in live  # the most recently active kept, the least released


def test_bytes_held_is_exact_under_concurrent_session_calls(clock: FakeClock) -> None:
    configure(clock, maxlen=100, session_maxlen=7)

    def work(t: int) -> None:
        for i in range(500):
            say(f"t{t}-{i % 5}", "x")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    infos = hm.sessions()
    assert len(infos) == 30 and all(x.calls == 100 and x.held == 7 for x in infos)
    clock.advance(3600)
    assert hm.sessions() == []
    assert hm.stats().bytes_held == sum(r.size_bytes for r in hm.ring())


def test_the_session_bookkeeping_is_counted_at_least_at_what_it_takes(clock: FakeClock) -> None:
    configure(clock, maxlen=1)
    say("warm", "x")
    hm.ring().clear()

    def work() -> None:
        for i in range(2000):
            say(f"session-{i:05d}", "x")

    held = traced(work)
    accounted = hm.stats().bytes_held
    assert held <= accounted <= 2 * held, (held, accounted)


def test_session_maxlen_0_makes_a_session_only_a_field_of_its_records(clock: FakeClock) -> None:
    configure(clock, session_maxlen=0, maxlen=3)
    for i in range(5):
        say("a", f"a{i}")
    assert hm.sessions() == []
    assert texts(hm.recent(10, session="a")) == ["a2", "a3", "a4"]  # what the ring holds


def test_a_long_session_id_is_found_as_given(clock: FakeClock) -> None:
    configure(clock, max_field_chars=100)
    long = "u" * 5000
    say(long, "hi")
    assert texts(hm.recent(1, session=long)) == ["hi"]
    (info,) = hm.sessions()
    assert len(info.id) < 200


def test_session_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORYMW_SESSION_MAXLEN", "7")
    monkeypatch.setenv("HISTORYMW_SESSION_IDLE", "30s")
    s = hm.configure()
    assert (s.session_maxlen, s.session_idle) == (7, 30.0)
    for text, seconds in (("10m", 600.0), ("1h", 3600.0), ("2.5", 2.5)):
        assert hm.configure(session_idle=text).session_idle == seconds
    assert hm.configure(session_idle="1h").session_idle == 3600.0
    monkeypatch.setenv("HISTORYMW_SESSION_IDLE", "soon")
    with pytest.raises(ConfigError, match=r"HISTORYMW_SESSION_IDLE='soon'.*30s, 10m or 1h"):
        hm.configure()
    monkeypatch.delenv("HISTORYMW_SESSION_IDLE")
    with pytest.raises(ConfigError, match=r"configure\(session_idle=...\)=0 is not valid"):
        hm.configure(session_idle=0)
    monkeypatch.setenv("HISTORYMW_SESSION_MAXLEN", "-1")
    with pytest.raises(ConfigError, match=r"HISTORYMW_SESSION_MAXLEN='-1'.*whole number >= 0"):
        hm.configure()


def test_defaults_are_100_calls_and_10_minutes() -> None:
    s = hm.settings()
    assert (s.session_maxlen, s.session_idle) == (100, 600.0)
