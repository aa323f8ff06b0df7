"""Type stubs for the compiled query kernels (ext/_query.pyx); see engine.query for the reference."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

ZONE_ROWS: int
PAR_ROWS: int

Predicate = tuple[Any, ...]
Zones = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]

def default_threads() -> int:
    """Threads a scan may use when not told: ENGINE_THREADS, else 1."""

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
def aggregate(
    n: int, preds: Iterable[Predicate] = (), value: npt.NDArray[Any] | None = None, *, threads: int = 0
) -> tuple[int, int, float, float, float]: ...
def aggregate_by(
    n: int,
    preds: Iterable[Predicate],
    group: npt.NDArray[Any],
    ngroups: int,
    value: npt.NDArray[Any] | None = None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]: ...
