"""The scan kernels (engine._query.select, engine._aggregate) against their numpy/Python reference
(engine.scan), and how engine.scan picks between them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import _aggregate as aggregates
from engine import _query as native
from engine import scan
from engine.columns import MISSING_INT, ZONE_ROWS
from engine.errors import ValidationError

# ---------------------------------------------------------------------------- kernel vs reference

# float32 sketches round: include values next to a bound, past float32's range and below its smallest
F32_EDGES = [0.7, np.nextafter(0.7, 1.0), np.nextafter(0.7, 0.0), 3.5e38, 3.4028235e38, 1e-45, 1e-50]
FLOATS = [0.0, -0.0, 0.25, 0.5, 0.5, 1.0, -3.0, np.nan, np.inf, -np.inf, 1e300, *F32_EDGES]


def zones_of(col: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    nb = (n + ZONE_ROWS - 1) // ZONE_ROWS
    pad = np.full(nb * ZONE_ROWS, np.nan)
    pad[:n] = col[:n]
    blocks = pad.reshape(nb, ZONE_ROWS)
    return np.fmin.reduce(blocks, axis=1, initial=np.inf), np.fmax.reduce(blocks, axis=1, initial=-np.inf)


@st.composite
def tables(draw, max_rows=300):
    n = draw(st.integers(0, max_rows))
    extra = draw(st.integers(0, 3))  # columns may be longer than n
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = n + extra
    f = np.array(FLOATS)[rng.integers(0, len(FLOATS), m)]
    if draw(st.booleans()):
        f = np.cumsum(rng.random(m)) if m else f  # a growing, timestamp-like column
    ints = rng.integers(-3, 4, m).astype(np.int64)
    ints[rng.random(m) < 0.2] = MISSING_INT
    codes = rng.integers(-2, 7, m).astype(np.int32)
    small = np.array([0, 1, 1, 255, 7], dtype=np.uint8)[rng.integers(0, 5, m)]
    return n, {"f": f, "i": ints, "c": codes, "b": small}


def narrow(cols, field):
    """The narrow companion engine.columns keeps: an int8 copy of codes, a float32 sketch of floats."""
    with np.errstate(over="ignore"):
        return cols[field].astype(np.int8 if field == "c" else np.float32)


def predicate(draw, cols, n):
    kind = draw(st.sampled_from(["c_in", "c_eq", "b_in", "f_range", "i_range", "f_eq", "i_eq", "missing"]))
    bounds = [-1.5, -1, 0, 0.25, 0.5, 1, 2.5, float("nan"), 1e300, *F32_EDGES]
    bound = st.one_of(st.none(), st.sampled_from(bounds))
    companion = draw(st.booleans())
    if kind in ("c_in", "c_eq"):
        code = st.lists(st.integers(-2, 8), max_size=4) if kind == "c_in" else st.integers(-1, 7)
        spec = (kind[2:], cols["c"], draw(code))
        return (*spec, narrow(cols, "c")) if companion else spec
    if kind == "b_in":
        return ("in", cols["b"], draw(st.lists(st.sampled_from([-1, 0, 1, 7]), max_size=3)))
    if kind == "f_range":
        spec = ("range", cols["f"], draw(bound), draw(bound))
        zones = zones_of(cols["f"], n) if draw(st.booleans()) else None
        return (*spec, zones, narrow(cols, "f")) if companion else (*spec, zones) if zones else spec
    if kind == "i_range":
        return ("range", cols["i"], draw(bound), draw(bound))
    if kind == "f_eq":
        value = draw(st.sampled_from([0.5, 0.0, 1e300, 0.7, 3.5e38, None]))
        spec = ("eq", cols["f"], value)
        return (*spec, narrow(cols, "f")) if companion and value is not None else spec
    if kind == "i_eq":
        return ("eq", cols["i"], draw(st.sampled_from([-1, 0, 3, None, 2.0, 2.5])))
    return ("missing", cols[draw(st.sampled_from(["f", "i", "c", "b"]))])


@st.composite
def queries(draw, max_rows=300):
    n, cols = draw(tables(max_rows))
    preds = [predicate(draw, cols, n) for _ in range(draw(st.integers(0, 3)))]
    sort = draw(st.sampled_from([None, "f", "i", "c", "b"]))
    rank = np.array(draw(st.permutations(range(5))), dtype=np.float64) if sort == "c" else None
    return dict(
        n=n,
        preds=preds,
        sort=None if sort is None else cols[sort],
        descending=draw(st.booleans()),
        sort_rank=rank,
        offset=draw(st.integers(0, 20)),
        limit=draw(st.integers(-1, 25)),
        sort_zones=zones_of(cols["f"], n) if sort == "f" and draw(st.booleans()) else None,
        threads=draw(st.integers(0, 4)),
    )


def run_both(fn_native, fn_ref, kw):
    return fn_native(**kw), fn_ref(**kw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_select_matches_reference(kw):
    (rows, total), (ref_rows, ref_total) = run_both(native.select, scan.select_reference, kw)
    assert total == ref_total
    assert rows.dtype == np.int64
    assert rows.tolist() == ref_rows.tolist()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(max_rows=5000))
def test_select_matches_reference_across_blocks(kw):
    (rows, total), (ref_rows, ref_total) = run_both(native.select, scan.select_reference, kw)
    assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.data())
def test_aggregates_match_reference(table, data):
    n, cols = table
    preds = [predicate(data.draw, cols, n) for _ in range(data.draw(st.integers(0, 2)))]
    value = data.draw(st.sampled_from([None, "f", "i", "b"]))
    vcol = None if value is None else cols[value]
    got = aggregates.aggregate(n, preds, vcol)
    ref = scan.aggregate_reference(n, preds, vcol)
    assert got[:2] == ref[:2]
    np.testing.assert_allclose(got[2:], ref[2:], rtol=1e-12, equal_nan=True)
    group = data.draw(st.sampled_from(["c", "b"]))
    ngroups = data.draw(st.integers(0, 8))
    got_by = aggregates.aggregate_by(n, preds, cols[group], ngroups, vcol)
    ref_by = scan.aggregate_by_reference(n, preds, cols[group], ngroups, vcol)
    for a, b in zip(got_by, ref_by, strict=True):
        assert a.shape == (ngroups,)
        np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)


def test_ties_follow_pythons_stable_sorted_in_both_directions():
    keys = np.array([1.0, 2.0, 1.0, 2.0, np.nan, 1.0])
    for desc in (True, False):
        rows, total = native.select(6, [], keys, desc)
        present = sorted((i for i in range(6) if not np.isnan(keys[i])), key=keys.__getitem__, reverse=desc)
        assert rows.tolist() == [*present, 4]
        assert total == 6
    assert native.select(6, [], keys, True)[0].tolist() == [1, 3, 0, 2, 5, 4]  # reverse=True keeps 1 before 3


def test_deep_pages_agree():
    rng = np.random.default_rng(7)
    n = 70_000
    col = rng.integers(0, 50, n).astype(np.float64)
    col[rng.random(n) < 0.01] = np.nan
    codes = rng.integers(0, 3, n).astype(np.int32)
    for offset, limit in ((0, -1), (60_000, 100), (10, 65_537)):
        kw = dict(n=n, preds=[("in", codes, [0, 2])], sort=col, descending=True, offset=offset, limit=limit)
        (rows, total), (ref_rows, ref_total) = run_both(native.select, scan.select_reference, kw)
        assert total == ref_total and np.array_equal(rows, ref_rows)


@pytest.mark.parametrize("keep", [0.001, 0.03, 0.2, 0.9])
def test_sparse_and_dense_filtering_agree(keep):
    rng = np.random.default_rng(11)
    n = 5 * ZONE_ROWS + 77
    first = (rng.random(n) < keep).astype(np.int32)  # code 1 on a `keep` fraction of the rows
    vals = rng.random(n)
    vals[rng.random(n) < 0.05] = np.nan
    ints = rng.integers(0, 5, n).astype(np.int64)
    preds = [
        ("eq", first, 1),
        ("range", vals, 0.1, 0.8),
        ("in", ints.astype(np.int32), [1, 3]),
        ("missing", vals),
    ]
    for k in (2, 3):
        for sort in (None, vals):
            kw = dict(n=n, preds=preds[:k], sort=sort, descending=True, offset=1, limit=40)
            (rows, total), (ref_rows, ref_total) = run_both(native.select, scan.select_reference, kw)
            assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)
    assert native.select(n, [preds[0], preds[3]])[1] == int(((first == 1) & np.isnan(vals)).sum())


def test_zone_maps_skip_blocks_without_changing_answers():
    n = 20 * ZONE_ROWS + 17
    ts = 1.7e9 + np.arange(n, dtype=np.float64)
    ts[5 * ZONE_ROWS : 6 * ZONE_ROWS] = np.nan  # an all-missing block
    zones = zones_of(ts, n)
    codes = (np.arange(n) % 9).astype(np.int32)
    since = ("range", ts, ts[n - 1] - 3000, None, zones)
    rows, total = native.select(n, [since, ("eq", codes, 1)], ts, True, None, 0, 5, zones)
    ref_rows, ref_total = scan.select_reference(n, [since[:4], ("eq", codes, 1)], ts, True, None, 0, 5)
    assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)
    assert rows.tolist()[0] == max(i for i in range(n) if i % 9 == 1)


@pytest.mark.parametrize(
    "spec",
    [
        ("between", "col"),
        ("range", "col", "a", 1),
        ("in", "f64", [1]),
        ("range", "codes", 0, 1),
        ("eq",),
    ],
)
def test_bad_predicates_raise_validation_errors(spec):
    cols = {"col": np.zeros(4), "f64": np.zeros(4), "codes": np.zeros(4, np.int32)}
    spec = tuple(cols.get(x, x) if isinstance(x, str) else x for x in spec)
    for fn in (native.select, scan.select_reference):
        with pytest.raises(ValidationError):
            fn(4, [spec])


def test_bad_columns_raise_validation_errors():
    for col in (np.zeros(3), np.zeros(10, np.float32), [1.0] * 10, np.zeros((10, 2))):
        with pytest.raises(ValidationError):
            native.select(10, [("missing", col)])
    with pytest.raises(ValidationError):
        native.select(10, [], np.zeros(10, np.int32))  # a code sort needs ranks
    with pytest.raises(ValidationError):
        native.select(2048, [("range", np.zeros(2048), 0, 1, (np.zeros(1), np.zeros(1)))])


def run_python(code: str, **env: str) -> str:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_engine_pure_selects_the_reference_kernel():
    code = (
        "import engine.query as q, engine.scan as s; import engine._query as n, engine._aggregate as a;"
        "k = s.kernel; print(k is s._Reference, k.select is n.select, k.aggregate is a.aggregate,"
        " k.aggregate_by is a.aggregate_by, q.kernel is k, q.select_reference is s.select_reference)"
    )
    assert run_python(code, ENGINE_PURE="1") == "True False False False True True"
    assert run_python(code, ENGINE_PURE="") == "False True True True True True"


@pytest.mark.parametrize("missing", ["engine._query", "engine._aggregate", "engine._filter"])
def test_a_missing_kernel_raises_native_extension_error(missing):
    # sys.modules[name] = None makes `import name` fail as if the module had not been built
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from engine.errors import NativeExtensionError\n"
        "try:\n    import engine.scan\nexcept NativeExtensionError as exc:\n    print('raised', exc)\n"
    )
    out = run_python(code, ENGINE_PURE="")
    assert out.startswith("raised the native extension engine._") and missing in out
    assert run_python(code.replace("print('raised', exc)", "raise"), ENGINE_PURE="1") == ""
