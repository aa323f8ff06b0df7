"""Analytics benchmarks: performance_summary, learning_progress and error_patterns over real stores.

Each store holds N rows of rl_actions, system_logs and training_history (N = 100,000 and
ENGINE_BENCH_ANALYTICS_ROWS, default 1,000,000) plus N/100 rows of each metric stream, stamped over
the last 48 hours in append order (a 24 h window covers about half of every stream). Stores are
built once per module with eng.store.append in 100,000-row transactions, and their columns are
built before timing.

"cold" = engine.analytics called directly (columns built, no query cache), next to the same
computation in plain numpy on the same columns (impl "numpy"; error patterns decode and template
the same rows in both). "cached" = `eng.get_performance_summary(24)` through the generation-keyed
query cache of engine.insights. "all rows" = a window (72 h) that covers every row: the worst case.
Run: .venv/bin/python -m pytest benchmarks/bench_analytics.py --benchmark-only
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

import engine
from engine import analytics, keys
from engine.columns import MISSING_INT

ROWS = int(os.environ.get("ENGINE_BENCH_ANALYTICS_ROWS", "1000000"))
SIZES = sorted({min(100_000, ROWS), ROWS})
NOW = float(int(time.time()))
SPAN_H = 48.0
BATCH = 100_000
TYPES = ["code_analysis", "code_edit", "file_search", "test_execution", "verification"]
LEVELS = ["INFO"] * 85 + ["WARNING"] * 8 + ["ERROR"] * 5 + ["CRITICAL"] * 2
MESSAGES = [
    "step {n}: tool call failed",
    "request {u} timed out after {n} ms",
    "patch {n} rejected: {n} hunks do not apply",
    "verifier {n} crashed with exit code {n}",
    "retrieval returned {n} hits for query {u}",
]


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# ---------------------------------------------------------------------------- stores
def _rows(stream: str, start: int, stop: int, total: int) -> list[dict[str, Any]]:
    """Rows [start, stop) of a `total`-row stream, stamped evenly (with jitter) over the last SPAN_H."""
    r = random.Random(f"{stream}-{start}").random
    step = SPAN_H * 3600 / total
    ts = [(i, NOW - SPAN_H * 3600 + (i + r()) * step) for i in range(start, stop)]
    if stream == keys.RL_ACTIONS:
        return [
            {
                "action_id": f"a{i}",
                "timestamp": t,
                "action_type": TYPES[i % len(TYPES)],
                "state_before": {},
                "state_after": {},
                "parameters": {"i": i},
                "result": {},
                "reward": r(),
                "confidence": r(),
                "execution_time": r() * 3,
                "environment": "development",
                "context_hash": None,
            }
            for i, t in ts
        ]
    if stream == keys.SYSTEM_LOGS:
        return [
            {
                "log_id": f"l{i}",
                "timestamp": t,
                "level": LEVELS[int(r() * len(LEVELS))],
                "source": f"src{i % 12}",
                "message": MESSAGES[i % len(MESSAGES)].format(
                    n=i % 977, u=f"{i:08x}-0000-4000-8000-{i:012x}"
                ),
                "context": {},
                "environment": "development",
            }
            for i, t in ts
        ]
    if stream == keys.TRAINING_HISTORY:
        return [
            {
                "session_id": f"s{i // 50}",
                "timestamp": t,
                "epoch": i % 50,
                "training_accuracy": r(),
                "validation_accuracy": r(),
                "loss": r() * 2,
                "learning_rate": 0.001,
                "batch_size": 32,
                "model_type": "dspy",
                "environment": "development",
                "hyperparameters": {},
                "convergence_metrics": {},
            }
            for i, t in ts
        ]
    if stream == keys.SIGNATURE_METRICS:
        return [
            {
                "signature_name": f"sig{i % 50}",
                "performance_score": r(),
                "success_rate": r(),
                "avg_response_time": r(),
                "timestamp": t,
            }
            for i, t in ts
        ]
    return [
        {
            "verifier_name": f"ver{i % 10}",
            "accuracy": r(),
            "checks_performed": i % 100,
            "issues_found": i % 7,
            "timestamp": t,
        }
        for i, t in ts
    ]


def build(path: Any, n: int) -> Any:
    eng = engine.open(path, auto_migrate=False, durable=False)
    sizes = {
        keys.RL_ACTIONS: n,
        keys.SYSTEM_LOGS: n,
        keys.TRAINING_HISTORY: n,
        keys.SIGNATURE_METRICS: max(1000, n // 100),
        keys.VERIFIER_METRICS: max(1000, n // 100),
    }
    for stream, count in sizes.items():
        for start in range(0, count, BATCH):
            rows = [orjson.dumps(row) for row in _rows(stream, start, min(count, start + BATCH), count)]
            with eng.store.write() as b:
                for row in rows:
                    eng.store.append(b, stream, row)
        assert eng.columns.get(stream).n == count  # columns built before anything is timed
    return eng


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    built: dict[int, Any] = {}

    def get(n: int) -> Any:
        if n not in built:
            built[n] = build(tmp_path_factory.mktemp(f"analytics-{label(n)}"), n)
        return built[n]

    yield get
    for eng in built.values():
        eng.close()


# ---------------------------------------------------------------------------- numpy baselines
def _mean(col: np.ndarray, mask: np.ndarray) -> float:
    v = col[mask]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else 0.0


def _int_sum(col: np.ndarray, mask: np.ndarray) -> int:
    v = col[mask]
    return int(v[v != MISSING_INT].sum())


def numpy_summary(eng: Any, hours: float, now: float) -> dict[str, Any]:
    cutoff = now - hours * 3600
    sig, ver, act = (
        eng.columns.get(s) for s in (keys.SIGNATURE_METRICS, keys.VERIFIER_METRICS, keys.RL_ACTIONS)
    )
    ms, mv, ma = (c.column("timestamp") >= cutoff for c in (sig, ver, act))
    names = sig.column("signature_name")[ms]
    return {
        "time_range_hours": hours,
        "signature_performance": {
            "avg_score": _mean(sig.column("performance_score"), ms),
            "avg_response_time": _mean(sig.column("avg_response_time"), ms),
            "total_signatures": int(np.count_nonzero(np.bincount(names[names >= 0], minlength=1))),
        },
        "verifier_performance": {
            "avg_accuracy": _mean(ver.column("accuracy"), mv),
            "total_checks": _int_sum(ver.column("checks_performed"), mv),
            "total_issues": _int_sum(ver.column("issues_found"), mv),
        },
        "action_performance": {
            "total_actions": int(np.count_nonzero(ma)),
            "avg_reward": _mean(act.column("reward"), ma),
            "avg_confidence": _mean(act.column("confidence"), ma),
            "avg_execution_time": _mean(act.column("execution_time"), ma),
        },
        "timestamp": now,
    }


def numpy_progress(eng: Any, sessions: int, now: float) -> dict[str, Any]:
    cols = eng.columns.get(keys.TRAINING_HISTORY)
    k = min(sessions, cols.n)
    out: dict[str, Any] = {}
    for field in ("training_accuracy", "validation_accuracy", "loss"):
        y = cols.column(field)[cols.n - k :]
        x = np.flatnonzero(~np.isnan(y)).astype(np.float64)
        y = y[~np.isnan(y)]
        xc = x - x.mean()
        slope = float(xc @ (y - y.mean()) / (xc @ xc)) if x.size > 1 else 0.0
        change, mean = slope * float(x[-1] - x[0]), float(y.mean())
        good = change > 0 if field != "loss" else change < 0
        trend = "stable" if abs(change) <= 0.01 * abs(mean) else "improving" if good else "declining"
        out[field] = {"current": float(y[-1]), "avg": mean, "trend": trend, "slope": slope}
    return {**out, "sessions_analyzed": k, "timestamp": now}


def numpy_errors(eng: Any, hours: float, now: float) -> dict[str, Any]:
    cols = eng.columns.get(keys.SYSTEM_LOGS)
    window = cols.column("timestamp") >= now - hours * 3600
    names = np.array([c.strip().upper() for c in cols.categories("level")])
    level = cols.column("level")
    per_level = np.bincount(level[window & (level >= 0)], minlength=names.size)
    by_level = {lvl: int(per_level[names == lvl].sum()) for lvl in ("CRITICAL", "ERROR", "WARNING")}
    errors = window & np.isin(level, np.flatnonzero(np.isin(names, ["CRITICAL", "ERROR"])))
    src = cols.column("source")[errors]
    per_source = np.bincount(src[src >= 0], minlength=cols.ncodes("source"))
    cats = cols.categories("source")
    by_source = dict(
        sorted(
            ((cats[c], int(per_source[c])) for c in np.flatnonzero(per_source)),
            key=lambda kv: (-kv[1], kv[0]),
        )
    )
    idx = np.flatnonzero(errors)
    found: dict[str, list[Any]] = {}
    memo: dict[str, str] = {}
    for row, ts in zip(
        eng.columns.rows(keys.SYSTEM_LOGS, idx.tolist()), cols.column("timestamp")[idx].tolist(), strict=True
    ):
        msg = row["message"]
        t = memo.get(msg) or memo.setdefault(msg, analytics.message_template(msg))
        p = found.setdefault(t, [0, ts, ts, row["log_id"]])
        p[0] += 1
        p[1] = min(p[1], ts)
        if ts >= p[2]:
            p[2], p[3] = ts, row["log_id"]
    ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[1][1], kv[0]))[: analytics.PATTERN_LIMIT]
    return {
        "time_range_hours": hours,
        "total_errors": int(errors.sum()),
        "by_level": by_level,
        "by_source": by_source,
        "patterns": [
            {"template": t, "count": c, "first_seen": f, "last_seen": last, "example_log_id": lid}
            for t, (c, f, last, lid) in ranked
        ],
        "timestamp": now,
    }


def same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 relative (numpy and the engine sum in different orders)."""
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


# ---------------------------------------------------------------------------- benchmarks
def run(benchmark: Any, eng: Any, impl: str, fn: Callable[..., Any], *args: Any, **info: Any) -> Any:
    benchmark.extra_info.update(impl=impl, **info)
    return benchmark(fn, eng, *args, now=NOW)


@pytest.mark.parametrize("n", SIZES, ids=label)
@pytest.mark.parametrize("impl", ["engine", "numpy"])
def test_performance_summary(benchmark, stores, n, impl):
    eng = stores(n)
    benchmark.group = f"analytics-summary-{label(n)}"
    ts = eng.columns.get(keys.RL_ACTIONS).column("timestamp")
    info: dict[str, Any] = {"rows": n, "window_rows": int(np.count_nonzero(ts >= NOW - 24 * 3600))}
    if impl == "engine" and n == SIZES[-1]:
        info.update(target="<20 ms cold", target_max_s=0.02)
    elif impl == "engine":
        info.update(target="faster than numpy", target_vs={"numpy": 1.0})
    got = run(
        benchmark, eng, impl, analytics.performance_summary if impl == "engine" else numpy_summary, 24, **info
    )
    assert same(got, numpy_summary(eng, 24, NOW)) and got["action_performance"]["total_actions"] > n // 3


@pytest.mark.parametrize("impl", ["engine", "numpy"])
def test_performance_summary_all_rows(benchmark, stores, impl):
    eng = stores(SIZES[-1])
    benchmark.group = f"analytics-summary-{label(SIZES[-1])}-all-rows"
    info: dict[str, Any] = {"rows": SIZES[-1]}
    if impl == "engine":
        info.update(target="<20 ms cold with every row in the window", target_max_s=0.02)
    got = run(
        benchmark, eng, impl, analytics.performance_summary if impl == "engine" else numpy_summary, 72, **info
    )
    assert same(got, numpy_summary(eng, 72, NOW)) and got["action_performance"]["total_actions"] == SIZES[-1]


def test_performance_summary_cached(benchmark, stores):
    eng = stores(SIZES[-1])
    benchmark.group = f"analytics-summary-{label(SIZES[-1])}-cached"
    if not hasattr(eng, "get_performance_summary"):
        pytest.fail("Engine has no get_performance_summary: engine.insights is not wired into Engine yet")
    benchmark.extra_info.update(
        impl="engine", rows=SIZES[-1], target="< 0.1 ms from the query cache", target_max_s=1e-4
    )
    first = eng.get_performance_summary(24)
    got = benchmark(eng.get_performance_summary, 24)
    assert got["action_performance"]["total_actions"] >= first["action_performance"]["total_actions"] > 0


@pytest.mark.parametrize("n", SIZES, ids=label)
@pytest.mark.parametrize("impl", ["engine", "numpy"])
def test_learning_progress(benchmark, stores, n, impl):
    eng = stores(n)
    benchmark.group = f"analytics-progress-{label(n)}"
    info: dict[str, Any] = {"rows": n}
    if impl == "engine":
        info.update(target="< 1 ms: reads the newest 10 rows of the columns", target_max_s=1e-3)
    got = run(
        benchmark, eng, impl, analytics.learning_progress if impl == "engine" else numpy_progress, 10, **info
    )
    assert same(got, numpy_progress(eng, 10, NOW)) and got["sessions_analyzed"] == 10


@pytest.mark.parametrize("n", SIZES, ids=label)
@pytest.mark.parametrize("impl", ["engine", "numpy"])
def test_error_patterns(benchmark, stores, n, impl):
    eng = stores(n)
    benchmark.group = f"analytics-errors-{label(n)}"
    info: dict[str, Any] = {"rows": n}
    if impl == "engine":
        info.update(target="no slower than numpy (both decode the window's errors)", target_vs={"numpy": 1.0})
    fn = analytics.error_patterns if impl == "engine" else numpy_errors
    fn(eng, 24, now=NOW)  # untimed: whichever runs first would also pay for the first reads of the log rows
    got = run(benchmark, eng, impl, fn, 24, **info)
    assert same(got, numpy_errors(eng, 24, NOW)) and got["total_errors"] > n // 40
