"""VectorIndex and the native cosine top-k kernels, checked against the numpy reference.

The kernel accumulates float32 products in double and the reference computes
in float64, so single-query scores agree to ~1e-15 (EXACT allows 1e-12);
batches score through BLAS sgemm in float32 (FLOAT32 allows 1e-5), as does
any comparison with the oracle that normalises the raw inputs in float64.
Results are compared as the reference test of scikit-learn does: the
multisets of scores agree to the tolerance, and every returned row really
has the score claimed. Ties may come back in either order between
implementations; the kernel itself must be bit-identical for any chunk size
or thread count. The metadata columns and `where` masks have their own
tests (test_vectormeta.py), as has the int8 prefilter (test_prefilter.py).
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import vectors
from engine.errors import ConfigError, DimensionError, NotFoundError, UnknownFieldError, ValidationError
from engine.vectors import VectorIndex, reference_topk, reference_topk_batch

kernel = importlib.import_module("engine._vectors")  # the compiled kernel, even under ENGINE_PURE=1

EXACT = 1e-12  # float64 accumulation against float64 numpy, same float32 inputs
FLOAT32 = 1e-5  # sgemm batches, or the float64 oracle of the raw (unnormalised) inputs


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def check_topk(matrix, q, rows, scores, ref_rows, ref_scores, atol=EXACT):
    """The kernel's answer is a valid top-k: same score multiset as the reference, honest scores."""
    assert rows.dtype == np.int64 and scores.dtype == np.float64
    assert len(rows) == len(ref_rows) == len(scores)
    assert len(set(rows.tolist())) == len(rows)
    assert np.all(np.diff(scores) <= 0), "best first"
    exact = matrix[rows].astype(np.float64) @ q.astype(np.float64)
    np.testing.assert_allclose(scores, exact, rtol=0, atol=atol)
    np.testing.assert_allclose(np.sort(scores), np.sort(ref_scores), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    matrix = unit_rows(rng, 3000, 48)
    matrix[100] = matrix[2000]  # exact duplicates: a tie the kernel must break to the lower row
    queries = unit_rows(rng, 5, 48)
    queries[0] = matrix[2000]
    mask = (rng.random(3000) < 0.1).astype(np.uint8)
    return matrix, queries, mask


# -- the kernel against the reference ----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 64, 5000])
@pytest.mark.parametrize("masked", [False, True])
def test_topk_matches_reference(data, k, masked):
    matrix, queries, mask = data
    m = mask if masked else None
    for q in queries:
        rows, scores = kernel.topk(matrix, q, k, m)
        ref_rows, ref_scores = reference_topk(matrix, q, k, m)
        check_topk(matrix, q, rows, scores, ref_rows, ref_scores)
        if m is not None:
            assert mask[rows].all()


@pytest.mark.parametrize("masked", [False, True])
def test_topk_is_identical_for_any_chunking_and_threads(data, masked):
    matrix, queries, mask = data
    m = mask if masked else None
    q = queries[1]
    base_rows, base_scores = kernel.topk(matrix, q, 25, m, threads=1, chunk_rows=3000)
    for threads in (1, 2, 3, 5):
        for chunk_rows in (1, 3, 64, 1000, 100_000):
            rows, scores = kernel.topk(matrix, q, 25, m, threads=threads, chunk_rows=chunk_rows)
            np.testing.assert_array_equal(rows, base_rows)
            np.testing.assert_array_equal(scores, base_scores)


@pytest.mark.parametrize("dim", [1, 5, 31, 32, 33, 64, 100, 384, 1000])
def test_scores_are_accurate_for_any_dimension(dim):
    rng = np.random.default_rng(dim)
    matrix = unit_rows(rng, 300, dim)
    q = unit_rows(rng, 1, dim)[0]
    rows, scores = kernel.topk(matrix, q, 300, threads=2, chunk_rows=16)
    assert sorted(rows.tolist()) == list(range(300))
    exact = matrix[rows].astype(np.float64) @ q.astype(np.float64)
    np.testing.assert_allclose(scores, exact, rtol=0, atol=EXACT)


def test_scores_are_float32_products_summed_in_double():
    # components from 1e-3 to 1e3 with large cancellations: a float32 accumulator is off by
    # far more than the double accumulator's bound gamma_m sum|q_i x_i|, m = dim/16 + 16
    rng = np.random.default_rng(11)
    for dim in (7, 16, 45, 384, 1000):
        matrix = (rng.standard_normal((200, dim)) * 10.0 ** rng.uniform(-3, 3, (200, dim))).astype(np.float32)
        q = (rng.standard_normal(dim) * 10.0 ** rng.uniform(-3, 3, dim)).astype(np.float32)
        matrix[:, -1] = -(matrix[:, :-1].astype(np.float64) @ q[:-1]) / q[-1]  # sums near 0
        rows, scores = kernel.topk(matrix, q, 200, threads=2, chunk_rows=32)
        products = [[float(a) * float(b) for a, b in zip(matrix[r], q, strict=True)] for r in rows]
        exact = np.array([math.fsum(p) for p in products])  # correctly rounded sums of exact products
        total = np.array([math.fsum(map(abs, p)) for p in products])
        m = dim // 16 + 16
        gamma = m * 2.0**-53 / (1 - m * 2.0**-53)
        assert np.all(np.abs(scores - exact) <= gamma * total + 2.0**-52 * np.abs(exact))
        single = (matrix[rows] @ q).astype(np.float64)  # BLAS sgemv: float32 accumulation
        assert dim < 16 or np.any(np.abs(single - exact) > 1000 * gamma * total)


def test_ties_keep_the_lower_row(data):
    matrix, queries, _ = data
    for threads in (1, 2):
        rows, scores = kernel.topk(matrix, queries[0], 2, threads=threads, chunk_rows=64)
        assert rows.tolist() == [100, 2000]
        assert scores[0] == scores[1]
    ones = np.ones((50, 4), np.float32) / 2
    rows, _ = kernel.topk(ones, ones[0], 5, threads=2, chunk_rows=8)
    assert rows.tolist() == [0, 1, 2, 3, 4]


def test_topk_returns_what_exists(data):
    matrix, queries, _ = data
    rows, scores = kernel.topk(matrix[:3], queries[1], 10)
    assert sorted(rows.tolist()) == [0, 1, 2] and len(scores) == 3
    few = np.zeros(3000, np.uint8)
    few[[5, 17]] = 1
    rows, _ = kernel.topk(matrix, queries[1], 10, few, threads=2, chunk_rows=4)
    assert sorted(rows.tolist()) == [5, 17]
    rows, scores = kernel.topk(matrix, queries[1], 10, np.zeros(3000, np.uint8))
    assert len(rows) == 0 and len(scores) == 0
    rows, _ = kernel.topk(matrix[:0], queries[1], 10)
    assert len(rows) == 0


@pytest.mark.parametrize("block_rows", [1, 7, 512, 4096])
@pytest.mark.parametrize("masked", [False, True])
def test_topk_batch_matches_reference(data, block_rows, masked):
    matrix, queries, mask = data
    m = mask if masked else None
    rows, scores = kernel.topk_batch(matrix, queries, 9, m, block_rows=block_rows, threads=2)
    ref_rows, ref_scores = reference_topk_batch(matrix, queries, 9, m)
    assert rows.shape == scores.shape == ref_rows.shape == (len(queries), 9)
    for i, q in enumerate(queries):
        check_topk(matrix, q, rows[i], scores[i], ref_rows[i], ref_scores[i], atol=FLOAT32)
        if m is not None:
            assert mask[rows[i]].all()


def test_topk_batch_with_fewer_rows_than_k(data):
    matrix, queries, _ = data
    rows, scores = kernel.topk_batch(matrix[:4], queries, 10)
    assert rows.shape == scores.shape == (5, 4)
    rows, _ = kernel.topk_batch(matrix, queries, 10, np.zeros(3000, np.uint8))
    assert rows.shape == (5, 0)


def test_kernel_rejects_bad_arguments(data):
    matrix, queries, mask = data
    with pytest.raises(DimensionError):
        kernel.topk(matrix, queries[0][:10], 3)
    with pytest.raises(DimensionError):
        kernel.topk_batch(matrix, queries[:, :10].copy(), 3)
    for bad_k in (0, -2):
        with pytest.raises(ValidationError):
            kernel.topk(matrix, queries[0], bad_k)
        with pytest.raises(ValidationError):
            kernel.topk_batch(matrix, queries, bad_k)
    with pytest.raises(ValidationError):
        kernel.topk(matrix, queries[0], 3, mask[:10])


def test_default_threads_honours_engine_threads(monkeypatch):
    monkeypatch.setenv("ENGINE_THREADS", "3")
    assert kernel.default_threads() == 3
    monkeypatch.delenv("ENGINE_THREADS")
    assert kernel.default_threads() >= 1
    for bad in ("zero", "0", "-1"):
        monkeypatch.setenv("ENGINE_THREADS", bad)
        with pytest.raises(ConfigError):
            kernel.default_threads()


@st.composite
def search_cases(draw):
    n = draw(st.integers(1, 60))
    dim = draw(st.integers(1, 40))
    elements = st.floats(-8, 8, width=32, allow_subnormal=False)
    matrix = draw(hnp.arrays(np.float32, (n, dim), elements=elements))
    matrix[np.abs(matrix).sum(axis=1) == 0, 0] = 1  # no zero rows
    matrix /= np.linalg.norm(matrix.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
    q = draw(hnp.arrays(np.float32, (dim,), elements=elements))
    q[0] += 0.5 if not q.any() else 0
    q /= np.float32(np.linalg.norm(q.astype(np.float64)))
    mask = draw(st.none() | hnp.arrays(np.uint8, (n,), elements=st.integers(0, 1)))
    return matrix, q, draw(st.integers(1, 70)), mask, draw(st.integers(1, 4)), draw(st.integers(1, 70))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(search_cases())
def test_topk_property(case):
    matrix, q, k, mask, threads, chunk_rows = case
    rows, scores = kernel.topk(matrix, q, k, mask, threads=threads, chunk_rows=chunk_rows)
    ref_rows, ref_scores = reference_topk(matrix, q, k, mask)
    check_topk(matrix, q, rows, scores, ref_rows, ref_scores)
    one_rows, one_scores = kernel.topk(matrix, q, k, mask, threads=1, chunk_rows=1)
    np.testing.assert_array_equal(rows, one_rows)
    np.testing.assert_array_equal(scores, one_scores)
    batch_rows, batch_scores = kernel.topk_batch(matrix, q[None, :], k, mask, block_rows=chunk_rows)
    check_topk(matrix, q, batch_rows[0], batch_scores[0], ref_rows, ref_scores)  # one query: topk


# -- VectorIndex -----------------------------------------------------------------------------------


def build(rng, n=2000, dim=32, **kwargs):
    ix = VectorIndex(**kwargs)
    x = rng.standard_normal((n, dim))
    ids = [f"v{i}" for i in range(n)]
    types = ["code" if i % 10 == 0 else ("doc" if i % 10 < 4 else "log") for i in range(n)]
    paths = [None if i % 13 == 0 else f"src/{'engine' if i % 2 else 'tests'}/{i % 5}.py" for i in range(n)]
    ix.add_batch(ids, x, source_types=types, source_paths=paths, timestamps=np.arange(n, dtype=float))
    return ix, x, ids, types, paths


def brute_force(x, ids, q, k, keep=None):
    """The oracle: normalise in float64, score everything, keep the allowed ids."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    scores = unit @ (q / np.linalg.norm(q))
    order = [i for i in np.argsort(-scores, kind="stable") if keep is None or keep(i)][:k]
    return [ids[i] for i in order], scores[order]


def check_search(result, expected, atol=FLOAT32):
    got_ids, got_scores = result
    want_ids, want_scores = expected
    assert isinstance(got_ids, list) and got_scores.dtype == np.float64
    assert len(got_ids) == len(want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=atol)
    assert set(got_ids) == set(want_ids)


def test_search_finds_the_nearest_vectors():
    rng = np.random.default_rng(1)
    ix, x, ids, _, _ = build(rng)
    assert len(ix) == 2000 and ix.dim == 32 and "v3" in ix and "nope" not in ix
    for i in (0, 17, 1999):
        found, scores = ix.search(x[i], 5)
        assert found[0] == ids[i] and scores[0] == pytest.approx(1.0, abs=FLOAT32)
        check_search((found, scores), brute_force(x, ids, x[i], 5))
    q = rng.standard_normal(32)
    check_search(ix.search(q, 1), brute_force(x, ids, q, 1))
    check_search(ix.search(q, 5000), brute_force(x, ids, q, 5000))


def test_add_replaces_an_existing_id_and_batches_keep_the_last_duplicate():
    rng = np.random.default_rng(2)
    ix, x, _, _, _ = build(rng, n=100, dim=8)
    new = rng.standard_normal(8)
    ix.add("v5", new, source_type="fresh", timestamp=1e6)
    assert len(ix) == 100 and ix.tombstones == 0
    np.testing.assert_allclose(ix.vector("v5"), new / np.linalg.norm(new), atol=1e-6)
    assert ix.search(new, 1, where={"source_type": "fresh", "since": 1e6})[0] == ["v5"]
    assert ix.search(x[5], 1)[0] != ["v5"]
    a, b = rng.standard_normal((2, 8))
    ix.add_batch(["dup", "v6", "dup"], np.stack([a, b, b]), source_types=["x", "y", "z"])
    assert len(ix) == 101 and ix.ids()[-1] == "dup"
    np.testing.assert_allclose(ix.vector("dup"), b / np.linalg.norm(b), atol=1e-6)
    assert ix.search(b, 2, where={"source_type": ["z", "y"]})[0] in (["dup", "v6"], ["v6", "dup"])
    assert ix.search(b, 5, where={"source_type": "x"}) == ([], pytest.approx(np.empty(0)))
    fresh = VectorIndex()
    fresh.add_batch(["a", "b", "a"], np.stack([a, b, b]), source_paths="docs/x.md", timestamps=[1, 2, 3])
    assert fresh.ids() == ["a", "b"]  # as if added one by one: "a" keeps its first row
    assert fresh.search(b, 2, where={"source_path_prefix": "docs/", "since": 3})[0] == ["a"]


def test_remove_tombstones_and_compact():
    rng = np.random.default_rng(3)
    ix, x, ids, _, _ = build(rng, n=500, dim=16)
    removed = set(ids[::3])
    for id_ in removed:
        assert ix.remove(id_) is True
    assert ix.remove(ids[0]) is False and ix.remove("never") is False
    assert len(ix) == 500 - len(removed) and ix.tombstones == len(removed)
    assert ids[0] not in ix and ix.ids() == [i for i in ids if i not in removed]
    with pytest.raises(NotFoundError):
        ix.vector(ids[0])
    q = rng.standard_normal(16)
    keep = [i not in removed for i in ids]
    before = ix.search(q, 20)
    check_search(before, brute_force(x, ids, q, 20, keep.__getitem__))
    filtered = ix.search(q, 20, where={"source_type": "code"})
    assert not removed & set(filtered[0])
    batch = ix.search_batch(np.stack([q, x[1]]), 20)
    assert batch[0][0] == before[0]

    assert ix.compact() == len(removed) and ix.tombstones == 0 and ix.compact() == 0
    after = ix.search(q, 20)
    assert after[0] == before[0]
    np.testing.assert_allclose(after[1], before[1], rtol=0, atol=1e-12)
    assert ix.search(q, 20, where={"source_type": "code"})[0] == filtered[0]
    assert ix.ids() == [i for i in ids if i not in removed]
    np.testing.assert_allclose(ix.vector(ids[1]), x[1] / np.linalg.norm(x[1]), atol=1e-6)
    ix.add(ids[0], x[0])
    assert ix.search(x[0], 1)[0] == [ids[0]]


def test_capacity_doubles_and_growth_compacts_when_a_quarter_is_dead():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 6))
    ix = VectorIndex(capacity=1)
    assert ix.dim is None and ix.search(x[0]) == ([], pytest.approx(np.empty(0)))
    for i in range(100):
        ix.add(f"v{i}", x[i], timestamp=float(i))
    assert ix.capacity == 128 and len(ix) == 100 and ix.dim == 6
    for i in range(100):
        np.testing.assert_allclose(ix.vector(f"v{i}"), x[i] / np.linalg.norm(x[i]), atol=1e-6)
    assert ix.search(x[42], 1)[0] == ["v42"]

    small = VectorIndex(2, capacity=8)
    small.add_batch([f"s{i}" for i in range(8)], rng.standard_normal((8, 2)))
    for i in range(4):
        small.remove(f"s{i}")
    small.add_batch(["a", "b", "c"], rng.standard_normal((3, 2)))
    assert small.capacity == 8 and small.tombstones == 0 and len(small) == 7
    assert small.ids() == ["s4", "s5", "s6", "s7", "a", "b", "c"]


def test_where_filters_match_brute_force():
    rng = np.random.default_rng(5)
    ix, x, ids, types, paths = build(rng)
    q = rng.standard_normal(32)
    cases = [
        ({"source_type": "code"}, lambda i: types[i] == "code"),
        ({"source_type": ["doc", "code"]}, lambda i: types[i] in ("doc", "code")),
        ({"source_type": ("log", "missing")}, lambda i: types[i] == "log"),
        ({"source_path_prefix": "src/engine/"}, lambda i: (paths[i] or "").startswith("src/engine/")),
        ({"source_path_prefix": ""}, lambda i: paths[i] is not None),
        ({"since": 1500}, lambda i: i >= 1500),
        ({"since": 100, "until": 300}, lambda i: 100 <= i < 300),
        (
            {"source_type": "doc", "source_path_prefix": "src/tests/", "until": 1000},
            lambda i: types[i] == "doc" and (paths[i] or "").startswith("src/tests/") and i < 1000,
        ),
    ]
    for where, keep in cases:
        check_search(ix.search(q, 15, where=where), brute_force(x, ids, q, 15, keep))
        (got,), scores = ix.search_batch(q[None, :], 15, where=where)
        check_search((got, scores[0]), brute_force(x, ids, q, 15, keep))
    assert ix.search(q, 5, where={"source_type": []})[0] == []
    assert ix.search(q, 5, where={"source_type": "nothing"})[0] == []
    assert ix.search(q, 5, where={"since": 1e9})[0] == []
    assert ix.search_batch(np.stack([q, q]), 5, where={"since": 1e9})[1].shape == (2, 0)


def test_bad_where_is_rejected():
    rng = np.random.default_rng(6)
    ix, _, _, _, _ = build(rng, n=50, dim=4)
    q = np.ones(4)
    with pytest.raises(UnknownFieldError):
        ix.search(q, where={"source": "code"})
    for where in (
        {"source_type": 3},
        {"source_type": ["a", 1]},
        {"source_path_prefix": None},
        {"since": "yesterday"},
        {"until": float("nan")},
        {"since": True},
    ):
        with pytest.raises(ValidationError):
            ix.search(q, where=where)
    with pytest.raises(ValidationError):
        ix.search(q, where=[("source_type", "code")])  # type: ignore[arg-type]


def test_search_batch_agrees_with_search():
    rng = np.random.default_rng(8)
    ix, x, _, _, _ = build(rng, n=1500, dim=24, threads=2)
    ix.remove("v3")
    queries = rng.standard_normal((6, 24))
    queries[0] = x[3]
    found, scores = ix.search_batch(queries, 7)
    assert scores.shape == (6, 7) and len(found) == 6
    for i, q in enumerate(queries):
        single = ix.search(q, 7)
        check_search((found[i], scores[i]), single)
    assert "v3" not in found[0]
    found, scores = ix.search_batch(queries, 4000)
    assert scores.shape == (6, 1499) and all(len(f) == 1499 for f in found)
    assert ix.search_batch(np.empty((0, 24)), 3) == ([], pytest.approx(np.empty((0, 0))))


def test_threads_do_not_change_results():
    rng = np.random.default_rng(9)
    one, x, _, _, _ = build(rng, n=1200, dim=16, threads=1)
    three = VectorIndex(16, threads=3)
    three.add_batch(one.ids(), x)
    q = rng.standard_normal(16)
    a, b = one.search(q, 30), three.search(q, 30)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_pure_reference_path_gives_the_same_answers(monkeypatch):
    rng = np.random.default_rng(10)
    ix, _, _, _, _ = build(rng, n=800, dim=12)
    ix.remove("v1")
    queries = rng.standard_normal((3, 12))
    where = {"source_type": ["doc", "log"]}
    native = [ix.search(q, 9, where=where) for q in queries], ix.search_batch(queries, 9)
    monkeypatch.setattr(vectors, "_native", None)
    monkeypatch.setattr(vectors, "_native_prefilter", None)
    pure = [ix.search(q, 9, where=where) for q in queries], ix.search_batch(queries, 9)
    for got, want in zip(native[0], pure[0], strict=True):
        check_search(got, want, atol=EXACT)  # both accumulate in double
        assert got[0] == want[0]
    for i in range(3):  # native batches: sgemm in float32
        check_search((native[1][0][i], native[1][1][i]), (pure[1][0][i], pure[1][1][i]))


def test_engine_pure_selects_the_reference_and_a_missing_kernel_is_an_error():
    code = (
        "import sys\n"
        "if len(sys.argv) > 1: sys.modules['engine.' + sys.argv[1]] = None  # as if never built\n"
        "from engine import vectors as v\n"
        "print(v._native is None, v._native_prefilter is None)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_PURE"}

    def run(*args: str, pure: str = "") -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", code, *args]
        return subprocess.run(cmd, env={**env, "ENGINE_PURE": pure}, cwd=root, capture_output=True, text=True)

    assert run(pure="1").stdout.split() == ["True", "True"]
    assert run().stdout.split() == ["False", "False"]
    for missing in ("_vectors", "_prefilter"):
        failed = run(missing)
        assert failed.returncode != 0 and "NativeExtensionError" in failed.stderr
        assert f"engine.{missing} is not built" in failed.stderr
        assert run(missing, pure="1").stdout.split() == ["True", "True"]


def test_bad_vectors_are_rejected_before_anything_is_written():
    rng = np.random.default_rng(11)
    ix = VectorIndex()
    with pytest.raises(ValidationError):
        ix.add("a", [1.0, float("nan")])
    assert ix.dim is None and len(ix) == 0  # a rejected first vector does not fix the dimension
    ix.add_batch(["a", "b"], rng.standard_normal((2, 3)))
    before = ix.vector("a")
    bad_batches = [
        (["a", "c"], [[1, 2, 3], [0, 0, 0]]),  # zero vector
        (["a", "c"], [[1, 2, 3], [1, float("inf"), 0]]),
        (["a", "c"], [[1, 2, 3], [1, 2, float("nan")]]),
        (["a", ""], [[1, 2, 3], [1, 2, 3]]),  # empty id
        (["a", 5], [[1, 2, 3], [1, 2, 3]]),  # non-string id
        (["a"], [[1, 2, 3], [1, 2, 3]]),  # count mismatch
        (["a", "c"], [["x", "y", "z"], [1, 2, 3]]),  # not numbers
        (["a", "c"], [[1j, 2, 3], [1, 2, 3]]),  # complex
        (["a"], [1, 2, 3]),  # not 2-D
    ]
    for ids, matrix in bad_batches:
        with pytest.raises(ValidationError):
            ix.add_batch(ids, matrix)
    with pytest.raises(DimensionError):
        ix.add("c", [1.0, 2.0])
    with pytest.raises(ValidationError):
        ix.add_batch(["c"], [[1, 2, 3]], timestamps=[float("nan")])
    with pytest.raises(ValidationError):
        ix.add_batch(["c", "d"], [[1, 2, 3], [3, 2, 1]], source_types=["x"])
    with pytest.raises(ValidationError):
        ix.add_batch(["c"], [[1, 2, 3]], source_paths=[7])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        ix.add_batch(["c"], [[1, 2, 3]], source_types=[["code"]])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        ix.add_batch([["c"]], [[1, 2, 3]])  # type: ignore[list-item]
    for kwargs in (
        {"source_type": None},
        {"source_path": 3},
        {"timestamp": float("inf")},
        {"timestamp": "x"},
    ):
        with pytest.raises(ValidationError):
            ix.add("c", [1, 2, 3], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ix.add("c", [0.0, 0.0, 0.0])
    assert len(ix) == 2 and "c" not in ix
    np.testing.assert_array_equal(ix.vector("a"), before)


def test_bad_queries_are_rejected():
    rng = np.random.default_rng(12)
    ix, _, _, _, _ = build(rng, n=20, dim=4)
    with pytest.raises(DimensionError):
        ix.search(np.ones(5))
    with pytest.raises(DimensionError):
        ix.search_batch(np.ones((2, 3)))
    for q in ([0, 0, 0, 0], [1, float("nan"), 0, 0], [float("-inf"), 0, 0, 0], np.ones((1, 4))):
        with pytest.raises(ValidationError):
            ix.search(q)
    with pytest.raises(ValidationError):
        ix.search_batch([[1, 1, 1, 1], [0, 0, 0, 0]])
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValidationError):
            ix.search(np.ones(4), k)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            ix.search_batch(np.ones((1, 4)), k)  # type: ignore[arg-type]
    for kwargs in ({"dim": 0}, {"dim": 2.5}, {"capacity": 0}, {"threads": 0}):
        with pytest.raises(ValidationError):
            VectorIndex(**kwargs)  # type: ignore[arg-type]


def test_extreme_magnitudes_normalise_exactly():
    ix = VectorIndex(3)
    ix.add("huge", np.array([1e300, 1e300, 0.0]))
    ix.add("tiny", np.array([0.0, 1e-320, 0.0]))
    ix.add("f32tiny", np.array([1e-40, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(ix.vector("huge"), [2**-0.5, 2**-0.5, 0], atol=1e-7)
    np.testing.assert_array_equal(ix.vector("tiny"), [0, 1, 0])
    np.testing.assert_array_equal(ix.vector("f32tiny"), [1, 0, 0])
    assert ix.search([0, 1e-300, 0], 1)[0] == ["tiny"]
