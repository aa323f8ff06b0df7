"""The old system's own checks (scripts/init_reddb.py, test_reddb_integration.py, its pytest files),
run against the engine through `engine.compat`, with exact values where the old checks said "non-empty"."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from engine import compat
from engine.compat import (
    ActionType,
    Environment,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_log_entry,
    get_data_manager,
    get_enhanced_data_manager,
    get_error_patterns,
    get_recent_high_reward_actions,
    get_top_performing_signatures,
)


def sig(name: str, score: float) -> SignatureMetrics:
    return SignatureMetrics(
        signature_name=name,
        performance_score=score,
        success_rate=94.2,
        avg_response_time=2.1,
        memory_usage="256MB",
        iterations=150,
        last_updated=datetime.now().isoformat(),
        signature_type="analysis",
    )


def ver(name: str, accuracy: float) -> VerifierMetrics:
    return VerifierMetrics(
        verifier_name=name,
        accuracy=accuracy,
        status="active",
        checks_performed=150,
        issues_found=12,
        last_run=datetime.now().isoformat(),
        avg_execution_time=1.5,
    )


def act(reward: float, kind: ActionType = ActionType.CODE_ANALYSIS):
    return create_action_record(
        action_type=kind,
        state_before={"file": "test.py"},
        state_after={"file": "test.py", "analyzed": True},
        parameters={"depth": "full"},
        result={"issues": 2},
        reward=reward,
        confidence=0.9,
        execution_time=1.2,
    )


def test_old_names_exist():
    for name in (
        "QueryBuilder",
        "QueryResult",
        "LRUCache",
        "Migration",
        "MigrationManager",
        "get_migration_manager",
        "initialize_database",
        "RedDBDataManager",
        "EnhancedDataManager",
        "get_storage",
    ):
        assert getattr(compat, name) is not None, name
    assert len(list(ActionType)) == 9 and ActionType.TOOL_SELECTION == "tool_selection"


def test_init_reddb_checks():
    assert compat.initialize_database() is True
    mm = compat.get_migration_manager()
    assert mm.get_current_version() == "0.5.0"
    assert mm.get_applied_migrations() == ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"]
    assert mm.get_pending_migrations() == []
    dm = get_data_manager()
    dm.store_signature_metrics(sig("test_signature", 85.5))
    assert dm.get_signature_metrics("test_signature").performance_score == 85.5
    dm.store_verifier_metrics(ver("test_verifier", 94.2))
    assert dm.get_verifier_metrics("test_verifier").accuracy == 94.2
    a = act(0.8)
    dm.record_action(a)
    assert [x.action_id for x in dm.get_recent_actions(limit=10)] == [a.action_id]
    e = create_log_entry("INFO", "test", "Database initialization test", {"test": True})
    dm.log(e)
    assert [x.log_id for x in dm.get_recent_logs(limit=10)] == [e.log_id]


def test_integration_script_checks_with_exact_values():
    dm = get_enhanced_data_manager()
    dm.store_signature_metrics(sig("IntegrationTestSignature", 89.5))
    dm.register_signature("IntegrationTestSignature")
    dm.store_verifier_metrics(ver("IntegrationTestVerifier", 96.8))
    dm.register_verifier("IntegrationTestVerifier")
    assert dm.get_signature_metrics("IntegrationTestSignature").performance_score == 89.5
    assert dm.get_verifier_metrics("IntegrationTestVerifier").accuracy == 96.8
    for _ in range(10):
        assert (
            dm.get_signature_metrics("IntegrationTestSignature").signature_name == "IntegrationTestSignature"
        )
    assert dm.get_cache_stats()["main_cache"]["hits"] >= 10

    rewards = [0.5 + 0.05 * i for i in range(10)]  # 0.5 .. 0.95
    actions = [act(r) for r in rewards]
    for a in actions:
        dm.record_action(a)
    got = dm.get_actions_by_reward_range(0.7, 1.0, limit=5)
    expected = [a.action_id for a in reversed(actions) if 0.7 <= a.reward <= 1.0][:5]
    assert [a.action_id for a in got] == expected
    got10 = dm.get_actions_by_reward_range(0.8, 1.0, limit=10)
    assert sorted(a.reward for a in got10) == sorted(r for r in rewards if 0.8 <= r <= 1.0)

    summary = dm.get_performance_summary(hours=1)
    assert summary["action_performance"]["total_actions"] == 10
    assert summary["action_performance"]["avg_reward"] == pytest.approx(sum(rewards) / 10)
    assert summary["signature_performance"]["total_signatures"] == 1
    assert summary["signature_performance"]["avg_score"] == pytest.approx(89.5)
    assert summary["verifier_performance"]["avg_accuracy"] == pytest.approx(96.8)
    assert summary["verifier_performance"]["total_checks"] == 150

    assert dm.get_learning_progress(sessions=5) == {"error": "No training history available"}
    for epoch in range(6):
        dm.store_training_metrics(
            TrainingMetrics(
                session_id=f"s{epoch}",
                timestamp=time.time(),
                epoch=epoch,
                training_accuracy=0.5 + 0.05 * epoch,
                validation_accuracy=0.4 + 0.05 * epoch,
                loss=1.0 - 0.1 * epoch,
                learning_rate=0.001,
                batch_size=32,
                model_type="m",
                environment=Environment.DEVELOPMENT,
                hyperparameters={},
                convergence_metrics={},
            )
        )
    progress = dm.get_learning_progress(sessions=5)
    assert progress["sessions_analyzed"] == 5
    assert progress["training_accuracy"]["current"] == pytest.approx(0.75)
    assert progress["training_accuracy"]["trend"] == "improving"
    assert progress["loss"]["trend"] == "improving"

    names = [m.signature_name for m in dm.get_all_signature_metrics()]
    assert names == ["IntegrationTestSignature"]
    assert [v.accuracy for v in dm.get_all_verifier_metrics()] == [96.8]
    stats = dm.get_cache_stats()
    assert set(stats) == {"main_cache", "query_cache"}
    assert stats["main_cache"]["size"] >= 1 and "size" in stats["query_cache"]


def test_module_level_helpers():
    dm = get_enhanced_data_manager()
    for name, score in (("A", 70.0), ("B", 95.0), ("C", 80.0)):
        dm.store_signature_metrics(sig(name, score))
    assert [m.signature_name for m in get_top_performing_signatures(2)] == ["B", "C"]
    high = act(0.9)
    low = act(0.3)
    dm.record_action(high)
    dm.record_action(low)
    assert [a.action_id for a in get_recent_high_reward_actions(0.8, 24)] == [high.action_id]
    dm.log(create_log_entry("ERROR", "svc", "boom 1", {}))
    dm.log(create_log_entry("ERROR", "svc", "boom 2", {}))
    dm.log(create_log_entry("ERROR", "db", "boom 3", {}))
    dm.log(create_log_entry("INFO", "svc", "fine", {}))
    assert get_error_patterns(24) == {"svc": 2, "db": 1}


def test_query_results_are_fresh_right_after_a_write():
    dm = get_enhanced_data_manager()
    dm.record_action(act(0.9, ActionType.CODE_EDIT))
    assert len(dm.get_actions_by_type(ActionType.CODE_EDIT)) == 1
    dm.record_action(act(0.9, ActionType.CODE_EDIT))
    assert len(dm.get_actions_by_type("code_edit")) == 2  # the old layer stayed stale for 300 s
    assert dm.get_performance_summary(24)["action_performance"]["total_actions"] == 2
    dm.record_action(act(0.1))
    assert dm.get_performance_summary(24)["action_performance"]["total_actions"] == 3


def test_health_check_in_local_mode():
    health = compat.get_storage().health_check()
    assert health["ok"] is True and health["namespace"] == "dspy"
