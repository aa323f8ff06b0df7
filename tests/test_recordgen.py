"""engine.recordgen: the generated methods on a record class that is not one of the nine.

The nine records are covered by test_models.py; here a new class with one field of every kind shows
that the generator follows the annotations (not anything special-cased for the nine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from engine.enums import ActionType, Environment
from engine.errors import ValidationError
from engine.recordgen import Record, coerce_float, record, vectors_equal, wrong_type


@record
@dataclass(slots=True, eq=False)
class Sample(Record):
    session_id: str
    score: float
    count: int
    ok: bool
    kind: ActionType
    tags: list[str]
    payload: dict[str, Any]
    note: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    environment: Environment = Environment.DEVELOPMENT


def sample(**kw: Any) -> Sample:
    base: dict[str, Any] = dict(
        session_id="s1", score=0.5, count=3, ok=True, kind="code_edit", tags=["a"], payload={"x": [1, 2]}
    )
    return Sample(**(base | kw))


def test_generated_methods_follow_the_annotations() -> None:
    s = sample(score=np.float32(0.25), count=np.int64(7), payload={"t": [1, 2]})
    assert s.kind is ActionType.CODE_EDIT and type(s.score) is float and type(s.count) is int
    row = s.to_dict()
    assert row == {
        "session_id": "s1", "score": 0.25, "count": 7, "ok": True, "kind": "code_edit", "tags": ["a"],
        "payload": {"t": [1, 2]}, "note": None, "weights": {}, "environment": "development",
    }  # fmt: skip
    assert orjson.dumps(s.shallow_dict()) == orjson.dumps(row)
    back = Sample.from_dict(row)
    assert back.to_dict() == row and Sample.from_json_row(orjson.loads(orjson.dumps(row))).to_dict() == row
    assert Sample.validate.__qualname__ == "Sample.validate"


@pytest.mark.parametrize(
    ("kw", "where"),
    [
        ({"session_id": ""}, "Sample.session_id"),
        ({"score": math.nan}, "Sample.score"),
        ({"count": 1.5}, "Sample.count"),
        ({"ok": "yes"}, "Sample.ok"),
        ({"kind": "nope"}, "Sample.kind"),
        ({"tags": ["a", 1]}, "Sample.tags"),
        ({"payload": {"x": {"y": math.inf}}}, "Sample.payload.x.y"),
        ({"weights": {"w": "heavy"}}, "Sample.weights"),
    ],
)
def test_bad_values_name_their_field(kw: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=f"^{where.replace('.', '[.]')}"):
        sample(**kw)


def test_from_dict_reports_missing_fields_and_ignores_unknown_ones() -> None:
    row = sample().to_dict()
    assert Sample.from_dict(row | {"added_later": 1}).to_dict() == row
    del row["count"]
    with pytest.raises(ValidationError, match="missing field 'count'"):
        Sample.from_dict(row)


def test_public_helpers() -> None:
    assert coerce_float("t", np.float64(2.0)) == 2.0 and type(coerce_float("t", 2)) is int
    with pytest.raises(ValidationError, match=r"^t"):
        coerce_float("t", "2")
    err = wrong_type("where", "a thing", 42)
    assert isinstance(err, ValidationError) and "where" in str(err) and "a thing" in str(err)
    assert vectors_equal([1.0, 2.0], np.array([1.0, 2.0], np.float32))
    assert not vectors_equal([1.0, 2.0], [1.0, 2.5])


def test_from_dict_fills_enum_defaults_and_fresh_factory_values() -> None:
    row = sample().to_dict()
    for name in ("note", "weights", "environment"):
        del row[name]
    a, b = Sample.from_dict(row), Sample.from_dict(row)
    assert a.environment is Environment.DEVELOPMENT and a.note is None and a.weights == {}
    a.weights["w"] = 1.0
    assert b.weights == {}  # a factory default is made per record, never shared
