"""Flattening never loses or merges keys, and unflattening gives the config back."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from align_track.flatten import flatten, join_key, split_key, unflatten

keys = st.text(min_size=0, max_size=8)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10),
                   st.floats(allow_nan=False), st.lists(st.integers(), max_size=3))
configs = st.recursive(
    st.dictionaries(keys, leaves, max_size=4),
    lambda children: st.dictionaries(keys, st.one_of(leaves, children), max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(configs)
def test_round_trip(config: dict) -> None:
    assert unflatten(flatten(config)) == config


@settings(max_examples=300, deadline=None)
@given(st.lists(keys, min_size=1, max_size=6))
def test_key_round_trip(segments: list) -> None:
    assert split_key(join_key(segments)) == segments


def test_dotted_key_next_to_nested_key_stays_distinct() -> None:
    flat = flatten({"a.b": 1, "a": {"b": 2}})
    assert flat == {'"a.b"': 1, "a.b": 2}


def test_deep_nesting() -> None:
    config: dict = {"leaf": 1}
    for i in range(200):
        config = {f"k{i}": config}
    assert unflatten(flatten(config)) == config
