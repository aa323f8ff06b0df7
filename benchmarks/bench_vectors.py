"""Exact cosine top-k: the engine's VectorIndex against faiss, usearch and numpy, same run, same data.

Every implementation searches the same L2-normalised float32 matrix with
inner product (= cosine) and returns the exact top k. The engine's single
searches go through its int8 prefilter (a quarter of the bytes, then an
exact rescoring of the few rows that can reach the top k); "engine full
scan" times the fused kernel alone (float32 products accumulated in double)
on the same matrix, to show what the prefilter gains. Peer settings follow
/work/shared/BENCHMARKING.md: faiss single queries run with one OpenMP thread
(its best); for batches faiss gets `distance_compute_blas_threshold = 20` so
it uses BLAS like we do. simsimd is imported before usearch.

Sizes: ENGINE_BENCH_VECTORS rows (default 1,000,000) x ENGINE_BENCH_DIM
(default 384), ENGINE_BENCH_BATCH queries per batch (default 64).
Groups: vectors-single, vectors-batch, vectors-filtered (10% of rows match).
extra_info records the index's memory (float32 matrix + int8 copy) and, for
the engine, how many rows the prefilter rescored.
Install the peers with `.venv/bin/pip install faiss-cpu usearch simsimd`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np
import pytest

from engine import _prefilter as prefilter
from engine import _vectors as kernel
from engine.vectors import VectorIndex

N = int(os.environ.get("ENGINE_BENCH_VECTORS", "1000000"))
DIM = int(os.environ.get("ENGINE_BENCH_DIM", "384"))
NQ = int(os.environ.get("ENGINE_BENCH_BATCH", "64"))
K = 10
SINGLE_ROUNDS = 10
BATCH_ROUNDS = 3


def require(module: str, package: str) -> ModuleType:
    """Import a peer, failing the benchmark loudly when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"peer {module!r} is not installed ({exc}): .venv/bin/pip install {package}")


class Data:
    def __init__(self) -> None:
        rng = np.random.default_rng(2024)
        self.matrix = np.empty((N, DIM), np.float32)
        for b0 in range(0, N, 65536):
            block = rng.standard_normal((min(65536, N - b0), DIM), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            self.matrix[b0 : b0 + len(block)] = block
        self.queries = rng.standard_normal((NQ, DIM), dtype=np.float32)
        self.queries /= np.linalg.norm(self.queries, axis=1, keepdims=True)
        self.q = self.queries[0].copy()
        self.code = rng.random(N) < 0.1  # the 10%-selective metadata filter
        self.index = VectorIndex(DIM, capacity=N)
        self.ids = [f"e{i}" for i in range(N)]
        self.index.add_batch(self.ids, self.matrix, source_types=np.where(self.code, "code", "doc").tolist())
        self._faiss = None

    def memory(self, benchmark) -> None:
        """The index's vector memory and what the int8 copy adds, in extra_info."""
        float32 = N * DIM * 4
        benchmark.extra_info["index_mb"] = round(self.index.nbytes / 2**20, 1)
        benchmark.extra_info["int8_copy_mb"] = round((self.index.nbytes - float32) / 2**20, 1)

    def candidates(self, benchmark, keep: np.ndarray | None = None) -> None:
        """How many rows the prefilter rescored for data.q (None: it fell back to the full scan)."""
        codes, stats = self.index._codes, self.index._qstats  # a diagnostic: the index's own int8 copy
        assert codes is not None and stats is not None
        mask = None if keep is None else keep.astype(np.uint8)
        rows = prefilter.candidates(codes[:N], stats[:N], self.q, K, mask)
        benchmark.extra_info["rescored_rows"] = None if rows is None else len(rows)

    def faiss_index(self):
        if self._faiss is None:
            faiss = require("faiss", "faiss-cpu")
            self._faiss = faiss.IndexFlatIP(DIM)
            self._faiss.add(self.matrix)
        return self._faiss

    def check_exact(self, benchmark, ids: list[str], q: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Recall against brute force, with near-ties (<1e-5 apart) counted as equal."""
        scores = self.matrix @ q
        if keep is not None:
            scores = np.where(keep, scores, -np.inf)
        kth = np.partition(scores, -K)[-K]
        got = scores[[int(i[1:]) for i in ids]]
        benchmark.extra_info["recall"] = float(np.mean(got >= kth - 1e-5))
        assert len(ids) == K and benchmark.extra_info["recall"] == 1.0


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


# -- one query ----------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="vectors-single")
def test_engine_single(benchmark, data):
    benchmark.extra_info.update(
        impl="engine",
        target="< faiss IndexFlatIP (1 thread), usearch exact, numpy; < 40 ms on the issue's machine",
        target_vs={"faiss IndexFlatIP (omp 1)": 1.0, "usearch exact": 1.0, "numpy X @ q + argpartition": 1.0},
    )
    ids, _ = benchmark.pedantic(data.index.search, (data.q, K), rounds=SINGLE_ROUNDS, warmup_rounds=2)
    data.check_exact(benchmark, ids, data.q)
    data.memory(benchmark)
    data.candidates(benchmark)


@pytest.mark.benchmark(group="vectors-single")
def test_engine_full_scan_single(benchmark, data):
    """The fused kernel (float32 rows, double accumulation) without the prefilter."""
    benchmark.extra_info.update(impl="engine full scan (no prefilter)")
    rows, _ = benchmark.pedantic(kernel.topk, (data.matrix, data.q, K), rounds=SINGLE_ROUNDS, warmup_rounds=2)
    data.check_exact(benchmark, [f"e{r}" for r in rows.tolist()], data.q)


@pytest.mark.benchmark(group="vectors-single")
def test_engine_full_scan_single_one_thread(benchmark, data):
    """The fused kernel on one thread: what double accumulation costs where bandwidth is scarcer."""
    benchmark.extra_info.update(impl="engine full scan (no prefilter, 1 thread)")
    rows, _ = benchmark.pedantic(
        kernel.topk, (data.matrix, data.q, K), {"threads": 1}, rounds=SINGLE_ROUNDS, warmup_rounds=2
    )
    data.check_exact(benchmark, [f"e{r}" for r in rows.tolist()], data.q)


@pytest.mark.benchmark(group="vectors-single")
def test_engine_single_one_thread(benchmark, data, monkeypatch):
    monkeypatch.setenv("ENGINE_THREADS", "1")
    benchmark.extra_info.update(impl="engine (ENGINE_THREADS=1)", target="~ faiss IndexFlatIP (1 thread)")
    ids, _ = benchmark.pedantic(data.index.search, (data.q, K), rounds=SINGLE_ROUNDS, warmup_rounds=2)
    data.check_exact(benchmark, ids, data.q)


@pytest.mark.benchmark(group="vectors-single")
def test_faiss_single(benchmark, data):
    faiss = require("faiss", "faiss-cpu")
    index = data.faiss_index()
    faiss.omp_set_num_threads(1)  # faster than 2 threads for one query
    benchmark.extra_info.update(impl="faiss IndexFlatIP (omp 1)")
    benchmark.pedantic(index.search, (data.q[None, :], K), rounds=SINGLE_ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="vectors-single")
def test_usearch_exact_single(benchmark, data):
    require("simsimd", "simsimd")  # before usearch: the other order breaks simsimd.cdist dtypes
    usearch = require("usearch.index", "usearch")
    benchmark.extra_info.update(impl="usearch exact")

    def run():
        return usearch.search(data.matrix, data.q, K, usearch.MetricKind.IP, exact=True)

    benchmark.pedantic(run, rounds=SINGLE_ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="vectors-single")
def test_numpy_single(benchmark, data):
    benchmark.extra_info.update(impl="numpy X @ q + argpartition")

    def run():
        scores = data.matrix @ data.q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    benchmark.pedantic(run, rounds=SINGLE_ROUNDS, warmup_rounds=2)


# -- a batch of queries ----------------------------------------------------------------------------


@pytest.mark.benchmark(group="vectors-batch")
def test_engine_batch(benchmark, data):
    benchmark.extra_info.update(
        impl="engine",
        target="<= faiss IndexFlatIP with BLAS",
        target_vs={"faiss IndexFlatIP (BLAS)": 1.0},
        queries=NQ,
    )
    found, _ = benchmark.pedantic(
        data.index.search_batch, (data.queries, K), rounds=BATCH_ROUNDS, warmup_rounds=1
    )
    data.check_exact(benchmark, found[-1], data.queries[-1])


@pytest.mark.benchmark(group="vectors-batch")
def test_faiss_batch(benchmark, data):
    faiss = require("faiss", "faiss-cpu")
    index = data.faiss_index()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    faiss.cvar.distance_compute_blas_threshold = 20
    benchmark.extra_info.update(impl="faiss IndexFlatIP (BLAS)", queries=NQ)
    benchmark.pedantic(index.search, (data.queries, K), rounds=BATCH_ROUNDS, warmup_rounds=1)


@pytest.mark.benchmark(group="vectors-batch")
def test_numpy_batch(benchmark, data):
    benchmark.extra_info.update(impl="numpy Q @ X.T + argpartition", queries=NQ)

    def run():
        scores = data.queries @ data.matrix.T
        return np.argpartition(-scores, K, axis=1)[:, :K]

    benchmark.pedantic(run, rounds=BATCH_ROUNDS, warmup_rounds=1)


# -- a 10%-selective metadata filter ---------------------------------------------------------------


@pytest.mark.benchmark(group="vectors-filtered")
def test_engine_filtered(benchmark, data):
    benchmark.extra_info.update(
        impl="engine",
        target="< engine unfiltered (same run)",
        target_vs={"engine unfiltered": 1.0},
        selectivity=0.1,
    )
    where = {"source_type": "code"}
    ids, _ = benchmark.pedantic(data.index.search, (data.q, K, where), rounds=SINGLE_ROUNDS, warmup_rounds=2)
    data.check_exact(benchmark, ids, data.q, data.code)
    data.candidates(benchmark, data.code)


@pytest.mark.benchmark(group="vectors-filtered")
def test_engine_full_scan_filtered(benchmark, data):
    """The fused kernel on the same mask, without the prefilter."""
    benchmark.extra_info.update(impl="engine full scan (no prefilter)", selectivity=0.1)
    mask = data.code.astype(np.uint8)
    rows, _ = benchmark.pedantic(
        kernel.topk, (data.matrix, data.q, K, mask), rounds=SINGLE_ROUNDS, warmup_rounds=2
    )
    data.check_exact(benchmark, [f"e{r}" for r in rows.tolist()], data.q, data.code)


@pytest.mark.benchmark(group="vectors-filtered")
def test_engine_unfiltered(benchmark, data):
    benchmark.extra_info.update(impl="engine unfiltered", target="baseline: the filtered search must beat it")
    benchmark.pedantic(data.index.search, (data.q, K), rounds=SINGLE_ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="vectors-filtered")
def test_faiss_filtered(benchmark, data):
    faiss = require("faiss", "faiss-cpu")
    index = data.faiss_index()
    faiss.omp_set_num_threads(1)
    bitmap = np.packbits(data.code, bitorder="little")
    params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(N, faiss.swig_ptr(bitmap)))
    benchmark.extra_info.update(impl="faiss IndexFlatIP + IDSelectorBitmap (omp 1)", selectivity=0.1)
    _, rows = benchmark.pedantic(
        index.search, (data.q[None, :], K), {"params": params}, rounds=SINGLE_ROUNDS, warmup_rounds=2
    )
    assert data.code[rows[0]].all()
