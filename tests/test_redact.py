"""Secret scrubbing and signature tagging: on copies, without over-redacting innocent fields."""

from __future__ import annotations

import copy

from engine.models import ActionType, create_action_record, create_log_entry
from engine.redact import (
    REDACTED,
    is_secret_key,
    propagate_signature_name,
    scrub,
    scrub_log_entry,
    scrub_text,
)


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


def test_signature_name_propagates_on_a_copy():
    a = create_action_record(
        ActionType.CODE_EDIT, {"x": 1}, {}, {}, {"signature_name": "MySig"}, 0.5, 0.5, 0.1
    )
    out = propagate_signature_name(a)
    assert list(out) == list(a.to_dict())
    for f in ("parameters", "result", "state_before", "state_after"):
        assert out[f]["signature_name"] == "MySig"
    assert a.parameters == {} and a.state_before == {"x": 1} and "signature_name" not in a.state_after
    plain = create_action_record(ActionType.CODE_EDIT, {}, {}, {}, {}, 0.5, 0.5, 0.1)
    assert propagate_signature_name(plain) is plain
    tagged = create_action_record(ActionType.CODE_EDIT, *([{"signature_name": "S"}] * 4), 0.5, 0.5, 0.1)
    assert propagate_signature_name(tagged) is tagged


def test_scrub_log_entry_copies_only_when_needed():
    clean = create_log_entry("INFO", "s", "fine", {"max_tokens": 3})
    assert scrub_log_entry(clean) is clean
    dirty = create_log_entry("INFO", "s", "token=abc", {"password": "p"})
    row = scrub_log_entry(dirty)
    assert row["message"] == f"token={REDACTED}" and row["context"] == {"password": REDACTED}
    assert dirty.message == "token=abc" and dirty.context == {"password": "p"}
