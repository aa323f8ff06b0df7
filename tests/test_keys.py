"""Key and stream names: the wire layout, and names RedDB cannot carry are rejected, never truncated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import keys
from engine.errors import ValidationError


def test_kv_key_layout():
    assert keys.kv_key("dspy_agent", keys.SIGNATURES, "CodeAnalyzer") == "dspy_agent:signatures:CodeAnalyzer"
    assert keys.kv_key("p", keys.CONTEXT, "current") == "p:context:current"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "tab\there", "x" * 513, 5, None, "\ud800"])
def test_bad_names_are_rejected(bad):
    with pytest.raises(ValidationError):
        keys.check_name(bad)


@pytest.mark.parametrize("good", ["q?x=1", "frag#ment", "with space", "clé", "名前", "a:b:c", "x" * 512])
def test_names_that_percent_encode_are_accepted(good):
    assert keys.check_name(good) == good


@given(st.text(min_size=1, max_size=100))
def test_check_name_either_accepts_unchanged_or_raises_validation_error(name):
    try:
        assert keys.check_name(name) == name
    except ValidationError:
        pass


def test_stream_names_are_plain():
    assert keys.RL_ACTIONS == "rl_actions"
    assert all(":" not in s for s in keys.STREAMS)
