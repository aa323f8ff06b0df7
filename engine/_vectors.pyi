"""Type stubs for the compiled cosine top-k kernels (ext/_vectors.pyx)."""

import numpy as np

DEFAULT_CHUNK_ROWS: int
SCORE_BLOCK_VALUES: int
MIN_CANDIDATE_LIMIT: int

def default_threads() -> int:
    """Threads a kernel uses when not told: ENGINE_THREADS, else os.cpu_count()."""

def topk(
    X: np.ndarray,
    q: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
    threads: int = 0,
    chunk_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of X (n, dim) float32 with the k largest dot products with q, best first."""

def quantise(X: np.ndarray, codes: np.ndarray, stats: np.ndarray, *, threads: int = 0) -> None:
    """Fill the int8 copy of X: codes (n, dim) int8 and stats (n, 3) float32."""

def candidates(
    codes: np.ndarray,
    stats: np.ndarray,
    q: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    *,
    threads: int = 0,
    chunk_rows: int = 0,
    max_candidates: int = 0,
) -> np.ndarray | None:
    """Ascending rows that may hold the top-k of q (a superset), or None: run the full scan."""

def topk_batch(
    X: np.ndarray,
    Q: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    *,
    threads: int = 0,
    block_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of X for each row of Q: (rows (nq, k'), scores (nq, k'))."""

def score_bounds(codes: np.ndarray, stats: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower float64, upper float32) bounds of each row's float32 score with q, as the prefilter has them."""
