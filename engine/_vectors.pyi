"""Type stubs for the compiled cosine top-k kernels (ext/_vectors.pyx)."""

import numpy as np

DEFAULT_CHUNK_ROWS: int
SCORE_BLOCK_VALUES: int

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
