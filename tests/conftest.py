"""Shared fixtures: every test gets a private ENGINE_PATH and no RedDB configuration from the host."""

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
