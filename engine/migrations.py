"""Versioned schema steps: `Migration`, `MigrationManager`, the five built-in steps (the `init` and
`migrate` commands are in engine.cli).

This module owns the `{prefix}:migrations:current_version` and
`{prefix}:migrations:applied_migrations` keys and the `migration_history`
stream (the old layer's names, DESIGN.md "Wire layout"). It is shaped against
the defects of the system it replaces (old-system.md a.5 and c.13):

* one `apply_pending_migrations()` applies every pending step, in dependency
  order and then version order; versions compare as versions (0.10.0 after
  0.9.0); a missing or cyclic dependency fails before anything runs;
* each step's `up` and its bookkeeping (applied list, current version, history
  row) commit in ONE LMDB write transaction, so a failing `up` leaves nothing;
* LMDB serialises write transactions across processes and the applied list is
  re-read inside the transaction, so concurrent initialisers apply each step
  exactly once;
* `rollback(to_version)` runs `down` steps newest-applied first and resets the
  current version (the old one left it pointing at a rolled-back step);
* the built-in steps only create what is missing: re-running one never wipes
  registries or configuration already there (the old 0.1.0 reset both
  registries to []). Values a.5 only names (the 0.4.0 threshold names, the
  0.5.0 context-cache and context-template configs) are the old system's own,
  read from its source, so other tools reading RedDB see the same contents.

The current version is the highest applied version; it equals the old "last
applied" whenever steps run in version order. Step functions take the Engine
(`up(engine)`); the old zero-argument callables are accepted too.
"""

from __future__ import annotations

import inspect
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import codec, keys
from .errors import EngineError, MigrationError
from .models import ActionType, Environment

if TYPE_CHECKING:
    from .core import Engine

CURRENT_VERSION = "current_version"
APPLIED_MIGRATIONS = "applied_migrations"
UPGRADE = "upgrade"
ROLLBACK = "rollback"

_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_MISSING: Any = object()  # the key does not exist
_UNREADABLE: Any = object()  # the key holds bytes that are not JSON (e.g. a binary embedding record)

Step = Callable[..., Any]


def parse_version(version: object) -> tuple[int, ...]:
    """`"0.10.0"` -> `(0, 10, 0)`, the sort key of a version; MigrationError unless MAJOR.MINOR.PATCH."""
    if not isinstance(version, str) or _VERSION.fullmatch(version) is None:
        raise MigrationError(
            f"malformed migration version {version!r}",
            hint="use MAJOR.MINOR.PATCH with plain decimal numbers, e.g. 0.6.0",
        )
    return tuple(int(part) for part in version.split("."))


def _adapt(fn: object, what: str) -> Callable[[Engine], Any]:
    """`fn` as a function of the engine: old zero-argument steps are wrapped."""
    if not callable(fn):
        raise MigrationError(f"{what} must be callable, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: assume the engine convention
        return fn
    for args in ((None,), ()):
        try:
            sig.bind(*args)
        except TypeError:
            continue
        return fn if args else lambda _engine: fn()
    raise MigrationError(f"{what} must take the engine or no argument, not {sig}")


class Migration:
    """One schema step: `up(engine)` (and optionally `down(engine)`) after its `dependencies` are applied.

    The positional order and the keyword names `up_function` / `down_function` of the old class still work.
    """

    def __init__(
        self,
        version: str,
        description: str,
        up: Step | None = None,
        down: Step | None = None,
        dependencies: Iterable[str] | None = None,
        *,
        up_function: Step | None = None,
        down_function: Step | None = None,
    ) -> None:
        if (up is not None and up_function is not None) or (down is not None and down_function is not None):
            raise MigrationError(f"migration {version}: give `up`/`down` or `up_function`/`down_function`")
        self.key = parse_version(version)
        self.version = version
        self.description = str(description)
        self.up: Step | None = up if up is not None else up_function
        self.down: Step | None = down if down is not None else down_function
        if self.up is None:
            raise MigrationError(f"migration {version} has no up step")
        self._up = _adapt(self.up, f"migration {version} up step")
        self._down = None if self.down is None else _adapt(self.down, f"migration {version} down step")
        if isinstance(dependencies, str):
            raise MigrationError(f"migration {version}: dependencies must be a list of versions, not a str")
        self.dependencies: list[str] = list(dependencies or [])
        for dep in self.dependencies:
            parse_version(dep)
        if version in self.dependencies:
            raise MigrationError(f"migration {version} depends on itself")

    @property
    def up_function(self) -> Step | None:
        """The old name of `up`."""
        return self.up

    @property
    def down_function(self) -> Step | None:
        """The old name of `down`."""
        return self.down

    def run_up(self, engine: Engine) -> None:
        """Run the up step against `engine`."""
        self._up(engine)

    def run_down(self, engine: Engine) -> None:
        """Run the down step against `engine`; MigrationError if there is none."""
        if self._down is None:
            raise MigrationError(f"migration {self.version} has no down step")
        self._down(engine)

    def __repr__(self) -> str:
        return f"Migration({self.version!r}, {self.description!r}, dependencies={self.dependencies!r})"


def _read(eng: Engine, key: str) -> Any:
    """The decoded value under `key` as the current transaction sees it (the open write batch, if any)."""
    with eng.store.read_txn() as txn:
        buf = txn.get(key.encode(), db=eng.store.db_kv)
        if buf is None:
            return _MISSING
        try:
            return codec.decode(buf)
        except (ValueError, struct.error):
            return _UNREADABLE


class MigrationManager:
    """Applies and rolls back migrations on one Engine (default: the process-wide data manager)."""

    def __init__(self, engine: Engine | None = None, migrations: Iterable[Migration] | None = None) -> None:
        if engine is None:
            from .compat import get_data_manager

            engine = get_data_manager()
        self.engine = engine
        self.namespace = engine.config.prefix
        self.migrations: dict[str, Migration] = {}
        for m in migrations or ():
            self.register_migration(m)

    def _key(self, name: str) -> str:
        return self.engine.key(keys.MIGRATIONS, name)

    def register_migration(self, migration: Migration) -> None:
        """Add a migration (one with the same version replaces it, as before)."""
        if not isinstance(migration, Migration):
            raise MigrationError(f"expected a Migration, got {type(migration).__name__}")
        self.migrations[migration.version] = migration

    def latest_version(self) -> str | None:
        """The highest registered version, or None when nothing is registered."""
        return max(self.migrations.values(), key=lambda m: m.key).version if self.migrations else None

    # ------------------------------------------------------------------ bookkeeping
    def get_current_version(self) -> str | None:
        """The store's schema version (the highest applied version), or None for a fresh store."""
        value = _read(self.engine, self._key(CURRENT_VERSION))
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise MigrationError(f"{self._key(CURRENT_VERSION)} holds {value!r}, not a version string")
        return value

    def get_applied_migrations(self) -> list[str]:
        """The applied versions in the order they were applied (a fresh list)."""
        value = _read(self.engine, self._key(APPLIED_MIGRATIONS))
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            # never treat unreadable bookkeeping as "nothing applied": that re-runs every step
            raise MigrationError(
                f"{self._key(APPLIED_MIGRATIONS)} is not a list of versions",
                hint="restore it, or delete it to re-apply every migration",
            )
        return value

    def is_migration_applied(self, version: str) -> bool:
        """True if `version` is in the applied list."""
        return version in self.get_applied_migrations()

    def _record(self, applied: list[str], migration: Migration, action: str) -> None:
        """Write the applied list, current version and a history row (inside the caller's transaction)."""
        eng = self.engine
        eng.put(self._key(APPLIED_MIGRATIONS), applied)
        if applied:
            eng.put(self._key(CURRENT_VERSION), max(applied, key=parse_version))
        else:
            eng.delete(self._key(CURRENT_VERSION))
        eng.append(
            keys.MIGRATION_HISTORY,
            {
                "version": migration.version,
                "timestamp": time.time(),
                "action": action,
                "description": migration.description,
            },
        )

    # ------------------------------------------------------------------ planning
    def _plan(self, applied: set[str], up_to: tuple[int, ...] | None = None) -> list[Migration]:
        """Unapplied migrations (at most `up_to`) in dependency order, ties by version."""
        pending = {
            v: m for v, m in self.migrations.items() if v not in applied and (up_to is None or m.key <= up_to)
        }
        for m in sorted(pending.values(), key=lambda m: m.key):
            for dep in m.dependencies:
                if dep in applied or dep in pending:
                    continue
                if dep in self.migrations:
                    raise MigrationError(f"migration {m.version} depends on {dep}, which is above the target")
                raise MigrationError(
                    f"migration {m.version} depends on {dep}, which is neither registered nor applied"
                )
        done, order = set(applied), []
        remaining = sorted(pending.values(), key=lambda m: m.key)
        while remaining:  # the lowest version whose dependencies are all done goes next
            step = next((m for m in remaining if done.issuperset(m.dependencies)), None)
            if step is None:
                stuck = ", ".join(m.version for m in remaining)
                raise MigrationError(f"dependency cycle: migrations {stuck} can never be applied")
            order.append(step)
            done.add(step.version)
            remaining.remove(step)
        return order

    def get_pending_migrations(self) -> list[Migration]:
        """Every unapplied migration, in dependency order then version order.

        MigrationError if a dependency is missing or the dependencies form a cycle.
        """
        return self._plan(set(self.get_applied_migrations()))

    # ------------------------------------------------------------------ applying
    def _commit_step(self, migration: Migration, action: str) -> bool:
        """Run `up` (or `down`) and its bookkeeping in one transaction; False if there was nothing to do."""
        version = migration.version
        upgrade = action == UPGRADE
        what = f"migration {version}" if upgrade else f"rollback of migration {version}"
        try:
            with self.engine.batch():
                applied = self.get_applied_migrations()  # re-read under the write lock: race-free
                if (version in applied) == upgrade:
                    return False
                missing = [d for d in migration.dependencies if d not in applied] if upgrade else []
                if missing:
                    raise MigrationError(f"migration {version} needs {', '.join(missing)} applied first")
                try:
                    (migration.run_up if upgrade else migration.run_down)(self.engine)
                except Exception as exc:
                    raise MigrationError(f"{what} ({migration.description}) failed: {exc}") from exc
                if upgrade:
                    applied.append(version)
                else:
                    applied.remove(version)
                self._record(applied, migration, action)
        except MigrationError:
            raise
        except EngineError as exc:
            raise MigrationError(f"{what} could not be committed: {exc}") from exc
        return True

    def apply_migration(self, migration: Migration) -> bool:
        """Apply one migration: its `up` and bookkeeping in one transaction.

        Returns False if it was already applied (by this or another process). Raises MigrationError naming
        the version, with the cause chained, if a dependency is unapplied or `up` fails; then nothing of it
        remains. Inside an outer `engine.batch()` it joins that transaction.
        """
        if not isinstance(migration, Migration):
            raise MigrationError(f"expected a Migration, got {type(migration).__name__}")
        self.migrations.setdefault(migration.version, migration)
        return self._commit_step(migration, UPGRADE)

    def apply_pending_migrations(self, up_to: str | None = None) -> list[str]:
        """Apply every pending migration (those at most `up_to`, if given); returns the versions applied.

        The plan is checked (missing or cyclic dependencies) before anything runs. Each migration commits
        on its own; on a failure the ones before it stay applied and MigrationError is raised.
        """
        target = None if up_to is None else parse_version(up_to)
        plan = self._plan(set(self.get_applied_migrations()), target)
        return [m.version for m in plan if self.apply_migration(m)]

    # ------------------------------------------------------------------ rolling back
    def _check_rollback(self, undo: list[str], applied: list[str]) -> None:
        for v in undo:
            m = self.migrations.get(v)
            if m is None:
                raise MigrationError(f"cannot roll back {v}: no such migration is registered")
            if m.down is None:
                raise MigrationError(f"cannot roll back {v}: it has no down step")
        undone = set(undo)
        for v in applied:
            m = self.migrations.get(v)
            if v not in undone and m is not None and undone.intersection(m.dependencies):
                raise MigrationError(
                    f"cannot roll back {', '.join(undo)}: applied migration {v} depends on it"
                )

    def rollback(self, to_version: str) -> list[str]:
        """Roll back every applied migration above `to_version`, newest-applied first; returns their versions.

        Each `down` commits in its own transaction with its bookkeeping; the current version becomes the
        highest version still applied. If any of them has no `down` step, MigrationError and nothing changes.
        """
        target = parse_version(to_version)
        applied = self.get_applied_migrations()
        undo = [v for v in reversed(applied) if parse_version(v) > target]
        self._check_rollback(undo, applied)
        return [v for v in undo if self._commit_step(self.migrations[v], ROLLBACK)]

    def rollback_migration(self, version: str) -> bool:
        """Roll back one applied migration (the old API); False if it is not applied."""
        parse_version(version)
        applied = self.get_applied_migrations()
        if version not in applied:
            return False
        self._check_rollback([version], applied)
        return self._commit_step(self.migrations[version], ROLLBACK)

    def status(self) -> dict[str, Any]:
        """`{current_version, latest_version, applied, pending}` (plus `error` if the plan is broken)."""
        applied = self.get_applied_migrations()
        out: dict[str, Any] = {
            "current_version": self.get_current_version(),
            "latest_version": self.latest_version(),
            "applied": applied,
        }
        try:
            out["pending"] = [m.version for m in self._plan(set(applied))]
        except MigrationError as exc:
            out["pending"] = sorted((v for v in self.migrations if v not in applied), key=parse_version)
            out["error"] = str(exc)
        return out


# ---------------------------------------------------------------------------------------------------
# The five built-in steps of the old system: same versions, dependencies and keys. Each creates only
# what is missing; its `down` deletes a key only while the key still holds exactly what the step writes
# on a fresh store (anything changed since is user data and stays). Stream rows are history and stay.


@dataclass(frozen=True, slots=True)
class _Seed:
    """One key a built-in step creates under `{prefix}:{category}:{ident}`.

    `value` (or `value()`) is stored when the key is missing; with `members`, a list already there gains
    the missing items instead. `volatile` fields (timestamps) do not count when deciding "untouched".
    """

    category: str
    ident: str
    value: Any
    members: bool = False
    volatile: str | None = None

    def fresh(self) -> Any:
        return self.value() if callable(self.value) else self.value

    def create(self, eng: Engine) -> None:
        key = eng.key(self.category, self.ident)
        current = _read(eng, key)
        if current is _MISSING:
            value = self.fresh()
            if self.category == keys.HEALTH:  # through the data API: also appends the health_history row
                eng.store_system_health(value)
            else:
                eng.put(key, value)
        elif self.members:
            if not isinstance(current, list):
                raise MigrationError(
                    f"{key} holds a {type(current).__name__}, not a list", hint="fix or delete it"
                )
            missing = [m for m in self.value if m not in current]
            if missing:
                eng.put(key, current + missing)

    def remove(self, eng: Engine) -> None:
        key = eng.key(self.category, self.ident)
        stored = _read(eng, key)
        if stored is _MISSING or stored is _UNREADABLE:
            return
        expected = self.fresh()
        if self.volatile is not None and isinstance(stored, dict) and isinstance(expected, dict):
            if self.volatile not in stored:
                return
            stored = {k: v for k, v in stored.items() if k != self.volatile}
            expected = {k: v for k, v in expected.items() if k != self.volatile}
        if stored == expected:
            eng.delete(key)


def _builtin(version: str, description: str, deps: list[str], *seeds: _Seed) -> Migration:
    def up(eng: Engine) -> None:
        for seed in seeds:
            seed.create(eng)

    def down(eng: Engine) -> None:
        for seed in seeds:
            seed.remove(eng)

    what = ", ".join(f"{s.category}:{s.ident}" for s in seeds)
    up.__name__ = up.__qualname__ = f"up_{version.replace('.', '_')}"
    down.__name__ = down.__qualname__ = f"down_{version.replace('.', '_')}"
    up.__doc__ = f"{version}: {description} (creates {what} where missing)."
    down.__doc__ = f"Undo {version}: delete {what} where untouched."
    return Migration(version, description, up, down, deps)


INITIAL_HEALTH: dict[str, Any] = {"status": "healthy", "version": "1.0.0", "initialized": True}
# a.5 gives only the numbers of the next two and no contents for the 0.5.0 configs: the names and values
# below are those of the old system's source (dspy_agent/db/migrations.py), so other tools see the same
RL_CONFIG = dict(
    enabled=True,
    reward_scaling=1.0,
    exploration_rate=0.1,
    learning_rate=0.001,
    batch_size=32,
    memory_size=10000,
)
PERFORMANCE_CONFIG = dict(
    signature_performance_threshold=85.0,
    verifier_accuracy_threshold=90.0,
    response_time_threshold=5.0,
    success_rate_threshold=95.0,
)
ALERTS_CONFIG = dict(
    error_rate_threshold=0.05,
    memory_usage_threshold=0.85,
    disk_usage_threshold=0.90,
    response_time_p95_threshold=10.0,
)
CONTEXT_CACHE_CONFIG = dict(enabled=True, max_size=1000, ttl_seconds=3600, compression_enabled=True)
CONTEXT_TEMPLATES = {
    "code_analysis": {
        "required_fields": ["file_path", "content", "language"],
        "optional_fields": ["dependencies", "imports", "exports"],
    },
    "patch_generation": {
        "required_fields": ["target_files", "change_description", "test_files"],
        "optional_fields": ["rollback_plan", "impact_analysis"],
    },
}


def _embedding_metadata() -> dict[str, Any]:
    return {"total_vectors": 0, "vector_dimension": 0, "last_updated": time.time()}


def _health() -> dict[str, Any]:
    return dict(INITIAL_HEALTH)


BUILTIN_MIGRATIONS: tuple[Migration, ...] = (
    _builtin(
        "0.1.0",
        "Initial schema setup",
        [],
        _Seed(keys.REGISTRIES, "signatures", []),
        _Seed(keys.REGISTRIES, "verifiers", []),
        _Seed(keys.REGISTRIES, "environments", [e.value for e in Environment], members=True),
        _Seed(keys.HEALTH, "current", _health, volatile="timestamp"),
    ),
    _builtin(
        "0.2.0",
        "Add embedding indices and metadata",
        ["0.1.0"],
        _Seed(keys.REGISTRIES, "embeddings", []),
        _Seed(keys.EMBEDDINGS, "metadata", _embedding_metadata, volatile="last_updated"),
    ),
    _builtin(
        "0.3.0",
        "Add RL training streams",
        ["0.2.0"],
        _Seed(keys.CONFIG, "rl", RL_CONFIG),
        _Seed(keys.REGISTRIES, "actions", [a.value for a in ActionType], members=True),
    ),
    _builtin(
        "0.4.0",
        "Add performance analytics",
        ["0.3.0"],
        _Seed(keys.CONFIG, "performance", PERFORMANCE_CONFIG),
        _Seed(keys.CONFIG, "alerts", ALERTS_CONFIG),
    ),
    _builtin(
        "0.5.0",
        "Add context caching and optimization",
        ["0.4.0"],
        _Seed(keys.CONFIG, "context_cache", CONTEXT_CACHE_CONFIG),
        _Seed(keys.CONFIG, "context_templates", CONTEXT_TEMPLATES),
    ),
)
# the old module's public names of the five steps
(
    migration_001_initial_schema,
    migration_002_add_embedding_indices,
    migration_003_add_rl_training_streams,
    migration_004_add_performance_analytics,
    migration_005_add_context_caching,
) = (m.up for m in BUILTIN_MIGRATIONS)
LATEST_VERSION = "0.5.0"
_LATEST_KEY = parse_version(LATEST_VERSION)


def get_migration_manager(engine: Engine | None = None) -> MigrationManager:
    """A manager with the built-in migrations, on `engine` (default: `engine.compat.get_data_manager()`)."""
    if engine is None:
        from .compat import get_data_manager

        engine = get_data_manager()
    return MigrationManager(engine, BUILTIN_MIGRATIONS)


def initialize_database(engine: Engine | None = None) -> bool:
    """Apply every pending built-in migration; True when the store is at the latest version afterwards.

    Failures raise MigrationError (the old function printed them and returned False).
    """
    try:
        manager = get_migration_manager(engine)
        manager.apply_pending_migrations()
        return not manager.get_pending_migrations()
    except MigrationError:
        raise
    except EngineError as exc:
        raise MigrationError(f"database initialisation failed: {exc}") from exc


def migrate_on_open(engine: Engine) -> None:
    """What `engine.open()` runs when `auto_migrate` is on: one key read when the store is up to date."""
    current = _read(engine, engine.key(keys.MIGRATIONS, CURRENT_VERSION))
    if isinstance(current, str) and _VERSION.fullmatch(current) and parse_version(current) >= _LATEST_KEY:
        return
    MigrationManager(engine, BUILTIN_MIGRATIONS).apply_pending_migrations()


def migration_stats(engine: Engine) -> dict[str, Any]:
    """The migrations section of the monitoring report."""
    status = MigrationManager(engine, BUILTIN_MIGRATIONS).status()
    out = {
        "current_version": status["current_version"],
        "latest_available": status["latest_version"],
        "applied_count": len(status["applied"]),
        "pending": status["pending"],
    }
    if "error" in status:
        out["error"] = status["error"]
    return out
