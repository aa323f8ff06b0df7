"""Turn a pytest-benchmark JSON file into BENCHMARKS.md: per group, ours against each peer, as ratios.

Conventions read from each benchmark's `extra_info`:
  impl           "engine" for ours, else the peer's name (required)
  ops_per_round  operations per measured call (default 1), to report time per operation
  target         the issue's target, in words (ours only)
  target_max_s   the target as a maximum median time per round, in seconds (ours only)
  target_vs      {peer impl: minimum speed-up}, speed-up = peer median / our median (ours only)
  note           a sentence printed under the group's table (any implementation)
Usage: python scripts/bench_report.py RESULTS.json [MORE.json ...] BENCHMARKS.md
(several result files are merged; a later file's benchmark replaces an earlier one of the same name)
"""

from __future__ import annotations

import json
import platform
import sys
from collections import defaultdict
from pathlib import Path


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:,.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def _verdict(ours: dict, peers: dict[str, float]) -> tuple[str, bool | None]:
    info = ours["extra_info"]
    median = ours["stats"]["median"]
    checks: list[bool] = []
    parts = []
    if info.get("target_max_s") is not None:
        ok = median <= info["target_max_s"]
        checks.append(ok)
        parts.append(f"median {_fmt_time(median)} vs limit {_fmt_time(info['target_max_s'])}")
    for peer, need in (info.get("target_vs") or {}).items():
        if peer not in peers:
            parts.append(f"{peer}: not measured")
            checks.append(False)
            continue
        speedup = peers[peer] / median
        ok = speedup >= need
        checks.append(ok)
        parts.append(f"{speedup:.2f}x vs {peer} (need >= {need:g}x)")
    if not checks:
        return "", None
    return "; ".join(parts), all(checks)


def render(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b.get("group") or b["name"]].append(b)
    machine = data.get("machine_info", {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (pytest-benchmark; `make bench-check` fails on a >10% mean regression",
        "against the last saved run on the same machine). Medians; ratios are peer time / engine time,",
        "so > 1 means the engine is faster. Shared 2-vCPU machine: treat differences under ~1.5x between",
        "runs as noise. Absolute limits (ms, records/s) are the issues' targets, set on a faster machine",
        "(see shared/BENCHMARKING.md); the ratios against peers in the same run are the comparable part.",
        "",
        f"- machine: {machine.get('cpu', {}).get('brand_raw', platform.processor() or '?')}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version', '?')}",
        f"- run: {data.get('datetime', '?')}",
        "",
    ]
    summary: list[str] = []
    for group in sorted(groups):
        rows = groups[group]
        ours = [b for b in rows if b["extra_info"].get("impl") == "engine"]
        per_op = {
            b["extra_info"].get("impl", b["name"]): b["stats"]["median"]
            / b["extra_info"].get("ops_per_round", 1)
            for b in rows
        }
        peer_round = {b["extra_info"].get("impl", b["name"]): b["stats"]["median"] for b in rows}
        lines.append(f"## {group}")
        lines.append("")
        lines.append("| implementation | median per op | ops/s | ratio (peer / engine) |")
        lines.append("| --- | ---: | ---: | ---: |")
        base = per_op.get("engine")
        for impl, t in sorted(per_op.items(), key=lambda kv: kv[1]):
            ratio = f"{t / base:.2f}x" if base and impl != "engine" else ("1.00x" if impl == "engine" else "")
            lines.append(f"| {impl} | {_fmt_time(t)} | {1 / t:,.0f} | {ratio} |")
        for b in rows:
            if b["extra_info"].get("note"):
                lines.append("")
                lines.append(f"Note ({b['extra_info'].get('impl', b['name'])}): {b['extra_info']['note']}")
        for b in ours:
            target = b["extra_info"].get("target")
            if not target:
                continue
            detail, ok = _verdict(b, peer_round)
            mark = "met" if ok else ("NOT met" if ok is False else "see numbers")
            lines.append("")
            lines.append(f"Target: {target}: **{mark}** ({detail})")
            summary.append(f"| {group} | {target} | {mark} |")
        lines.append("")
    if summary:
        lines[11:11] = [
            "## Targets",
            "",
            "| benchmark | target | result |",
            "| --- | --- | --- |",
            *summary,
            "",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    data: dict = {}
    merged: dict[str, dict] = {}
    for name in argv[1:-1]:
        part = json.loads(Path(name).read_text())
        data = {**part, "benchmarks": []}
        for b in part["benchmarks"]:
            merged[b["fullname"]] = b
    data["benchmarks"] = list(merged.values())
    Path(argv[-1]).write_text(render(data))
    print(f"wrote {argv[-1]} ({len(data['benchmarks'])} benchmarks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
