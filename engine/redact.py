"""What the engine changes in a record before storing it: secret scrubbing and signature tagging.

Both work on copies: the caller's objects are never mutated (the old layer
mutated them). Scrubbing matches whole words of a key name, so `api_key`,
`access_token` and `Authorization` are redacted while `max_tokens` and
`num_tokens_used` are not (the old layer redacted those too).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

REDACTED = "***"
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "bearer",
        "apikey",
        "credential",
        "credentials",
    }
)
_WORD_SPLIT = re.compile(r"[^a-zA-Z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_STRING_PATTERNS = (
    (re.compile(r"sk-[A-Za-z0-9_\-]{20,}"), REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+"), "Bearer " + REDACTED),
    (
        re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret|password)(\s*[:=]\s*)([^\s,;&\"']+)"),
        r"\1\2" + REDACTED,
    ),
)


def is_secret_key(name: str) -> bool:
    """True when a dict key names a secret (by whole words: `api_key`, `x-api-key`, `authToken`)."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a == "api" and b == "key" for a, b in itertools.pairwise(words))


def scrub_text(text: str) -> str:
    """`text` with API keys, bearer tokens and `password=...` values replaced by ***."""
    for pattern, repl in _STRING_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub(value: Any) -> Any:
    """A scrubbed deep copy of a JSON-like value."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v is not None else scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def scrub_log_entry(entry: Any) -> Any:
    """The entry itself when it holds no secret, else a row dict with message and context scrubbed."""
    message = scrub_text(entry.message)
    context = scrub(entry.context)
    if message == entry.message and context == entry.context:
        return entry
    row = entry.shallow_dict()
    row["message"] = message
    row["context"] = context
    return row


def propagate_signature_name(action: Any) -> Any:
    """The action itself, or a row dict whose four dicts all carry the `signature_name` found first.

    Looked for in parameters, result, state_before, state_after (in that order). The caller's record and
    dicts are never changed: changed dicts are new copies.
    """
    dicts = (action.parameters, action.result, action.state_before, action.state_after)
    name = None
    for d in dicts:
        v = d.get("signature_name")
        if isinstance(v, str):
            name = v
            break
    if name is None or all("signature_name" in d for d in dicts):
        return action
    row = action.shallow_dict()
    for field, d in zip(("parameters", "result", "state_before", "state_after"), dicts, strict=True):
        if "signature_name" not in d:
            row[field] = {**d, "signature_name": name}
    return row
