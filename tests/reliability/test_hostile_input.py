"""Property-based: whatever a call is given or returns, the call never raises because
of historymw, the stored record is valid JSON, and its size stays within the limits.

Each example also goes through the SQL backend: the row lands (nothing refused or dropped), every
JSON column is strict JSON (no NaN or Infinity, which PostgreSQL's JSONB refuses), and reading it
back gives the record the ring holds."""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.sql.rows import JSON_COLUMNS
from historymw.store import Store

MAX_FIELD_CHARS = 200
MAX_BYTES = 1 << 20


class Unserialisable:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken too")


def _cyclic(children: list[Any]) -> Any:
    box: list[Any] = list(children)
    box.append(box)
    return box


def _deep(leaf: Any, depth: int) -> Any:
    for _ in range(depth):
        leaf = {"next": [leaf]}
    return leaf


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(), st.binary(max_size=64),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4),
    st.just("x" * 50_000), st.builds(Unserialisable), st.builds(object), st.sampled_from([len, type, json]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.none(), st.tuples(st.integers())),
                        children, max_size=5),
        st.tuples(children, children),
        st.frozensets(st.integers(), max_size=3),
        st.lists(children, max_size=3).map(_cyclic),
        st.tuples(children, st.integers(min_value=1, max_value=10_000)).map(lambda t: _deep(*t)),
    ),
    max_leaves=25,
)


# Keyword names a Python call can take next to model and messages.
param_names = st.text(min_size=1, max_size=12).filter(lambda k: k not in ("model", "messages"))


EXAMPLES = {"sqlite": 300, "postgres": 100}
_tried: dict[str, int] = {}


def _strict(text: str | None) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return None if text is None else json.loads(text, parse_constant=refuse)


class _Kept:
    """The SQL backend, minus shutdown(): each example's configure() would otherwise close its
    connections and the next example would open new ones (slow on PostgreSQL, and not under test)."""

    def __init__(self, backend: SQLBackend) -> None:
        self.backend = backend
        self.export, self.flush = backend.export, backend.flush
        self.prepare_drafts, self.export_prepared = backend.prepare_drafts, backend.export_prepared

    def shutdown(self) -> None:
        pass


class Sink:
    """One SQL backend for all examples of a run, and how to read its raw rows back."""

    def __init__(self, url: str, engine: sa.Engine | None = None) -> None:
        self.url, self.engine = url, engine
        self.sql = SQLBackend(url)
        self.backend = _Kept(self.sql)
        self.store = Store(url, create=True)

    def close(self) -> None:
        self.store.close()
        self.sql.shutdown()

    def raw_row(self, call_id: str) -> dict[str, Any]:
        cols = ", ".join(f"{c}::text" if self.engine is not None else c for c in JSON_COLUMNS)
        sql = f"SELECT {cols} FROM historymw_calls WHERE id = :id"
        if self.engine is None:
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                row = conn.execute(sql.replace(":id", "?"), (call_id,)).fetchone()
        else:
            with self.engine.connect() as conn:
                row = conn.execute(sa.text(sql), {"id": call_id}).fetchone()
        assert row is not None, "the record was not stored"
        return dict(zip(JSON_COLUMNS, row, strict=True))


@pytest.fixture(scope="module")
def sqlite_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    sink = Sink(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db")
    yield sink
    sink.close()


@pytest.fixture
def postgres_sink(postgres_url: str) -> Iterator[Sink]:
    # Set up once per test function, not per example: the examples share one schema.
    schema = f"hmfuzz_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    check = sa.create_engine(url_text)
    sink = Sink(url_text, check)
    yield sink
    hm.shutdown(timeout=2)
    sink.close()
    check.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _record_and_check(sink: Sink, model: Any, messages: Any, params: dict[str, Any], result: Any,
                      fails: bool) -> None:
    hm.configure(max_field_chars=MAX_FIELD_CHARS, max_bytes=MAX_BYTES, maxlen=5, backends=["ring", sink.backend])

    @hm.recorded(provider="fuzz")
    def call(model: Any, messages: Any, **kwargs: Any) -> Any:
        if fails:
            raise ValueError(result)
        return result

    try:
        out = call(model, messages, **params)
        assert not fails and out is result
    except ValueError as exc:
        assert fails and exc.args == (result,)
    [rec] = hm.recent(1)
    text = rec.model_dump_json()
    json.loads(text)
    assert rec.size_bytes <= MAX_BYTES // 16 or rec.size_bytes <= 16 * 1024
    assert hm.stats().bytes_held <= MAX_BYTES
    # Every kept string is bounded (plus the truncation marker).
    assert len(text) < 200_000
    assert hm.flush(timeout=10)
    s = hm.stats()
    assert (s.exported, s.dropped) == (1, 0), s  # stored, not refused by the database
    assert s.errors == {}, s.errors
    raw = sink.raw_row(rec.id)
    for column, value in raw.items():
        try:
            _strict(value)
        except ValueError as exc:
            raise AssertionError(f"column {column} is not strict JSON: {value!r:.300}") from exc
    back = sink.store.get(rec.id)
    assert back is not None
    for field in ("model", "messages", "params", "output_text", "outputs", "error_type", "error_message",
                  "size_bytes"):
        want = getattr(rec, field)
        # PostgreSQL text holds no NUL: the backend stores U+FFFD instead (messages are stored as bytes)
        if sink.engine is not None and field != "messages":
            want = _without_nul(want)
        assert _same(getattr(back, field), want), (field, getattr(back, field), want)


def _without_nul(v: Any) -> Any:
    if isinstance(v, str):
        return v.replace("\x00", "\ufffd")
    if isinstance(v, dict):
        return {_without_nul(k): _without_nul(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_without_nul(x) for x in v]
    return v


def _same(a: Any, b: Any) -> bool:
    """Equal, where numbers compare as numbers: PostgreSQL's JSONB keeps a float's decimal digits as a
    numeric, so 4.241529330208135e+16 comes back as the integer 42415293302081350."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def _examples(db: str) -> Any:
    return settings(max_examples=EXAMPLES[db], deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


arguments = {"model": values, "messages": values, "params": st.dictionaries(param_names, values, max_size=4),
             "result": values, "fails": st.booleans()}


@_examples("sqlite")
@given(**arguments)
def test_any_argument_or_result_is_recorded_safely(sqlite_sink: Sink, model: Any, messages: Any,
                                                   params: dict[str, Any], result: Any, fails: bool) -> None:
    _record_and_check(sqlite_sink, model, messages, params, result, fails)
    _tried["sqlite"] = _tried.get("sqlite", 0) + 1


@_examples("postgres")
@given(**arguments)
def test_any_argument_or_result_is_stored_in_postgresql(postgres_sink: Sink, model: Any, messages: Any,
                                                        params: dict[str, Any], result: Any, fails: bool) -> None:
    _record_and_check(postgres_sink, model, messages, params, result, fails)
    _tried["postgres"] = _tried.get("postgres", 0) + 1


@pytest.fixture(autouse=True)
def _report_examples(request: pytest.FixtureRequest, figures: Any) -> Iterator[None]:
    before = dict(_tried)
    yield
    db = "postgres" if "postgresql" in request.node.name else "sqlite"
    tried = _tried.get(db, 0) - before.get(db, 0)
    if tried:
        figures(examples=tried, made=tried, stored=tried, dropped=0)
