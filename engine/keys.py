"""The wire layout: key-value key names and stream names, in one place.

Other tools read the same RedDB, so these names are a compatibility promise
(DESIGN.md, "Wire layout"): key-value keys are `{prefix}:{category}:{id}`,
streams are plain names. Names are checked here before anything is written:
a key the RedDB protocol cannot carry (empty, containing '/', too long,
control characters) is rejected, never truncated.
"""

from __future__ import annotations

import re

from .errors import ValidationError

MAX_NAME_BYTES = 512

# streams (history, append-only)
SIGNATURE_METRICS = "signature_metrics"
VERIFIER_METRICS = "verifier_metrics"
TRAINING_HISTORY = "training_history"
RL_ACTIONS = "rl_actions"
SYSTEM_LOGS = "system_logs"
RETRIEVAL_EVENTS = "retrieval_events"
CONTEXT_HISTORY = "context_history"
PATCH_HISTORY = "patch_history"
HEALTH_HISTORY = "health_history"
MIGRATION_HISTORY = "migration_history"

STREAMS = (
    SIGNATURE_METRICS,
    VERIFIER_METRICS,
    TRAINING_HISTORY,
    RL_ACTIONS,
    SYSTEM_LOGS,
    RETRIEVAL_EVENTS,
    CONTEXT_HISTORY,
    PATCH_HISTORY,
    HEALTH_HISTORY,
    MIGRATION_HISTORY,
)

# key-value categories
SIGNATURES = "signatures"
VERIFIERS = "verifiers"
CONTEXT = "context"
HEALTH = "health"
EMBEDDINGS = "embeddings"
CONFIG = "config"
REGISTRIES = "registries"
MIGRATIONS = "migrations"


_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f/]")


def check_name(name: object, what: str = "name") -> str:
    """Return `name` if RedDB can carry it as (part of) one path segment, else raise ValidationError."""
    if not isinstance(name, str):
        raise ValidationError(f"{what} must be a str, got {type(name).__name__}")
    if not name or name == "." or name == ".." or len(name) > MAX_NAME_BYTES // 4:
        _check_slow(name, what)
    if _BAD_CHAR.search(name) is not None:
        _check_slow(name, what)
    if not name.isascii():
        _check_slow(name, what)
    return name


def _check_slow(name: str, what: str) -> None:
    if not name:
        raise ValidationError(f"{what} must not be empty")
    if name in (".", ".."):
        raise ValidationError(f"{what} must not be '.' or '..' (HTTP clients collapse them out of the path)")
    if "/" in name:
        raise ValidationError(
            f"{what} must not contain '/': {name[:80]!r}",
            hint="some RedDB servers decode %2F before routing, so such a key could never be read back",
        )
    if _BAD_CHAR.search(name) is not None:
        raise ValidationError(f"{what} must not contain control characters: {name[:80]!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode (lone surrogate): {name[:40]!r}") from None
    if size > MAX_NAME_BYTES:
        raise ValidationError(f"{what} is longer than {MAX_NAME_BYTES} bytes UTF-8: {name[:40]!r}...")


def kv_key(prefix: str, category: str, ident: str) -> str:
    """`{prefix}:{category}:{id}`, with `ident` checked."""
    check_name(ident, f"{category} id")
    return f"{prefix}:{category}:{ident}"
