"""Property-based: whatever a call is given or returns, the call never raises because
of historymw, the stored record is valid JSON, and its size stays within the limits."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import historymw as hm

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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=values, messages=values, params=st.dictionaries(param_names, values, max_size=4),
       result=values, fails=st.booleans())
def test_any_argument_or_result_is_recorded_safely(model: Any, messages: Any, params: dict[str, Any],
                                                   result: Any, fails: bool) -> None:
    hm.configure(max_field_chars=MAX_FIELD_CHARS, max_bytes=MAX_BYTES, maxlen=5)

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
    assert hm.stats().errors == {}, hm.stats().errors
