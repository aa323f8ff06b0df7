"""engine.analytics against plain-Python recomputations over the same rows.

Rows go in with `eng.store.append` + orjson (fast, and lets a row miss a field) or through the Engine
API; every test passes a fixed `now`. Windows reach past the first 1,000 rows (the old layer's
horizon), "newest" means newest, and the zone-map fast path of `window_totals` is held to a numpy
mask over every block layout (sorted, jittered, shuffled, missing timestamps).
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine import analytics, keys
from engine import query as q
from engine.columns import ZONE_ROWS
from engine.errors import ValidationError
from engine.models import ActionRecord, ActionType, LogEntry, SignatureMetrics, TrainingMetrics

NOW = 1_700_000_000.0
H = 3600.0
TYPES = [t.value for t in ActionType]


def append(eng, stream, rows):
    with eng.store.write() as b:
        for r in rows:
            eng.store.append(b, stream, orjson.dumps(r))


def in_window(rows, hours, now=NOW):
    cutoff = now - hours * H
    return [r for r in rows if isinstance(r.get("timestamp"), float) and r["timestamp"] >= cutoff]


def avg(values):
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else 0.0


def stamps(n, rnd, span_h=48.0, end=NOW + 0.5 * H, shuffle=False):
    """n timestamps ascending over [end - span_h, end] with jitter that crosses row order."""
    ts = [end - span_h * H + (i + rnd.random() * 3) * span_h * H / n for i in range(n)]
    if shuffle:
        rnd.shuffle(ts)
    return ts


def action(i, ts, rnd, **over):
    row = {
        "action_id": f"act-{i:06d}",
        "timestamp": ts,
        "action_type": TYPES[i % len(TYPES)],
        "state_before": {},
        "state_after": {},
        "parameters": {"i": i},
        "result": {},
        "reward": round(rnd.random() * 1.2, 2),
        "confidence": rnd.random(),
        "execution_time": rnd.random() * 3,
        "environment": "development",
        "context_hash": None,
    }
    row.update(over)
    return row


def actions(n, seed=0, shuffle=False, gaps=False):
    rnd = random.Random(seed)
    rows = [action(i, ts, rnd) for i, ts in enumerate(stamps(n, rnd, shuffle=shuffle))]
    for i in range(5, n - 1, 97) if gaps else ():  # missing values: left out of averages
        rows[i]["reward"] = None
        del rows[i + 1]["confidence"]
    return rows


def sig_rows(n, seed=1):
    rnd = random.Random(seed)
    r = rnd.random
    return [
        {"signature_name": f"sig{rnd.randrange(7)}", "performance_score": r(), "success_rate": r()}
        | {"avg_response_time": r() * 2 if i % 50 else None, "timestamp": ts}
        for i, ts in enumerate(stamps(n, rnd))
    ]


def ver_rows(n, seed=2):
    rnd = random.Random(seed)
    return [
        {
            "verifier_name": f"ver{rnd.randrange(4)}",
            "accuracy": rnd.random(),
            "checks_performed": rnd.randrange(100),
        }
        | {"issues_found": rnd.randrange(10) if i % 40 else None, "timestamp": ts}
        for i, ts in enumerate(stamps(n, rnd))
    ]


def py_summary(sig, ver, act, hours):
    s, v, a = in_window(sig, hours), in_window(ver, hours), in_window(act, hours)
    return {
        "time_range_hours": hours,
        "signature_performance": {
            "avg_score": avg([r["performance_score"] for r in s]),
            "avg_response_time": avg([r["avg_response_time"] for r in s]),
            "total_signatures": len({r["signature_name"] for r in s}),
        },
        "verifier_performance": {
            "avg_accuracy": avg([r["accuracy"] for r in v]),
            "total_checks": sum(r["checks_performed"] for r in v),
            "total_issues": sum(r["issues_found"] or 0 for r in v),
        },
        "action_performance": {
            "total_actions": len(a),
            "avg_reward": avg([r["reward"] for r in a]),
            "avg_confidence": avg([r.get("confidence") for r in a]),
            "avg_execution_time": avg([r["execution_time"] for r in a]),
        },
        "timestamp": NOW,
    }


def assert_close(got, want):
    """Equal, with floats to 1e-12 relative (sums run in another order than Python's)."""
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_close(got[k], want[k])
    elif isinstance(want, float):
        assert isinstance(got, float) and got == pytest.approx(want, rel=1e-12, abs=1e-12)
    else:
        assert got == want and type(got) is type(want)


# ---------------------------------------------------------------------------- performance_summary
@pytest.mark.parametrize("shuffle", [False, True])
def test_performance_summary_counts_every_row_of_the_window(eng, shuffle):
    sig, ver, act = sig_rows(1500), ver_rows(1200), actions(3500, shuffle=shuffle, gaps=True)
    append(eng, keys.SIGNATURE_METRICS, sig)
    append(eng, keys.VERIFIER_METRICS, ver)
    append(eng, keys.RL_ACTIONS, act)
    for hours in (0.25, 1, 24, 1000):
        got = analytics.performance_summary(eng, hours, now=NOW)
        assert_close(got, py_summary(sig, ver, act, hours))
    assert analytics.performance_summary(eng, 24, now=NOW)["action_performance"]["total_actions"] > 1000


def test_performance_summary_of_an_empty_store(eng):
    got = analytics.performance_summary(eng, 24, now=NOW)
    assert_close(got, py_summary([], [], [], 24))  # averages over nothing are 0.0, counts 0
    assert got["action_performance"]["avg_reward"] == 0.0 and got["time_range_hours"] == 24


def test_summary_sees_rows_another_handle_appended_after_the_columns_were_built(eng, tmp_path):
    act = actions(1200, gaps=True)
    append(eng, keys.RL_ACTIONS, act)
    assert analytics.performance_summary(eng, 24, now=NOW)["action_performance"]["total_actions"] > 0
    other = engine.open(eng.store.path, auto_migrate=False)  # the same store, a second handle
    try:
        more = [action(5000 + i, NOW - 60.0 + i, random.Random(i), reward=1.0) for i in range(30)]
        append(other, keys.RL_ACTIONS, more)
    finally:
        other.close()
    got = analytics.performance_summary(eng, 24, now=NOW)
    assert_close(got["action_performance"], py_summary([], [], act + more, 24)["action_performance"])


def test_the_window_has_no_upper_bound_but_rows_without_a_timestamp_are_in_none(eng):
    rows = [action(0, NOW + 5 * H, random.Random(0), reward=1.0), action(1, NOW - H, random.Random(1))]
    rows.append({**action(2, 0.0, random.Random(2)), "timestamp": None})
    append(eng, keys.RL_ACTIONS, rows)
    perf = analytics.performance_summary(eng, 24, now=NOW)["action_performance"]
    assert perf["total_actions"] == 2 and perf["avg_reward"] == pytest.approx((1.0 + rows[1]["reward"]) / 2)


def test_summary_through_the_engine_api(eng):
    m = SignatureMetrics("alpha", 0.9, 0.8, 1.5, "10MB", 3, "2024-01-01", "analysis")
    eng.store_signature_metrics(m)
    eng.store_signature_metrics(SignatureMetrics("beta", 0.5, 0.4, 0.5, "1MB", 1, "2024-01-01", "edit"))
    got = analytics.performance_summary(eng)  # default clock: the rows were stamped just now
    assert_close(
        got["signature_performance"], {"avg_score": 0.7, "avg_response_time": 1.0, "total_signatures": 2}
    )


# ---------------------------------------------------------------------------- window_totals
def zones_of(ts):
    n = ts.shape[0]
    nb = (n + ZONE_ROWS - 1) // ZONE_ROWS
    pad = np.full(nb * ZONE_ROWS, np.nan)
    pad[:n] = ts
    blocks = pad.reshape(nb, ZONE_ROWS)
    return np.fmin.reduce(blocks, axis=1, initial=np.inf), np.fmax.reduce(blocks, axis=1, initial=-np.inf)


@st.composite
def layouts(draw):
    n = draw(st.sampled_from([0, 1, 700, ZONE_ROWS, 5 * ZONE_ROWS + 3, 80 * ZONE_ROWS - 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ts = np.sort(rng.uniform(0, 100, n)) + rng.uniform(0, draw(st.sampled_from([0.0, 0.5, 20.0])), n)
    order = draw(st.sampled_from(["sorted", "reversed", "shuffled", "blocks"]))
    if order == "reversed":
        ts = ts[::-1].copy()
    elif order == "shuffled":
        ts = rng.permutation(ts)
    elif order == "blocks" and n > ZONE_ROWS:  # sorted blocks in random order: many runs
        cut = n - n % ZONE_ROWS
        blocks = ts[:cut].reshape(-1, ZONE_ROWS)[rng.permutation(cut // ZONE_ROWS)]
        ts = np.concatenate((blocks.ravel(), ts[cut:]))
    if draw(st.booleans()):
        ts[rng.random(n) < 0.01] = np.nan
    if n > 2 * ZONE_ROWS and draw(st.booleans()):
        ts[ZONE_ROWS : 2 * ZONE_ROWS] = np.nan  # a block with no timestamp at all
    lo = draw(st.sampled_from([-math.inf, 0.0, 37.5, 99.0, 200.0]))
    hi = draw(st.sampled_from([math.inf, 50.0, 120.0]))
    value = rng.random(n)
    value[rng.random(n) < 0.02] = np.nan
    ints = rng.integers(0, 50, n).astype(np.int64)
    ints[rng.random(n) < 0.02] = np.iinfo(np.int64).min
    group = rng.integers(-1, 5, n).astype(np.int32)
    return ts, lo, hi, value, ints, group


def check_totals(ts, lo, hi, value, ints, group):
    rows, sums, counts = analytics.window_totals(ts, zones_of(ts), lo, hi, {"v": value, "i": ints}, group, 5)
    m = (ts >= lo) & (ts <= hi)
    v, i, g = value[m], ints[m], group[m]
    assert rows == int(m.sum())
    assert sums["v"][0] == int((~np.isnan(v)).sum())
    assert sums["v"][1] == pytest.approx(float(np.nansum(v)), rel=1e-12, abs=1e-9)
    assert sums["i"] == (int((i >= 0).sum()), float(i[i >= 0].sum()))
    assert counts.tolist() == np.bincount(g[g >= 0], minlength=5).tolist()


@settings(max_examples=40, deadline=None)
@given(layouts())
def test_window_totals_equal_a_numpy_mask(layout):
    check_totals(*layout)


@pytest.mark.parametrize("layout", ["sorted", "blocks"])
def test_window_totals_scan_only_the_edge_blocks_of_a_time_ordered_stream(monkeypatch, layout):
    rng = np.random.default_rng(11)
    n = 200 * ZONE_ROWS + 17
    ts = np.sort(rng.uniform(0, 100, n))
    if layout == "blocks":  # sorted blocks in random order: too many runs, the kernel scans everything
        head = ts[: n - 17].reshape(-1, ZONE_ROWS)[rng.permutation(200)]
        ts = np.concatenate((head.ravel(), ts[n - 17 :]))
    scanned = []
    real = analytics.kernel

    class Spy:
        def aggregate(self, m, *args):
            scanned.append(m)
            return real.aggregate(m, *args)

        def aggregate_by(self, m, *args):
            scanned.append(m)
            return real.aggregate_by(m, *args)

    monkeypatch.setattr(analytics, "kernel", Spy())
    value, ints, group = rng.random(n), rng.integers(0, 9, n), rng.integers(-1, 5, n).astype(np.int32)
    check_totals(ts, 37.5, math.inf, value, ints, group)
    assert scanned == ([n] * 3 if layout == "blocks" else [])  # sorted: masks over the edge block only


def test_the_reference_kernel_gives_the_same_answers(eng, monkeypatch):
    append(eng, keys.RL_ACTIONS, actions(2500, shuffle=True))
    append(eng, keys.SIGNATURE_METRICS, sig_rows(900))
    append(eng, keys.SYSTEM_LOGS, logs()[0])
    calls = [
        lambda: analytics.performance_summary(eng, 24, now=NOW),
        lambda: analytics.trend_analysis(eng, "signature", 24, now=NOW),
        lambda: analytics.error_patterns(eng, 24, now=NOW),
        lambda: [a.action_id for a in analytics.recent_high_reward_actions(eng, 0.8, 24, now=NOW)],
    ]
    native = [call() for call in calls]
    assert len(native[3]) > 100
    monkeypatch.setattr(analytics, "kernel", q._Reference)
    for call, want in zip(calls, native, strict=True):
        assert_close(call(), want)


# ---------------------------------------------------------------------------- learning_progress
def training(i, ts, acc, val, loss):
    metrics = {"training_accuracy": acc, "validation_accuracy": val, "loss": loss, "learning_rate": 0.001}
    rest = {"batch_size": 32, "model_type": "dspy", "environment": "development", "hyperparameters": {}}
    return {"session_id": f"s{i}", "timestamp": ts, "epoch": i, **metrics, **rest, "convergence_metrics": {}}


def test_learning_progress_reads_the_newest_sessions(eng):
    rows = [training(i, NOW - 100 + i, 0.5 + 0.01 * i, 0.7, 2.0 - 0.05 * i) for i in range(25)]
    append(eng, keys.TRAINING_HISTORY, rows)
    got = analytics.learning_progress(eng, 10, now=NOW)
    newest = rows[-10:]
    assert got["sessions_analyzed"] == 10 and got["timestamp"] == NOW
    trends = {"training_accuracy": "improving", "validation_accuracy": "stable", "loss": "improving"}
    for field, trend in trends.items():
        ys = [r[field] for r in newest]
        assert got[field]["current"] == ys[-1] and got[field]["avg"] == pytest.approx(sum(ys) / 10)
        assert got[field]["trend"] == trend
        assert got[field]["slope"] == pytest.approx(np.polyfit(range(10), ys, 1)[0], abs=1e-12)


@pytest.mark.parametrize(
    ("accs", "losses", "acc_trend", "loss_trend"),
    [
        ([0.9, 0.8, 0.7], [1.0, 1.5, 2.0], "declining", "declining"),
        ([0.8, 0.801, 0.8005], [1.0, 1.001, 1.0], "stable", "stable"),  # within 1 % of the mean
        ([0.6], [1.0], "stable", "stable"),  # one session: no trend (the old layer said "declining")
        ([0.5, 0.9, 0.6, 0.95], [3.0, 1.0, 2.5, 0.5], "improving", "improving"),  # noisy, but fits up
    ],
)
def test_learning_progress_trends(eng, accs, losses, acc_trend, loss_trend):
    append(
        eng,
        keys.TRAINING_HISTORY,
        [training(i, NOW, a, a, lo) for i, (a, lo) in enumerate(zip(accs, losses, strict=True))],
    )
    got = analytics.learning_progress(eng, 10, now=NOW)
    assert got["sessions_analyzed"] == len(accs)
    assert (got["training_accuracy"]["trend"], got["loss"]["trend"]) == (acc_trend, loss_trend)


def test_learning_progress_without_history_and_with_missing_values(eng):
    assert analytics.learning_progress(eng, now=NOW) == {"error": "No training history available"}
    rows = [training(i, NOW, 0.5 + 0.1 * i, 0.6, None if i else 1.0) for i in range(3)]
    append(eng, keys.TRAINING_HISTORY, rows)
    got = analytics.learning_progress(eng, 2, now=NOW)
    assert got["loss"] == {"current": None, "avg": None, "trend": "stable", "slope": 0.0}
    assert got["training_accuracy"]["current"] == rows[2]["training_accuracy"]
    assert got["training_accuracy"]["avg"] == pytest.approx(0.65)
    assert analytics.learning_progress(eng, 0, now=NOW) == {"error": "No training history available"}


def test_learning_progress_current_is_the_engines_newest_session(eng):
    for i in range(12):
        eng.store_training_metrics(
            TrainingMetrics(f"s{i}", NOW + i, i, 0.1 * i, 0.1, 1.0 / (i + 1), 0.01, 8, "m", "testing", {}, {})
        )
    got = analytics.learning_progress(eng, 5, now=NOW)
    newest = eng.get_training_history(5)
    assert got["training_accuracy"]["current"] == newest[0].training_accuracy
    assert got["loss"]["avg"] == pytest.approx(sum(t.loss for t in newest) / 5)


# ---------------------------------------------------------------------------- trends
def test_signature_trend_returns_the_names_window_rows_oldest_first(eng):
    rows = sig_rows(2500)
    rows[2000]["timestamp"] = rows[2001]["timestamp"] = rows[2002]["timestamp"]  # ties keep stream order
    rows[2100]["timestamp"] = rows[1500]["timestamp"]  # out of order
    append(eng, keys.SIGNATURE_METRICS, rows)
    for name in ("sig0", "sig3"):
        want = sorted(
            (r for r in in_window(rows, 24) if r["signature_name"] == name), key=lambda r: r["timestamp"]
        )
        got = analytics.signature_trend(eng, name, 24, now=NOW)
        assert got == want and len(got) > 50
    assert analytics.signature_trend(eng, "nobody", 24, now=NOW) == []
    with pytest.raises(ValidationError):
        analytics.signature_trend(eng, 3, 24, now=NOW)


def test_trend_analysis_fits_each_name(eng):
    rnd = random.Random(7)
    rows, specs = [], {"up": 0.01, "down": -0.02, "flat": 0.0}
    for i in range(1800):
        name = list(specs)[i % 3]
        ts = NOW - 30 * H + i * 60.0
        score = 0.5 + specs[name] * (ts - NOW) / H + rnd.uniform(-0.001, 0.001)
        rows.append({"signature_name": name, "performance_score": score, "timestamp": ts})
    rows.append({"signature_name": "up", "performance_score": None, "timestamp": NOW})  # no value: not fitted
    append(eng, keys.SIGNATURE_METRICS, rows)
    got = analytics.trend_analysis(eng, "signature", 24, now=NOW)
    assert sorted(got) == ["down", "flat", "up"]
    window = [r for r in in_window(rows, 24) if r["performance_score"] is not None]
    for name, direction in (("up", "improving"), ("down", "declining"), ("flat", "stable")):
        mine = [r for r in window if r["signature_name"] == name]
        t = np.array([r["timestamp"] for r in mine])
        y = np.array([r["performance_score"] for r in mine])
        g = got[name]
        assert g["n"] == len(mine) and g["direction"] == direction
        assert (g["first"], g["last"]) == (mine[0]["performance_score"], mine[-1]["performance_score"])
        assert (g["first_timestamp"], g["last_timestamp"]) == (t[0], t[-1])
        assert g["slope_per_hour"] == pytest.approx(np.polyfit((t - t[0]) / H, y, 1)[0], abs=1e-9)
        assert g["mean"] == pytest.approx(y.mean())


def test_trend_analysis_of_verifiers(eng):
    rows = [
        {
            "verifier_name": "lint",
            "accuracy": 0.5 + 0.01 * i,
            "checks_performed": 1,
            "timestamp": NOW - 10 * H + i * H,
        }
        for i in range(10)
    ] + [{"verifier_name": "solo", "accuracy": 0.9, "timestamp": NOW}]
    append(eng, keys.VERIFIER_METRICS, rows)
    got = analytics.trend_analysis(eng, "verifier", 24, now=NOW)
    assert got["lint"]["slope_per_hour"] == pytest.approx(0.01) and got["lint"]["direction"] == "improving"
    assert got["lint"]["change"] == pytest.approx(0.09)
    solo = {"n": 1, "first": 0.9, "last": 0.9, "first_timestamp": NOW, "last_timestamp": NOW, "mean": 0.9}
    assert got["solo"] == {**solo, "slope_per_hour": 0.0, "change": 0.0, "direction": "stable"}
    assert analytics.trend_analysis(eng, "signature", 24, now=NOW) == {}
    with pytest.raises(ValidationError):
        analytics.trend_analysis(eng, "patch", 24, now=NOW)


# ---------------------------------------------------------------------------- errors
def logs():
    """Log rows and, per expected template, the (timestamp, log_id) of each ERROR/CRITICAL entry."""
    rnd = random.Random(3)
    rows, expected = [], {}
    families = [  # (expected template, message maker)
        ("step <n>: tool call failed", lambda: f"step {rnd.randrange(1000)}: tool call failed"),
        ("request <uuid> timed out after <n> ms", lambda: f"request {uuid.uuid4()} timed out after 5 ms"),
        (
            "bad pointer <hex> in utf8 decoder",
            lambda: f"bad pointer 0x{rnd.randrange(2**32):x} in utf8 decoder",
        ),
        (
            "commit <hex> rejected (<n> files)",
            lambda: f"commit 1{rnd.randrange(2**40):010x}a rejected (3 files)",
        ),
    ]
    for i in range(3000):
        ts = NOW - 36 * H + i * 45.0
        level = (
            "INFO" if i < 1200 else rnd.choice(["INFO", "ERROR", "error", "CRITICAL", "WARNING", "Warning"])
        )
        template, make = families[rnd.randrange(len(families))] if i % 3 else families[0]
        row = {
            "log_id": f"log-{i}",
            "timestamp": ts,
            "level": level,
            "source": rnd.choice(["agent", "tools", "sync"]),
            "message": make(),
            "context": {},
            "environment": "development",
        }
        rows.append(row)
        if ts >= NOW - 24 * H and level.upper() in ("ERROR", "CRITICAL"):
            expected.setdefault(template, []).append((ts, row["log_id"]))
    return rows, expected


def test_error_patterns(eng):
    rows, expected = logs()
    append(eng, keys.SYSTEM_LOGS, rows)
    got = analytics.error_patterns(eng, 24, now=NOW)
    window = in_window(rows, 24)
    levels = Counter(r["level"].upper() for r in window)
    errors = [r for r in window if r["level"].upper() in ("ERROR", "CRITICAL")]
    sources = Counter(r["source"] for r in errors)
    assert got["by_level"] == {lvl: levels[lvl] for lvl in ("CRITICAL", "ERROR", "WARNING")}
    assert got["total_errors"] == len(errors) > 500
    assert got["by_source"] == sources and list(got["by_source"].items()) == sorted(
        sources.items(), key=lambda kv: (-kv[1], kv[0])
    )
    want = [
        {
            "template": t,
            "count": len(hits),
            "first_seen": hits[0][0],
            "last_seen": hits[-1][0],
            "example_log_id": hits[-1][1],
        }
        for t, hits in sorted(expected.items(), key=lambda kv: (-len(kv[1]), kv[1][0][0]))
    ]
    assert got["patterns"] == want and len(want) == 4
    assert got["time_range_hours"] == 24 and got["timestamp"] == NOW
    assert analytics.error_patterns(eng, 24, now=NOW, limit=2)["patterns"] == want[:2]


def test_error_counts_by_source_counts_error_entries_only(eng):
    rows, _ = logs()
    append(eng, keys.SYSTEM_LOGS, rows)
    want = Counter(r["source"] for r in in_window(rows, 12) if r["level"].upper() == "ERROR")
    assert analytics.error_counts_by_source(eng, 12, now=NOW) == want and sum(want.values()) > 100


def test_error_patterns_on_empty_and_quiet_stores(eng):
    empty = analytics.error_patterns(eng, 24, now=NOW)
    assert empty["total_errors"] == 0 and empty["patterns"] == [] and empty["by_source"] == {}
    assert empty["by_level"] == {"CRITICAL": 0, "ERROR": 0, "WARNING": 0}
    eng.log(LogEntry("l1", NOW, "WARNING", "agent", "disk 91% full", {}, "development"))
    eng.log(LogEntry("l2", NOW, "ERROR", "agent", "old failure", {}, "development"))
    got = analytics.error_patterns(eng, 1, now=NOW + 2 * H)
    assert got["by_level"]["WARNING"] == 0 and got["total_errors"] == 0
    got = analytics.error_patterns(eng, 1, now=NOW)
    assert got["by_level"] == {"CRITICAL": 0, "ERROR": 1, "WARNING": 1}
    assert got["patterns"] == [
        {"template": "old failure", "count": 1, "first_seen": NOW, "last_seen": NOW, "example_log_id": "l2"}
    ]
    assert analytics.error_counts_by_source(eng, 1, now=NOW) == {"agent": 1}


@pytest.mark.parametrize(
    ("message", "template"),
    [
        ("step 12: tool call failed", "step <n>: tool call failed"),
        ("took 1.25s, retry 3/5", "took <n>s, retry <n>/<n>"),
        ("trace 123e4567-e89b-12d3-a456-426614174000 lost", "trace <uuid> lost"),
        ("segfault at 0x7ffeDEAD", "segfault at <hex>"),
        ("object 9f86d081884c7d65 missing", "object <hex> missing"),
        (
            "sha256 and utf8 stay, deadbeefcafe has no digit",
            "sha256 and utf8 stay, deadbeefcafe has no digit",
        ),
        ("ids 12345678 and abc", "ids <n> and abc"),
        (None, ""),
        (404, "<n>"),
    ],
)
def test_message_template(message, template):
    assert analytics.message_template(message) == template


# ---------------------------------------------------------------------------- records
def newest_first(rows):
    return [r["action_id"] for r in sorted(rows, key=lambda r: r["timestamp"], reverse=True)]


def test_recent_high_reward_actions(eng):
    rnd = random.Random(5)
    act = actions(2500)
    act[2400]["reward"], act[2401]["reward"], act[2402]["reward"] = 0.8, 1.0, 1.0000001
    act[2403]["timestamp"] = act[2404]["timestamp"] = act[2405]["timestamp"]
    act[2405]["reward"] = act[2404]["reward"] = act[2403]["reward"] = 0.9
    act.append(action(9999, NOW + 1.0, rnd, reward=0.95))  # after now: not recent
    append(eng, keys.RL_ACTIONS, act)
    got = analytics.recent_high_reward_actions(eng, 0.8, 24, now=NOW)
    want = [
        r
        for r in in_window(act, 24)
        if r["reward"] is not None and 0.8 <= r["reward"] <= 1.0 and r["timestamp"] <= NOW
    ]
    assert [a.action_id for a in got] == newest_first(want) and len(want) > 100
    assert all(isinstance(a, ActionRecord) for a in got) and got[0].to_dict() == next(
        r for r in act if r["action_id"] == got[0].action_id
    )
    assert {"act-002400", "act-002401"} <= {a.action_id for a in got}
    assert analytics.recent_high_reward_actions(eng, 1.01, 24, now=NOW) == []


def test_actions_by_type_and_by_reward_range_are_newest_first_over_all_rows(eng):
    act = actions(3000, shuffle=True)
    append(eng, keys.RL_ACTIONS, act)
    for kind in (ActionType.CODE_EDIT, "verification"):
        value = kind.value if isinstance(kind, ActionType) else kind
        got = analytics.actions_by_type(eng, kind, 100)
        assert [a.action_id for a in got] == newest_first([r for r in act if r["action_type"] == value])[:100]
    assert (
        analytics.actions_by_type(eng, "no_such_type") == []
        and analytics.actions_by_type(eng, "code_edit", 0) == []
    )
    got = analytics.actions_by_reward_range(eng, 0.25, 0.5, 150)
    want = [r for r in act if r["reward"] is not None and 0.25 <= r["reward"] <= 0.5]
    assert [a.action_id for a in got] == newest_first(want)[:150]
    assert len(analytics.actions_by_reward_range(eng, 0.0, 2.0, 5000)) == sum(
        r["reward"] is not None for r in act
    )
    with pytest.raises(ValidationError):
        analytics.actions_by_type(eng, 7)
    with pytest.raises(ValidationError):
        analytics.actions_by_reward_range(eng, 0.1, 0.2, limit=True)


def test_top_performing_signatures(eng):
    for name, score in (("a", 0.5), ("b", 0.9), ("c", 0.7), ("d", 0.9)):
        eng.store_signature_metrics(SignatureMetrics(name, score, 0.5, 1.0, "1MB", 1, "2024", "t"))
    assert [m.signature_name for m in analytics.top_performing_signatures(eng, 3)] == ["b", "d", "c"]
    assert (
        len(analytics.top_performing_signatures(eng)) == 4
        and analytics.top_performing_signatures(eng, 0) == []
    )


def test_data_volume(eng):
    append(eng, keys.RL_ACTIONS, actions(20))
    append(eng, "custom_stream", [{"x": 1}])
    eng.store_embedding(
        engine.create_embedding_vector("e1", [1.0, 0.0], "code", {})
    )  # internal stream: not shown
    volume = analytics.data_volume(eng)
    assert volume[keys.RL_ACTIONS] == 20 and volume["custom_stream"] == 1 and volume[keys.SYSTEM_LOGS] == 0
    assert set(keys.STREAMS) <= set(volume) and not any(k.startswith("__") for k in volume)


# ---------------------------------------------------------------------------- contract
def test_dependencies_name_every_stream_a_function_reads(eng, monkeypatch):
    append(eng, keys.RL_ACTIONS, actions(50))
    sigs = sig_rows(50)
    append(eng, keys.SIGNATURE_METRICS, sigs)
    append(eng, keys.VERIFIER_METRICS, ver_rows(50))
    append(eng, keys.SYSTEM_LOGS, logs()[0][-200:])
    append(eng, keys.TRAINING_HISTORY, [training(0, NOW, 0.5, 0.5, 1.0)])
    columns = eng.columns
    seen: list[str] = []
    get, rows = columns.get, columns.rows
    monkeypatch.setattr(columns, "get", lambda s: seen.append(s) or get(s))
    monkeypatch.setattr(columns, "rows", lambda s, o: seen.append(s) or rows(s, o))
    calls = {
        "performance_summary": lambda: analytics.performance_summary(eng, 24, now=NOW),
        "learning_progress": lambda: analytics.learning_progress(eng, 10, now=NOW),
        "signature_trend": lambda: analytics.signature_trend(eng, sigs[-1]["signature_name"], 24, now=NOW),
        "trend_analysis": lambda: analytics.trend_analysis(eng, "verifier", 24, now=NOW),
        "error_patterns": lambda: analytics.error_patterns(eng, 24, now=NOW),
        "error_counts_by_source": lambda: analytics.error_counts_by_source(eng, 24, now=NOW),
        "recent_high_reward_actions": lambda: analytics.recent_high_reward_actions(eng, 0.5, 24, now=NOW),
        "actions_by_type": lambda: analytics.actions_by_type(eng, "code_edit"),
        "actions_by_reward_range": lambda: analytics.actions_by_reward_range(eng, 0.0, 1.0),
    }
    assert set(calls) == set(analytics.DEPENDENCIES)
    for name, call in calls.items():
        seen.clear()
        assert call()  # every call has rows to read
        assert seen and set(seen) <= set(analytics.DEPENDENCIES[name]), name
        assert callable(getattr(analytics, name))


@pytest.mark.parametrize("bad", [float("nan"), "24", True, [1]])
def test_bad_arguments_raise(eng, bad):
    with pytest.raises(ValidationError):
        analytics.performance_summary(eng, bad, now=NOW)
    with pytest.raises(ValidationError):
        analytics.error_patterns(eng, 24, now=bad)
    with pytest.raises(ValidationError):
        analytics.recent_high_reward_actions(eng, bad, now=NOW)
    with pytest.raises(ValidationError):
        analytics.learning_progress(eng, bad if bad is not True else 1.5, now=NOW)
