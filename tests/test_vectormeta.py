"""The metadata columns of a VectorIndex and the `where` masks built from them.

Masks are checked against a plain per-row predicate over the original
strings and numbers, through writes, growth and compaction (which renumbers
the interned strings). VectorIndex's searches with `where` are checked in
test_vectors.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UnknownFieldError, ValidationError
from engine.vectormeta import WHERE_KEYS, MetadataColumns, check_timestamp

TYPES = ["code", "doc", "log", ""]
PATHS = [None, "src/engine/a.py", "src/engine/b.py", "src/tests/t.py", "docs/x.md", "src"]


def filled(rng: np.random.Generator, n: int, capacity: int | None = None):
    """Columns holding n random rows, and the rows as plain Python values."""
    types = [TYPES[i] for i in rng.integers(0, len(TYPES), n)]
    paths = [PATHS[i] for i in rng.integers(0, len(PATHS), n)]
    stamps = rng.integers(0, 100, n).astype(float)
    meta = MetadataColumns(capacity or n)
    meta.write(slice(0, n), meta.encode(types, paths, stamps, n), slice(None))
    return meta, list(zip(types, paths, stamps.tolist(), strict=True))


def matches(row, where) -> bool:
    type_, path, ts = row
    wanted = where.get("source_type")
    if wanted is not None and type_ not in ([wanted] if isinstance(wanted, str) else wanted):
        return False
    prefix = where.get("source_path_prefix")
    if prefix is not None and (path is None or not path.startswith(prefix)):
        return False
    return where.get("since", -np.inf) <= ts < where.get("until", np.inf)


WHERES = [
    {"source_type": "code"},
    {"source_type": ["doc", "log"]},
    {"source_type": ("log", "missing")},
    {"source_type": []},
    {"source_type": ""},
    {"source_path_prefix": "src/engine/"},
    {"source_path_prefix": "src"},
    {"source_path_prefix": ""},
    {"since": 50},
    {"until": 10},
    {"since": 20, "until": 30},
    {"source_type": "doc", "source_path_prefix": "src/", "since": 40.5},
]


def check_masks(meta: MetadataColumns, rows: list, alive: np.ndarray | None = None) -> None:
    n = len(rows)
    for where in WHERES:
        mask = meta.mask(where, n, alive)
        assert mask is not None and mask.dtype == np.uint8 and mask.shape == (n,)
        want = [matches(r, where) and (alive is None or bool(alive[i])) for i, r in enumerate(rows)]
        assert mask.astype(bool).tolist() == want, where


def test_masks_match_the_rows():
    rng = np.random.default_rng(1)
    meta, rows = filled(rng, 500, capacity=800)
    check_masks(meta, rows)
    alive = (rng.random(500) < 0.7).astype(np.uint8)
    check_masks(meta, rows, alive)
    # no condition: the liveness column itself, or None when every row counts
    assert meta.mask(None, 500, None) is None and meta.mask({}, 500, alive) is alive


def test_single_rows_growth_and_compaction_keep_the_masks_right():
    rng = np.random.default_rng(2)
    meta, rows = filled(rng, 40, capacity=40)
    meta.set_row(3, "fresh", "new/path.py", 77.0)
    rows[3] = ("fresh", "new/path.py", 77.0)
    meta.grow(100)
    assert len(meta.type_codes) == len(meta.path_codes) == len(meta.timestamps) == 100
    assert meta.path_codes[40:].tolist() == [-1] * 60 and meta.timestamps[40:].tolist() == [0.0] * 60
    more = [("log", None, 5.0), ("doc", "docs/y.md", 60.0)]
    encoded = meta.encode([r[0] for r in more], [r[1] for r in more], [r[2] for r in more], 2)
    meta.write(np.array([40, 41]), encoded, np.array([0, 1]))
    rows += more
    check_masks(meta, rows)
    assert meta.mask({"source_type": "fresh", "source_path_prefix": "new/"}, 42, None).tolist().count(1) == 1

    live = np.array([i for i in range(42) if i % 3 != 0 and rows[i][0] != "code"])
    before = len(meta.types.names)
    meta.compact(live)
    rows = [rows[i] for i in live.tolist()]
    check_masks(meta, rows)
    # only the strings still used survive, renumbered densely
    assert sorted(meta.types.names) == sorted({r[0] for r in rows}) and len(meta.types.names) < before
    assert sorted(meta.paths.names) == sorted({r[1] for r in rows if r[1] is not None})
    assert meta.type_codes[: len(rows)].max() == len(meta.types.names) - 1


def test_encode_broadcasts_and_validates():
    meta = MetadataColumns(4)
    enc = meta.encode("code", "a/b.py", None, 3)
    assert enc.type_codes.tolist() == [0, 0, 0] and enc.path_codes.tolist() == [0, 0, 0]
    assert enc.timestamps.tolist() == [0.0, 0.0, 0.0]
    enc = meta.encode(None, None, np.array([1.0, 2.0]), 2)
    assert meta.types.names[enc.type_codes[0]] == "" and enc.path_codes.tolist() == [-1, -1]
    bad = [
        (["code"], None, None, 2),  # count
        (None, ["a", "b", "c"], None, 2),
        (None, None, [1.0], 2),
        ([None, "x"], None, None, 2),  # types may not be None
        ([["x"], "y"], None, None, 2),  # unhashable
        (None, [7, "x"], None, 2),
        (None, None, ["x", 1], 2),
        (None, None, [1.0, float("nan")], 2),
        (None, None, [1.0, float("inf")], 2),
    ]
    for types, paths, stamps, m in bad:
        with pytest.raises(ValidationError):
            meta.encode(types, paths, stamps, m)


def test_bad_where_is_rejected():
    meta, _ = filled(np.random.default_rng(3), 10)
    with pytest.raises(UnknownFieldError) as info:
        meta.mask({"source": "code"}, 10, None)
    assert all(k in str(info.value) for k in WHERE_KEYS)
    for where in (
        {"source_type": 3},
        {"source_type": ["a", 1]},
        {"source_type": None},
        {"source_path_prefix": None},
        {"source_path_prefix": 3},
        {"since": "yesterday"},
        {"until": float("nan")},
        {"since": True},
    ):
        with pytest.raises(ValidationError):
            meta.mask(where, 10, None)
    with pytest.raises(ValidationError):
        meta.mask([("source_type", "code")], 10, None)  # type: ignore[arg-type]


def test_check_timestamp():
    assert check_timestamp(3) == 3.0 and isinstance(check_timestamp(np.float32(1.5)), float)
    for bad in (True, "1", None, float("nan"), float("-inf")):
        with pytest.raises(ValidationError):
            check_timestamp(bad)
