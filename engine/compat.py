"""The old data layer's entry points, so code written for it runs with one changed import line.

`from dspy_agent.db import ...` becomes `from engine.compat import ...`: the
same names (models, factories, managers, module-level helpers), backed by the
engine. The process-global managers are created once, under a lock (the old
ones were not thread-safe), from the environment (ENGINE_PATH, REDDB_URL, ...).
"""

from __future__ import annotations

import threading
from typing import Any

from .config import load_config
from .core import Engine
from .models import (
    ActionRecord,
    ActionType,
    AgentState,
    ContextState,
    EmbeddingVector,
    Environment,
    LogEntry,
    PatchRecord,
    RetrievalEventRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_embedding_vector,
    create_log_entry,
    create_retrieval_event,
)


class RedDBDataManager(Engine):
    """The old plain manager: an Engine whose key prefix is `namespace` (default `dspy_agent`)."""

    def __init__(self, namespace: str = "dspy_agent", **options: Any) -> None:
        super().__init__(load_config(prefix=namespace, **options))


class EnhancedDataManager(RedDBDataManager):
    """The old enhanced manager: an Engine with the cache sizes as constructor arguments."""

    def __init__(
        self, namespace: str = "dspy_agent", cache_size: int = 1000, cache_ttl: float = 3600, **options: Any
    ) -> None:
        super().__init__(namespace, cache_size=cache_size, cache_ttl=cache_ttl, **options)


_lock = threading.RLock()
_managers: dict[str, Engine] = {}


def _singleton(kind: str, factory: type[Engine]) -> Any:
    with _lock:
        mgr = _managers.get(kind)
        if mgr is None or mgr._closed:
            # both entry points share one store handle per process: LMDB allows one environment per file
            mgr = _managers[kind] = factory()
        return mgr


def get_data_manager() -> RedDBDataManager:
    """The process-wide data manager (created on first use)."""
    return _singleton("plain", RedDBDataManager)  # type: ignore[no-any-return]


def get_enhanced_data_manager() -> EnhancedDataManager:
    """The process-wide enhanced data manager (created on first use)."""
    return _singleton("enhanced", EnhancedDataManager)  # type: ignore[no-any-return]


def get_storage() -> Engine:
    """The old `get_storage()`: an object with put/get/delete/append/read/health_check (the shared engine)."""
    return get_data_manager()


def get_top_performing_signatures(limit: int = 10) -> list[SignatureMetrics]:
    """Registered signatures by performance score, best first."""
    return get_enhanced_data_manager().get_top_performing_signatures(limit)


def get_recent_high_reward_actions(min_reward: float = 0.8, hours: float = 24) -> list[ActionRecord]:
    """Actions with min_reward <= reward <= 1.0 in the last `hours`, newest first, over every row."""
    return get_enhanced_data_manager().get_recent_high_reward_actions(min_reward, hours)


def get_error_patterns(hours: float = 24) -> dict[str, int]:
    """`{source: number of ERROR logs}` in the last `hours`, over every row."""
    return get_enhanced_data_manager().get_error_counts_by_source(hours)


def __getattr__(name: str) -> Any:
    # the heavier layers load on first use, under their old names
    if name in ("QueryBuilder", "QueryResult"):
        from . import query

        return getattr(query, name)
    if name in ("LRUCache", "CacheEntry"):
        from . import cache

        return cache.LRUCache
    if name in ("Migration", "MigrationManager", "get_migration_manager", "initialize_database"):
        from . import migrations

        return getattr(migrations, name)
    raise AttributeError(f"module 'engine.compat' has no attribute {name!r}")


def reset_managers() -> None:
    """Close and forget the process-wide managers (tests, or after changing ENGINE_PATH)."""
    with _lock:
        for mgr in _managers.values():
            mgr.close()
        _managers.clear()


__all__ = [
    "ActionRecord",
    "ActionType",
    "AgentState",
    "ContextState",
    "EmbeddingVector",
    "EnhancedDataManager",
    "Environment",
    "LogEntry",
    "PatchRecord",
    "RedDBDataManager",
    "RetrievalEventRecord",
    "SignatureMetrics",
    "TrainingMetrics",
    "VerifierMetrics",
    "create_action_record",
    "create_embedding_vector",
    "create_log_entry",
    "create_retrieval_event",
    "get_data_manager",
    "get_enhanced_data_manager",
    "get_error_patterns",
    "get_recent_high_reward_actions",
    "get_storage",
    "get_top_performing_signatures",
    "reset_managers",
]
