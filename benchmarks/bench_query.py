"""Query benchmarks: the seed's query (action_type == CODE_EDIT, reward in [0.7, 1.0], newest 10 by
timestamp, plus the total count) on the same columns with our kernel and with numpy, polars and duckdb;
the full `eng.query(...).execute()` on a real store next to the old object-list approach; and the time
to build the columns of 1M stored actions.

The engine's columns carry the narrow companions engine.columns keeps for its filters (int8 codes,
float32 sketches: 5 more bytes a row here), which its filters read instead of the 12 bytes a row of the
int32/float64 columns; `test_engine_kernel_without_narrow_companions` runs without them. numpy, polars
and duckdb get the int32/float64 columns.

Sizes: ENGINE_BENCH_ROWS (default 1,000,000) rows of columns and for the column build; stores and
object lists use min(100,000, ENGINE_BENCH_ROWS).
Run: .venv/bin/python -m pytest benchmarks/bench_query.py --benchmark-only
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import orjson
import pytest

import engine
from engine import _query
from engine.columns import ZONE_ROWS, ColumnCache
from engine.local import LocalStore
from engine.models import ActionType
from engine.query import QueryBuilder

ROWS = int(os.environ.get("ENGINE_BENCH_ROWS", "1000000"))
SMALL = min(100_000, ROWS)
TYPES = [t.value for t in ActionType]
ENVS = ["development", "testing", "staging", "production", "local"]
CODE_EDIT = TYPES.index("code_edit")
LO, HI, K = 0.7, 1.0, 10


def make_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns shaped like engine.columns builds them for rl_actions (appended in time order), with the
    narrow companions it keeps for the filters (StreamColumns.narrow: int8 codes, float32 sketches)."""
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + np.arange(n) * 0.05 + rng.random(n) * 0.01
    nb = (n + ZONE_ROWS - 1) // ZONE_ROWS
    pad = np.full(nb * ZONE_ROWS, np.nan)
    pad[:n] = ts
    blocks = pad.reshape(nb, ZONE_ROWS)
    action_type, reward = rng.integers(0, len(TYPES), n).astype(np.int32), rng.random(n)
    return {
        "timestamp": ts,
        "ts_min": np.fmin.reduce(blocks, axis=1, initial=np.inf),
        "ts_max": np.fmax.reduce(blocks, axis=1, initial=-np.inf),
        "action_type": action_type,
        "action_type_i8": action_type.astype(np.int8),
        "reward": reward,
        "reward_f32": reward.astype(np.float32),
        "offset": np.arange(n, dtype=np.int64),
    }


def action_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "action_id": f"act-{i:08d}",
            "timestamp": 1.7e9 + i * 0.05,
            "action_type": TYPES[rnd.randrange(len(TYPES))],
            "state_before": {"files": ["app.py"]},
            "state_after": {"files": ["app.py"], "analyzed": True},
            "parameters": {"depth": "full"},
            "result": {"issues": 3},
            "reward": rnd.random(),
            "confidence": rnd.random(),
            "execution_time": rnd.random() * 5,
            "environment": ENVS[rnd.randrange(len(ENVS))],
            "context_hash": None,
        }
        for i in range(n)
    ]


def write_store(path: Any, n: int) -> None:
    """n actions appended with LocalStore.append in transactions of 50,000."""
    store = LocalStore(path, durable=False)
    try:
        for start in range(0, n, 50_000):
            rows = action_rows(min(50_000, n - start), seed=start)
            with store.write() as batch:
                for i, row in enumerate(rows):
                    store.append(batch, "rl_actions", orjson.dumps(row), record_id=f"act-{start + i:08d}")
    finally:
        store.close()


@pytest.fixture(scope="session")
def cols() -> dict[str, np.ndarray]:
    return make_columns(ROWS)


@pytest.fixture(scope="session")
def expected(cols):
    """The answer every implementation must give: (newest 10 row ids, total)."""
    m = (cols["action_type"] == CODE_EDIT) & (cols["reward"] >= LO) & (cols["reward"] <= HI)
    rows = np.flatnonzero(m)
    order = np.argsort(-cols["timestamp"][rows], kind="stable")[:K]
    return rows[order].tolist(), int(rows.size)


# ---------------------------------------------------------------------------- 1M columns
def kernel_query(c, zones=True, narrow=True):
    """The predicates StreamColumns.predicate() builds for the seed query (narrow=False: without the
    narrow companions, the filters read the int32 and float64 columns themselves)."""
    if narrow:
        preds = [
            ("eq", c["action_type"], CODE_EDIT, c["action_type_i8"]),
            ("range", c["reward"], LO, HI, None, c["reward_f32"]),
        ]
    else:
        preds = [("eq", c["action_type"], CODE_EDIT), ("range", c["reward"], LO, HI)]
    z = (c["ts_min"], c["ts_max"]) if zones else None
    return _query.select(c["timestamp"].shape[0], preds, c["timestamp"], True, None, 0, K, z)


def numpy_query(c):
    m = (c["action_type"] == CODE_EDIT) & (c["reward"] >= LO) & (c["reward"] <= HI)
    rows = np.flatnonzero(m)
    ts = c["timestamp"][rows]
    top = np.argpartition(-ts, K - 1)[:K] if rows.size > K else np.arange(rows.size)
    top = top[np.argsort(-ts[top], kind="stable")]
    return rows[top], rows.size


def check(got, expected):
    rows, total = got
    assert (list(map(int, rows)), int(total)) == expected


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_engine_kernel(benchmark, cols, expected):
    benchmark.extra_info.update(
        impl="engine",
        target="< 1 ms and faster than numpy masks + argpartition, polars, duckdb",
        target_max_s=1e-3,
        target_vs={"numpy": 1.0, "polars": 1.0, "duckdb": 1.0},
    )
    check(benchmark(kernel_query, cols), expected)


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_engine_kernel_without_zone_maps(benchmark, cols, expected):
    benchmark.extra_info.update(impl="engine-no-zones", target="faster than numpy masks + argpartition")
    check(benchmark(kernel_query, cols, False), expected)


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_engine_kernel_without_narrow_companions(benchmark, cols, expected):
    benchmark.extra_info.update(impl="engine-wide", target="faster than numpy masks + argpartition")
    check(benchmark(kernel_query, cols, True, False), expected)


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_numpy(benchmark, cols, expected):
    benchmark.extra_info["impl"] = "numpy"
    check(benchmark(numpy_query, cols), expected)


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_polars(benchmark, cols, expected):
    import polars as pl

    df = pl.DataFrame({k: cols[k] for k in ("timestamp", "action_type", "reward", "offset")})

    def run():
        m = df.filter((pl.col("action_type") == CODE_EDIT) & pl.col("reward").is_between(LO, HI))
        top = m.top_k(K, by="timestamp").sort("timestamp", descending=True)
        return top["offset"].to_numpy(), m.height

    benchmark.extra_info["impl"] = "polars"
    check(benchmark(run), expected)


@pytest.mark.benchmark(group="query-seed-1M-columns")
def test_duckdb(benchmark, cols, expected):
    import duckdb

    con = duckdb.connect()
    con.register("src", {k: cols[k] for k in ("timestamp", "action_type", "reward", "offset")})
    con.execute("CREATE TABLE actions AS SELECT * FROM src")  # duckdb's own columnar storage
    where = f"action_type = {CODE_EDIT} AND reward BETWEEN {LO} AND {HI}"
    page = f'SELECT "offset" FROM actions WHERE {where} ORDER BY timestamp DESC, "offset" LIMIT {K}'
    count = f"SELECT count(*) FROM actions WHERE {where}"

    def run():
        rows = [r[0] for r in con.execute(page).fetchall()]
        return rows, con.execute(count).fetchone()[0]

    benchmark.extra_info["impl"] = "duckdb"
    check(benchmark(run), expected)


# ---------------------------------------------------------------------------- 100k: store and objects
class OldAction:
    __slots__ = ("action_id", "action_type", "reward", "timestamp")

    def __init__(self, row: dict[str, Any]) -> None:
        self.action_id = row["action_id"]
        self.action_type = ActionType(row["action_type"])
        self.reward = row["reward"]
        self.timestamp = row["timestamp"]


def old_query(items: list[Any]) -> tuple[list[Any], int]:
    """The old QueryBuilder's approach: one list per getattr filter, then a full sort, then a slice."""
    out = [it for it in items if getattr(it, "action_type", None) == ActionType.CODE_EDIT]
    out = [it for it in out if LO <= getattr(it, "reward", 0) <= HI]
    out = sorted(out, key=lambda it: getattr(it, "timestamp", 0), reverse=True)
    return out[:K], len(out)


def seed_builder(b: QueryBuilder) -> QueryBuilder:
    b = b.filter_by_field("action_type", ActionType.CODE_EDIT).filter_by_range("reward", LO, HI)
    return b.sort_by_field("timestamp", reverse=True).limit(K)


@pytest.fixture(scope="session")
def rows100k():
    return action_rows(SMALL, seed=1)


@pytest.fixture(scope="session")
def expected100k(rows100k):
    hits = [r for r in rows100k if r["action_type"] == "code_edit" and LO <= r["reward"] <= HI]
    hits.sort(key=lambda r: r["timestamp"], reverse=True)
    return [r["action_id"] for r in hits[:K]], len(hits)


@pytest.fixture(scope="session")
def eng100k(tmp_path_factory, rows100k):
    path = tmp_path_factory.mktemp("bench-query-store")
    store = LocalStore(path, durable=False)
    for start in range(0, SMALL, 50_000):
        with store.write() as batch:
            for row in rows100k[start : start + 50_000]:
                store.append(batch, "rl_actions", orjson.dumps(row), record_id=row["action_id"])
    store.close()
    eng = engine.open(path, durable=False)
    eng.columns.get("rl_actions")  # build once; the benchmark measures queries on warm columns
    yield eng
    eng.close()


def ids(result):
    return [a.action_id for a in result[0]], result[1]


@pytest.mark.benchmark(group="query-seed-100k")
def test_engine_execute_on_store(benchmark, eng100k, expected100k):
    def run():
        r = seed_builder(eng100k.query("rl_actions")).execute()
        return r.data, r.total_count

    benchmark.extra_info.update(
        impl="engine", target="< 1 ms for eng.query(...).execute() on 100k actions", target_max_s=1e-3
    )
    assert ids(benchmark(run)) == expected100k


@pytest.mark.benchmark(group="query-seed-100k")
def test_engine_execute_on_objects(benchmark, rows100k, expected100k):
    objs = [OldAction(r) for r in rows100k]

    def run():
        r = seed_builder(QueryBuilder()).execute(objs)
        return r.data, r.total_count

    benchmark.extra_info.update(impl="engine-in-memory", target="about the old approach (same work)")
    assert ids(benchmark(run)) == expected100k


@pytest.mark.benchmark(group="query-seed-100k")
def test_old_querybuilder_approach(benchmark, rows100k, expected100k):
    objs = [OldAction(r) for r in rows100k]
    benchmark.extra_info["impl"] = "old-querybuilder"
    assert ids(benchmark(old_query, objs)) == expected100k


# ---------------------------------------------------------------------------- column build
@pytest.fixture(scope="session")
def store1m(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench-columns-store")
    write_store(path, ROWS)
    store = LocalStore(path, durable=False)
    yield store
    store.close()


@pytest.mark.benchmark(group="columns-build")
def test_build_columns(benchmark, store1m):
    def build():
        return ColumnCache(store1m).get("rl_actions")

    benchmark.extra_info.update(
        impl="engine", rows=ROWS, target="<= 3 us per row (3 s per 1M actions)", target_max_s=3e-6 * ROWS
    )
    cols = benchmark.pedantic(build, rounds=2, iterations=1, warmup_rounds=0)
    assert cols.n == ROWS
