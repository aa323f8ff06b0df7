"""The int8 prefilter of single searches: exact, whatever the data.

`candidates` must return a superset of the full scan's top-k (and of every
row tied with it), so that rescoring the candidates gives the full scan's
answer bit for bit: the same rows in the same order with the same scores.
Data is generated to break the bound: duplicates, near-ties, dims 1..100
(the AVX2 loop's 64- and 32-byte steps and the scalar tail), one huge
component, zero-ish components, rows of any scale, everything masked, k
larger than the live rows. Each term of the bracket has a case it alone
covers (a query along the quantisation error, a query error along the
codes, rows whose double additions all round one way at dim 4096), and the
widest vectors bracketed (MAX_DIM, the int32 edge) are checked too. The int8
copy kept by VectorIndex is checked against a fresh quantisation after every
kind of write.
"""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import vectors
from engine.errors import DimensionError, ValidationError
from engine.vectors import VectorIndex, reference_quantise

# the compiled kernels, even under ENGINE_PURE=1
prefilter = importlib.import_module("engine._prefilter")
scan = importlib.import_module("engine._vectors")


def quantised(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.empty(matrix.shape, np.int8)
    stats = np.empty((matrix.shape[0], 3), np.float32)
    prefilter.quantise(matrix, codes, stats, threads=2)
    return codes, stats


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def check_exact(matrix, codes, stats, q, k, mask=None, **kwargs):
    """The prefiltered answer, when there is one, is the full scan's; returns the candidates."""
    full_rows, full_scores = scan.topk(matrix, q, k, mask)
    cand = prefilter.candidates(codes, stats, q, k, mask, **kwargs)
    if cand is None:
        return None
    assert cand.dtype == np.int64 and np.all(np.diff(cand) > 0)
    if mask is not None:
        assert mask[cand].all()
    if kwargs.get("max_candidates", 0) > 0:
        assert len(cand) <= kwargs["max_candidates"]
    rows, scores = scan.topk(matrix, q, k, rows=cand)
    np.testing.assert_array_equal(rows, full_rows)
    np.testing.assert_array_equal(scores, full_scores)
    # stronger: every row scoring at least the k-th best (ties included) is a candidate
    eligible = np.arange(len(matrix)) if mask is None else np.flatnonzero(mask)
    every_rows, every_scores = scan.topk(matrix, q, len(matrix), rows=eligible)
    assert set(every_rows[every_scores >= full_scores[-1]].tolist()) <= set(cand.tolist())
    return cand


# -- quantisation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 3, 31, 32, 33, 64, 95, 96, 97, 384])
def test_quantise_matches_the_numpy_reference(dim):
    rng = np.random.default_rng(dim)
    matrix = unit_rows(rng, 300, dim)
    matrix[0] = 0  # a zero row: scale 0, codes 0, bounds ~0
    matrix[1] = 0
    matrix[1, -1] = 1  # one component: the only error is s = 1/127 rounded to float32
    codes, stats = quantised(matrix)
    ref_codes = np.empty_like(codes)
    ref_stats = np.empty_like(stats)
    reference_quantise(matrix, ref_codes, ref_stats)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(stats[:, 0], ref_stats[:, 0])
    # the bounds are summed in another order: at most one float32 step apart
    gap = np.abs(stats[:, 1:] - ref_stats[:, 1:])
    assert np.all(gap <= np.spacing(np.maximum(stats[:, 1:], ref_stats[:, 1:])))
    assert np.abs(codes.astype(int)).max() <= 127 and np.abs(codes.astype(int)).max(axis=1)[2:].min() == 127
    assert stats[0, 0] == 0 and np.all(stats[0, 1:] < 1e-29) and codes[0].tolist() == [0] * dim
    assert codes[1, -1] == 127 and stats[1, 1] < 1e-8


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 12)),
        elements=st.floats(-1e4, 1e4, width=32) | st.sampled_from([0.0, 1e-30, -3e-39, 1.0]),
    )
)
def test_quantisation_bounds_hold_in_exact_arithmetic(matrix):
    codes, stats = quantised(matrix)
    for x, c, (s, en, cn) in zip(matrix.tolist(), codes.tolist(), stats.tolist(), strict=True):
        s = Fraction(s)
        err2 = sum((Fraction(xi) - s * ci) ** 2 for xi, ci in zip(x, c, strict=True))
        # the slack of 2^-25 absorbs the double rounding of the query's norms (module note)
        slack = (1 + Fraction(1, 2**25)) ** 2
        assert Fraction(en) ** 2 >= err2 * slack
        assert Fraction(cn) ** 2 >= s * s * sum(ci * ci for ci in c) * slack
        if s >= Fraction(float(np.finfo(np.float32).tiny)):  # a subnormal scale has few digits
            # each component within half a step, plus the float32 rounding of s (127 * 2^-24)
            assert all(
                abs(Fraction(xi) - s * ci) <= s * Fraction(50001, 100000) for xi, ci in zip(x, c, strict=True)
            )


# -- the bracket: lower <= the kernel's score <= upper, tight where each term matters ----------------


def check_bracket(matrix: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row's full-scan score lies in its bounds; returns (lower, score, upper)."""
    codes, stats = quantised(matrix)
    lower, upper = prefilter.score_bounds(codes, stats, q)
    rows, found = scan.topk(matrix, q, len(matrix), threads=1)
    score = np.empty(len(matrix))
    score[rows] = found
    assert np.all(lower <= score), np.max(score - lower)
    assert np.all(score <= upper), np.max(score - upper)
    return lower, score, upper


def exact_grid(rng: np.random.Generator, n: int, dim: int, constant: bool = False) -> np.ndarray:
    """Rows s c, s with 17 significant bits, max |c| = 127: the int8 copy is exact (e = 0).

    constant: every code 127 (the same product in every addition of a row's score).
    """
    c = np.full((n, dim), 127) if constant else rng.integers(-127, 128, (n, dim))
    c[:, 0] = 127
    s = np.ldexp(rng.integers(2**16, 2**17, n).astype(np.float64), -rng.integers(20, 30, n))
    return (s[:, None] * c).astype(np.float32)  # s c has at most 24 bits: exact in float32


def grid_case(matrix: np.ndarray, q: np.ndarray):
    """For exact-grid rows and query: (lower, score, upper, exact score, ||q|| ||x||) per row."""
    codes, stats = quantised(matrix)
    qcodes, qstats = quantised(q[None, :])
    assert np.all(stats[:, 1] < 1e-29) and qstats[0, 1] < 1e-29  # e = 0 and f = 0
    dots = codes.astype(np.int64) @ qcodes[0].astype(np.int64)
    t = Fraction(float(qstats[0, 0]))
    exact = [Fraction(float(s)) * t * int(d) for s, d in zip(stats[:, 0], dots, strict=True)]
    lower, score, upper = check_bracket(matrix, q)
    kernel_err = np.array([float(Fraction(float(v)) - x) for v, x in zip(score, exact, strict=True)])
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1) * np.linalg.norm(q.astype(np.float64))
    return lower, score, upper, score - kernel_err, kernel_err / norms, norms


U = 2.0**-53  # double unit roundoff: the kernel accumulates in double


def test_bracket_covers_the_rounding_of_the_scan():
    # rows and query quantise exactly (e = f = 0): A is the exact dot product up to its own two
    # roundings, and only the kernel's additions separate the score from it. With every code
    # 127 at dim 4096, each of a row's 16 running sums adds one product 256 times, and once a
    # sum passes 2^53 units of that product every addition rounds the same way: the kernel's
    # error alone, up to ~64 u ||q|| ||x||, is then several times what rel holds besides the
    # kernel's gamma_m (16 u), so dropping or shrinking that term breaks the bracket here
    rng = np.random.default_rng(7)
    dim = 4096
    matrix = exact_grid(rng, 300, dim, constant=True)
    q = exact_grid(rng, 1, dim, constant=True)[0]
    lower, _, upper, exact, kernel_err, norms = grid_case(matrix, q)
    assert np.count_nonzero(kernel_err) > 50  # the scan does round (when s t has enough bits)
    assert np.min(kernel_err) < -32 * U  # 2x what the rest of rel (16 u) would cover below A
    rel = dim // 16 + 32  # gamma_{m+16}, m = dim/16 + 16, in units of u
    assert np.all(exact - lower <= (rel + 4) * U * norms)  # the lower side is rel wide, no more
    assert np.all(upper - exact <= 2.0**-22 * np.abs(exact) + (rel + 4) * U * norms)  # float32 up


def test_bracket_is_tight_on_ordinary_grids():
    # random codes at dim 384: partial sums stay within 53 bits, the scan is exact, and the
    # bracket is exactly rel = gamma_{dim/16 + 32} wide below (2^-40 here would be 140x wider)
    rng = np.random.default_rng(8)
    matrix = exact_grid(rng, 2000, 384)
    q = exact_grid(rng, 1, 384)[0]
    lower, _, _, exact, kernel_err, norms = grid_case(matrix, q)
    assert np.all(np.abs(kernel_err) <= 4 * U)
    rel = 384 // 16 + 32
    assert np.all(exact - lower <= (rel + 4) * U * norms)
    assert np.all(exact - lower >= (rel - 4) * U * norms)


def test_bracket_covers_a_query_along_the_quantisation_error():
    # q = e / ||e||: q.x - A = q.e = ||e|| exactly the term ||q|| en, with f = 0
    dim = 384
    signs = np.where(np.random.default_rng(8).random(dim - 1) < 0.5, -1.0, 1.0)
    x = np.empty(dim, np.float32)
    x[0] = 1.0
    x[1:] = 0.49 / 127 * signs  # each rounds to code 0: error 0.49 steps
    codes, stats = quantised(x[None, :])
    e = x.astype(np.float64) - np.float64(stats[0, 0]) * codes[0]
    q = (e / np.linalg.norm(e)).astype(np.float32)
    _, score, upper = check_bracket(x[None, :], q)
    assert score[0] > 0.07 and score[0] > 0.999 * upper[0]


def test_bracket_covers_a_query_error_along_the_codes():
    # x = s c exactly (e = 0), q = 127 t on a component where c is 0 plus 0.49 t sign(c)
    # elsewhere (codes 0): A = 0 and q.x = s (f.c) = ||f|| ||s c||, the term ||f|| cn
    rng = np.random.default_rng(9)
    dim = 200
    c = 127 * np.where(rng.random(dim) < 0.5, -1, 1)
    c[0] = 0
    x = (np.ldexp(91_111.0, -25) * c).astype(np.float32)
    q = np.empty(dim, np.float32)
    q[0] = 1.0
    q[1:] = 0.49 / 127 * np.sign(c[1:])
    _, score, upper = check_bracket(x[None, :], q)
    assert score[0] > 0.02 and score[0] > 0.999 * upper[0]


# -- candidates against the full scan ----------------------------------------------------------------


@st.composite
def hard_cases(draw):
    """Matrices, queries and masks built to make the bound's job hard."""
    n = draw(st.integers(1, 80))
    dim = draw(st.integers(1, 100))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["gauss", "duplicates", "near_ties", "spike", "integers", "scaled"]))
    x = rng.standard_normal((n, dim))
    if kind == "duplicates":
        x = x[rng.integers(0, max(1, n // 4), n)]
    elif kind == "near_ties":
        x = x[0] + 1e-6 * rng.standard_normal((n, dim)) * rng.integers(0, 2, (n, 1))
    elif kind == "spike":  # one huge component, the rest tiny (or zero)
        x *= 1e-4 * rng.integers(0, 2, (n, 1))
        x[np.arange(n), rng.integers(0, dim, n)] = 1e3
    elif kind == "integers":  # few distinct values: exact ties everywhere
        x = rng.integers(-2, 3, (n, dim)).astype(np.float64)
        x[np.abs(x).sum(axis=1) == 0, 0] = 1
    matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    if kind == "scaled":  # rows need not be unit: nothing in the bound assumes it
        matrix *= (10.0 ** rng.uniform(-3, 3, (n, 1))).astype(np.float32)
    which = draw(st.sampled_from(["random", "a row", "near a row"]))
    if which == "random":
        q = rng.standard_normal(dim)
    else:
        q = matrix[rng.integers(0, n)].astype(np.float64)
        q += (1e-5 if which == "near a row" else 0) * rng.standard_normal(dim)
    if not np.any(q):
        q[0] = 1
    q = (q / np.linalg.norm(q)).astype(np.float32)
    mask = draw(st.sampled_from([None, "random", "none", "one"]))
    if mask is not None:
        keep = {"random": rng.random(n) < 0.5, "none": np.zeros(n, bool), "one": np.arange(n) == n - 1}
        mask = keep[mask].astype(np.uint8)
    k = draw(st.integers(1, 90))
    options = {
        "threads": draw(st.integers(1, 3)),
        "chunk_rows": draw(st.integers(1, 50)),
        "max_candidates": draw(st.sampled_from([0, 1, 5, 1000])),
    }
    return matrix, q, k, mask, options


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hard_cases())
def test_prefiltered_topk_is_the_full_scan(case):
    matrix, q, k, mask, options = case
    codes, stats = quantised(matrix)
    check_bracket(matrix, q)
    check_exact(matrix, codes, stats, q, k, mask, **options)


def test_candidates_do_not_depend_on_chunks_or_threads():
    rng = np.random.default_rng(1)
    matrix = unit_rows(rng, 5000, 40)
    codes, stats = quantised(matrix)
    mask = (rng.random(5000) < 0.3).astype(np.uint8)
    q = unit_rows(rng, 1, 40)[0]
    for m in (None, mask):
        base = prefilter.candidates(codes, stats, q, 12, m, threads=1, chunk_rows=5000)
        assert base is not None
        for threads in (1, 2, 3):
            for chunk_rows in (1, 7, 333, 100_000):
                got = prefilter.candidates(codes, stats, q, 12, m, threads=threads, chunk_rows=chunk_rows)
                np.testing.assert_array_equal(got, base)


@pytest.mark.parametrize("dim", [16, 100, 384])
def test_the_prefilter_narrows_ordinary_data(dim):
    rng = np.random.default_rng(dim)
    matrix = unit_rows(rng, 20_000, dim)
    codes, stats = quantised(matrix)
    for q in unit_rows(rng, 5, dim):
        cand = check_exact(matrix, codes, stats, q, 10, threads=2)
        assert cand is not None and 10 <= len(cand) <= 400  # 2% of the rows at most
    q = matrix[123]  # a stored row: found first, exactly
    rows, _ = scan.topk(matrix, q, 3, rows=prefilter.candidates(codes, stats, q, 3))
    assert rows[0] == 123


def test_too_many_candidates_fall_back_and_stay_exact():
    rng = np.random.default_rng(2)
    base = unit_rows(rng, 1, 64)[0]
    near = base + 1e-4 * rng.standard_normal((3000, 64)).astype(np.float32)
    matrix = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    codes, stats = quantised(matrix)
    q = base
    assert prefilter.candidates(codes, stats, q, 5) is None  # every row is within the bound's reach
    assert check_exact(matrix, codes, stats, q, 5, max_candidates=3000) is not None
    assert prefilter.candidates(codes, stats, q, 5, max_candidates=4) is None
    # fewer eligible rows than k: nothing to narrow
    few = np.zeros(3000, np.uint8)
    few[[3, 9]] = 1
    assert prefilter.candidates(codes, stats, q, 5, few) is None
    assert prefilter.candidates(codes, stats, q, 5, np.zeros(3000, np.uint8)) is None
    assert prefilter.candidates(codes, stats, q, 3001) is None


def test_the_widest_vectors_bracket_and_wider_ones_are_not_prefiltered(always_prefilter):
    dim = prefilter.MAX_DIM  # every code +-127 both sides: c . d = +-dim 127^2, the int32 edge
    x = np.full((3, dim), 0.5, np.float32)
    x[1] *= -1
    x[2, ::2] *= -1
    q = np.full(dim, 0.25, np.float32)
    lower, score, _ = check_bracket(x, q)
    assert score[0] == dim / 8 and lower[0] > 0.999 * score[0] and lower[1] < -0.999 * dim / 8
    codes, stats = quantised(x)
    np.testing.assert_array_equal(prefilter.candidates(codes, stats, q, 1), [0])
    wide = np.full((3, dim + 1), 0.5, np.float32)
    codes, stats = quantised(wide)
    assert prefilter.candidates(codes, stats, np.full(dim + 1, 0.25, np.float32), 1) is None
    with pytest.raises(DimensionError):
        prefilter.score_bounds(codes, stats, np.full(dim + 1, 0.25, np.float32))
    ix = VectorIndex(capacity=4)
    wide[1] *= -1
    wide[2, ::2] *= -1
    ix.add_batch(["a", "b", "c"], wide)
    assert ix.search(np.ones(dim + 1), 2)[0] == ["a", "c"]  # the full scan answers


def test_kernel_arguments_are_checked():
    rng = np.random.default_rng(3)
    matrix = unit_rows(rng, 50, 8)
    codes, stats = quantised(matrix)
    q = matrix[0]
    with pytest.raises(DimensionError):
        prefilter.candidates(codes, stats, q[:4].copy(), 3)
    with pytest.raises(DimensionError):
        prefilter.candidates(codes, stats[:10], q, 3)
    with pytest.raises(ValidationError):
        prefilter.candidates(codes, stats, q, 0)
    with pytest.raises(ValidationError):
        prefilter.candidates(codes, stats, q, 3, np.ones(10, np.uint8))
    with pytest.raises(ValidationError):
        prefilter.candidates(codes, stats, np.full(8, np.nan, np.float32), 3)
    with pytest.raises(DimensionError):
        prefilter.quantise(matrix, codes[:, :4].copy(), stats)
    with pytest.raises(DimensionError):
        prefilter.quantise(matrix, codes, np.empty((50, 2), np.float32))
    with pytest.raises(ValidationError):
        scan.topk(matrix, q, 3, np.ones(50, np.uint8), rows=np.arange(3))
    with pytest.raises(ValidationError):
        scan.topk(matrix, q, 3, rows=np.array([1, 50]))
    assert scan.topk(matrix, q, 3, rows=np.empty(0, np.int64))[0].tolist() == []


# -- VectorIndex: the int8 copy follows every write ------------------------------------------------------


@pytest.fixture
def native(monkeypatch):
    """The compiled kernels, also when ENGINE_PURE=1 selected the reference: these tests are about them."""
    monkeypatch.setattr(vectors, "_native", importlib.import_module("engine._vectors"))
    monkeypatch.setattr(vectors, "_native_prefilter", importlib.import_module("engine._prefilter"))


@pytest.fixture
def always_prefilter(monkeypatch):
    """Use the prefilter on indexes of any size (by default only past 8 MB of vectors)."""
    monkeypatch.setattr(vectors, "PREFILTER_MIN_VALUES", 0)


def check_int8_copy(ix: VectorIndex) -> None:
    """The index's int8 copy is the quantisation of its live rows (bounds: to one float32 step)."""
    n = ix._n_rows
    live = np.flatnonzero(ix._alive[:n])
    assert ix._codes is not None and ix._qstats is not None and ix._matrix is not None
    assert len(ix._codes) == len(ix._qstats) == ix.capacity
    codes, stats = quantised(np.ascontiguousarray(ix._matrix[live]))
    np.testing.assert_array_equal(ix._codes[live], codes)
    np.testing.assert_array_equal(ix._qstats[live, 0], stats[:, 0])
    kept = ix._qstats[live, 1:]
    assert np.all(np.abs(kept - stats[:, 1:]) <= np.spacing(np.maximum(kept, stats[:, 1:])))


@pytest.mark.parametrize("pure", [False, True])
def test_int8_copy_follows_adds_removes_compaction_and_growth(monkeypatch, pure):
    if pure:  # the numpy quantiser keeps the copy under ENGINE_PURE=1
        monkeypatch.setattr(vectors, "_native_prefilter", None)
    rng = np.random.default_rng(4)
    ix = VectorIndex(capacity=4)
    x = rng.standard_normal((300, 24))
    ix.add("first", x[0])  # sets the dimension
    check_int8_copy(ix)
    ix.add_batch([f"v{i}" for i in range(1, 200)], x[1:200])  # growth: 4 -> 256
    assert ix.capacity == 256
    check_int8_copy(ix)
    ix.add("v5", x[250])  # replace in place
    ix.add_batch(["v7", "new", "v9"], x[251:254])  # replace two, append one
    check_int8_copy(ix)
    for i in range(1, 120):
        ix.remove(f"v{i}")
    check_int8_copy(ix)
    assert ix.compact() == 119
    check_int8_copy(ix)
    for i in range(120, 200, 2):
        ix.remove(f"v{i}")
    ix.add_batch([f"w{i}" for i in range(250)], rng.standard_normal((250, 24)))  # compacts, then grows
    assert ix.tombstones == 0 and ix.capacity == 512 and len(ix) == 292
    check_int8_copy(ix)


def test_prefiltered_searches_equal_full_scans(native, always_prefilter, monkeypatch):
    rng = np.random.default_rng(5)
    n, dim = 4000, 48
    x = rng.standard_normal((n, dim))
    x[3000:3100] = x[7]  # duplicates of row 7
    ids = [f"v{i}" for i in range(n)]
    types = ["code" if i % 10 == 0 else "doc" for i in range(n)]
    fast = VectorIndex(dim, threads=2)
    plain = VectorIndex(dim, threads=2, prefilter=False)
    for ix in (fast, plain):
        ix.add_batch(ids, x, source_types=types, timestamps=np.arange(n, dtype=float))
        for i in range(0, n, 7):
            ix.remove(ids[i])
    assert plain._codes is None and fast.nbytes == plain.nbytes + fast.capacity * (dim + 12)
    calls: list[np.ndarray | None] = []
    real = prefilter.candidates

    def spy(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(vectors._native_prefilter, "candidates", spy)
    queries = [rng.standard_normal(dim), x[7], x[3005] + 1e-3, x[10]]
    wheres = [None, {"source_type": "code"}, {"since": 3500}, {"since": 3990, "until": 3992}]
    for _ in range(2):  # with tombstones, then compacted
        for q in queries:
            for where in wheres:
                for k in (1, 10, 150, 5000):
                    got = fast.search(q, k, where=where)
                    want = plain.search(q, k, where=where)
                    assert got[0] == want[0]
                    np.testing.assert_array_equal(got[1], want[1])
            got_b = fast.search_batch(q[None, :], 10)
            assert got_b[0][0] == plain.search(q, 10)[0]
        fast.compact()
        plain.compact()
    narrowed = [c for c in calls if c is not None]
    assert len(narrowed) > len(calls) // 2 and max(len(c) for c in narrowed) < n // 4
    assert any(c is None for c in calls)  # the duplicates (k = 150) and the tiny windows fall back


def test_small_indexes_scan_in_full(native, monkeypatch):
    rng = np.random.default_rng(6)
    ix = VectorIndex(8)
    ix.add_batch([f"v{i}" for i in range(100)], rng.standard_normal((100, 8)))

    def refuse(*args, **kwargs):
        raise AssertionError("the prefilter ran on a tiny index")

    monkeypatch.setattr(vectors._native_prefilter, "candidates", refuse)
    assert len(ix.search(rng.standard_normal(8), 5)[0]) == 5
