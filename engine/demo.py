"""The demo workload behind `make run`: a simulated agent session written to a local store.

Tens of thousands of actions and logs, signature and verifier updates,
training epochs and embeddings, written in batched transactions with a
progress bar; then a summary of what was written, the write throughput, and
a few reads (newest actions, top signatures, ERROR logs). Deterministic for a
given seed, so the README's sample output is reproducible.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

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
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
)
from .progress import Progress

SIGNATURES = [
    f"{kind}{i}" for kind in ("CodeAnalyzer", "TestRunner", "PatchWriter", "Planner") for i in range(9)
]
VERIFIERS = [f"{kind}{i}" for kind in ("Lint", "TypeCheck", "UnitTest") for i in range(8)]
SOURCES = ["agent.loop", "agent.tools", "agent.llm", "agent.verifier", "agent.patcher"]
LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"]


@dataclass
class DemoSizes:
    actions: int = 50_000
    logs: int = 20_000
    epochs: int = 200
    embeddings: int = 2_000
    dim: int = 384
    batch: int = 1_000


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _action(rng: random.Random, now: float, i: int, n: int) -> ActionRecord:
    sig = rng.choice(SIGNATURES)
    return ActionRecord(
        action_id=_uid(rng),
        timestamp=now - (n - i) * 1.5,
        action_type=rng.choice(list(ActionType)),
        state_before={"files": [f"src/mod{rng.randrange(50)}.py"], "step": i},
        state_after={"files": [f"src/mod{rng.randrange(50)}.py"], "step": i + 1},
        parameters={"signature_name": sig, "depth": rng.choice(["quick", "full"])},
        result={"issues": rng.randrange(6), "ok": rng.random() > 0.2},
        reward=round(rng.random(), 4),
        confidence=round(rng.uniform(0.5, 1.0), 4),
        execution_time=round(rng.expovariate(1 / 0.8), 4),
        environment=Environment.DEVELOPMENT,
        context_hash=None,
    )


def _log(rng: random.Random, now: float, i: int, n: int) -> LogEntry:
    level = rng.choice(LEVELS)
    return LogEntry(
        log_id=_uid(rng),
        timestamp=now - (n - i) * 3.0,
        level=level,
        source=rng.choice(SOURCES),
        message=f"step {i}: {'tool call failed after 3 retries' if level == 'ERROR' else 'ok'}",
        context={"step": i, "max_tokens": 4096},
        environment=Environment.DEVELOPMENT,
        session_id="demo-session",
        trace_id=None,
    )


def _signature(rng: random.Random, name: str) -> SignatureMetrics:
    return SignatureMetrics(
        signature_name=name,
        performance_score=round(rng.uniform(60, 99), 2),
        success_rate=round(rng.uniform(70, 100), 2),
        avg_response_time=round(rng.uniform(0.2, 4.0), 3),
        memory_usage=f"{rng.randrange(64, 512)}MB",
        iterations=rng.randrange(10, 500),
        last_updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
        signature_type=name.rstrip("0123456789").lower(),
    )


def _verifier(rng: random.Random, name: str) -> VerifierMetrics:
    checks = rng.randrange(100, 5000)
    return VerifierMetrics(
        verifier_name=name,
        accuracy=round(rng.uniform(80, 99.9), 2),
        status="active",
        checks_performed=checks,
        issues_found=rng.randrange(0, checks // 10),
        last_run=time.strftime("%Y-%m-%dT%H:%M:%S"),
        avg_execution_time=round(rng.uniform(0.01, 2.0), 3),
    )


def _epoch(rng: random.Random, now: float, i: int, n: int) -> TrainingMetrics:
    frac = (i + 1) / n
    return TrainingMetrics(
        session_id=f"session-{i // 10}",
        timestamp=now - (n - i) * 60.0,
        epoch=i % 10,
        training_accuracy=round(0.5 + 0.45 * frac + rng.uniform(-0.02, 0.02), 4),
        validation_accuracy=round(0.48 + 0.4 * frac + rng.uniform(-0.03, 0.03), 4),
        loss=round(1.5 * (1 - frac) + 0.1 + rng.uniform(0, 0.05), 4),
        learning_rate=0.001,
        batch_size=32,
        model_type="policy-gradient",
        environment=Environment.DEVELOPMENT,
        hyperparameters={"gamma": 0.99},
        convergence_metrics={"grad_norm": round(rng.uniform(0.1, 2.0), 3)},
    )


def run_demo(eng: Engine, sizes: DemoSizes, out: TextIO, seed: int = 7) -> dict[str, Any]:
    """Write the workload into `eng`, print the summary to `out`, and return the numbers."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    now = time.time()
    timings: dict[str, tuple[int, float]] = {}

    def timed(label: str, total: int, make: Any, write: Any) -> None:
        spent = 0.0  # time in the engine only, not in making the simulated records
        with Progress(total, label, unit="records") as bar:
            for lo in range(0, total, sizes.batch):
                chunk = [make(i) for i in range(lo, min(total, lo + sizes.batch))]
                start = time.perf_counter()
                write(chunk)
                spent += time.perf_counter() - start
                bar.advance(len(chunk))
        timings[label] = (total, spent)

    timed("actions", sizes.actions, lambda i: _action(rng, now, i, sizes.actions), eng.record_actions_batch)
    timed("logs", sizes.logs, lambda i: _log(rng, now, i, sizes.logs), eng.log_batch)

    def write_metrics(chunk: list[Any]) -> None:
        with eng.batch():
            for m in chunk:
                if isinstance(m, SignatureMetrics):
                    eng.store_signature_metrics(m)
                else:
                    eng.store_verifier_metrics(m)

    metric_updates: list[Any] = [_signature(rng, s) for s in SIGNATURES for _ in range(5)]
    metric_updates += [_verifier(rng, v) for v in VERIFIERS for _ in range(5)]
    timed("metrics", len(metric_updates), lambda i: metric_updates[i], write_metrics)

    def write_epochs(chunk: list[TrainingMetrics]) -> None:
        with eng.batch():
            for m in chunk:
                eng.store_training_metrics(m)

    timed("training epochs", sizes.epochs, lambda i: _epoch(rng, now, i, sizes.epochs), write_epochs)
    vectors = nprng.standard_normal((sizes.embeddings, sizes.dim)).astype(np.float32)
    timed(
        "embeddings",
        sizes.embeddings,
        lambda i: EmbeddingVector(
            id=f"chunk-{i}",
            vector=vectors[i],
            metadata={"lang": "python"},
            timestamp=now,
            source_type=rng.choice(["code", "documentation", "log", "context"]),
            source_path=f"src/mod{i % 50}.py",
            chunk_start=0,
            chunk_end=40,
        ),
        eng.store_embeddings_batch,
    )
    with eng.batch():
        eng.store_context_state(
            ContextState(
                context_id=_uid(rng),
                timestamp=now,
                agent_state=AgentState.EXECUTING,
                current_task="fix failing tests",
                workspace_path="/workspace/demo",
                active_files=["src/mod1.py"],
                recent_actions=[],
                memory_usage={"rss_mb": 512},
                performance_snapshot={"reward_avg": 0.5},
                environment=Environment.DEVELOPMENT,
            )
        )
        eng.store_patch_record(
            PatchRecord(
                patch_id=_uid(rng),
                timestamp=now,
                prompt_hash="abc123",
                target_files=["src/mod1.py"],
                patch_content="--- a/src/mod1.py\n+++ b/src/mod1.py\n",
                applied=True,
                test_results={"passed": 41, "failed": 0},
                confidence_score=0.9,
                blast_radius=0.1,
                rollback_info=None,
                environment=Environment.DEVELOPMENT,
            )
        )
        eng.store_system_health({"status": "healthy", "cpu": 0.4})
    return _summarise(eng, timings, out, vectors[42])


def _summarise(
    eng: Engine, timings: dict[str, tuple[int, float]], out: TextIO, probe: np.ndarray
) -> dict[str, Any]:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p()
    p(f"Store: {eng.store.path}  (durable={eng.config.durable})")
    p("Wrote:")
    total_n, total_s = 0, 0.0
    for label, (n, secs) in timings.items():
        total_n += n
        total_s += secs
        p(f"  {label:<16} {n:>8,} records in {secs:6.2f} s  = {n / secs:>10,.0f} records/s")
    p(f"  {'total':<16} {total_n:>8,} records in {total_s:6.2f} s  = {total_n / total_s:>10,.0f} records/s")
    p()
    t0 = time.perf_counter()
    recent = eng.get_recent_actions(5)
    t_recent = time.perf_counter() - t0
    p(f"Newest 5 actions ({t_recent * 1e6:,.0f} us):")
    for a in recent:
        p(
            f"  {time.strftime('%H:%M:%S', time.localtime(a.timestamp))}  {a.action_type.value:<17}"
            f" reward={a.reward:.3f}  signature={a.parameters.get('signature_name')}"
        )
    t0 = time.perf_counter()
    top = sorted(eng.get_all_signature_metrics(), key=lambda m: m.performance_score, reverse=True)[:5]
    t_top = time.perf_counter() - t0
    p(f"Top 5 signatures by performance score ({t_top * 1e3:,.1f} ms):")
    for m in top:
        p(f"  {m.signature_name:<16} score={m.performance_score:6.2f}  success={m.success_rate:6.2f}%")
    t0 = time.perf_counter()
    errors = eng.get_recent_logs(level="ERROR", limit=3)
    t_err = time.perf_counter() - t0
    p(f"Newest 3 ERROR logs ({t_err * 1e3:,.1f} ms):")
    for e in errors:
        p(f"  {time.strftime('%H:%M:%S', time.localtime(e.timestamp))}  {e.source:<15} {e.message}")
    t0 = time.perf_counter()
    best = (
        eng.query("rl_actions")
        .filter_by_field("action_type", ActionType.CODE_EDIT)
        .filter_by_range("reward", 0.9, 1.0)
        .since(hours=24)
        .sort_by_field("reward", reverse=True)
        .limit(3)
        .execute()
    )
    t_query = time.perf_counter() - t0
    p(
        f"High-reward CODE_EDIT actions in the last 24 h: {best.total_count:,}"
        f" (top 3 in {t_query * 1e3:,.1f} ms, columns built on first use):"
    )
    for a in best.data:
        p(f"  reward={a.reward:.4f}  signature={a.parameters.get('signature_name')}")
    t0 = time.perf_counter()
    summary = eng.get_performance_summary(24)
    t_cold = time.perf_counter() - t0
    t_warm = float("inf")
    for _ in range(3):  # answers are keyed by the second they are asked in: take the best of three
        t0 = time.perf_counter()
        eng.get_performance_summary(24)
        t_warm = min(t_warm, time.perf_counter() - t0)
    ap = summary["action_performance"]
    p(
        f"Performance summary, 24 h ({t_cold * 1e3:,.1f} ms cold, {t_warm * 1e6:,.0f} us cached):"
        f" {ap['total_actions']:,} actions, avg reward {ap['avg_reward']:.3f},"
        f" {summary['signature_performance']['total_signatures']} signatures"
    )
    t0 = time.perf_counter()
    similar = eng.find_similar_embeddings(probe, top_k=3)
    t_sim = time.perf_counter() - t0
    p(f"Chunks most similar to chunk-42's vector ({t_sim * 1e3:,.1f} ms, including loading the index):")
    for hit in similar:
        p(f"  {hit['id']:<12} score={hit['score']:.4f}  {hit['source_type']:<14} {hit['source_path']}")
    counts = eng.stream_counts()
    p("Rows per stream: " + ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
    return {"timings": timings, "counts": counts, "recent": recent, "top": top, "errors": errors}
