"""Tests for engine.models: the seed's shapes, the wire form, and validation of every field kind."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import math
import os
import time
import uuid
import warnings
from decimal import Decimal
from enum import Enum
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ValidationError
from engine.models import (
    MAX_PAYLOAD_DEPTH,
    RECORD_TYPES,
    ActionRecord,
    ActionType,
    AgentState,
    ContextState,
    EmbeddingVector,
    Environment,
    LogEntry,
    PatchRecord,
    RetrievalEventRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_embedding_vector,
    create_log_entry,
    create_retrieval_event,
    new_id,
    signature_summary,
    verifier_summary,
)

# The seed's field order (old-system.md a.2); positional construction depends on it.
SEED_FIELDS = {
    EmbeddingVector: "id vector metadata timestamp source_type source_path chunk_start chunk_end",
    SignatureMetrics: "signature_name performance_score success_rate avg_response_time memory_usage "
    "iterations last_updated signature_type active optimization_history",
    VerifierMetrics: "verifier_name accuracy status checks_performed issues_found last_run "
    "avg_execution_time false_positive_rate false_negative_rate",
    TrainingMetrics: "session_id timestamp epoch training_accuracy validation_accuracy loss learning_rate "
    "batch_size model_type environment hyperparameters convergence_metrics",
    ActionRecord: "action_id timestamp action_type state_before state_after parameters result reward "
    "confidence execution_time environment context_hash",
    LogEntry: "log_id timestamp level source message context environment session_id trace_id",
    ContextState: "context_id timestamp agent_state current_task workspace_path active_files recent_actions "
    "memory_usage performance_snapshot environment",
    PatchRecord: "patch_id timestamp prompt_hash target_files patch_content applied test_results "
    "confidence_score blast_radius rollback_info environment",
    RetrievalEventRecord: "event_id timestamp workspace_path query hits environment",
}
ID_FIELDS = {"action_id", "log_id", "id", "event_id", "context_id", "patch_id", "session_id"}
ID_FIELDS |= {"signature_name", "verifier_name"}


def valid_args(cls: type) -> list[Any]:
    """One valid positional argument list per record class, in seed order."""
    # fmt: off
    return {
        EmbeddingVector: ["e1", [0.1, 0.2, 0.3], {"lang": "py"}, 1.5, "code", "a.py", 0, 10],
        SignatureMetrics: ["Sig", 89.5, 94.2, 2.1, "256MB", 150, "2024-01-01", "analysis", False, [{"a": 1}]],
        VerifierMetrics: ["Ver", 0.9, "active", 10, 2, "2024-01-01", 0.5, 0.1, None],
        TrainingMetrics: ["s1", 2.0, 3, 0.8, 0.7, 0.3, 1e-3, 32, "rl", Environment.TESTING, {"lr": 0.1},
                          {"d": 0.5}],
        ActionRecord: ["a1", 3.0, ActionType.CODE_EDIT, {"f": ["x"]}, {"f": []}, {"p": 1}, {"ok": True}, 0.5,
                       0.9, 1.2, Environment.LOCAL, "h"],
        LogEntry: ["l1", 4.0, "INFO", "src", "hello", {"k": "v"}, Environment.STAGING, "sess", "trace"],
        ContextState: ["c1", 5.0, AgentState.PLANNING, "task", "/ws", ["a.py"], ["a1"], {"rss": 1},
                       {"score": 0.5}, Environment.PRODUCTION],
        PatchRecord: ["p1", 6.0, "hash", ["a.py"], "diff", True, {"passed": 3}, 0.8, 0.2, None,
                      Environment.DEVELOPMENT],
        RetrievalEventRecord: ["r1", 7.0, "/ws", "query", [{"path": "a.py", "score": 0.9}],
                               Environment.TESTING],
    }[cls]
    # fmt: on


def make(cls: type, **changes: Any) -> Any:
    names = SEED_FIELDS[cls].split()
    args = dict(zip(names, valid_args(cls), strict=True))
    args.update(changes)
    return cls(**args)


# ------------------------------------------------------------------------------------------ shapes


def test_enums_values_and_str_equality() -> None:
    states = [m.value for m in AgentState]
    assert states == "idle analyzing planning executing training error optimizing".split()
    assert [m.value for m in ActionType] == (
        "code_analysis code_edit file_search test_execution patch_generation optimization verification "
        "context_building tool_selection"
    ).split()
    assert [m.value for m in Environment] == ["development", "testing", "staging", "production", "local"]
    assert ActionType.CODE_EDIT == "code_edit"
    assert isinstance(Environment.LOCAL, str)
    for enum_cls in (AgentState, ActionType, Environment):
        assert all(m.value == m.name.lower() for m in enum_cls)


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_field_names_and_order_match_the_seed(cls: type) -> None:
    assert [f.name for f in dataclasses.fields(cls)] == SEED_FIELDS[cls].split()
    assert not hasattr(make(cls), "__dict__")  # slotted


def test_record_types_tuple() -> None:
    assert set(RECORD_TYPES) == set(SEED_FIELDS) and len(RECORD_TYPES) == 9


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_positional_construction_in_seed_order(cls: type) -> None:
    args = valid_args(cls)
    record = cls(*args)
    for name, value in zip(SEED_FIELDS[cls].split(), args, strict=True):
        got = getattr(record, name)
        assert got == value
        assert got is value or isinstance(value, (str, float, int))  # payloads are kept, not copied


def test_optional_fields_default_to_none() -> None:
    e = EmbeddingVector("e", [1.0], {}, 0.0, "code")
    assert (e.source_path, e.chunk_start, e.chunk_end) == (None, None, None)
    v = VerifierMetrics("v", 1.0, "ok", 1, 0, "now", 0.1)
    assert (v.false_positive_rate, v.false_negative_rate) == (None, None)
    a = ActionRecord("a", 0.0, "code_edit", {}, {}, {}, {}, 0, 0, 0, "local")  # type: ignore[arg-type]
    assert a.context_hash is None
    assert (a.action_type, a.environment) == (ActionType.CODE_EDIT, Environment.LOCAL)
    assert type(a.action_type) is ActionType
    log = LogEntry("l", 0.0, "INFO", "s", "m", {}, Environment.LOCAL)
    assert (log.session_id, log.trace_id) == (None, None)


def test_signature_metrics_defaults() -> None:
    m = SignatureMetrics("S", 1.0, 2.0, 3.0, "1MB", 1, "t", "analysis")
    assert m.active is True
    assert m.optimization_history == []
    other = SignatureMetrics("S", 1.0, 2.0, 3.0, "1MB", 1, "t", "analysis")
    assert m.optimization_history is not other.optimization_history
    explicit = SignatureMetrics("S", 1.0, 2.0, 3.0, "1MB", 1, "t", "analysis", True, None)  # type: ignore[arg-type]
    assert explicit.optimization_history == []
    assert SignatureMetrics.from_dict(m.to_dict() | {"optimization_history": None}) == m


def test_seed_usage_example_constructs() -> None:
    metrics = SignatureMetrics(
        signature_name="CodeAnalyzer",
        performance_score=89.5,
        success_rate=94.2,
        avg_response_time=2.1,
        memory_usage="256MB",
        iterations=150,
        last_updated=datetime.datetime.now().isoformat(),
        signature_type="analysis",
    )
    assert metrics.active and metrics.optimization_history == []
    action = create_action_record(
        action_type=ActionType.CODE_ANALYSIS,
        state_before={"files": ["app.py"]},
        state_after={"files": ["app.py"], "analyzed": True},
        parameters={"depth": "full"},
        result={"issues": 3, "suggestions": 5},
        reward=0.85,
        confidence=0.92,
        execution_time=3.4,
    )
    assert action.environment is Environment.DEVELOPMENT and action.context_hash is None
    assert action.to_dict()["action_type"] == "code_analysis"


# ------------------------------------------------------------------------------------------ to_dict


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_to_dict_is_a_deep_copy_with_enum_values(cls: type) -> None:
    record = make(cls)
    d = record.to_dict()
    assert list(d) == SEED_FIELDS[cls].split()
    for name, value in d.items():
        assert type(value) in (str, int, float, bool, dict, list, type(None)), name
        original = getattr(record, name)
        if isinstance(original, (dict, list)):
            assert value == original and value is not original
    assert orjson.loads(orjson.dumps(d)) == d
    before = copy.deepcopy(record)
    for value in d.values():  # mutating the copy never reaches the record
        if isinstance(value, dict):
            value["new"] = 1
            for inner in value.values():
                if isinstance(inner, list):
                    inner.append(99)
        elif isinstance(value, list):
            value.append("x")
    assert record == before


def test_to_dict_copies_nested_payloads() -> None:
    a = make(ActionRecord, parameters={"a": {"b": [1, {"c": 2}]}})
    d = a.to_dict()
    d["parameters"]["a"]["b"][1]["c"] = 3
    assert a.parameters == {"a": {"b": [1, {"c": 2}]}}
    a.parameters["a"]["b"].append(5)
    assert d["parameters"]["a"]["b"] == [1, {"c": 3}]


def test_to_dict_normalises_numpy_scalars_and_keeps_tuples() -> None:
    payload = {
        "f": np.float32(0.5),
        "i": np.int64(7),
        "b": np.bool_(True),
        "t": (1, [2, (3,)]),
        "s": ActionType.CODE_EDIT,
    }
    a = make(ActionRecord, result=payload)
    d = a.to_dict()
    assert d["result"] == {"f": 0.5, "i": 7, "b": True, "t": (1, [2, (3,)]), "s": "code_edit"}
    assert [type(d["result"][k]) for k in "fibs"] == [float, int, bool, str]
    assert ActionRecord.from_dict(d) == a
    assert orjson.loads(orjson.dumps(d))["result"]["t"] == [1, [2, [3]]]


def test_shallow_dict_and_direct_encoding_give_the_to_dict_bytes() -> None:
    for cls in RECORD_TYPES:
        record = make(cls)
        expected = orjson.dumps(record.to_dict())
        shallow = record.shallow_dict()
        assert orjson.dumps(shallow) == expected == orjson.dumps(record), cls.__name__
        assert list(shallow) == SEED_FIELDS[cls].split()
        for name, value in shallow.items():
            if isinstance(value, dict):
                assert value is getattr(record, name)  # not copied
            if isinstance(getattr(record, name), Enum):
                assert type(value) is str


def test_numeric_fields_normalise_numpy_and_keep_ints() -> None:
    a = make(ActionRecord, reward=np.float32(0.25), confidence=1, timestamp=np.int64(5))
    assert (a.reward, a.confidence, a.timestamp) == (0.25, 1, 5)
    assert (type(a.reward), type(a.confidence), type(a.timestamp)) == (float, int, int)
    t = make(TrainingMetrics, epoch=np.int32(4))
    assert type(t.epoch) is int and t.epoch == 4
    p = make(PatchRecord, applied=np.bool_(False))
    assert p.applied is False


# ------------------------------------------------------------------------------------------ from_dict


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_from_dict_round_trip_without_mutation(cls: type) -> None:
    record = make(cls)
    d = record.to_dict()
    d["written_by_a_newer_version"] = {"x": [1]}
    snapshot = copy.deepcopy(d)
    back = cls.from_dict(d)
    assert back == record
    assert d == snapshot
    assert cls.from_dict(orjson.loads(orjson.dumps(record.to_dict()))) == record


def test_from_dict_accepts_enum_strings_and_members() -> None:
    d = make(ActionRecord).to_dict()
    for value in ("verification", ActionType.VERIFICATION):
        a = ActionRecord.from_dict({**d, "action_type": value, "environment": "staging"})
        assert a.action_type is ActionType.VERIFICATION and a.environment is Environment.STAGING
    assert isinstance(d["action_type"], str) and d["action_type"] == "code_edit"


def test_from_dict_fills_defaults_and_reports_missing_fields() -> None:
    d = make(SignatureMetrics).to_dict()
    del d["active"], d["optimization_history"]
    m = SignatureMetrics.from_dict(d)
    assert m.active is True and m.optimization_history == []
    del d["iterations"]
    with pytest.raises(ValidationError, match="missing field 'iterations'"):
        SignatureMetrics.from_dict(d)
    with pytest.raises(ValidationError, match="expected a mapping"):
        SignatureMetrics.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ActionType"):
        ActionRecord.from_dict({**make(ActionRecord).to_dict(), "action_type": "dance"})


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("cls", "name", "value", "message"),
    [
        (ActionRecord, "reward", math.nan, "ActionRecord.reward: expected a finite number"),
        (ActionRecord, "confidence", math.inf, "finite"),
        (ActionRecord, "timestamp", True, "not bool"),
        (ActionRecord, "timestamp", "1.0", "finite number"),
        (ActionRecord, "action_type", "dance", "expected an ActionType value"),
        (ActionRecord, "environment", 3, "Environment"),
        (ActionRecord, "environment", AgentState.IDLE, "Environment"),
        (ActionRecord, "context_hash", 5, "expected a str"),
        (ActionRecord, "parameters", [], "expected a dict"),
        (ActionRecord, "result", None, "expected a dict"),
        (ActionRecord, "reward", 2**64, "64 bits"),
        (ActionRecord, "reward", np.float64("nan"), "finite"),
        (TrainingMetrics, "epoch", 1.0, "expected an int"),
        (TrainingMetrics, "batch_size", False, "expected an int"),
        (TrainingMetrics, "convergence_metrics", {"d": "x"}, "convergence_metrics.d"),
        (TrainingMetrics, "convergence_metrics", {"d": math.nan}, "finite"),
        (PatchRecord, "applied", 1, "expected a bool"),
        (PatchRecord, "target_files", ("a.py",), "expected a list"),
        (PatchRecord, "target_files", ["a.py", 3], r"target_files\[1\]: expected a str"),
        (PatchRecord, "test_results", [1], "expected a dict"),
        (ContextState, "agent_state", None, "AgentState"),
        (ContextState, "workspace_path", None, "expected a str"),
        (RetrievalEventRecord, "hits", [{"a": 1}, "b"], r"hits\[1\]: expected a dict"),
        (RetrievalEventRecord, "hits", {"a": 1}, "expected a list"),
        (SignatureMetrics, "optimization_history", ({"a": 1},), "expected a list"),
        (LogEntry, "session_id", "", "non-empty"),
        (LogEntry, "message", "bad \ud800", "surrogate"),
        (VerifierMetrics, "false_positive_rate", -math.inf, "finite"),
    ],
)
def test_bad_field_values_raise(cls: type, name: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(cls, **{name: value})
    d = make(cls).to_dict()
    d[name] = value
    with pytest.raises(ValidationError, match=message):
        cls.from_dict(d)


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_empty_ids_raise(cls: type) -> None:
    for f in dataclasses.fields(cls):
        if f.name not in ID_FIELDS:
            continue
        optional = f.default is None  # LogEntry.session_id: None or a non-empty str
        for bad in ("", 7) if optional else ("", None, 7):
            with pytest.raises(ValidationError, match=f"{cls.__name__}.{f.name}"):
                make(cls, **{f.name: bad})


class Colour(enum.Enum):
    RED = 1


# fmt: off
BAD_LEAVES = [
    math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf"), {1, 2}, frozenset(), b"x",
    bytearray(b"x"), object(), uuid.UUID(int=1), datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1),
    Colour.RED, 1j, Decimal("1.5"), np.array([1.0]), np.datetime64("2024-01-01"), 2**64, -(2**63) - 1,
    "\udc80", orjson.Fragment(b"1"), {1: "int key"}, {None: "none key"}, {ActionType.CODE_EDIT: "enum key"},
    {("a",): "tuple key"}, range(3),
]
# fmt: on


@pytest.mark.parametrize("leaf", BAD_LEAVES, ids=lambda v: type(v).__name__)
def test_bad_payload_leaf_raises_with_its_path(leaf: Any) -> None:
    with pytest.raises(ValidationError, match=r"ActionRecord\.parameters\.foo\[2\]"):
        make(ActionRecord, parameters={"ok": 1, "foo": [0, "a", leaf]})
    with pytest.raises(ValidationError, match=r"LogEntry\.context\.x"):
        make(LogEntry, context={"x": leaf})


def test_valid_non_canonical_payloads_are_accepted() -> None:
    class Sub(dict):  # type: ignore[type-arg]
        pass

    payload = Sub(
        t=(1, 2), n=np.float16(1.5), e=ActionType.CODE_EDIT, big=2**64 - 1, neg=-(2**63), u="é\u2603"
    )
    a = make(ActionRecord, parameters=payload)
    assert a.parameters is payload
    assert a.to_dict()["parameters"] == {
        "t": (1, 2),
        "n": 1.5,
        "e": "code_edit",
        "big": 2**64 - 1,
        "neg": -(2**63),
        "u": "é\u2603",
    }


def nested(depth: int, innermost: Any = 1) -> Any:
    value = innermost
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("leaf", "leaf_levels"), [(1, 0), ((1,), 1)], ids=["fast path", "slow path"])
def test_payload_depth_limit(leaf: Any, leaf_levels: int) -> None:
    lists = MAX_PAYLOAD_DEPTH - 1 - leaf_levels  # the payload dict is one level; a tuple leaf is another
    a = make(ActionRecord, result={"deep": nested(lists, leaf)})
    assert len(orjson.dumps(a)) > 0  # the record around the deepest payload still encodes
    with pytest.raises(ValidationError, match="nested deeper"):
        make(ActionRecord, result={"deep": nested(lists + 1, leaf)})


def test_circular_payload_raises() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match="circular"):
        make(ActionRecord, state_after=loop)


def test_validate_after_mutation_and_to_dict_never_writes_null_for_nan() -> None:
    a = make(ActionRecord)
    a.parameters["x"] = math.nan
    with pytest.raises(ValidationError, match=r"parameters\.x"):
        a.validate()
    with pytest.raises(ValidationError, match=r"parameters\.x"):
        a.to_dict()
    a.parameters["x"] = 1
    a.environment = "testing"  # type: ignore[assignment]
    assert a.to_dict()["environment"] == "testing"
    a.validate()
    assert a.environment is Environment.TESTING


# ------------------------------------------------------------------------------------------ vectors


def test_embedding_vector_keeps_what_it_was_given() -> None:
    arr = np.array([0.1, 0.2], dtype=np.float32)
    e = make(EmbeddingVector, vector=arr)
    assert e.vector is arr
    d = e.to_dict()
    assert d["vector"] == [float(x) for x in arr] and all(type(x) is float for x in d["vector"])
    assert EmbeddingVector.from_dict(d) == e
    ints = make(EmbeddingVector, vector=[1, 2])
    assert ints.to_dict()["vector"] == [1.0, 2.0] and type(ints.to_dict()["vector"][0]) is float
    assert make(EmbeddingVector, vector=np.arange(3)).to_dict()["vector"] == [0.0, 1.0, 2.0]
    assert make(EmbeddingVector, vector=[np.float32(0.5), 1.0]).to_dict()["vector"] == [0.5, 1.0]
    huge = [1e308, 1e308]  # their sum overflows; the values do not
    assert make(EmbeddingVector, vector=huge).vector == huge
    assert e != make(EmbeddingVector, vector=[0.1, 0.3])
    assert e != make(EmbeddingVector, vector=[0.1])


BAD_VECTORS = [
    [], np.array([]), [1.0, math.nan], [math.inf], np.array([1.0, np.nan]), np.ones((2, 2)), np.array([True]),
    np.array(["a"]), [True, 1.0], ["1.0"], (1.0, 2.0), None, [10**400], [2**70], np.array([1 + 2j]),
]  # fmt: skip


@pytest.mark.parametrize("vector", BAD_VECTORS, ids=repr)
def test_bad_vectors_raise(vector: Any) -> None:
    with pytest.raises(ValidationError, match=r"EmbeddingVector\.vector"):
        make(EmbeddingVector, vector=vector)


# ------------------------------------------------------------------------------------------ factories, ids


def test_factories_stamp_ids_and_time() -> None:
    before = time.time()
    a = create_action_record(ActionType.CODE_EDIT, {}, {}, {}, {}, 1.0, 0.5, 0.1, Environment.LOCAL, "ctx")
    log = create_log_entry("INFO", "src", "msg", {"k": 1}, session_id="s", trace_id="t")
    e = create_embedding_vector("vid", [1.0, 2.0], "code", {"m": 1}, "a.py", 1, 5)
    r1 = create_retrieval_event("/ws", "q", [{"p": 1}])
    r2 = create_retrieval_event("/ws", "q", [], Environment.STAGING, event_id="mine")
    after = time.time()
    for record in (a, log, e, r1, r2):
        assert before <= record.timestamp <= after
    for generated in (a.action_id, log.log_id, r1.event_id):
        assert uuid.UUID(generated).version == 4 and str(uuid.UUID(generated)) == generated
    assert (a.environment, a.context_hash, log.environment) == (
        Environment.LOCAL,
        "ctx",
        Environment.DEVELOPMENT,
    )
    assert (log.session_id, log.trace_id) == ("s", "t")
    assert (e.id, e.source_type, e.metadata, e.source_path, e.chunk_start, e.chunk_end) == (
        "vid",
        "code",
        {"m": 1},
        "a.py",
        1,
        5,
    )
    assert (r2.event_id, r2.environment, r1.environment) == (
        "mine",
        Environment.STAGING,
        Environment.DEVELOPMENT,
    )
    with pytest.raises(ValidationError):
        create_action_record("nope", {}, {}, {}, {}, 1.0, 0.5, 0.1)  # type: ignore[arg-type]


def test_new_id_is_unique_uuid4() -> None:
    ids = [new_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_new_id_pool_is_not_shared_with_a_forked_child() -> None:
    new_id()  # the pool now holds ids a naive child would repeat
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns if another test left a thread running; the child is trivial
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(write_fd, orjson.dumps([new_id() for _ in range(50)]))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child_ids = orjson.loads(pipe.read())
    os.waitpid(pid, 0)
    parent_ids = [new_id() for _ in range(50)]
    assert len(child_ids) == 50 and not set(child_ids) & set(parent_ids)


# ------------------------------------------------------------------------------------------ summaries


def test_summaries_have_the_wire_keys_in_order() -> None:
    s = signature_summary(make(SignatureMetrics), 12.5)
    assert list(s) == [
        "signature_name",
        "performance_score",
        "success_rate",
        "avg_response_time",
        "timestamp",
    ]
    assert list(s.values()) == ["Sig", 89.5, 94.2, 2.1, 12.5]
    v = verifier_summary(make(VerifierMetrics), 3)
    assert list(v) == ["verifier_name", "accuracy", "checks_performed", "issues_found", "timestamp"]
    assert list(v.values()) == ["Ver", 0.9, 10, 2, 3]
    before = time.time()
    assert before <= signature_summary(make(SignatureMetrics))["timestamp"] <= time.time()
    with pytest.raises(ValidationError):
        signature_summary(make(VerifierMetrics))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        verifier_summary(make(VerifierMetrics), math.nan)


# ------------------------------------------------------------------------------------------ properties

# fmt: off
text = st.text(max_size=12)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | text
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4), max_leaves=12
)
payloads = st.dictionaries(text, json_values, max_size=5)
numpy_scalars = (st.floats(allow_nan=False, allow_infinity=False, width=32).map(np.float32)
                 | st.integers(-(2**31), 2**31 - 1).map(np.int32) | st.booleans().map(np.bool_))
loose_values = st.recursive(
    json_scalars | numpy_scalars,
    lambda c: st.lists(c, max_size=3) | st.lists(c, max_size=3).map(tuple)
    | st.dictionaries(text, c, max_size=3),
    max_leaves=10,
)
ids = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
vectors = (st.lists(finite.map(float), min_size=1, max_size=8)
           | st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=8).map(np.float32).map(np.array))
BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "str": text, "str | None": st.none() | text, "float": finite, "float | None": st.none() | finite,
    "int": st.integers(-(2**63), 2**63), "int | None": st.none() | st.integers(0, 9), "bool": st.booleans(),
    "dict[str, Any]": payloads, "dict[str, Any] | None": st.none() | payloads,
    "dict[str, float]": st.dictionaries(text, finite, max_size=4), "list[str]": st.lists(text, max_size=4),
    "list[dict[str, Any]]": st.lists(payloads, max_size=3), "list[float] | np.ndarray": vectors,
    "AgentState": st.sampled_from(AgentState), "ActionType": st.sampled_from(ActionType),
    "Environment": st.sampled_from(Environment) | st.sampled_from([e.value for e in Environment]),
}
# fmt: on


@st.composite
def records(draw: st.DrawFn, loose: bool = False) -> Any:
    cls = draw(st.sampled_from(RECORD_TYPES))
    kwargs = {}
    for f in dataclasses.fields(cls):
        strategy = ids if f.name in ID_FIELDS else BY_ANNOTATION[str(f.type)]
        if loose and str(f.type) == "dict[str, Any]":
            strategy = st.dictionaries(text, loose_values, max_size=4)
        kwargs[f.name] = draw(strategy)
    return cls(**kwargs)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_round_trips(record: Any) -> None:
    d = record.to_dict()
    snapshot = copy.deepcopy(d)
    assert type(record).from_dict(d) == record
    assert d == snapshot
    wire = orjson.loads(orjson.dumps(d))
    assert type(record).from_dict(wire) == record
    assert orjson.dumps(type(record).from_dict(wire).to_dict()) == orjson.dumps(d)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(records(loose=True))
def test_round_trips_with_tuples_and_numpy_scalars(record: Any) -> None:
    d = record.to_dict()
    assert type(record).from_dict(d) == record
    wire = type(record).from_dict(orjson.loads(orjson.dumps(d)))
    assert orjson.dumps(wire.to_dict()) == orjson.dumps(d)


def poison(bad: Any) -> st.SearchStrategy[Any]:
    """JSON containers (lists, dicts, tuples) with `bad` somewhere inside."""

    def in_list(goods: list[Any], i: int, x: Any) -> list[Any]:
        return [*goods[:i], x, *goods[i:]]

    def in_dict(goods: dict[str, Any], key: str, x: Any) -> dict[str, Any]:
        return {**goods, key: x}

    return st.recursive(
        st.just(bad),
        lambda inner: (
            st.builds(in_list, st.lists(json_scalars, max_size=3), st.integers(0, 3), inner)
            | st.builds(in_dict, st.dictionaries(text, json_scalars, max_size=3), text, inner)
            | inner.map(lambda x: (x,))
        ),
        max_leaves=6,
    )


PAYLOAD_FIELDS = [(cls, f) for cls in RECORD_TYPES for f in dataclasses.fields(cls) if "Any" in str(f.type)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BAD_LEAVES).flatmap(poison), st.sampled_from(PAYLOAD_FIELDS))
def test_bad_payloads_always_raise_validation_error(bad: Any, target: tuple[type, Any]) -> None:
    cls, f = target
    value: Any = {"k": bad}
    if str(f.type).startswith("list"):
        value = [{"ok": 1}, value]
    with pytest.raises(ValidationError, match=f"{cls.__name__}.{f.name}"):
        make(cls, **{f.name: value})


# fmt: off
JUNK = [
    None, 0, -1, 2**70, 1.5, math.nan, math.inf, True, "", "x", "\ud800", [], [1], ["a"], [{}], {}, {"a": 1},
    {1: 1}, {"a": math.nan}, (), ("a",), {1}, b"x", object(), uuid.UUID(int=3), Colour.RED, "code_edit",
    ActionType.CODE_EDIT, "idle", "testing", np.float64(1.0), np.float32("nan"), np.int64(2), np.bool_(False),
    [np.nan], np.array([1.0]), np.zeros((1, 1)), np.array([], dtype=np.float64), Decimal(1), [{"a": {1}}],
    datetime.datetime(2024, 1, 1), {"a": (1, [2.5])}, {"a": np.float16(2)}, {"k": ActionType.CODE_EDIT},
]
# fmt: on


@pytest.mark.parametrize("cls", RECORD_TYPES)
def test_any_junk_in_any_field_is_valid_or_a_validation_error(cls: type) -> None:
    accepted = 0
    for name in SEED_FIELDS[cls].split():
        for junk in JUNK:
            try:
                record = make(cls, **{name: junk})
            except ValidationError:
                with pytest.raises(ValidationError):
                    cls.from_dict({**make(cls).to_dict(), name: junk})
                continue
            accepted += (
                1  # then from_dict accepts it too, and it survives the wire (tuples come back as lists)
            )
            assert cls.from_dict({**make(cls).to_dict(), name: junk}) == record
            row = orjson.dumps(record.to_dict())
            assert orjson.dumps(cls.from_dict(orjson.loads(row)).to_dict()) == row, (name, junk)
            assert cls.from_dict(record.to_dict()) == record
    assert accepted > 0
