#!/usr/bin/env python3
"""Initialise a reddb-engine store and check that it works: the old `scripts/init_reddb.py`, on the engine.

For people who run the old command. The store comes from the environment like everywhere else:
ENGINE_PATH (the LMDB directory) and REDDB_URL / REDDB_TOKEN / REDDB_NAMESPACE / DB_BACKEND (replication;
REDDB_NAMESPACE defaults to `dspy_agent_test` here, as it did in the old script, because the checks write
test records). It applies every pending migration, then runs the old script's data-layer checks with
exact values: signature metrics round-trip a score of 85.5, verifier metrics an accuracy of 94.2, the
newest action and log entry read back are the ones just written. Prints one line per check; exits 0
when every check passes, 1 otherwise (an error is reported, never swallowed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class CheckFailed(Exception):
    """A check read back something other than what it wrote."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _checks(eng: Any) -> list[tuple[str, Callable[[], str]]]:
    from engine.migrations import LATEST_VERSION, get_migration_manager, initialize_database
    from engine.models import (
        ActionType,
        SignatureMetrics,
        VerifierMetrics,
        create_action_record,
        create_log_entry,
    )

    now = datetime.now(timezone.utc).isoformat()

    def initialise() -> str:
        _expect(initialize_database(eng) is True, "initialize_database() did not reach the latest version")
        return f"schema at {LATEST_VERSION}"

    def manager() -> str:
        mgr = get_migration_manager(eng)
        current, applied, pending = (
            mgr.get_current_version(),
            mgr.get_applied_migrations(),
            mgr.get_pending_migrations(),
        )
        _expect(current == LATEST_VERSION, f"current version is {current!r}, expected {LATEST_VERSION}")
        _expect(pending == [], f"still pending: {[m.version for m in pending]}")
        return f"current {current}, {len(applied)} applied, none pending"

    def signature() -> str:
        eng.store_signature_metrics(
            SignatureMetrics("test_signature", 85.5, 92.0, 1.5, "128MB", 10, now, "analysis")
        )
        got = eng.get_signature_metrics("test_signature")
        _expect(got is not None and got.performance_score == 85.5, f"read back {got!r}")
        return "test_signature: performance_score 85.5"

    def verifier() -> str:
        eng.store_verifier_metrics(VerifierMetrics("test_verifier", 94.2, "active", 100, 5, now, 0.5))
        got = eng.get_verifier_metrics("test_verifier")
        _expect(got is not None and got.accuracy == 94.2, f"read back {got!r}")
        return "test_verifier: accuracy 94.2"

    def action() -> str:
        a = create_action_record(
            ActionType.CODE_ANALYSIS,
            {"step": 0},
            {"step": 1},
            {"file": "test.py"},
            {"ok": True},
            0.8,
            0.9,
            1.2,
        )
        eng.record_action(a)
        recent = eng.get_recent_actions(limit=10)
        _expect(
            bool(recent) and recent[0].action_id == a.action_id, "the newest action is not the one written"
        )
        return f"newest of {len(recent)} recent actions is ours"

    def log() -> str:
        entry = create_log_entry("INFO", "init_reddb", "Database initialization test", {"test": True})
        eng.log(entry)
        recent = eng.get_recent_logs(limit=10)
        _expect(
            bool(recent) and recent[0].log_id == entry.log_id, "the newest log entry is not the one written"
        )
        return f"newest of {len(recent)} recent log entries is ours"

    return [
        ("initialize database", initialise),
        ("migration manager", manager),
        ("signature metrics", signature),
        ("verifier metrics", verifier),
        ("actions", action),
        ("logs", log),
    ]


def main() -> int:
    """Initialise and check the store named by the environment; the process exit status."""
    os.environ.setdefault("REDDB_NAMESPACE", "dspy_agent_test")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    try:
        from engine.compat import get_data_manager, reset_managers

        eng = get_data_manager()
    except Exception as exc:
        print(f"FAIL could not open the store: {type(exc).__name__}: {exc}")
        return 1
    print(f"store: {eng.store.path} ({'replicating' if eng.config.replicate else 'local only'})")
    passed = 0
    checks = _checks(eng)
    try:
        for name, check in checks:
            try:
                detail = check()
            except Exception as exc:
                print(f"FAIL {name}: {type(exc).__name__}: {exc}")
            else:
                passed += 1
                print(f"ok   {name}: {detail}")
    finally:
        reset_managers()
    print(f"{passed}/{len(checks)} checks passed")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
