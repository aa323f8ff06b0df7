"""In-memory vector index: exact cosine top-k over one contiguous float32 matrix.

`VectorIndex` owns the search side of embeddings. The engine keeps embeddings
durably in LMDB and mirrors them here (`add`, `remove`, `ids()`); this module
knows nothing about storage.

Why it is shaped this way:
- One C-contiguous float32 matrix of L2-normalised rows, so cosine similarity
  is a dot product and a search is one sequential scan that the native kernel
  (`engine._vectors`, ext/_vectors.pyx) runs at memory bandwidth. Capacity
  doubles, so appends are amortised O(dim).
- Rows are addressed by position; string ids map to rows through a dict and a
  row -> id list. Removing marks a tombstone (the row is masked out of every
  search) instead of moving memory; `compact()` squeezes tombstones out, and
  runs by itself when growth would otherwise be needed while at least a
  quarter of the rows are dead. Re-adding an existing id overwrites its row.
- Beside the matrix, an int8 copy (per row: codes, a float32 scale and two
  error bounds; `quantise` in engine._prefilter, +26% memory at dim 384)
  lets a single search read a quarter of the bytes: that kernel brackets
  every score from the int8 copy, then only the rows that can reach the top
  k are rescored with the routine of the full scan, so results are exactly
  the full scan's. It falls back to the full scan when too many rows could
  (near ties), and is skipped below `PREFILTER_MIN_VALUES` (small matrices
  sit in cache). `prefilter=False` keeps no int8 copy and always scans in
  full.
- Metadata lives in typed columns beside the matrix (engine.vectormeta:
  interned `source_type` and `source_path` codes, float64 `timestamp`, and
  the `where` filters, listed there), so a filter becomes a uint8 row mask;
  the kernel reads the mask in the same pass as the dot products and skips
  masked rows without reading them, which makes a selective filter faster
  than an unfiltered search.
- Scores are float32 products accumulated in double (the native scan; the
  numpy reference computes in float64 too), except in `search_batch` of
  several queries, which scores through BLAS sgemm in float32.

The index is not synchronised: callers serialise writes against searches.
With ENGINE_PURE=1 searches run the numpy reference (`reference_topk`), which
the tests compare the kernel against.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._native import load
from .errors import DimensionError, NotFoundError, ValidationError
from .vectormeta import MetadataColumns, check_timestamp

_native = load("_vectors")
_native_prefilter = load("_prefilter")

_BLOCK = 16384  # rows normalised (and moved by compact) per step: bounds the scratch memory
_TINY = 1e-280  # squared norms below this lose float64 digits: such rows are rescaled first
_STATS = 3  # per-row quantisation stats: scale, error norm bound, code norm bound
# Smaller matrices (8 MB of float32) are scanned in full: the scan is then ~100 us, in cache,
# and the prefilter's fixed cost (~20 us) buys little; it wins from about 5,000 rows at dim 384.
PREFILTER_MIN_VALUES = 1 << 21


def reference_topk(
    matrix: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by dot product: (rows int64, scores float64), best first.

    The plain numpy baseline: every score is computed in float64 (a block of
    rows widened at a time, as the native kernel accumulates float32 products
    in double), materialised and sorted with a stable sort, so ties keep the
    lower row, like the native kernel. Scores agree with the kernel's to
    ~1e-15 (another order of additions), so rows tied that closely may swap.
    """
    if mask is None:
        rows = np.arange(matrix.shape[0], dtype=np.int64)
    else:
        rows = np.flatnonzero(mask).astype(np.int64)
    q64 = np.asarray(q, dtype=np.float64)
    scores = np.empty(len(rows), np.float64)
    for b0 in range(0, len(rows), _BLOCK):
        block = matrix[b0 : b0 + _BLOCK] if mask is None else matrix[rows[b0 : b0 + _BLOCK]]
        np.matmul(block.astype(np.float64), q64, out=scores[b0 : b0 + len(block)])
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order], scores[order]


def reference_topk_batch(
    matrix: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`reference_topk` for each row of `queries`: (rows (nq, k'), scores (nq, k'))."""
    live = matrix.shape[0] if mask is None else int(np.count_nonzero(mask))
    kk = min(k, live)
    rows = np.empty((queries.shape[0], kk), np.int64)
    scores = np.empty((queries.shape[0], kk), np.float64)
    if kk:
        for i in range(queries.shape[0]):
            rows[i], scores[i] = reference_topk(matrix, queries[i], kk, mask)
    return rows, scores


def reference_quantise(rows: np.ndarray, codes: np.ndarray, stats: np.ndarray) -> None:
    """Fill the int8 copy of float32 `rows` with numpy, as the kernel's `quantise` does.

    codes (n, dim) int8 = round(x * 127 / max|x|); stats (n, 3) float32 =
    (scale s = max|x| / 127, bound >= ||x - s codes||, bound >= s ||codes||),
    both norms computed in float64, inflated for its rounding and rounded up.
    Codes and scales equal the kernel's bit for bit; the bounds may differ in
    the last place (the kernel sums in another order).
    """
    grow = 1.0 + (rows.shape[1] + 8) * 2.0**-52
    for b0 in range(0, rows.shape[0], _BLOCK):
        x = rows[b0 : b0 + _BLOCK].astype(np.float64)
        amax = np.abs(x).max(axis=1)
        scale = (amax / 127.0).astype(np.float32)
        inv = 127.0 / np.where(amax > 0, amax, np.inf)
        c = np.clip(np.rint(x * inv[:, None]), -127, 127)
        err = x - scale[:, None].astype(np.float64) * c
        codes[b0 : b0 + len(x)] = c
        out = stats[b0 : b0 + len(x)]
        out[:, 0] = scale
        out[:, 1] = _round_up32(np.sqrt(np.einsum("ij,ij->i", err, err)) * grow)
        out[:, 2] = _round_up32(scale * np.sqrt(np.einsum("ij,ij->i", c, c)) * grow)


def _round_up32(v: np.ndarray) -> np.ndarray:
    """float64 -> float32 never below v (raised by more than half an ulp, then rounded)."""
    return (v + np.abs(v) * float(np.finfo(np.float32).eps) + 1e-30).astype(np.float32)


def _quantise_into(rows: np.ndarray, codes: np.ndarray, stats: np.ndarray, threads: int) -> None:
    if _native_prefilter is None:
        reference_quantise(rows, codes, stats)
    else:
        _native_prefilter.quantise(rows, codes, stats, threads=threads)


def _as_float_array(value: Any, ndim: int, what: str) -> np.ndarray:
    """`value` as a numeric ndarray of `ndim` dimensions, or ValidationError."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not a numeric array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise ValidationError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValidationError(f"{what} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr


def _normalise_into(src: np.ndarray, dst: np.ndarray, names: Sequence[object] | None, what: str) -> None:
    """Write the L2-normalised rows of `src` into float32 `dst`, validating each row.

    Squared norms are summed in float64 (exact enough for any float32 input,
    and no float32 overflow or underflow). A block with a non-finite, zero,
    overflowing or vanishing norm takes the careful path: per-row checks that
    name the offending row (NaN/inf or zero vector -> ValidationError) and
    division by the largest magnitude first, so huge or subnormal finite
    float64 inputs still normalise exactly.
    """
    for b0 in range(0, src.shape[0], _BLOCK):
        block = src[b0 : b0 + _BLOCK]
        out = dst[b0 : b0 + len(block)]
        with np.errstate(all="ignore"):
            sq = np.einsum("ij,ij->i", block, block, dtype=np.float64, casting="unsafe")
            if np.all((sq > _TINY) & (sq < np.inf)):
                np.multiply(block, (1.0 / np.sqrt(sq))[:, None], out=out, casting="unsafe")
                continue
        exact = np.array(block, dtype=np.float64)
        finite = np.isfinite(exact).all(axis=1)
        if not finite.all():
            bad = b0 + int(np.argmin(finite))
            raise ValidationError(f"{_label(what, names, bad)} contains NaN or infinity")
        scale = np.abs(exact).max(axis=1)
        if not scale.all():
            bad = b0 + int(np.argmin(scale))
            raise ValidationError(f"{_label(what, names, bad)} is a zero vector (cosine is undefined)")
        exact /= scale[:, None]
        exact /= np.sqrt(np.einsum("ij,ij->i", exact, exact))[:, None]
        out[...] = exact


def _label(what: str, names: Sequence[object] | None, i: int) -> str:
    return what if names is None else f"{what} {names[i]!r}"


def _unit_vector(vec: np.ndarray, name: object, what: str) -> np.ndarray:
    """One vector, L2-normalised to float32; the cheap path for single adds and searches."""
    unit = vec.astype(np.float64)
    with np.errstate(all="ignore"):  # overflow/NaN: `_normalise_into` names the problem
        sq = float(unit @ unit)
    if _TINY < sq < math.inf:
        return (unit * (1.0 / math.sqrt(sq))).astype(np.float32)
    out = np.empty((1, len(vec)), np.float32)
    _normalise_into(vec[None, :], out, None if name is None else (name,), what)
    return out[0]


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValidationError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValidationError(f"k must be positive, got {k}")
    return int(k)


def _check_id(id_: object) -> str:
    if not isinstance(id_, str) or not id_:
        raise ValidationError(f"a vector id must be a non-empty string, got {id_!r}")
    return id_


def _check_positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValidationError(f"{what} must be a positive integer, got {value!r}")


class VectorIndex:
    """Exact cosine top-k over L2-normalised float32 vectors with string ids.

    `dim=None` takes the dimension from the first vector added. `capacity` is
    the initial number of rows allocated (it doubles as needed). `threads`
    caps the kernel's threads (default: ENGINE_THREADS, else os.cpu_count()).
    `prefilter=False` keeps no int8 copy (dim + 12 bytes less per row) and
    makes every single search a full scan.
    """

    _alive: np.ndarray
    _capacity: int
    _codes: np.ndarray | None
    _dim: int | None
    _ids: list[str | None]
    _matrix: np.ndarray | None
    _n_dead: int
    _n_rows: int
    _meta: MetadataColumns
    _prefilter: bool
    _qstats: np.ndarray | None
    _rows: dict[str, int]
    _threads: int

    def __init__(
        self,
        dim: int | None = None,
        *,
        capacity: int = 1024,
        threads: int | None = None,
        prefilter: bool = True,
    ) -> None:
        if dim is not None:
            _check_positive(dim, "dim")
        _check_positive(capacity, "capacity")
        if threads is not None:
            _check_positive(threads, "threads")
        self._dim = None if dim is None else int(dim)
        self._threads = 0 if threads is None else int(threads)
        self._capacity = int(capacity)
        self._prefilter = bool(prefilter)
        self._matrix = self._codes = self._qstats = None
        if self._dim is not None:
            self._set_dim(self._dim)
        self._alive = np.zeros(self._capacity, np.uint8)
        self._meta = MetadataColumns(self._capacity)
        self._ids = []
        self._rows = {}
        self._n_rows = 0
        self._n_dead = 0

    # -- introspection ---------------------------------------------------------------------------

    @property
    def dim(self) -> int | None:
        """The vector dimension, or None before the first vector of an index made with dim=None."""
        return self._dim

    @property
    def capacity(self) -> int:
        """Rows allocated (live + tombstoned + free)."""
        return self._capacity

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the vectors: the float32 matrix and, with the prefilter, its int8 copy."""
        arrays = (self._matrix, self._codes, self._qstats)
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def tombstones(self) -> int:
        """Removed rows still occupying space until the next `compact()`."""
        return self._n_dead

    def __len__(self) -> int:
        return self._n_rows - self._n_dead

    def __contains__(self, id: object) -> bool:
        return id in self._rows

    def ids(self) -> list[str]:
        """Live ids, in row order."""
        return list(self._rows)

    def vector(self, id: str) -> np.ndarray:
        """A copy of the stored (L2-normalised, float32) vector of `id`; NotFoundError if absent."""
        row = self._rows.get(id)
        if row is None:
            raise NotFoundError(f"no vector with id {id!r}")
        assert self._matrix is not None
        return self._matrix[row].copy()

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self._dim}, len={len(self)}, capacity={self._capacity})"

    # -- writes ----------------------------------------------------------------------------------

    def add(
        self,
        id: str,
        vector: Any,
        *,
        source_type: str = "",
        source_path: str | None = None,
        timestamp: float = 0.0,
    ) -> None:
        """Add one vector (stored L2-normalised); an existing `id` is replaced in place."""
        _check_id(id)
        if not isinstance(source_type, str):
            raise ValidationError(f"source_type must be a string, got {source_type!r}")
        if source_path is not None and not isinstance(source_path, str):
            raise ValidationError(f"source_path must be a string or None, got {source_path!r}")
        ts = check_timestamp(timestamp)
        vec = _as_float_array(vector, 1, "vector")
        dim = self._check_dim(vec.shape[0], "vector")
        unit = _unit_vector(vec, id, "vector")
        row = self._rows.get(id)
        if row is None:
            if self._dim is None:
                self._set_dim(dim)
            self._reserve(1)
            row = self._n_rows
            self._n_rows += 1
            self._ids.append(id)
            self._rows[id] = row
            self._alive[row] = 1
        assert self._matrix is not None
        self._matrix[row] = unit
        self._quantise_rows(row, row + 1)
        self._meta.set_row(row, source_type, source_path, ts)

    def add_batch(
        self,
        ids: Sequence[str],
        matrix: Any,
        source_types: Sequence[str] | str | None = None,
        source_paths: Sequence[str | None] | str | None = None,
        timestamps: Iterable[float] | None = None,
    ) -> None:
        """Add many vectors: row i of `matrix` under `ids[i]`, with optional metadata columns.

        A single string for `source_types` / `source_paths` applies to every
        row. Existing ids are replaced in place; when an id repeats within the
        batch its last row wins (as if the rows were added one by one).
        Everything is validated before anything changes.
        """
        ids = list(ids)
        m = len(ids)
        try:
            last = dict(zip(ids, range(m), strict=True))  # the last occurrence of each id wins
        except TypeError:
            raise ValidationError("vector ids must be non-empty strings") from None
        if "" in last or not all(issubclass(t, str) for t in set(map(type, last))):
            bad = next(i for i in last if not isinstance(i, str) or not i)
            raise ValidationError(f"a vector id must be a non-empty string, got {bad!r}")
        mat = _as_float_array(matrix, 2, "matrix")
        if mat.shape[0] != m:
            raise ValidationError(f"{m} ids for {mat.shape[0]} vectors")
        dim = self._check_dim(mat.shape[1], "vectors")
        meta = self._meta.encode(source_types, source_paths, timestamps, m)
        if m == 0:
            return

        existing = last.keys() & self._rows.keys()
        fresh = [i for i in last if i not in existing] if existing else list(last)
        # rows in `mat` (and the metadata columns) to append; None: all of them, in order
        take = None if len(fresh) == m else np.fromiter(map(last.__getitem__, fresh), np.int64, len(fresh))

        first = self._dim is None
        if first:
            self._set_dim(dim)
        self._reserve(len(fresh))
        assert self._matrix is not None
        start, end = self._n_rows, self._n_rows + len(fresh)
        # New rows are normalised straight into free capacity (invisible until n_rows moves);
        # replaced rows go through a scratch copy: a bad row must not clobber a live one.
        try:
            src = mat if take is None else mat[take]
            _normalise_into(src, self._matrix[start:end], fresh, "vector")
            if existing:
                again = [i for i in last if i in existing]
                pos = np.fromiter(map(last.__getitem__, again), np.int64, len(again))
                scratch = np.empty((len(again), dim), np.float32)
                _normalise_into(mat[pos], scratch, again, "vector")
        except ValidationError:
            if first:  # a rejected first batch must not fix the dimension
                self._dim = self._matrix = self._codes = self._qstats = None
            raise

        if existing:
            rows = np.fromiter(map(self._rows.__getitem__, again), np.int64, len(again))
            self._matrix[rows] = scratch
            if self._codes is not None and self._qstats is not None:
                codes = np.empty(scratch.shape, np.int8)
                stats = np.empty((len(rows), _STATS), np.float32)
                _quantise_into(scratch, codes, stats, self._threads)
                self._codes[rows], self._qstats[rows] = codes, stats
            self._meta.write(rows, meta, pos)
        self._quantise_rows(start, end)
        sel = slice(None) if take is None else take
        self._meta.write(slice(start, end), meta, sel)
        self._alive[start:end] = 1
        self._ids.extend(fresh)
        self._rows.update(zip(fresh, range(start, end), strict=True))
        self._n_rows = end

    def remove(self, id: str) -> bool:
        """Remove `id`; True if it was present. The row becomes a tombstone until compaction."""
        row = self._rows.pop(id, None)
        if row is None:
            return False
        self._alive[row] = 0
        self._ids[row] = None
        self._n_dead += 1
        return True

    def compact(self) -> int:
        """Squeeze tombstoned rows out of the matrix; returns how many rows were reclaimed.

        Live rows keep their relative order. Capacity is kept.
        """
        dead = self._n_dead
        if dead == 0:
            return 0
        live = np.flatnonzero(self._alive[: self._n_rows])
        m = len(live)
        # In place, front to back: the row written at j comes from live[j] >= j, and every
        # source still to be read lies at or after the block being written.
        for arr in (a for a in (self._matrix, self._codes, self._qstats) if a is not None):
            for b0 in range(0, m, _BLOCK):
                src = live[b0 : b0 + _BLOCK]
                arr[b0 : b0 + len(src)] = arr[src]
        self._meta.compact(live)
        self._alive[:m] = 1
        self._alive[m : self._n_rows] = 0
        self._ids = [self._ids[r] for r in live.tolist()]
        self._rows = {id_: r for r, id_ in enumerate(self._ids) if id_ is not None}
        self._n_rows = m
        self._n_dead = 0
        return dead

    def _check_dim(self, dim: int, what: str) -> int:
        if self._dim is not None and dim != self._dim:
            raise DimensionError(f"{what}: dimension {dim}, but the index has dimension {self._dim}")
        if dim == 0:
            raise DimensionError(f"{what}: a vector needs at least one dimension")
        return dim

    def _set_dim(self, dim: int) -> None:
        self._dim = dim
        self._matrix = np.empty((self._capacity, dim), np.float32)
        if self._prefilter:
            self._codes = np.empty((self._capacity, dim), np.int8)
            self._qstats = np.empty((self._capacity, _STATS), np.float32)

    def _quantise_rows(self, start: int, end: int) -> None:
        """Refresh the int8 copy of rows [start, end) from the matrix."""
        if self._codes is not None and self._qstats is not None and self._matrix is not None:
            sel = slice(start, end)
            _quantise_into(self._matrix[sel], self._codes[sel], self._qstats[sel], self._threads)

    def _reserve(self, extra: int) -> None:
        """Make room for `extra` more rows: compact if a quarter is dead, else double capacity."""
        need = self._n_rows + extra
        if need <= self._capacity:
            return
        if self._n_dead and self._n_dead * 4 >= self._n_rows:
            self.compact()
            need = self._n_rows + extra
            if need <= self._capacity:
                return
        cap = self._capacity
        while cap < need:
            cap *= 2
        n = self._n_rows
        assert self._matrix is not None
        self._matrix = _grown_rows(self._matrix, cap, n)
        if self._codes is not None and self._qstats is not None:
            self._codes = _grown_rows(self._codes, cap, n)
            self._qstats = _grown_rows(self._qstats, cap, n)
        self._alive = _grown(self._alive, cap, 0)
        self._meta.grow(cap)
        self._capacity = cap

    # -- search ----------------------------------------------------------------------------------

    def search(
        self, q: Any, k: int = 10, where: Mapping[str, Any] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The k live vectors most cosine-similar to `q`: (ids, float64 scores), best first.

        Fewer than k come back when fewer rows match. Ties keep the earlier row.
        """
        k = _check_k(k)
        qv = _as_float_array(q, 1, "query")
        self._check_dim(qv.shape[0], "query")
        unit = _unit_vector(qv, None, "the query")
        mask = self._mask(where)
        n = self._n_rows
        if n == 0 or (mask is not None and not mask.any()):
            return [], np.empty(0, np.float64)
        rows, scores = self._topk(unit, k, mask)
        ids = self._ids
        return [ids[r] for r in rows.tolist()], scores

    def _topk(self, unit: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One query: the int8 prefilter, then an exact rescoring, or the full scan when it cannot help."""
        n = self._n_rows
        assert self._matrix is not None
        if _native is None:
            return reference_topk(self._matrix[:n], unit, k, mask)
        narrowing = k < len(self) and n * self._matrix.shape[1] >= PREFILTER_MIN_VALUES
        if self._codes is not None and self._qstats is not None and narrowing and _native_prefilter:
            rows = _native_prefilter.candidates(
                self._codes[:n], self._qstats[:n], unit, k, mask, threads=self._threads
            )
            if rows is not None:
                return _native.topk(self._matrix[:n], unit, k, rows=rows, threads=self._threads)
        return _native.topk(self._matrix[:n], unit, k, mask, threads=self._threads)

    def search_batch(
        self, queries: Any, k: int = 10, where: Mapping[str, Any] | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """`search` for each row of `queries` (nq, dim): (ids per query, scores (nq, k') float64).

        Scores come from BLAS sgemm on blocks of rows, merged into a native
        k-heap per query (one query takes the `search` path). k' = min(k,
        matching rows), the same for every query.
        """
        k = _check_k(k)
        qm = _as_float_array(queries, 2, "queries")
        self._check_dim(qm.shape[1], "queries")
        normalised = np.empty((qm.shape[0], qm.shape[1]), np.float32)
        _normalise_into(qm, normalised, range(qm.shape[0]), "query")
        mask = self._mask(where)
        n, nq = self._n_rows, qm.shape[0]
        if n == 0 or nq == 0 or (mask is not None and not mask.any()):
            return [[] for _ in range(nq)], np.empty((nq, 0), np.float64)
        assert self._matrix is not None
        if nq == 1:
            one_rows, one_scores = self._topk(normalised[0], k, mask)
            rows, scores = one_rows[None, :], one_scores[None, :]
        elif _native is None:
            rows, scores = reference_topk_batch(self._matrix[:n], normalised, k, mask)
        else:
            rows, scores = _native.topk_batch(self._matrix[:n], normalised, k, mask, threads=self._threads)
        ids = self._ids
        return [[ids[r] for r in row] for row in rows.tolist()], scores

    def _mask(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        """The uint8 row mask for `where` (tombstones excluded), or None when every row counts."""
        n = self._n_rows
        return self._meta.mask(where, n, self._alive[:n] if self._n_dead else None)


def _grown_rows(arr: np.ndarray, cap: int, n: int) -> np.ndarray:
    """A (cap, ...) copy of `arr` keeping its first n rows (the rest uninitialised)."""
    out = np.empty((cap, *arr.shape[1:]), arr.dtype)
    out[:n] = arr[:n]
    return out


def _grown(col: np.ndarray, cap: int, fill: float) -> np.ndarray:
    """A copy of column `col` with `cap` entries, the new ones `fill`."""
    out = np.full(cap, fill, col.dtype)
    out[: len(col)] = col
    return out
