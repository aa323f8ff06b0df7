"""Configuration: environment variables, overridden by keyword arguments.

The names are those of the system we replace (REDDB_URL, REDDB_TOKEN,
REDDB_NAMESPACE, DB_BACKEND) so existing deployments keep working; the
engine's own knobs are ENGINE_*. The token is kept out of `repr`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_MAP_SIZE = 1 << 40 if sys.maxsize > 2**32 else 1 << 30
BACKENDS = ("reddb", "none", "lmdb", "memory")


def default_path() -> str:
    """The default store directory: $XDG_DATA_HOME/reddb-engine (~/.local/share/reddb-engine)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "reddb-engine")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `engine.open()` needs. Build it with `load_config()`."""

    path: str = field(default_factory=default_path)
    reddb_url: str | None = None
    reddb_token: str | None = field(default=None, repr=False)
    namespace: str = "dspy"
    backend: str = "none"
    prefix: str = "dspy_agent"
    durable: bool = True
    map_size: int = DEFAULT_MAP_SIZE
    max_readers: int = 1024
    cache_size: int = 1000
    cache_ttl: float = 3600.0
    query_cache_size: int = 500
    query_cache_ttl: float = 300.0
    auto_migrate: bool = True
    auto_sync: bool = True

    @property
    def replicate(self) -> bool:
        """True when writes must reach RedDB (DB_BACKEND=reddb and REDDB_URL set)."""
        return self.backend == "reddb" and bool(self.reddb_url)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "reddb_token"
        )
        return f"Config({shown}, reddb_token={'set' if self.reddb_token else 'unset'})"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 0/1/true/false, got {raw!r}")


def _env_number(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def load_config(**overrides: Any) -> Config:
    """Read the environment, then apply keyword overrides (which win)."""
    url = os.environ.get("REDDB_URL") or None
    backend_env = os.environ.get("DB_BACKEND")
    base = Config(
        path=os.environ.get("ENGINE_PATH") or default_path(),
        reddb_url=url,
        reddb_token=os.environ.get("REDDB_TOKEN") or None,
        namespace=os.environ.get("REDDB_NAMESPACE") or "dspy",
        backend=(backend_env or ("reddb" if url else "none")).lower(),
        prefix=os.environ.get("ENGINE_KEY_PREFIX") or "dspy_agent",
        durable=_env_bool("ENGINE_DURABLE", True),
        map_size=_env_number("ENGINE_MAP_SIZE", DEFAULT_MAP_SIZE, int),
        cache_size=_env_number("ENGINE_CACHE_SIZE", 1000, int),
        cache_ttl=_env_number("ENGINE_CACHE_TTL", 3600.0, float),
        query_cache_size=_env_number("ENGINE_QUERY_CACHE_SIZE", 500, int),
        query_cache_ttl=_env_number("ENGINE_QUERY_CACHE_TTL", 300.0, float),
        auto_migrate=_env_bool("ENGINE_AUTO_MIGRATE", True),
        auto_sync=_env_bool("ENGINE_AUTO_SYNC", True),
    )
    known = {f.name for f in fields(Config)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    if "reddb_url" in overrides and "backend" not in overrides and backend_env is None:
        overrides["backend"] = "reddb" if overrides["reddb_url"] else "none"
    cfg = replace(base, **{k: v for k, v in overrides.items() if v is not None or k == "reddb_url"})
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"DB_BACKEND must be one of {BACKENDS}, got {cfg.backend!r}")
    if cfg.backend == "reddb" and not cfg.reddb_url:
        raise ConfigError("DB_BACKEND=reddb needs REDDB_URL", hint="set REDDB_URL or DB_BACKEND=none")
    if not cfg.namespace or "/" in cfg.namespace:
        raise ConfigError(f"REDDB_NAMESPACE must be non-empty and contain no '/', got {cfg.namespace!r}")
    if not cfg.prefix or "/" in cfg.prefix or ":" in cfg.prefix:
        raise ConfigError(f"key prefix must be non-empty without '/' or ':', got {cfg.prefix!r}")
    if cfg.map_size < 1 << 20:
        raise ConfigError(f"map_size must be at least 1 MiB, got {cfg.map_size}")
    if cfg.cache_size < 1 or cfg.query_cache_size < 1:
        raise ConfigError("cache sizes must be at least 1")
    if cfg.cache_ttl <= 0 or cfg.query_cache_ttl <= 0:
        raise ConfigError("cache TTLs must be positive")
