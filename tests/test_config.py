"""Configuration: environment, keyword overrides, validation, the token kept out of repr."""

from __future__ import annotations

import pytest

from engine.config import Config, default_path, load_config
from engine.errors import ConfigError

ENV = ("REDDB_URL", "REDDB_TOKEN", "REDDB_NAMESPACE", "DB_BACKEND", "ENGINE_PATH", "ENGINE_DURABLE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_local_only():
    cfg = load_config()
    assert cfg.backend == "none"
    assert cfg.replicate is False
    assert cfg.namespace == "dspy"
    assert cfg.prefix == "dspy_agent"
    assert cfg.durable is True
    assert cfg.path == default_path()


def test_reddb_url_turns_replication_on(monkeypatch):
    monkeypatch.setenv("REDDB_URL", "http://127.0.0.1:8080")
    cfg = load_config()
    assert cfg.backend == "reddb" and cfg.replicate
    monkeypatch.setenv("DB_BACKEND", "none")
    assert load_config().replicate is False


def test_keywords_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_PATH", "/nowhere")
    monkeypatch.setenv("REDDB_NAMESPACE", "envns")
    cfg = load_config(path=str(tmp_path), namespace="kwns", durable=False)
    assert (cfg.path, cfg.namespace, cfg.durable) == (str(tmp_path), "kwns", False)
    assert load_config(reddb_url="http://x").replicate is True


def test_token_never_in_repr(monkeypatch):
    monkeypatch.setenv("REDDB_TOKEN", "s3cr3t-token-value")
    cfg = load_config()
    assert cfg.reddb_token == "s3cr3t-token-value"
    assert "s3cr3t" not in repr(cfg)
    assert "reddb_token=set" in repr(cfg)
    assert "s3cr3t" not in str(cfg)


@pytest.mark.parametrize(
    ("env", "value"),
    [("DB_BACKEND", "postgres"), ("ENGINE_DURABLE", "maybe"), ("REDDB_NAMESPACE", "a/b")],
)
def test_bad_environment_values_raise(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError):
        load_config()


def test_bad_keywords_raise():
    with pytest.raises(ConfigError, match="unknown option"):
        load_config(colour="blue")
    with pytest.raises(ConfigError):
        load_config(backend="reddb")  # no URL
    with pytest.raises(ConfigError):
        load_config(cache_size=0)
    with pytest.raises(ConfigError):
        load_config(prefix="a:b")


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.durable = False  # type: ignore[misc]
