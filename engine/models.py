"""The records users store: nine slotted dataclasses, their factories and summaries.

This module owns what a valid record is. Field names, order and defaults are exactly those of the
system we replace (its callers construct records positionally), and ``to_dict()`` / ``from_dict()``
produce and accept its wire rows: a deep copy with enums as their values. Unlike the old models,
``from_dict`` never mutates its input and ignores fields written by a newer version, and every bad
value raises ``ValidationError`` at construction (``__post_init__`` is ``validate``), before anything
can be written. After changing a record's fields in place, call ``validate()`` again.

The methods are generated per class for speed (``engine.recordgen`` says how); the enums live in
``engine.enums`` and are re-exported here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.enums import ActionType, AgentState, Environment
from engine.recordgen import MAX_PAYLOAD_DEPTH, Record, coerce_float, record, vectors_equal, wrong_type

# fmt: off
__all__ = [
    "MAX_PAYLOAD_DEPTH", "RECORD_TYPES", "ActionRecord", "ActionType", "AgentState", "ContextState",
    "EmbeddingVector", "Environment", "LogEntry", "PatchRecord", "RetrievalEventRecord", "SignatureMetrics",
    "TrainingMetrics", "VerifierMetrics", "create_action_record", "create_embedding_vector",
    "create_log_entry", "create_retrieval_event", "new_id", "signature_summary", "verifier_summary",
]
# fmt: on


# ----------------------------------------------------------------------------------------------
# The nine records (field names, order and defaults are the wire contract: do not reorder).


@record
@dataclass(slots=True, eq=False)
class EmbeddingVector(Record):
    """A vector embedding of a code chunk, document, log or context, with its provenance."""

    id: str
    vector: list[float] | np.ndarray
    metadata: dict[str, Any]
    timestamp: float
    source_type: str
    source_path: str | None = None
    chunk_start: int | None = None
    chunk_end: int | None = None

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, EmbeddingVector)
        return (
            (self.id, self.metadata, self.timestamp, self.source_type)
            == (other.id, other.metadata, other.timestamp, other.source_type)
            and (self.source_path, self.chunk_start, self.chunk_end)
            == (other.source_path, other.chunk_start, other.chunk_end)
            and vectors_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]


@record
@dataclass(slots=True)
class SignatureMetrics(Record):
    """Current performance of one DSPy signature."""

    signature_name: str
    performance_score: float
    success_rate: float
    avg_response_time: float
    memory_usage: str
    iterations: int
    last_updated: str
    signature_type: str
    active: bool = True
    optimization_history: list[dict[str, Any]] = field(default_factory=list)


@record
@dataclass(slots=True)
class VerifierMetrics(Record):
    """Current performance of one code verifier."""

    verifier_name: str
    accuracy: float
    status: str
    checks_performed: int
    issues_found: int
    last_run: str
    avg_execution_time: float
    false_positive_rate: float | None = None
    false_negative_rate: float | None = None


@record
@dataclass(slots=True)
class TrainingMetrics(Record):
    """One epoch of a training session."""

    session_id: str
    timestamp: float
    epoch: int
    training_accuracy: float
    validation_accuracy: float
    loss: float
    learning_rate: float
    batch_size: int
    model_type: str
    environment: Environment
    hyperparameters: dict[str, Any]
    convergence_metrics: dict[str, float]


@record
@dataclass(slots=True)
class ActionRecord(Record):
    """One agent action with the states around it and its reward, for RL training."""

    action_id: str
    timestamp: float
    action_type: ActionType
    state_before: dict[str, Any]
    state_after: dict[str, Any]
    parameters: dict[str, Any]
    result: dict[str, Any]
    reward: float
    confidence: float
    execution_time: float
    environment: Environment
    context_hash: str | None = None


@record
@dataclass(slots=True)
class LogEntry(Record):
    """A structured log line."""

    log_id: str
    timestamp: float
    level: str
    source: str
    message: str
    context: dict[str, Any]
    environment: Environment
    session_id: str | None = None
    trace_id: str | None = None


@record
@dataclass(slots=True)
class ContextState(Record):
    """A snapshot of the agent's state, task and workspace."""

    context_id: str
    timestamp: float
    agent_state: AgentState
    current_task: str | None
    workspace_path: str
    active_files: list[str]
    recent_actions: list[str]
    memory_usage: dict[str, Any]
    performance_snapshot: dict[str, float]
    environment: Environment


@record
@dataclass(slots=True)
class PatchRecord(Record):
    """A generated code patch and what happened when it was applied."""

    patch_id: str
    timestamp: float
    prompt_hash: str
    target_files: list[str]
    patch_content: str
    applied: bool
    test_results: dict[str, Any] | None
    confidence_score: float
    blast_radius: float
    rollback_info: dict[str, Any] | None
    environment: Environment


@record
@dataclass(slots=True)
class RetrievalEventRecord(Record):
    """A retrieval query the agent ran and the hits it got."""

    event_id: str
    timestamp: float
    workspace_path: str
    query: str
    hits: list[dict[str, Any]]
    environment: Environment


RECORD_TYPES: tuple[type[Record], ...] = (
    EmbeddingVector, SignatureMetrics, VerifierMetrics, TrainingMetrics, ActionRecord, LogEntry, ContextState,
    PatchRecord, RetrievalEventRecord,
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Ids and factories (the seed's helpers: fresh uuid4 id, timestamp = time.time()).

_ID_BATCH = 256
_id_pool: list[str] = []
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A random RFC 4122 version-4 UUID string, like ``str(uuid.uuid4())`` but ~8x cheaper.

    Ids are cut from one os.urandom() call per 256; the pool is emptied in a forked child so that
    parent and child never hand out the same id.
    """
    try:
        return _id_pool.pop()
    except IndexError:
        pass
    h = os.urandom(16 * _ID_BATCH).hex()
    _id_pool.extend(
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{_VARIANT[h[i + 16]]}{h[i + 17 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    )
    return _id_pool.pop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_id_pool.clear)


def create_action_record(
    action_type: ActionType,
    state_before: dict[str, Any],
    state_after: dict[str, Any],
    parameters: dict[str, Any],
    result: dict[str, Any],
    reward: float,
    confidence: float,
    execution_time: float,
    environment: Environment = Environment.DEVELOPMENT,
    context_hash: str | None = None,
) -> ActionRecord:
    """A new ActionRecord with a fresh id, stamped now."""
    rest = (state_before, state_after, parameters, result, reward, confidence, execution_time, environment)
    return ActionRecord(new_id(), time.time(), action_type, *rest, context_hash)


def create_log_entry(
    level: str,
    source: str,
    message: str,
    context: dict[str, Any],
    environment: Environment = Environment.DEVELOPMENT,
    session_id: str | None = None,
    trace_id: str | None = None,
) -> LogEntry:
    """A new LogEntry with a fresh id, stamped now."""
    return LogEntry(new_id(), time.time(), level, source, message, context, environment, session_id, trace_id)


def create_embedding_vector(
    vector_id: str,
    vector: list[float] | np.ndarray,
    source_type: str,
    metadata: dict[str, Any],
    source_path: str | None = None,
    chunk_start: int | None = None,
    chunk_end: int | None = None,
) -> EmbeddingVector:
    """A new EmbeddingVector with the given id, stamped now."""
    return EmbeddingVector(
        vector_id, vector, metadata, time.time(), source_type, source_path, chunk_start, chunk_end
    )


def create_retrieval_event(
    workspace_path: str,
    query: str,
    hits: list[dict[str, Any]],
    environment: Environment = Environment.DEVELOPMENT,
    event_id: str | None = None,
) -> RetrievalEventRecord:
    """A new RetrievalEventRecord, stamped now, with `event_id` or a fresh id."""
    return RetrievalEventRecord(
        new_id() if event_id is None else event_id, time.time(), workspace_path, query, hits, environment
    )


# ----------------------------------------------------------------------------------------------
# Summary rows of the two metric streams (wire layout: these keys, in this order).


def _summary_timestamp(timestamp: float | None) -> float:
    return time.time() if timestamp is None else coerce_float("timestamp", timestamp)


def signature_summary(m: SignatureMetrics, timestamp: float | None = None) -> dict[str, Any]:
    """The `signature_metrics` stream row of `m`, stamped `timestamp` (default: now)."""
    if not isinstance(m, SignatureMetrics):
        raise wrong_type("signature_summary", "a SignatureMetrics", m)
    return {
        "signature_name": m.signature_name,
        "performance_score": m.performance_score,
        "success_rate": m.success_rate,
        "avg_response_time": m.avg_response_time,
        "timestamp": _summary_timestamp(timestamp),
    }


def verifier_summary(m: VerifierMetrics, timestamp: float | None = None) -> dict[str, Any]:
    """The `verifier_metrics` stream row of `m`, stamped `timestamp` (default: now)."""
    if not isinstance(m, VerifierMetrics):
        raise wrong_type("verifier_summary", "a VerifierMetrics", m)
    return {
        "verifier_name": m.verifier_name,
        "accuracy": m.accuracy,
        "checks_performed": m.checks_performed,
        "issues_found": m.issues_found,
        "timestamp": _summary_timestamp(timestamp),
    }
