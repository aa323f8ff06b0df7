"""Secret scrubbing and signature tagging: on copies, without over-redacting innocent fields."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from engine.redact import REDACTED, is_secret_key, propagate_signature_name, scrub, scrub_text


def test_secret_keys_by_whole_word():
    for k in (
        "api_key",
        "OPENAI_API_KEY",
        "x-api-key",
        "apiKey",
        "password",
        "Authorization",
        "access_token",
        "reddb_token",
        "client_secret",
        "bearer",
    ):
        assert is_secret_key(k), k
    for k in ("max_tokens", "num_tokens_used", "keyboard", "monkey", "tokens", "author"):
        assert not is_secret_key(k), k


def test_scrub_text_patterns():
    assert scrub_text("key sk-abcdefghijklmnopqrstuvwx end") == f"key {REDACTED} end"
    assert scrub_text("Authorization: Bearer abc.def-123") == f"Authorization: Bearer {REDACTED}"
    assert scrub_text("password=hunter2 next") == f"password={REDACTED} next"
    assert scrub_text("api_key: XYZ") == f"api_key: {REDACTED}"
    assert scrub_text("used 512 tokens") == "used 512 tokens"


def test_scrub_is_a_deep_copy_and_keeps_innocent_fields():
    ctx = {"api_key": "k", "max_tokens": 4096, "nested": [{"token": "t", "note": "Bearer zzz"}]}
    before = copy.deepcopy(ctx)
    out = scrub(ctx)
    assert ctx == before
    assert out == {
        "api_key": REDACTED,
        "max_tokens": 4096,
        "nested": [{"token": REDACTED, "note": f"Bearer {REDACTED}"}],
    }


@dataclass
class FakeAction:
    parameters: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    state_before: dict = field(default_factory=dict)
    state_after: dict = field(default_factory=dict)


def test_signature_name_propagates_on_a_copy():
    a = FakeAction(parameters={}, result={"signature_name": "MySig"}, state_before={"x": 1})
    out = propagate_signature_name(a)
    assert list(out) == ["parameters", "result", "state_before", "state_after"]
    for f in ("parameters", "result", "state_before", "state_after"):
        assert out[f]["signature_name"] == "MySig"
    assert a.parameters == {} and a.state_before == {"x": 1}
    plain = FakeAction()
    assert propagate_signature_name(plain) is plain
