"""Type stubs for the compiled int8 prefilter of single searches (ext/_prefilter.pyx)."""

import numpy as np

MIN_CANDIDATE_LIMIT: int
MAX_DIM: int

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

def score_bounds(codes: np.ndarray, stats: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower float64, upper float32) bounds of each row's score with q, as the prefilter has them."""
