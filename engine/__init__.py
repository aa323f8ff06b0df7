"""reddb-engine: a local-first storage engine for AI coding-agent telemetry.

`engine.open()` returns an `Engine` over a local LMDB store (and, when
REDDB_URL is configured, replicates every write to RedDB exactly once).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import errors
from .config import Config, load_config
from .errors import EngineError

if TYPE_CHECKING:  # the lazy names below, for type checkers
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

# importing `engine` stays cheap: the data API and models load on first use
_LAZY = {
    "Engine": "core",
    **{
        name: "models"
        for name in (
            "ActionRecord",
            "ActionType",
            "AgentState",
            "ContextState",
            "EmbeddingVector",
            "Environment",
            "LogEntry",
            "PatchRecord",
            "RetrievalEventRecord",
            "SignatureMetrics",
            "TrainingMetrics",
            "VerifierMetrics",
            "create_action_record",
            "create_embedding_vector",
            "create_log_entry",
            "create_retrieval_event",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"


def open(path: str | os.PathLike[str] | None = None, **options: Any) -> Engine:
    """Open (creating if needed) the store at `path` (default: ENGINE_PATH or the user data directory).

    Keyword options override the environment: reddb_url, reddb_token, namespace, backend, prefix, durable,
    map_size, cache_size, cache_ttl, query_cache_size, query_cache_ttl, auto_migrate, auto_sync.
    """
    from .core import Engine

    if path is not None:
        options["path"] = os.fspath(path)
    return Engine(load_config(**options))


__all__ = [
    "ActionRecord",
    "ActionType",
    "AgentState",
    "Config",
    "ContextState",
    "EmbeddingVector",
    "Engine",
    "EngineError",
    "Environment",
    "LogEntry",
    "PatchRecord",
    "RetrievalEventRecord",
    "SignatureMetrics",
    "TrainingMetrics",
    "VerifierMetrics",
    "create_action_record",
    "create_embedding_vector",
    "create_log_entry",
    "create_retrieval_event",
    "errors",
    "load_config",
    "open",
]
