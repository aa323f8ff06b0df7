"""Type stubs for the compiled aggregate kernels (ext/_aggregate.pyx); see engine.scan for the reference."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

Predicate = tuple[Any, ...]

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
