"""StreamColumns: the schema table, code lookups, and how filters and sorts compile into kernel arguments
(each compiled predicate is run through the reference kernel and compared with the Python meaning)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import keys, scan
from engine.errors import UnknownFieldError
from engine.streamcolumns import (
    BOOL,
    CODE,
    FLOAT,
    INT,
    MISSING_BOOL,
    MISSING_INT,
    SCHEMAS,
    CodeDictionary,
    StreamColumns,
    in_range,
    is_missing,
    schema_for,
)

LEVELS = ["INFO", "ERROR", None, "DEBUG", "ERROR", "WARNING", 7]
SCORES = [0.5, None, 2.0, float("nan"), 1.0, -1.0, 0.75]
EPOCHS = [1, 2, None, 4, 5, 6, 7]
APPLIED = [True, False, None, True, 1, False, True]


def snapshot(stream: str, **values: list) -> StreamColumns:
    """A snapshot over hand-made columns, typed the way engine.columns types them."""
    schema = schema_for(stream)
    n = len(next(iter(values.values())))
    arrays, dicts = {}, {}
    for field, vals in values.items():
        kind = schema.columns[field]
        if kind == CODE:
            dicts[field] = CodeDictionary()
            arrays[field] = dicts[field].encode(vals)
        elif kind == FLOAT:
            arrays[field] = np.array([math.nan if v is None else v for v in vals], dtype=np.float64)
        elif kind == INT:
            arrays[field] = np.array([MISSING_INT if v is None else v for v in vals], dtype=np.int64)
        else:
            arrays[field] = np.array([MISSING_BOOL if v is None else int(v) for v in vals], dtype=np.uint8)
    arrays["offset"] = np.arange(n, dtype=np.int64)
    return StreamColumns(schema, n, arrays, {}, dicts)


def rows_of(snap: StreamColumns, flt: tuple) -> list[int] | None:
    pred = snap.predicate(flt)
    return None if pred is None else scan.select_reference(snap.n, [pred])[0].tolist()


def python_rows(values: list, flt: tuple) -> list[int]:
    op = flt[0]
    if op == "eq":
        return [i for i, v in enumerate(values) if (is_missing(v) if flt[2] is None else v == flt[2])]
    if op == "in":
        return [i for i, v in enumerate(values) if v in flt[2]]
    return [i for i, v in enumerate(values) if in_range(v, flt[2], flt[3])]


def test_every_schema_has_timestamp_and_offset_and_unknown_streams_get_only_those():
    for name, schema in SCHEMAS.items():
        assert schema.stream == name
        assert schema.columns["timestamp"] == FLOAT and schema.columns["offset"] == INT
    assert dict(schema_for("my_events").columns) == {"timestamp": FLOAT, "offset": INT}
    assert schema_for(keys.PATCH_HISTORY).columns["applied"] == BOOL


@pytest.mark.parametrize(
    "flt",
    [
        ("eq", "level", "ERROR"),
        ("eq", "level", None),
        ("eq", "level", "NOPE"),
        ("in", "level", ("INFO", "WARNING", "NOPE")),
        ("range", "level", "E", "J"),
        ("range", "level", None, "E"),
    ],
)
def test_code_filters_mean_what_they_mean_on_the_strings(flt):
    snap = snapshot(keys.SYSTEM_LOGS, level=LEVELS)
    want = python_rows([v if isinstance(v, str) else None for v in LEVELS], flt)
    assert rows_of(snap, flt) == (want or None)  # None: the snapshot already knows nothing matches


@pytest.mark.parametrize(
    "flt",
    [
        ("range", "performance_score", 0.5, 1.0),
        ("range", "performance_score", None, 0.5),
        ("eq", "performance_score", 2.0),
        ("eq", "performance_score", None),
    ],
)
def test_float_filters_skip_missing_values(flt):
    snap = snapshot(keys.SIGNATURE_METRICS, performance_score=SCORES)
    assert rows_of(snap, flt) == python_rows(SCORES, flt)


def test_int_and_bool_filters_and_values_that_can_never_match():
    snap = snapshot(keys.TRAINING_HISTORY, epoch=EPOCHS)
    assert rows_of(snap, ("range", "epoch", 1.5, 5)) == [1, 3, 4]
    assert rows_of(snap, ("eq", "epoch", None)) == [2]
    assert snap.predicate(("eq", "epoch", 2.5)) is None  # an int column holds no 2.5
    assert snap.predicate(("eq", "epoch", "2")) is None
    patches = snapshot(keys.PATCH_HISTORY, applied=APPLIED)
    assert rows_of(patches, ("eq", "applied", True)) == [0, 3, 4, 6]
    assert rows_of(patches, ("in", "applied", (False, None))) == [1, 2, 5]
    assert patches.predicate(("eq", "applied", 7)) is None


def test_codes_categories_and_sort_keys_follow_the_strings():
    snap = snapshot(keys.SYSTEM_LOGS, level=LEVELS)
    assert snap.categories("level") == ["INFO", "ERROR", "DEBUG", "WARNING"]
    assert (snap.code("level", "ERROR"), snap.code("level", None), snap.code("level", "NOPE")) == (
        1,
        -1,
        None,
    )
    assert snap.code("level", ["unhashable"]) is None
    col, desc, rank, zones = snap.sort_key("level", True)
    assert col is snap.column("level") and desc is True and zones is None
    rows, _ = scan.select_reference(snap.n, [], col, False, rank)
    named = [LEVELS[r] for r in rows.tolist()]
    assert named == ["DEBUG", "ERROR", "ERROR", "INFO", "WARNING", None, 7]  # missing codes last
    with pytest.raises(UnknownFieldError):
        snap.column("message")


def test_int_bounds_round_inwards_and_keep_the_missing_marker_out() -> None:
    from engine.streamcolumns import MISSING_INT, int_bounds

    top = int(np.iinfo(np.int64).max)
    assert int_bounds(1.5, 4.5) == (2, 4)
    assert int_bounds(-2.5, -0.5) == (-2, -1)
    assert int_bounds(None, None) == (MISSING_INT + 1, top)
    assert int_bounds(-math.inf, math.inf) == (MISSING_INT + 1, top)
    assert int_bounds(np.float32(2.0), 3) == (2, 3)
    assert int_bounds(MISSING_INT, MISSING_INT) is None  # only the marker: nothing can match
    for lo, hi in [(math.nan, 1), (1, math.nan), (math.inf, None), (None, -math.inf)]:
        assert int_bounds(lo, hi) is None
    assert int_bounds(2**70, None) is None and int_bounds(None, -(2**70)) is None
