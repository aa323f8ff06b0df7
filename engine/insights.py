"""The questions agents ask of their telemetry, answered from columns, cached, never stale.

`Insights` is mixed into `Engine`: the old enhanced manager's readers
(`get_actions_by_type`, `get_performance_summary`, `find_similar_embeddings`,
...) computed by `engine.analytics` over the native columns and served
through the generation-keyed query cache (`engine.querycache`): a write to a
stream invalidates exactly the cached answers that read it, in any process.
Answers over a time window ("the last 24 h") are keyed by the second they
were asked in, so a cached window is at most one second old and never misses
a write.

Embeddings are mirrored from LMDB into one `VectorIndex` on first use and
kept current through the local-only `__embeddings` stream, which every
`store_embedding` (from any process) appends the key to.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from . import codec, keys
from .models import ActionRecord, ActionType, SignatureMetrics
from .querycache import GenerationCache, stream_dep

if TYPE_CHECKING:
    from .local import LocalStore
    from .vectors import VectorIndex

EMBEDDING_LOG = "__embeddings"


def _analytics() -> Any:
    from . import analytics  # imported on first use: `import engine` stays light

    return analytics


def _freeze_records(records: list[Any]) -> bytes:
    return orjson.dumps([r.shallow_dict() for r in records], option=orjson.OPT_SERIALIZE_NUMPY)


def _thawer(cls: Any) -> Callable[[bytes], list[Any]]:
    return lambda raw: [cls.from_json_row(d) for d in orjson.loads(raw)]


class Insights:
    """Cached analytics, typed queries and vector search on top of the data API."""

    store: LocalStore
    query_cache: GenerationCache
    config: Any
    _vectors: VectorIndex | None
    _vectors_upto: int
    _vectors_lock: threading.Lock

    def _cached(self, key: Hashable, function: str, compute: Callable[[], Any], **kw: Any) -> Any:
        deps = [stream_dep(s) for s in _analytics().DEPENDENCIES[function]]
        return self.query_cache.get_or_compute((function, key), deps, compute, **kw)

    def _cached_records(self, key: Hashable, function: str, cls: Any, compute: Callable[[], Any]) -> Any:
        return self._cached(key, function, compute, freeze=_freeze_records, thaw=_thawer(cls))

    # ------------------------------------------------------------------ actions
    def get_actions_by_type(self, action_type: ActionType | str, limit: int = 100) -> list[ActionRecord]:
        """The newest `limit` actions of one type, over every row (the old layer saw the oldest 2*limit)."""
        kind = ActionType(action_type)
        return self._cached_records(  # type: ignore[no-any-return]
            (kind.value, limit),
            "actions_by_type",
            ActionRecord,
            lambda: _analytics().actions_by_type(self, kind, limit),
        )

    def get_actions_by_reward_range(
        self, min_reward: float, max_reward: float, limit: int = 100
    ) -> list[ActionRecord]:
        """The newest `limit` actions with min_reward <= reward <= max_reward, over every row."""
        return self._cached_records(  # type: ignore[no-any-return]
            (float(min_reward), float(max_reward), limit),
            "actions_by_reward_range",
            ActionRecord,
            lambda: _analytics().actions_by_reward_range(self, min_reward, max_reward, limit),
        )

    def get_recent_high_reward_actions(
        self, min_reward: float = 0.8, hours: float = 24
    ) -> list[ActionRecord]:
        """Actions with min_reward <= reward <= 1.0 in the last `hours`, newest first."""
        now = float(math.ceil(time.time()))  # an upper bound: the current second's writes count
        return self._cached_records(  # type: ignore[no-any-return]
            (float(min_reward), float(hours), now),
            "recent_high_reward_actions",
            ActionRecord,
            lambda: _analytics().recent_high_reward_actions(self, min_reward, hours, now=now),
        )

    # ------------------------------------------------------------------ signatures and verifiers
    def get_top_performing_signatures(self, limit: int = 10) -> list[SignatureMetrics]:
        """Registered signatures by performance score, best first."""
        return _analytics().top_performing_signatures(self, limit)

    def get_signature_performance_trend(self, signature_name: str, hours: float = 24) -> list[dict[str, Any]]:
        """The signature's summary rows in the window, oldest first (raw dicts, like the old layer)."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (signature_name, float(hours), now),
            "signature_trend",
            lambda: _analytics().signature_trend(self, signature_name, hours, now=now),
        )

    def get_trend_analysis(self, kind: str = "signature", hours: float = 24) -> dict[str, Any]:
        """Per signature (or verifier): slope per hour, direction, first/last values in the window."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (kind, float(hours), now),
            "trend_analysis",
            lambda: _analytics().trend_analysis(self, kind, hours, now=now),
        )

    # ------------------------------------------------------------------ summaries
    def get_performance_summary(self, hours: float = 24) -> dict[str, Any]:
        """Signature, verifier and action performance over every row in the last `hours`."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (float(hours), now),
            "performance_summary",
            lambda: _analytics().performance_summary(self, hours, now=now),
        )

    def get_learning_progress(self, sessions: int = 10) -> dict[str, Any]:
        """Current, average and trend of training/validation accuracy and loss over the newest sessions."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (int(sessions), now),
            "learning_progress",
            lambda: _analytics().learning_progress(self, sessions, now=now),
            cache_if=lambda v: "error" not in v,
        )

    def get_error_patterns(self, hours: float = 24) -> dict[str, Any]:
        """Error counts by source and level, and the most common message templates, in the window."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (float(hours), now),
            "error_patterns",
            lambda: _analytics().error_patterns(self, hours, now=now),
        )

    def get_error_counts_by_source(self, hours: float = 24) -> dict[str, int]:
        """`{source: ERROR count}` in the window (the old module-level `get_error_patterns`)."""
        now = float(int(time.time()))
        return self._cached(  # type: ignore[no-any-return]
            (float(hours), now),
            "error_counts_by_source",
            lambda: _analytics().error_counts_by_source(self, hours, now=now),
        )

    # ------------------------------------------------------------------ vectors
    def _embedding_prefix(self) -> str:
        return f"{self.config.prefix}:{keys.EMBEDDINGS}:"

    def vector_index(self) -> VectorIndex:
        """The in-memory mirror of the stored embeddings, brought up to date with every process's writes.

        The index is not thread-safe: search it under `self._vectors_lock`, as `find_similar_embeddings` does.
        """
        with self._vectors_lock:
            return self._current_vectors()

    def _current_vectors(self) -> VectorIndex:
        if self._vectors is None:
            from .vectors import VectorIndex

            index = VectorIndex()
            upto = self.store.stream_length(EMBEDDING_LOG)
            prefix = self._embedding_prefix()
            by_dim: dict[int, list[Any]] = {}
            for key, raw in self.store.kv_scan(prefix):
                if raw.startswith(codec.EMBEDDING_MAGIC):
                    header, vec = codec.split_embedding(raw)
                    by_dim.setdefault(vec.shape[0], []).append((key[len(prefix) :], vec, header))
            if by_dim:
                # one dimension per index: the most common one wins, the others cannot be searched together
                rows = max(by_dim.values(), key=len)
                index.add_batch(
                    [r[0] for r in rows],
                    np.stack([r[1] for r in rows]),
                    source_types=[r[2].get("source_type") or "" for r in rows],
                    source_paths=[r[2].get("source_path") for r in rows],
                    timestamps=[float(r[2].get("timestamp") or 0.0) for r in rows],
                )
            self._vectors, self._vectors_upto = index, upto
        self._refresh_vectors(self._vectors)
        return self._vectors

    def _mirror(self, index: VectorIndex, ident: str, raw: bytes | None) -> None:
        if raw is None or not raw.startswith(codec.EMBEDDING_MAGIC):
            index.remove(ident)
            return
        header, vec = codec.split_embedding(raw)
        index.add(
            ident,
            vec,
            source_type=header.get("source_type") or "",
            source_path=header.get("source_path"),
            timestamp=float(header.get("timestamp") or 0.0),
        )

    def _refresh_vectors(self, index: VectorIndex) -> None:
        n = self.store.stream_length(EMBEDDING_LOG)
        if n <= self._vectors_upto:
            return
        prefix = self._embedding_prefix()
        changed = dict.fromkeys(
            bytes(v).decode()
            for _, v in self.store.read(EMBEDDING_LOG, self._vectors_upto, n - self._vectors_upto)
        )
        for key in changed:
            if key.startswith(prefix):
                self._mirror(index, key[len(prefix) :], self.store.kv_get(key))
        self._vectors_upto = n

    def find_similar_embeddings(
        self, query_vector: Any, top_k: int = 10, source_type: str | None = None
    ) -> list[dict[str, Any]]:
        """The `top_k` stored embeddings most cosine-similar to `query_vector`, best first.

        Each hit is `{"id", "score", "source_type", "source_path", "chunk_start", "chunk_end", "metadata"}`.
        Exact (brute force, native): recall is that of a full scan.
        """
        where = None if source_type is None else {"source_type": source_type}
        with self._vectors_lock:
            index = self._current_vectors()
            if len(index) == 0:
                return []
            ids, scores = index.search(query_vector, k=top_k, where=where)
        prefix = self._embedding_prefix()
        out = []
        for ident, score in zip(ids, scores.tolist(), strict=True):
            raw = self.store.kv_get(prefix + ident)
            header = codec.split_embedding(raw)[0] if raw is not None else {}
            out.append(
                {
                    "id": ident,
                    "score": score,
                    "source_type": header.get("source_type"),
                    "source_path": header.get("source_path"),
                    "chunk_start": header.get("chunk_start"),
                    "chunk_end": header.get("chunk_end"),
                    "metadata": header.get("metadata"),
                }
            )
        return out
