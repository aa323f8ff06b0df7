"""Shared helpers for the pytest-benchmark suites (`pytest benchmarks --benchmark-only`).

pyproject's python_files only matches test_*.py, so bench_*.py files are collected here when the
directory (not the file) is named on the command line. `env_int` reads the ENGINE_BENCH_* sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def env_int(name: str, default: int) -> int:
    """The integer in environment variable `name` (e.g. ENGINE_BENCH_N), else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name} must be an integer, got {raw!r}") from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if not parent.session.isinitpath(file_path):  # a file named explicitly is collected anyway
            return pytest.Module.from_parent(parent, path=file_path)
    return None
