"""Monitoring: one report of what a store holds and how it is doing (`eng.stats()`, `engine stats`).

Counts and bytes per stream and per key space (the `{prefix}:{category}`
part of a key), LMDB health (map use, readers), cache hit rates, query
execution times per kind, migration status, error patterns of the last 24 h
and the sync backlog.
"""

from __future__ import annotations

from typing import Any


def volume(eng: Any) -> dict[str, Any]:
    """Rows and bytes per stream, keys and bytes per key space."""
    store = eng.store
    streams: dict[str, dict[str, int]] = {}
    for name, n in sorted(store.stream_lengths().items()):
        size = 0
        start = 0
        while start < n:
            rows = store.read_with(name, start, 8192, len)
            if not rows:
                break
            size += sum(r for _, r in rows)
            start = rows[-1][0] + 1
        streams[name] = {"rows": n, "bytes": size}
    spaces: dict[str, dict[str, int]] = {}
    for key, value in store.kv_scan(""):
        parts = key.split(":")
        space = ":".join(parts[:2]) if len(parts) > 2 else parts[0]
        entry = spaces.setdefault(space, {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += len(value)
    return {"streams": streams, "key_spaces": spaces}


def collect_stats(eng: Any) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    from .migrations import migration_stats

    report: dict[str, Any] = {"path": eng.store.path, "lmdb": eng.store.info()}
    report.update(volume(eng))
    report["caches"] = eng.get_cache_stats()
    report["query_times"] = eng.query_timings.report()
    report["migrations"] = migration_stats(eng)
    report["errors_24h"] = eng.get_error_patterns(24)
    report["sync"] = eng.sync_status()
    return report


def format_stats(report: dict[str, Any]) -> str:
    """A human-readable rendering of `collect_stats`."""
    lines = [f"store: {report['path']}"]
    lmdb = report["lmdb"]
    lines.append(
        f"lmdb: map {lmdb['map_used'] / 2**20:,.1f} MiB used of {lmdb['map_size'] / 2**30:,.0f} GiB, "
        f"readers {lmdb['num_readers']}/{lmdb['max_readers']}, durable={lmdb['durable']}"
    )
    lines.append("streams:")
    for name, s in report["streams"].items():
        lines.append(f"  {name:<24} {s['rows']:>10,} rows {s['bytes'] / 2**20:>10,.2f} MiB")
    lines.append("key spaces:")
    for name, s in report["key_spaces"].items():
        lines.append(f"  {name:<32} {s['keys']:>8,} keys {s['bytes'] / 2**10:>10,.1f} KiB")
    for name, section in report.items():
        if name in ("path", "lmdb", "streams", "key_spaces"):
            continue
        lines.append(f"{name}:")
        for k, v in section.items():
            lines.append(f"  {k}: {v}")
    return "\n".join(lines) + "\n"
