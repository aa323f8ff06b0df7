"""Type stubs for the compiled select kernel (ext/_query.pyx); see engine.scan for the reference."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

ZONE_ROWS: int
PAR_ROWS: int

Predicate = tuple[Any, ...]
Zones = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]

def default_threads() -> int:
    """Threads a scan may use when not told: ENGINE_THREADS, else 1 (engine._filter's)."""

def select(
    n: int,
    preds: Iterable[Predicate] = (),
    sort: npt.NDArray[Any] | None = None,
    descending: bool = False,
    sort_rank: npt.ArrayLike | None = None,
    offset: int = 0,
    limit: int = -1,
    sort_zones: Zones | None = None,
    *,
    threads: int = 0,
) -> tuple[npt.NDArray[np.int64], int]: ...
