"""Shared fixtures: every test gets a private ENGINE_PATH and no RedDB configuration from the host;
`eng` is a fresh local store (no migrations applied) closed after the test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    for name in ("REDDB_URL", "REDDB_TOKEN", "REDDB_NAMESPACE", "DB_BACKEND", "ENGINE_PURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENGINE_PATH", str(tmp_path / "default-store"))
    yield
    from engine import compat

    compat.reset_managers()


@pytest.fixture
def eng(tmp_path):
    import engine

    e = engine.open(tmp_path / "store", auto_migrate=False)
    yield e
    e.close()
