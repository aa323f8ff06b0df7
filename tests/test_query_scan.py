"""The query kernel's scan strategies against the reference: the thread split (per-thread heaps behind
a floor, merged), ties at the floor, and the narrow companions (int8 codes, float32 sketches) that
engine.columns keeps and the filters (engine._filter) read instead of the full columns."""

from __future__ import annotations

import numpy as np
import pytest

from engine import _aggregate as aggregates
from engine import _query as native
from engine import scan
from engine.columns import ZONE_ROWS
from engine.errors import ConfigError, ValidationError

from .test_scan import zones_of

N = 70 * ZONE_ROWS + 333  # enough chunks that every thread of 4 gets some


def table(seed: int = 0, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # timestamps in runs of equal values that cross chunk borders: ties everywhere, also at the floor
    ts = 1.7e9 + np.repeat(np.arange(n // 700 + 1, dtype=np.float64), 700)[:n]
    ts[rng.random(n) < 0.01] = np.nan
    codes = rng.integers(-1, 9, n).astype(np.int32)
    reward = rng.random(n)
    reward[rng.random(n) < 0.02] = 0.7  # exactly on the bound
    return {"ts": ts, "codes": codes, "reward": reward}


def preds_of(c: dict[str, np.ndarray], narrow: bool) -> list[tuple]:
    if not narrow:
        return [("eq", c["codes"], 1), ("range", c["reward"], 0.7, 1.0)]
    return [
        ("eq", c["codes"], 1, c["codes"].astype(np.int8)),
        ("range", c["reward"], 0.7, 1.0, None, c["reward"].astype(np.float32)),
    ]


def ref(n, preds, *args):
    plain = [p[:3] if p[0] == "eq" else p[:4] for p in preds]
    return scan.select_reference(n, plain, *args)


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("desc", [True, False])
@pytest.mark.parametrize("offset,limit", [(0, 10), (3, 700), (0, 0), (0, -1), (5000, 40)])
def test_every_thread_count_gives_the_reference_page(narrow, desc, offset, limit):
    c = table()
    preds = preds_of(c, narrow)
    want = ref(N, preds, c["ts"], desc, None, offset, limit)
    for zones in (None, zones_of(c["ts"], N)):
        for threads in (1, 2, 3, 4):
            rows, total = native.select(N, preds, c["ts"], desc, None, offset, limit, zones, threads=threads)
            assert (rows.tolist(), total) == (want[0].tolist(), want[1]), (zones is None, threads)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_unsorted_pages_and_counts_split_over_threads(threads):
    c = table(1)
    preds = preds_of(c, True)
    for offset, limit in ((0, 25), (10, 3000), (0, -1), (N, 5)):
        rows, total = native.select(N, preds, None, False, None, offset, limit, threads=threads)
        want = ref(N, preds, None, False, None, offset, limit)
        assert (rows.tolist(), total) == (want[0].tolist(), want[1])
    got, want = aggregates.aggregate(N, preds, threads=threads), scan.aggregate_reference(N, preds)
    assert got[:3] == want[:3] and np.isnan(got[3:]).all() and np.isnan(want[3:]).all()


def test_ties_at_the_floor_keep_the_lowest_rows():
    """Every row has the same key: the page is the first rows in offset order for any split, although
    the heap fills from the last chunks and every later chunk only ties the floor."""
    n = 40 * ZONE_ROWS
    ts = np.full(n, 5.0)
    zones = zones_of(ts, n)
    for threads in (1, 2, 4):
        for desc in (True, False):
            rows, total = native.select(n, [], ts, desc, None, 0, 7, zones, threads=threads)
            assert rows.tolist() == list(range(7)) and total == n
    # a newest-first sort on a column that grows, with a run of ties across the newest block border:
    ts = np.arange(n, dtype=np.float64)
    ts[n - ZONE_ROWS - 50 :] = ts[n - ZONE_ROWS - 50]  # the last block and 50 rows before it tie
    for threads in (1, 2, 4):
        rows, _ = native.select(n, [], ts, True, None, 0, 60, zones_of(ts, n), threads=threads)
        assert rows.tolist() == list(range(n - ZONE_ROWS - 50, n - ZONE_ROWS + 10))


def test_float32_sketch_decides_only_away_from_the_bounds():
    lo = 0.7
    vals = np.array(
        [lo, np.nextafter(lo, 0), np.nextafter(lo, 1), float(np.float32(lo)), 1e300, -1e300, 3.5e38,
         3.4028235e38, np.inf, -np.inf, np.nan, 1e-45, 1e-50, -0.0, 0.0]
    )  # fmt: skip
    col = np.tile(vals, 80)  # > one chunk
    n = col.shape[0]
    with np.errstate(over="ignore"):
        sketch = col.astype(np.float32)
    bounds = [None, lo, np.nextafter(lo, 0), 1e300, 3.5e38, 3.4028235e38, 1e-45, 0.0, -0.0, -np.inf, np.inf]
    for b_lo in bounds:
        for b_hi in bounds:
            got = native.select(n, [("range", col, b_lo, b_hi, None, sketch)])
            want = scan.select_reference(n, [("range", col, b_lo, b_hi)])
            assert (got[0].tolist(), got[1]) == (want[0].tolist(), want[1]), (b_lo, b_hi)
        got = native.select(n, [("eq", col, b_lo, sketch)]) if b_lo is not None else None
        if got is not None:
            want = scan.select_reference(n, [("eq", col, b_lo)])
            assert got[1] == want[1]


def test_int8_codes_match_their_int32_column():
    rng = np.random.default_rng(3)
    codes = rng.integers(-2, 127, 3 * ZONE_ROWS).astype(np.int32)
    small = codes.astype(np.int8)
    n = codes.shape[0]
    for spec in ([126], [127], [300], [-1], [-2], [0, 5, 126], [-1, 3], [], [128, 1]):
        for op in ("in", "eq") if len(spec) == 1 else ("in",):
            value = spec[0] if op == "eq" else spec
            got = native.select(n, [(op, codes, value, small)])
            want = scan.select_reference(n, [(op, codes, value)])
            assert (got[0].tolist(), got[1]) == (want[0].tolist(), want[1]), (op, value)


@pytest.mark.parametrize(
    "spec",
    [
        ("eq", "codes", 1, "f32"),
        ("eq", "codes", 1, "short8"),
        ("in", "codes", [1], [1, 2]),
        ("range", "f64", 0, 1, None, "i8"),
        ("range", "f64", 0, 1, None, "short32"),
        ("range", "i64", 0, 1, None, "f32"),
        ("eq", "f64", None, "f32"),
        ("in", "u8", [1], "i8"),
        ("range", "f64", float("nan"), 1, None, "i8"),
    ],
)
def test_bad_companions_raise_validation_errors(spec):
    arrays = {
        "codes": np.zeros(8, np.int32),
        "f64": np.zeros(8),
        "i64": np.zeros(8, np.int64),
        "u8": np.zeros(8, np.uint8),
        "f32": np.zeros(8, np.float32),
        "i8": np.zeros(8, np.int8),
        "short8": np.zeros(4, np.int8),
        "short32": np.zeros(4, np.float32),
    }
    spec = tuple(arrays.get(x, x) if isinstance(x, str) else x for x in spec)
    for fn in (native.select, scan.select_reference):
        with pytest.raises(ValidationError):
            fn(8, [spec])


def test_threads_come_from_engine_threads(monkeypatch):
    monkeypatch.delenv("ENGINE_THREADS", raising=False)
    assert native.default_threads() == 1
    monkeypatch.setenv("ENGINE_THREADS", "3")
    assert native.default_threads() == 3
    c = table(2)
    want = ref(N, preds_of(c, True), c["ts"], True, None, 0, 10)
    got = native.select(N, preds_of(c, True), c["ts"], True, None, 0, 10)
    assert (got[0].tolist(), got[1]) == (want[0].tolist(), want[1])
    for bad in ("0", "two"):
        monkeypatch.setenv("ENGINE_THREADS", bad)
        with pytest.raises(ConfigError):
            native.select(N, [], threads=0)
        assert native.select(10, [], threads=1)[1] == 10  # explicit threads do not read it
