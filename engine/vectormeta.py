"""The metadata of a VectorIndex's rows, and the `where` filters over it.

Every row of the index carries a `source_type` (a string), an optional
`source_path` and a float64 `timestamp`. They live here in typed columns,
row-aligned with the vector matrix of engine.vectors: strings interned to
dense int32 codes (no path: -1) and the timestamps as they are, so a `where`
filter becomes a uint8 row mask built with a few numpy operations, which the
native kernels read in the same pass as the dot products (a masked row is
never read). The index owns row placement (growth, tombstones, compaction)
and tells these columns what moved.

`where` filters (all given conditions must hold):
  {"source_type": "code"} or {"source_type": ["code", "doc"]}  type is one of these
  {"source_path_prefix": "src/engine/"}   source_path starts with this (None never matches)
  {"since": ts}                            timestamp >= ts
  {"until": ts}                            timestamp < ts
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .errors import UnknownFieldError, ValidationError

WHERE_KEYS = ("source_type", "source_path_prefix", "since", "until")


class Interner:
    """Strings <-> dense int32 codes, so a metadata column is a numpy array."""

    __slots__ = ("codes", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        """The code of `name`, given a new one on first sight."""
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


class MetadataRows(NamedTuple):
    """Validated, encoded metadata of a batch of rows, ready to be written into the columns."""

    type_codes: np.ndarray
    path_codes: np.ndarray
    timestamps: np.ndarray


class MetadataColumns:
    """source_type and source_path codes and timestamps of rows [0, capacity).

    Rows past the index's row count hold the defaults ("" type, no path,
    timestamp 0) or stale values that no mask ever reads.
    """

    __slots__ = ("path_codes", "paths", "timestamps", "type_codes", "types")

    def __init__(self, capacity: int) -> None:
        self.type_codes = np.zeros(capacity, np.int32)
        self.path_codes = np.full(capacity, -1, np.int32)
        self.timestamps = np.zeros(capacity, np.float64)
        self.types = Interner()
        self.paths = Interner()

    def grow(self, capacity: int) -> None:
        """Reallocate every column for `capacity` rows, keeping the current ones."""
        self.type_codes = _grown(self.type_codes, capacity, 0)
        self.path_codes = _grown(self.path_codes, capacity, -1)
        self.timestamps = _grown(self.timestamps, capacity, 0.0)

    def set_row(self, row: int, source_type: str, source_path: str | None, timestamp: float) -> None:
        """Write one row's (already validated) metadata."""
        self.type_codes[row] = self.types.code(source_type)
        self.path_codes[row] = -1 if source_path is None else self.paths.code(source_path)
        self.timestamps[row] = timestamp

    def encode(
        self,
        source_types: Iterable[str] | str | None,
        source_paths: Iterable[str | None] | str | None,
        timestamps: Iterable[float] | None,
        m: int,
    ) -> MetadataRows:
        """Validate and encode the metadata of m rows (a single string applies to every row).

        Raises ValidationError on a wrong count or type; new strings are
        interned (an unused name is harmless and dropped by `compact`).
        """
        return MetadataRows(
            _encoded(self.types, source_types, m, "source_types", ""),
            _encoded(self.paths, source_paths, m, "source_paths", None),
            _timestamps(timestamps, m),
        )

    def write(self, dest: slice | np.ndarray, rows: MetadataRows, src: slice | np.ndarray) -> None:
        """Columns[dest] = rows[src]."""
        self.type_codes[dest] = rows.type_codes[src]
        self.path_codes[dest] = rows.path_codes[src]
        self.timestamps[dest] = rows.timestamps[src]

    def compact(self, live: np.ndarray) -> None:
        """Move rows `live` (ascending) to the front, in order, and drop unused strings."""
        m = len(live)
        for col in (self.type_codes, self.path_codes, self.timestamps):
            col[:m] = col[live]
        self.types = _reinterned(self.types, self.type_codes[:m])
        self.paths = _reinterned(self.paths, self.path_codes[:m])

    def mask(self, where: Mapping[str, Any] | None, n: int, alive: np.ndarray | None) -> np.ndarray | None:
        """The uint8 mask of rows [0, n) that satisfy `where` and `alive` (None: every row counts).

        `alive` is the index's uint8 liveness column for those rows, or None
        when no row is dead. Raises UnknownFieldError for keys outside
        WHERE_KEYS and ValidationError for malformed values.
        """
        if not where:
            return alive
        if not isinstance(where, Mapping):
            raise ValidationError(f"where must be a mapping, got {type(where).__name__}")
        unknown = sorted(set(where) - set(WHERE_KEYS))
        if unknown:
            raise UnknownFieldError(f"unknown where keys {unknown}; supported: {list(WHERE_KEYS)}")
        keep = np.ones(n, np.bool_) if alive is None else alive.astype(bool)
        if "source_type" in where:
            keep &= self._type_match(where["source_type"], n)
        if "source_path_prefix" in where:
            prefix = where["source_path_prefix"]
            if not isinstance(prefix, str):
                raise ValidationError(f"source_path_prefix must be a string, got {prefix!r}")
            names = self.paths.names
            lut = np.fromiter((p.startswith(prefix) for p in names), bool, len(names))
            keep &= np.append(lut, False)[self.path_codes[:n]]  # code -1 (no path) -> False
        if "since" in where:
            keep &= self.timestamps[:n] >= _check_bound(where["since"], "since")
        if "until" in where:
            keep &= self.timestamps[:n] < _check_bound(where["until"], "until")
        return keep.view(np.uint8)

    def _type_match(self, wanted: Any, n: int) -> np.ndarray:
        allowed = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(allowed, (list, tuple, set, frozenset)) or not all(
            isinstance(t, str) for t in allowed
        ):
            raise ValidationError(f"source_type must be a string or a collection of strings, got {wanted!r}")
        codes = [c for c in (self.types.codes.get(t) for t in allowed) if c is not None]
        if len(codes) == 1:
            return self.type_codes[:n] == codes[0]
        lut = np.zeros(len(self.types.names), np.bool_)
        lut[codes] = True
        return lut[self.type_codes[:n]]


def check_timestamp(ts: object) -> float:
    """A row's timestamp as a float; ValidationError unless it is a finite real number."""
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(float(ts)):
        raise ValidationError(f"timestamp must be a finite number, got {ts!r}")
    return float(ts)


def _encoded(interner: Interner, values: Any, m: int, what: str, default: str | None) -> np.ndarray:
    """A metadata column as int32 codes (-1 for None); a single string applies to every row."""
    if values is None or isinstance(values, str):
        value = default if values is None else values
        return np.full(m, -1 if value is None else interner.code(value), np.int32)
    values = list(values)
    if len(values) != m:
        raise ValidationError(f"{len(values)} {what} for {m} vectors")
    try:
        distinct = set(values)
    except TypeError:
        raise ValidationError(f"{what} entries must be strings") from None
    for v in distinct:
        if not isinstance(v, str) and not (v is None and default is None):
            raise ValidationError(f"{what} entries must be strings{' or None' if default is None else ''}")
    lookup = {v: -1 if v is None else interner.code(v) for v in distinct}
    return np.fromiter(map(lookup.__getitem__, values), np.int32, m)


def _timestamps(values: Iterable[float] | None, m: int) -> np.ndarray:
    if values is None:
        return np.zeros(m, np.float64)
    try:
        stamps = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError("timestamps must be numbers") from None
    if stamps.shape != (m,):
        raise ValidationError(f"{stamps.size} timestamps for {m} vectors")
    if not np.isfinite(stamps).all():
        raise ValidationError("timestamps must be finite numbers")
    return stamps


def _check_bound(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
        raise ValidationError(f"{what} must be a number, got {value!r}")
    return float(value)


def _reinterned(interner: Interner, codes: np.ndarray) -> Interner:
    """A fresh interner holding only the strings `codes` still use; `codes` is renumbered in place."""
    used, inverse = np.unique(codes, return_inverse=True)
    fresh = Interner()
    remap = np.array([-1 if c < 0 else fresh.code(interner.names[c]) for c in used.tolist()], np.int32)
    codes[:] = remap[inverse.reshape(-1)] if len(codes) else codes
    return fresh


def _grown(col: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    out = np.full(capacity, fill, col.dtype)
    out[: len(col)] = col
    return out
