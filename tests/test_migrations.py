"""Migrations: version order, whole chains in one call, atomic steps, rollback, non-destructive built-ins,
concurrent initialisers, the `init` / `migrate` commands and scripts/init_reddb.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

import engine
from engine import cli, keys, migrations, stats
from engine.errors import MigrationError
from engine.migrations import (
    Migration,
    MigrationManager,
    get_migration_manager,
    initialize_database,
    parse_version,
)
from engine.models import ActionType, SignatureMetrics, create_action_record

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"]
ENVIRONMENTS = ["development", "testing", "staging", "production", "local"]
ACTIONS = (
    "code_analysis code_edit file_search test_execution patch_generation optimization verification "
    "context_building tool_selection"
).split()


def snapshot(e) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every entry of every LMDB database of the store, as bytes."""
    store = e.store
    dbs = {
        "kv": store.db_kv,
        "streams": store.db_streams,
        "smeta": store.db_smeta,
        "ids": store.db_ids,
        "meta": store.db_meta,
        "outbox": store.db_outbox,
    }
    with store.read_txn() as txn:
        return {name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)] for name, db in dbs.items()}


def kv(e, category: str, ident: str):
    return e.get(e.key(category, ident))


def history(e) -> list[dict]:
    return [row for _, row in e.read(keys.MIGRATION_HISTORY, 0, 1000)]


def signature(name: str) -> SignatureMetrics:
    return SignatureMetrics(name, 85.5, 92.0, 1.5, "128MB", 10, "2026-01-01T00:00:00", "analysis")


def recorder(calls: list[str], tag: str):
    return lambda _engine: calls.append(tag)


# ---------------------------------------------------------------------------------------------- versions


def test_versions_compare_as_versions_not_strings(eng):
    assert parse_version("0.10.0") > parse_version("0.9.0") > parse_version("0.2.0")
    assert parse_version("1.0.0") > parse_version("0.99.99")
    calls: list[str] = []
    mgr = MigrationManager(eng, [Migration(v, v, recorder(calls, v)) for v in ("0.10.0", "0.9.0", "0.2.0")])
    assert [m.version for m in mgr.get_pending_migrations()] == ["0.2.0", "0.9.0", "0.10.0"]
    assert mgr.apply_pending_migrations() == ["0.2.0", "0.9.0", "0.10.0"]
    assert calls == ["0.2.0", "0.9.0", "0.10.0"]
    assert mgr.get_current_version() == "0.10.0"
    assert mgr.status()["latest_version"] == "0.10.0"


@pytest.mark.parametrize(
    "bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", "1.0.0 ", "", "1..0", "1.0.0.0", "\u0661.0.0", 100, None]
)
def test_malformed_versions_are_rejected(eng, bad):
    with pytest.raises(MigrationError, match="malformed migration version"):
        Migration(bad, "x", lambda e: None)
    with pytest.raises(MigrationError, match="malformed migration version"):
        Migration("0.1.0", "x", lambda e: None, dependencies=[bad])
    with pytest.raises(MigrationError, match="malformed migration version"):
        MigrationManager(eng).rollback(bad)


def test_bad_migration_definitions_are_rejected():
    with pytest.raises(MigrationError, match="no up step"):
        Migration("0.1.0", "x")
    with pytest.raises(MigrationError, match="depends on itself"):
        Migration("0.1.0", "x", lambda e: None, dependencies=["0.1.0"])
    with pytest.raises(MigrationError, match="list of versions"):
        Migration("0.2.0", "x", lambda e: None, dependencies="0.1.0")
    with pytest.raises(MigrationError, match="engine or no argument"):
        Migration("0.1.0", "x", lambda a, b: None)
    with pytest.raises(MigrationError, match="callable"):
        Migration("0.1.0", "x", "not a function")


def test_old_style_migrations_keywords_positional_and_zero_argument_steps(eng):
    calls: list[str] = []

    def old_up():
        calls.append("old up")

    def old_down():
        calls.append("old down")

    first = Migration(version="0.1.0", description="old", up_function=old_up, down_function=old_down)
    second = Migration(
        "0.2.0", "positional", lambda e: calls.append(f"new up {e is eng}"), old_down, ["0.1.0"]
    )
    assert first.up_function is old_up and first.down_function is old_down and first.dependencies == []
    assert second.dependencies == ["0.1.0"]
    mgr = MigrationManager(eng, [second, first])
    assert mgr.apply_pending_migrations() == ["0.1.0", "0.2.0"]
    assert calls == ["old up", "new up True"]
    assert mgr.is_migration_applied("0.2.0") and not mgr.is_migration_applied("0.3.0")
    assert mgr.rollback("0.0.0") == ["0.2.0", "0.1.0"]
    assert calls == ["old up", "new up True", "old down", "old down"]


# ---------------------------------------------------------------------------------------------- planning


def test_dependency_order_comes_before_version_order(eng):
    calls: list[str] = []
    mgr = MigrationManager(
        eng,
        [
            Migration("0.2.0", "needs 0.3.0", recorder(calls, "0.2.0"), dependencies=["0.3.0"]),
            Migration("0.3.0", "x", recorder(calls, "0.3.0")),
            Migration("0.1.0", "x", recorder(calls, "0.1.0")),
        ],
    )
    assert [m.version for m in mgr.get_pending_migrations()] == ["0.1.0", "0.3.0", "0.2.0"]
    assert mgr.apply_pending_migrations() == ["0.1.0", "0.3.0", "0.2.0"]
    assert calls == ["0.1.0", "0.3.0", "0.2.0"]
    assert mgr.get_applied_migrations() == ["0.1.0", "0.3.0", "0.2.0"]
    assert mgr.get_current_version() == "0.3.0"  # the highest applied version


def test_missing_dependency_fails_before_anything_runs(eng):
    calls: list[str] = []
    before = snapshot(eng)
    mgr = MigrationManager(
        eng,
        [
            Migration("0.1.0", "x", recorder(calls, "0.1.0")),
            Migration("0.2.0", "x", recorder(calls, "0.2.0"), dependencies=["0.1.5"]),
        ],
    )
    with pytest.raises(MigrationError, match=r"0\.2\.0 depends on 0\.1\.5, which is neither registered"):
        mgr.apply_pending_migrations()
    assert calls == []
    assert snapshot(eng) == before
    assert mgr.status()["error"].startswith("migration 0.2.0 depends on 0.1.5")


def test_dependency_cycle_fails_before_anything_runs(eng):
    calls: list[str] = []
    before = snapshot(eng)
    mgr = MigrationManager(
        eng,
        [
            Migration("0.1.0", "x", recorder(calls, "0.1.0")),
            Migration("0.2.0", "x", recorder(calls, "0.2.0"), dependencies=["0.3.0"]),
            Migration("0.3.0", "x", recorder(calls, "0.3.0"), dependencies=["0.2.0"]),
        ],
    )
    with pytest.raises(MigrationError, match=r"dependency cycle: migrations 0\.2\.0, 0\.3\.0"):
        mgr.get_pending_migrations()
    with pytest.raises(MigrationError, match="dependency cycle"):
        mgr.apply_pending_migrations()
    assert calls == []
    assert snapshot(eng) == before


def test_a_dependency_already_applied_in_the_store_counts(eng):
    MigrationManager(eng, [Migration("0.1.0", "x", lambda e: None)]).apply_pending_migrations()
    later = MigrationManager(eng, [Migration("0.2.0", "x", lambda e: None, dependencies=["0.1.0"])])
    assert later.apply_pending_migrations() == ["0.2.0"]
    assert later.get_applied_migrations() == ["0.1.0", "0.2.0"]


# ---------------------------------------------------------------------------------------------- built-ins


def test_one_call_applies_the_whole_builtin_chain_with_exact_contents(eng):
    mgr = get_migration_manager(eng)
    assert [m.version for m in mgr.get_pending_migrations()] == BUILTIN
    assert mgr.get_current_version() is None
    assert initialize_database(eng) is True
    assert mgr.get_applied_migrations() == BUILTIN
    assert mgr.get_current_version() == "0.5.0"
    assert eng.get("dspy_agent:migrations:current_version") == "0.5.0"
    assert eng.get("dspy_agent:migrations:applied_migrations") == BUILTIN

    assert kv(eng, "registries", "signatures") == []
    assert kv(eng, "registries", "verifiers") == []
    assert kv(eng, "registries", "environments") == ENVIRONMENTS
    assert kv(eng, "registries", "embeddings") == []
    assert kv(eng, "registries", "actions") == ACTIONS
    health = eng.get_system_health()
    assert isinstance(health.pop("timestamp"), float)
    assert health == {"status": "healthy", "version": "1.0.0", "initialized": True}
    assert eng.store.stream_length(keys.HEALTH_HISTORY) == 1
    meta = kv(eng, "embeddings", "metadata")
    assert isinstance(meta.pop("last_updated"), float)
    assert meta == {"total_vectors": 0, "vector_dimension": 0}
    assert kv(eng, "config", "rl") == {
        "enabled": True,
        "reward_scaling": 1.0,
        "exploration_rate": 0.1,
        "learning_rate": 0.001,
        "batch_size": 32,
        "memory_size": 10000,
    }
    assert kv(eng, "config", "performance") == {
        "signature_performance_threshold": 85.0,
        "verifier_accuracy_threshold": 90.0,
        "response_time_threshold": 5.0,
        "success_rate_threshold": 95.0,
    }
    assert kv(eng, "config", "alerts") == {
        "error_rate_threshold": 0.05,
        "memory_usage_threshold": 0.85,
        "disk_usage_threshold": 0.90,
        "response_time_p95_threshold": 10.0,
    }
    assert kv(eng, "config", "context_cache") == {
        "enabled": True,
        "max_size": 1000,
        "ttl_seconds": 3600,
        "compression_enabled": True,
    }
    assert set(kv(eng, "config", "context_templates")) == {"code_analysis", "patch_generation"}

    rows = history(eng)
    assert [(r["version"], r["action"]) for r in rows] == [(v, "upgrade") for v in BUILTIN]
    assert [r["description"] for r in rows] == [m.description for m in migrations.BUILTIN_MIGRATIONS]
    assert all(isinstance(r["timestamp"], float) for r in rows)
    assert set(rows[0]) == {"version", "timestamp", "action", "description"}


def test_rerunning_applies_nothing_and_existing_data_is_never_wiped(eng):
    eng.store_signature_metrics(signature("keep_me"))
    eng.register_verifier("ver_a")
    eng.put(eng.key("config", "rl"), {"enabled": False})
    eng.put(eng.key("registries", "environments"), ["ci"])
    eng.store_system_health({"status": "degraded"})

    assert initialize_database(eng) is True
    assert kv(eng, "registries", "signatures") == ["keep_me"]
    assert kv(eng, "registries", "verifiers") == ["ver_a"]
    assert kv(eng, "config", "rl") == {"enabled": False}
    assert kv(eng, "registries", "environments") == ["ci", *ENVIRONMENTS]
    assert eng.get_system_health()["status"] == "degraded"
    assert eng.get_signature_metrics("keep_me").performance_score == 85.5

    before = snapshot(eng)
    mgr = get_migration_manager(eng)
    assert mgr.apply_pending_migrations() == []
    assert initialize_database(eng) is True
    assert snapshot(eng) == before
    assert len(history(eng)) == 5


def test_a_registry_of_the_wrong_shape_stops_the_step_instead_of_being_overwritten(eng):
    eng.put(eng.key("registries", "environments"), {"not": "a list"})
    with pytest.raises(MigrationError, match=r"migration 0\.1\.0") as info:
        initialize_database(eng)
    assert "not a list" in str(info.value.__cause__)
    assert kv(eng, "registries", "environments") == {"not": "a list"}
    assert get_migration_manager(eng).get_applied_migrations() == []


# ---------------------------------------------------------------------------------------------- atomicity


def test_a_failing_up_leaves_the_store_byte_for_byte_unchanged(eng):
    assert initialize_database(eng) is True
    eng.store_signature_metrics(signature("existing"))
    before = snapshot(eng)

    def broken(e):
        e.put(e.key("config", "half_done"), {"x": 1})
        e.append("brand_new_stream", {"row": 1})
        e.record_action(
            create_action_record(
                ActionType.CODE_EDIT, {}, {}, {}, {}, reward=1.0, confidence=1.0, execution_time=0
            )
        )
        e.store_signature_metrics(signature("ghost"))
        e.delete(e.key("config", "rl"))
        raise RuntimeError("boom")

    mgr = get_migration_manager(eng)
    mgr.register_migration(Migration("0.6.0", "broken", broken, dependencies=["0.5.0"]))
    with pytest.raises(MigrationError, match=r"migration 0\.6\.0 \(broken\) failed: boom") as info:
        mgr.apply_pending_migrations()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert snapshot(eng) == before
    assert [m.version for m in mgr.get_pending_migrations()] == ["0.6.0"]
    assert mgr.get_current_version() == "0.5.0"


def test_a_failure_mid_chain_keeps_earlier_steps_and_runs_no_later_one(eng):
    calls: list[str] = []

    def fail(_e):
        raise ValueError("bad step")

    mgr = MigrationManager(
        eng,
        [
            Migration("0.1.0", "ok", recorder(calls, "0.1.0")),
            Migration("0.2.0", "fails", fail, dependencies=["0.1.0"]),
            Migration("0.3.0", "after", recorder(calls, "0.3.0"), dependencies=["0.2.0"]),
        ],
    )
    with pytest.raises(MigrationError, match=r"0\.2\.0") as info:
        mgr.apply_pending_migrations()
    assert isinstance(info.value.__cause__, ValueError)
    assert calls == ["0.1.0"]
    assert mgr.get_applied_migrations() == ["0.1.0"]
    assert mgr.get_current_version() == "0.1.0"
    assert [(r["version"], r["action"]) for r in history(eng)] == [("0.1.0", "upgrade")]


def test_apply_migration_with_an_unapplied_dependency_is_refused(eng):
    mgr = MigrationManager(eng)
    with pytest.raises(MigrationError, match=r"needs 0\.1\.0 applied first"):
        mgr.apply_migration(Migration("0.2.0", "x", lambda e: None, dependencies=["0.1.0"]))
    assert mgr.get_applied_migrations() == []
    assert mgr.apply_migration(Migration("0.1.0", "x", lambda e: None)) is True
    assert mgr.apply_migration(Migration("0.1.0", "x", lambda e: None)) is False


# ---------------------------------------------------------------------------------------------- rollback


def test_rollback_runs_downs_in_reverse_order_of_application(eng):
    calls: list[str] = []

    def step(version, deps=()):
        return Migration(
            version,
            f"step {version}",
            recorder(calls, f"up {version}"),
            recorder(calls, f"down {version}"),
            deps,
        )

    mgr = MigrationManager(
        eng, [step("0.1.0"), step("0.2.0", ["0.3.0"]), step("0.3.0"), step("0.4.0", ["0.2.0"])]
    )
    assert mgr.apply_pending_migrations() == ["0.1.0", "0.3.0", "0.2.0", "0.4.0"]
    calls.clear()
    assert mgr.rollback("0.1.0") == ["0.4.0", "0.2.0", "0.3.0"]
    assert calls == ["down 0.4.0", "down 0.2.0", "down 0.3.0"]
    assert mgr.get_current_version() == "0.1.0"
    assert mgr.get_applied_migrations() == ["0.1.0"]
    assert [(r["version"], r["action"], r["description"]) for r in history(eng)[-3:]] == [
        ("0.4.0", "rollback", "step 0.4.0"),
        ("0.2.0", "rollback", "step 0.2.0"),
        ("0.3.0", "rollback", "step 0.3.0"),
    ]
    assert mgr.rollback("0.1.0") == []
    assert mgr.rollback_migration("0.1.0") is True
    assert mgr.get_current_version() is None
    assert eng.get("dspy_agent:migrations:current_version") is None


def test_rollback_of_a_step_without_down_changes_nothing(eng):
    calls: list[str] = []
    mgr = MigrationManager(
        eng,
        [
            Migration("0.1.0", "x", recorder(calls, "up"), recorder(calls, "down 0.1.0")),
            Migration("0.2.0", "x", recorder(calls, "up"), dependencies=["0.1.0"]),
            Migration("0.3.0", "x", recorder(calls, "up"), recorder(calls, "down 0.3.0"), ["0.2.0"]),
        ],
    )
    mgr.apply_pending_migrations()
    before = snapshot(eng)
    with pytest.raises(MigrationError, match=r"cannot roll back 0\.2\.0: it has no down step"):
        mgr.rollback("0.0.0")
    assert calls == ["up", "up", "up"]
    assert snapshot(eng) == before
    with pytest.raises(MigrationError, match=r"applied migration 0\.2\.0 depends on it"):
        mgr.rollback_migration("0.1.0")
    assert snapshot(eng) == before


def test_builtin_rollback_removes_only_untouched_keys_and_reapplies_cleanly(eng):
    assert initialize_database(eng) is True
    eng.store_signature_metrics(signature("keep_me"))
    eng.put(eng.key("config", "alerts"), {"error_rate_threshold": 0.5})
    mgr = get_migration_manager(eng)
    assert mgr.rollback("0.0.0") == list(reversed(BUILTIN))
    assert mgr.get_current_version() is None
    assert mgr.get_applied_migrations() == []
    assert sorted(k for k, _ in eng.store.kv_scan("")) == [
        "dspy_agent:config:alerts",
        "dspy_agent:migrations:applied_migrations",
        "dspy_agent:registries:signatures",
        "dspy_agent:signatures:keep_me",
    ]
    assert kv(eng, "registries", "signatures") == ["keep_me"]
    assert [r["action"] for r in history(eng)] == ["upgrade"] * 5 + ["rollback"] * 5
    assert [r["version"] for r in history(eng)[5:]] == list(reversed(BUILTIN))

    assert initialize_database(eng) is True
    assert kv(eng, "registries", "signatures") == ["keep_me"]
    assert kv(eng, "config", "alerts") == {"error_rate_threshold": 0.5}
    assert kv(eng, "registries", "actions") == ACTIONS
    assert mgr.get_current_version() == "0.5.0"


# ------------------------------------------------------------------------------------------ on open, stats


def test_migrate_on_open_applies_what_is_missing_and_is_one_read_when_current(eng, monkeypatch):
    migrations.migrate_on_open(eng)
    assert get_migration_manager(eng).get_applied_migrations() == BUILTIN

    def no_manager(*args, **kwargs):
        raise AssertionError("an up-to-date store must not build a manager")

    with monkeypatch.context() as m:
        m.setattr(migrations, "MigrationManager", no_manager)
        migrations.migrate_on_open(eng)
    assert len(history(eng)) == 5

    get_migration_manager(eng).rollback("0.3.0")
    migrations.migrate_on_open(eng)
    assert get_migration_manager(eng).get_current_version() == "0.5.0"


def test_migration_stats_and_the_monitoring_report(eng):
    assert migrations.migration_stats(eng) == {
        "current_version": None,
        "latest_available": "0.5.0",
        "applied_count": 0,
        "pending": BUILTIN,
    }
    initialize_database(eng)
    expected = {"current_version": "0.5.0", "latest_available": "0.5.0", "applied_count": 5, "pending": []}
    assert migrations.migration_stats(eng) == expected
    assert stats.collect_stats(eng)["migrations"] == expected


def test_initialize_database_defaults_to_the_process_data_manager(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_PATH", str(tmp_path / "default"))
    from engine.compat import get_data_manager

    assert initialize_database() is True
    assert get_migration_manager().get_current_version() == "0.5.0"
    assert get_data_manager().get(get_data_manager().key("migrations", "current_version")) == "0.5.0"


# ---------------------------------------------------------------------------------------------- processes

RACER = """
import os, sys, time
from engine.compat import get_data_manager
from engine.migrations import initialize_database
get_data_manager()
open(sys.argv[2], "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.001)
print(initialize_database())
"""


def test_concurrent_initialisers_apply_each_step_exactly_once(tmp_path):
    store = tmp_path / "shared"
    env = {**os.environ, "ENGINE_PATH": str(store)}
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go), str(r)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()  # all four start initialising at once
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "True"

    e = engine.open(store, auto_migrate=False)
    try:
        rows = history(e)
        assert Counter((r["version"], r["action"]) for r in rows) == Counter((v, "upgrade") for v in BUILTIN)
        assert len(rows) == 5
        assert get_migration_manager(e).get_applied_migrations() == BUILTIN
        assert e.store.stream_length(keys.HEALTH_HISTORY) == 1
        assert kv(e, "registries", "environments") == ENVIRONMENTS
    finally:
        e.close()


def test_init_reddb_script_initialises_and_checks_the_store(tmp_path):
    store = tmp_path / "script-store"
    result = subprocess.run(
        [sys.executable, "scripts/init_reddb.py"],
        cwd=ROOT,
        env={**os.environ, "ENGINE_PATH": str(store)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "6/6 checks passed"
    e = engine.open(store, auto_migrate=False)
    try:
        assert get_migration_manager(e).get_current_version() == "0.5.0"
        assert e.get_signature_metrics("test_signature").performance_score == 85.5
        assert e.get_verifier_metrics("test_verifier").accuracy == 94.2
    finally:
        e.close()

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    failed = subprocess.run(
        [sys.executable, "scripts/init_reddb.py"],
        cwd=ROOT,
        env={**os.environ, "ENGINE_PATH": str(not_a_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert failed.stdout.startswith("FAIL could not open the store")


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def run_cli(capsys, tmp_path):
    path = str(tmp_path / "cli-store")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["--path", path, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_init_and_migrate(run_cli):
    code, out, _ = run_cli("init")
    assert code == 0
    assert out.splitlines() == [
        "applied 0.1.0: Initial schema setup",
        "applied 0.2.0: Add embedding indices and metadata",
        "applied 0.3.0: Add RL training streams",
        "applied 0.4.0: Add performance analytics",
        "applied 0.5.0: Add context caching and optimization",
        "schema version: 0.5.0",
    ]
    assert run_cli("init")[1].splitlines() == ["nothing to do", "schema version: 0.5.0"]

    code, out, _ = run_cli("migrate", "--status", "--json")
    assert code == 0
    assert orjson.loads(out) == {
        "current_version": "0.5.0",
        "latest_version": "0.5.0",
        "applied": BUILTIN,
        "pending": [],
    }

    code, out, _ = run_cli("migrate", "--to", "0.3.0")
    assert code == 0
    assert out.splitlines() == [
        "rolled back 0.5.0: Add context caching and optimization",
        "rolled back 0.4.0: Add performance analytics",
        "schema version: 0.3.0",
    ]
    assert run_cli("migrate", "--status")[1].splitlines() == [
        "current version: 0.3.0 (latest 0.5.0)",
        "applied: 0.1.0, 0.2.0, 0.3.0",
        "pending: 0.4.0, 0.5.0",
    ]

    code, out, _ = run_cli("migrate", "--to", "0.4.0", "--json")
    assert code == 0
    report = orjson.loads(out)
    assert (report["applied_now"], report["rolled_back"], report["current_version"]) == (
        ["0.4.0"],
        [],
        "0.4.0",
    )

    code, out, _ = run_cli("migrate")
    assert code == 0
    assert out.splitlines() == [
        "applied 0.5.0: Add context caching and optimization",
        "schema version: 0.5.0",
    ]


def test_cli_rejects_bad_targets(run_cli):
    code, out, err = run_cli("migrate", "--to", "9.9.9")
    assert (code, out) == (1, "")
    assert "unknown version 9.9.9" in err
    code, _, err = run_cli("migrate", "--to", "latest")
    assert code == 1
    assert "malformed migration version 'latest'" in err
    with pytest.raises(SystemExit) as info:
        run_cli("migrate", "--to", "0.3.0", "--status")
    assert info.value.code == 2
    code, out, _ = run_cli("migrate", "--to", "0.0.0")
    assert (code, out.splitlines()) == (0, ["nothing to do", "schema version: none"])
