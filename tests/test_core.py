"""The Engine data API: wire layout, newest-first reads, id lookups, batches, no mutation, bad input."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import keys
from engine.errors import NotFoundError, ValidationError
from engine.models import (
    ActionType,
    AgentState,
    ContextState,
    Environment,
    PatchRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_embedding_vector,
    create_log_entry,
    create_retrieval_event,
)


def action(reward: float = 0.5, kind: ActionType = ActionType.CODE_EDIT, **params):
    return create_action_record(
        action_type=kind,
        state_before={"files": ["a.py"]},
        state_after={"files": ["a.py"], "done": True},
        parameters=dict(params),
        result={"ok": True},
        reward=reward,
        confidence=0.9,
        execution_time=0.1,
    )


def signature(name: str = "CodeAnalyzer", score: float = 89.5) -> SignatureMetrics:
    return SignatureMetrics(
        signature_name=name,
        performance_score=score,
        success_rate=94.2,
        avg_response_time=2.1,
        memory_usage="256MB",
        iterations=150,
        last_updated="2026-11-26T00:00:00",
        signature_type="analysis",
    )


def verifier(name: str = "Lint", accuracy: float = 96.8) -> VerifierMetrics:
    return VerifierMetrics(
        verifier_name=name,
        accuracy=accuracy,
        status="active",
        checks_performed=100,
        issues_found=3,
        last_run="2026-11-26T00:00:00",
        avg_execution_time=0.2,
    )


def snapshot(e) -> dict:
    """Every byte of the store's databases (the outbox included)."""
    s = e.store
    out = {}
    with s.read_txn() as txn:
        for name in ("db_kv", "db_streams", "db_smeta", "db_ids", "db_meta", "db_outbox"):
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=getattr(s, name))]
    return out


# ------------------------------------------------------------------ storage protocol
def test_storage_protocol(eng):
    assert eng.put("k", {"a": 1}) is None
    assert eng.get("k") == {"a": 1}
    assert eng.get("missing") is None
    eng.put("null", None)
    assert eng.get_or_raise("null") is None
    with pytest.raises(NotFoundError):
        eng.get_or_raise("missing")
    assert [eng.append("s", i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert eng.read("s", start=3) == [(3, 3), (4, 4)]
    assert eng.read("s", start=1, count=2) == [(1, 1), (2, 2)]
    assert eng.delete("k") is True
    assert eng.get("k") is None
    health = eng.health_check()
    assert health["ok"] is True and health["namespace"] == "dspy" and health["mode"] == "local"


def test_storage_protocol_rejects_bad_input_and_writes_nothing(eng):
    eng.put("keep", 1)
    before = snapshot(eng)
    for call in (
        lambda: eng.put("", 1),
        lambda: eng.put("a/b", 1),
        lambda: eng.put("k", float("nan")),
        lambda: eng.put("k", {"x": object()}),
        lambda: eng.append("s", [float("inf")]),
        lambda: eng.append("", 1),
        lambda: eng.read("s", "0", 1),
    ):
        with pytest.raises(ValidationError):
            call()
    assert snapshot(eng) == before


# ------------------------------------------------------------------ wire layout
def test_signature_metrics_layout_and_registration(eng):
    m = signature()
    eng.store_signature_metrics(m)
    assert eng.get("dspy_agent:signatures:CodeAnalyzer") == m.to_dict()
    assert eng.get("dspy_agent:registries:signatures") == ["CodeAnalyzer"]
    ((off, row),) = eng.read("signature_metrics")
    assert off == 0
    assert list(row) == [
        "signature_name",
        "performance_score",
        "success_rate",
        "avg_response_time",
        "timestamp",
    ]
    assert row["performance_score"] == 89.5
    got = eng.get_signature_metrics("CodeAnalyzer")
    assert got == m and got is not m
    eng.store_signature_metrics(signature(score=91.0))
    assert eng.get("dspy_agent:registries:signatures") == ["CodeAnalyzer"]
    assert eng.get_signature_metrics("CodeAnalyzer").performance_score == 91.0
    assert eng.get_signature_metrics("nope") is None
    eng.register_signature("Other")
    eng.register_signature("Other")
    assert eng.get("dspy_agent:registries:signatures") == ["CodeAnalyzer", "Other"]
    assert [x.signature_name for x in eng.get_all_signature_metrics()] == ["CodeAnalyzer"]


def test_verifier_metrics_layout_and_registration(eng):
    eng.store_verifier_metrics(verifier())
    eng.store_verifier_metrics(verifier("Types", 90.0))
    assert eng.get("dspy_agent:registries:verifiers") == ["Lint", "Types"]
    rows = [r for _, r in eng.read("verifier_metrics")]
    assert [list(r) for r in rows] == [
        ["verifier_name", "accuracy", "checks_performed", "issues_found", "timestamp"]
    ] * 2
    assert [v.accuracy for v in eng.get_all_verifier_metrics()] == [96.8, 90.0]
    assert eng.get_verifier_metrics("Lint").accuracy == 96.8


def test_actions_newest_first_and_by_id(eng):
    actions = [action(reward=i / 10) for i in range(10)]
    offsets = [eng.record_action(a) for a in actions]
    assert offsets == list(range(10))
    recent = eng.get_recent_actions(limit=3)
    assert [a.action_id for a in recent] == [actions[9].action_id, actions[8].action_id, actions[7].action_id]
    assert eng.get_recent_actions(100)[-1].action_id == actions[0].action_id
    assert eng.get_recent_actions(0) == []
    assert eng.get_action(actions[4].action_id) == actions[4]
    assert eng.get_action("unknown") is None
    ((_, row),) = eng.read("rl_actions", 0, 1)
    assert row == actions[0].to_dict()
    assert eng.get(f"dspy_agent:actions:{actions[0].action_id}") is None  # no per-record KV copy


def test_record_actions_batch_is_one_transaction_in_order(eng):
    batch = [action(reward=i / 100) for i in range(50)]
    txn_before = eng.store.last_txn_id()
    assert eng.record_actions_batch(batch) == list(range(50))
    assert eng.store.last_txn_id() == txn_before + 1
    assert [a.reward for a in reversed(eng.get_recent_actions(50))] == [a.reward for a in batch]


def test_batch_with_a_bad_record_writes_nothing(eng):
    good = action()
    bad = action()
    bad.reward = float("nan")
    before = snapshot(eng)
    with pytest.raises(ValidationError):
        eng.record_actions_batch([good, bad])
    assert snapshot(eng) == before
    with pytest.raises(ValidationError):
        eng.record_action("not an action")
    assert snapshot(eng) == before


def test_engine_batch_is_all_or_nothing(eng):
    eng.record_action(action())
    before = snapshot(eng)
    with pytest.raises(RuntimeError), eng.batch():
        eng.record_action(action())
        eng.store_signature_metrics(signature())
        eng.log(create_log_entry("INFO", "src", "msg", {}))
        raise RuntimeError("abort")
    assert snapshot(eng) == before
    with eng.batch():
        for _ in range(3):
            eng.record_action(action())
    assert eng.store.stream_length("rl_actions") == 4


def test_signature_name_propagates_without_mutating_the_caller(eng):
    a = action(signature_name="MySig")
    before = copy.deepcopy(a.to_dict())
    eng.record_action(a)
    assert a.to_dict() == before
    ((_, row),) = eng.read("rl_actions")
    for f in ("parameters", "result", "state_before", "state_after"):
        assert row[f]["signature_name"] == "MySig"


def test_logs_level_filter_reaches_far_back(eng):
    errors = [create_log_entry("ERROR", "svc", f"boom {i}", {}) for i in range(12)]
    with eng.batch():
        for i, e in enumerate(errors):
            eng.log(e)
            for j in range(200):
                eng.log(create_log_entry("INFO", "svc", f"fine {i}.{j}", {}))
    got = eng.get_recent_logs(level="ERROR", limit=10)
    assert [e.message for e in got] == [f"boom {i}" for i in range(11, 1, -1)]
    assert [e.message for e in eng.get_recent_logs(limit=2)] == ["fine 11.199", "fine 11.198"]
    assert eng.get_recent_logs(level="CRITICAL", limit=5) == []
    assert eng.get_log(errors[3].log_id).message == "boom 3"


def test_log_scrubs_secrets_on_a_copy(eng):
    e = create_log_entry(
        "INFO", "svc", "called with sk-abcdefghijklmnopqrstuvwxyz", {"api_key": "x", "max_tokens": 5}
    )
    before = e.to_dict()
    eng.log(e)
    assert e.to_dict() == before
    stored = eng.get_recent_logs(limit=1)[0]
    assert "sk-abc" not in stored.message
    assert stored.context == {"api_key": "***", "max_tokens": 5}


def test_training_history_newest_first(eng):
    for epoch in range(5):
        eng.store_training_metrics(
            TrainingMetrics(
                session_id="s1",
                timestamp=1000.0 + epoch,
                epoch=epoch,
                training_accuracy=0.5,
                validation_accuracy=0.4,
                loss=1.0 - epoch / 10,
                learning_rate=0.001,
                batch_size=32,
                model_type="m",
                environment=Environment.TESTING,
                hyperparameters={},
                convergence_metrics={},
            )
        )
    assert [t.epoch for t in eng.get_training_history(limit=3)] == [4, 3, 2]


def test_retrieval_context_patch_health(eng):
    ev = create_retrieval_event("/ws", "find x", [{"path": "a.py", "score": 0.9}])
    eng.record_retrieval_event(ev)
    assert eng.get_recent_retrieval_events(5) == [ev]
    ctx = ContextState(
        context_id="c1",
        timestamp=1.0,
        agent_state=AgentState.PLANNING,
        current_task=None,
        workspace_path="/ws",
        active_files=[],
        recent_actions=[],
        memory_usage={},
        performance_snapshot={"r": 0.5},
        environment=Environment.LOCAL,
    )
    eng.store_context_state(ctx)
    assert eng.get_current_context() == ctx
    assert eng.get("dspy_agent:context:current")["agent_state"] == "planning"
    assert eng.read("context_history")[0][1] == ctx.to_dict()
    patch = PatchRecord(
        patch_id="p1",
        timestamp=2.0,
        prompt_hash="h",
        target_files=["a.py"],
        patch_content="diff",
        applied=True,
        test_results=None,
        confidence_score=0.8,
        blast_radius=0.1,
        rollback_info=None,
        environment=Environment.DEVELOPMENT,
    )
    eng.store_patch_record(patch)
    assert eng.get_patch_history() == [patch]
    assert eng.get_patch("p1") == patch
    assert eng.get_action("p1") is None  # the id index checks the stream
    health = {"status": "ok"}
    eng.store_system_health(health)
    assert health == {"status": "ok"}  # the caller's dict is untouched
    current = eng.get_system_health()
    assert current["status"] == "ok" and isinstance(current["timestamp"], float)
    assert eng.read("health_history")[0][1] == current


def test_embeddings_are_raw_float32_locally_and_json_on_the_wire(eng):
    vec = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    e = create_embedding_vector("chunk-1", vec.tolist(), "code", {"lang": "py"}, source_path="a.py")
    eng.store_embedding(e)
    raw = eng.store.kv_get("dspy_agent:embeddings:chunk-1")
    assert raw.startswith(b"\x00EV1") and vec.tobytes() in raw
    back = eng.get_embedding("chunk-1")
    assert back.id == "chunk-1" and back.source_path == "a.py"
    assert np.allclose(np.asarray(back.vector, dtype=np.float32), vec)
    assert eng.get_embedding("nope") is None
    n = eng.store_embeddings_batch(
        [create_embedding_vector(f"c{i}", [1.0, float(i)], "doc", {}) for i in range(3)]
    )
    assert n == 3 and eng.get_embedding("c2").vector == [1.0, 2.0]


def test_performance_trends_cover_every_row_in_the_window(eng):
    with eng.batch():
        for i in range(1500):
            eng.store_signature_metrics(signature(score=float(i % 100)))
    trends = eng.get_performance_trends("signature", hours=1)
    assert len(trends["performance_score"]) == 1500
    assert trends["performance_score"][:3] == [0.0, 1.0, 2.0]
    assert "timestamp" not in trends
    assert eng.get_performance_trends("verifier") == {}


def test_reopen_sees_everything_and_files_are_private(tmp_path):
    path = tmp_path / "s"
    with engine.open(path) as e:
        e.record_action(action(reward=0.7))
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    with engine.open(path) as e:
        assert e.get_recent_actions(1)[0].reward == 0.7


def test_seed_usage_example_runs_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_PATH", str(tmp_path / "seed"))
    from datetime import datetime

    from engine.compat import ActionType as AT
    from engine.compat import SignatureMetrics as SM
    from engine.compat import create_action_record as car
    from engine.compat import get_enhanced_data_manager

    dm = get_enhanced_data_manager()
    metrics = SM(
        signature_name="CodeAnalyzer",
        performance_score=89.5,
        success_rate=94.2,
        avg_response_time=2.1,
        memory_usage="256MB",
        iterations=150,
        last_updated=datetime.now().isoformat(),
        signature_type="analysis",
    )
    dm.store_signature_metrics(metrics)
    act = car(
        action_type=AT.CODE_ANALYSIS,
        state_before={"files": ["app.py"]},
        state_after={"files": ["app.py"], "analyzed": True},
        parameters={"depth": "full"},
        result={"issues": 3, "suggestions": 5},
        reward=0.85,
        confidence=0.92,
        execution_time=3.4,
    )
    dm.record_action(act)
    assert dm.get_signature_metrics("CodeAnalyzer").performance_score == 89.5
    assert dm.get_recent_actions(1)[0].action_id == act.action_id


def test_repr_and_close(tmp_path):
    e = engine.open(tmp_path / "r")
    assert "local only" in repr(e)
    e.close()
    e.close()
    with pytest.raises(engine.errors.ClosedStoreError):
        e.get_recent_actions()


def test_rows_are_plain_json(eng):
    eng.record_action(action())
    raw = eng.store.read("rl_actions")[0][1]
    assert orjson.loads(raw)["action_type"] == "code_edit"
    assert keys.RL_ACTIONS in eng.stream_counts()


def test_wall_clock_in_summary_rows(eng):
    t0 = time.time()
    eng.store_signature_metrics(signature())
    assert eng.read("signature_metrics")[0][1]["timestamp"] >= t0


bad_payload_values = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.builds(object),
    st.sets(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=bad_payload_values, where=st.sampled_from(["parameters", "result", "state_before", "state_after"]))
def test_any_bad_payload_raises_validation_error_and_leaves_the_store_unchanged(eng, bad, where):
    eng.record_action(action())
    before = snapshot(eng)
    a = action()
    getattr(a, where)["nested"] = [1, {"x": bad}]
    with pytest.raises(ValidationError):
        eng.record_action(a)
    with pytest.raises(ValidationError):
        eng.record_actions_batch([action(), a])
    with pytest.raises(ValidationError):
        eng.put("k", {"v": bad})
    with pytest.raises(ValidationError):
        eng.append("s", [bad])
    assert snapshot(eng) == before
